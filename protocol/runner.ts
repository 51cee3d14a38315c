/**
 * The process protocol between the extension host and the runner's `sft serve` (JSON lines over stdio,
 * framing in ./jsonLines). Shared as source by both sides; nothing crosses the boundary untyped.
 *
 * Envelopes:
 *   host → runner  {kind:'request', id, method, params}
 *   runner → host  {kind:'reply', id, ok:true, result} | {kind:'reply', id, ok:false, error:{message, where?}}
 *                  {kind:'event', event, data}
 * One type map per direction: `RunnerRequests` (method → [params, result]) and `RunnerEvents`
 * (event → data). Every message is checked at runtime by `parseRequest` (runner side) and
 * `parseHostMessage` (host side); unknown methods/events and malformed payloads are rejected with a reason.
 *
 * Semantics: `train` replies once the run has started (config checked, model/data loaded) and then
 * reports through `progress`, `metrics` and `state` events; `chat` streams `token` events tagged with its
 * request id and replies with the whole text; `evaluate` measures eval loss, perplexity or a benchmark task
 * (params and result tagged by `kind`); `cancel` aborts a running request (chat/evaluate/preview);
 * `stop` ends training at the next step boundary (saving a checkpoint when asked). On startup the runner
 * emits `state {status:'idle'}` and it exits when its stdin closes or after `shutdown`.
 */
import {
  arrayOf, bool, int, literal, nullable, num, obj, oneOf, opt, range, record, str, tagged,
  type Check, type Checked,
} from './schema';
import { maxLengthCheck } from './trainingOptions';

export const PROTOCOL_VERSION = 1;

// ---- shared pieces -------------------------------------------------------------------------------

export const deviceCheck = literal('cpu', 'cuda');
export type Device = Checked<typeof deviceCheck>;

export const runStatusCheck = literal('idle', 'training', 'stopping', 'finished', 'failed');
export type RunStatus = Checked<typeof runStatusCheck>;

const chatMessageCheck = obj({ role: literal('system', 'user', 'assistant'), content: str });
export type ChatMessage = Checked<typeof chatMessageCheck>;

/** The records of `metrics.jsonl`, also sent verbatim as `metrics` events. */
const trainRecordCheck = obj({
  type: literal('train'),
  step: int(1),
  epoch: num,
  loss: num,
  grad_norm: num,
  learning_rate: num,
  tokens: int(0),
  tokens_per_second: num,
  elapsed_s: num,
});
const evalRecordCheck = obj({ type: literal('eval'), step: int(0), eval_loss: num, eval_tokens: int(0) });
const saveRecordCheck = obj({ type: literal('save'), step: int(0), path: str });
export const metricsRecordCheck = tagged('type', { train: trainRecordCheck, eval: evalRecordCheck, save: saveRecordCheck });
export type TrainRecord = Checked<typeof trainRecordCheck>;
export type EvalRecord = Checked<typeof evalRecordCheck>;
export type SaveRecord = Checked<typeof saveRecordCheck>;
export type MetricsRecord = TrainRecord | EvalRecord | SaveRecord;

/**
 * The pre-flight plan of a run (native-runner/train/plan.ts computes it; the Start Training form shows it).
 * Steps are 1-based optimizer steps as in metrics.jsonl; `lr_curve` samples the lr used at each step.
 */
export const trainingPlanCheck = obj({
  train_examples: int(0),
  eval_examples: int(0),
  micro_batch_size: int(1),
  gradient_accumulation_steps: int(1),
  effective_batch_size: int(1),
  micro_batches_per_epoch: int(0),
  steps_per_epoch: int(0),
  num_train_epochs: num,
  total_steps: int(0),
  warmup_steps: int(0),
  lr_scheduler_type: str,
  learning_rate: num,
  lr_curve: arrayOf(obj({ step: int(1), lr: num })),
  logging_steps: int(1),
  steps_per_run: int(1),
  eval_at: arrayOf(int(1)),
  save_at: arrayOf(int(1)),
  kept_checkpoints: arrayOf(int(1)),
  /** Mean tokens fed per optimizer step (padding or packed slots included) and mean trained tokens. */
  tokens_per_step: num,
  trained_tokens_per_step: num,
  packing: bool,
  /** Real tokens / fed slots: padding efficiency (packing false) or packing efficiency (packing true). */
  efficiency: num,
  truncated_examples: int(0),
  no_trained_examples: int(0),
  warnings: arrayOf(str),
});
export type TrainingPlan = Checked<typeof trainingPlanCheck>;

const previewExampleCheck = obj(
  {
    index: int(0),
    text: str,
    input_ids: arrayOf(int(0)),
    /** 0/1 per id: 1 where the token is a trained label. */
    trained: arrayOf(literal(0, 1)),
    /** The decoded text of each token (for highlighting), when available. */
    tokens: opt(arrayOf(str)),
    truncated: bool,
    full_length: int(0),
    source: opt(obj({ file: str, line: int(0) })),
  },
  false,
);
export type PreviewExample = Checked<typeof previewExampleCheck>;

const previewStatsCheck = obj(
  {
    examples: int(0),
    tokens: int(0),
    trained_tokens: int(0),
    truncated: int(0),
    no_trained_tokens: int(0),
    skipped: opt(int(0)),
    length_histogram: opt(arrayOf(obj({ lo: int(0), hi: int(0), count: int(0) }))),
  },
  false,
);

const badLineCheck = obj({ file: opt(str), line: int(0), reason: str });

const configInputCheck = oneOf(record, str);

/** The benchmark tasks `evaluate {kind:'task'}` runs (native-runner/infer/benchmarks.ts TASKS, same order). */
export const BENCHMARK_TASKS = ['hellaswag', 'arc_easy', 'arc_challenge', 'piqa', 'winogrande', 'truthfulqa_mc2'] as const;
export const benchmarkTaskCheck = literal(...BENCHMARK_TASKS);
export type BenchmarkTask = Checked<typeof benchmarkTaskCheck>;

const lossEvalParamsCheck = obj({
  model: str,
  kind: literal('eval_loss', 'perplexity'),
  /** eval_loss: a dataset file and its format. */
  dataset: opt(str),
  dataset_format: opt(str),
  max_length: opt(maxLengthCheck),
  assistant_only_loss: opt(bool),
  per_device_eval_batch_size: opt(int(1)),
  /** perplexity: a text file, window and stride in tokens. */
  file: opt(str),
  window: opt(int(1)),
  stride: opt(int(1)),
  device: opt(deviceCheck),
});
const lossEvalResultCheck = obj(
  {
    kind: literal('eval_loss', 'perplexity'),
    eval_loss: opt(num),
    eval_tokens: opt(int(0)),
    ppl: opt(num),
    nll_sum: opt(num),
    tokens: opt(int(0)),
    predicted: opt(int(0)),
  },
  false,
);
/** task: the benchmark, its rows file (.jsonl/.json/.parquet), the first `limit` documents only, requests per forward batch. */
const taskEvalParamsCheck = obj({
  model: str,
  kind: literal('task'),
  task: benchmarkTaskCheck,
  data: str,
  limit: opt(int(1)),
  batch_size: opt(int(1)),
  device: opt(deviceCheck),
});
/** A benchmark metric: the mean over documents and lm-eval's stderr of the mean (null when n < 2). */
const benchmarkMetricCheck = obj({ value: num, stderr: nullable(num) });
export type BenchmarkMetric = Checked<typeof benchmarkMetricCheck>;
/** acc (all but truthfulqa_mc2), acc_norm (hellaswag, arc_*, piqa), mc2 (truthfulqa_mc2); n documents scored. */
const taskEvalResultCheck = obj({
  kind: literal('task'),
  task: benchmarkTaskCheck,
  n: int(1),
  metrics: obj({ acc: opt(benchmarkMetricCheck), acc_norm: opt(benchmarkMetricCheck), mc2: opt(benchmarkMetricCheck) }),
});
export type TaskEvalResult = Checked<typeof taskEvalResultCheck>;

// ---- requests: method → [params, result] ---------------------------------------------------------

const REQUEST_CHECKS = {
  /** Start a run. `config`: a run.json object (TRL SFTConfig keys) or a path to one; `base_dir` resolves relative paths of an object config; `resume`: true = latest checkpoint of output_dir, or a checkpoint folder. */
  train: [
    obj({ config: configInputCheck, base_dir: opt(str), resume: opt(oneOf(bool, str)) }),
    obj({ run_dir: str, total_steps: int(0), start_step: int(0), resumed_from: nullable(str) }),
  ],
  /** Stop training at the next step boundary; `save` (default true) writes a checkpoint there first. */
  stop: [obj({ save: opt(bool) }), obj({ stopping: bool, status: runStatusCheck })],
  status: [
    obj({}),
    obj({
      status: runStatusCheck,
      run_dir: nullable(str),
      step: int(0),
      total_steps: int(0),
      epoch: num,
      loss: nullable(num),
      pid: int(0),
      protocol_version: int(1),
    }),
  ],
  plan: [obj({ config: configInputCheck, base_dir: opt(str) }), trainingPlanCheck],
  preview: [
    obj({
      dataset: str,
      dataset_format: str,
      model: opt(str),
      max_length: opt(maxLengthCheck),
      assistant_only_loss: opt(bool),
      offset: int(0),
      limit: int(0),
    }),
    obj({
      format_used: str,
      total: int(0),
      offset: int(0),
      examples: arrayOf(previewExampleCheck),
      stats: previewStatsCheck,
      bad_lines: arrayOf(badLineCheck),
      /** All bad lines counted (bad_lines lists the first ones). */
      bad_line_count: opt(int(0)),
    }),
  ],
  chat: [
    obj({
      model: str,
      messages: arrayOf(chatMessageCheck),
      system: opt(str),
      temperature: range(0, 100),
      top_p: range(0, 1),
      top_k: opt(int(0)),
      repetition_penalty: opt(range(0, 100)),
      max_new_tokens: int(1),
      seed: opt(int(0)),
      device: opt(deviceCheck),
    }),
    obj({ text: str, new_tokens: int(0), finish_reason: literal('eos', 'length', 'cancelled') }),
  ],
  /** Abort request `requestId` (a chat, evaluate or preview); it then replies with what it has or an error. */
  cancel: [obj({ requestId: int(0) }), obj({ cancelled: bool })],
  /**
   * Measure a model: eval_loss (a dataset file), perplexity (a text file) or task (a zero-shot
   * lm-evaluation-harness benchmark from a local dataset file: JSONL, JSON or Parquet rows).
   */
  evaluate: [
    tagged('kind', { eval_loss: lossEvalParamsCheck, perplexity: lossEvalParamsCheck, task: taskEvalParamsCheck }),
    tagged('kind', { eval_loss: lossEvalResultCheck, perplexity: lossEvalResultCheck, task: taskEvalResultCheck }),
  ],
  /** Stop everything (training stops at the next step boundary without saving) and exit. */
  shutdown: [obj({}), obj({})],
} as const satisfies Record<string, readonly [Check<unknown>, Check<unknown>]>;

export type RunnerMethod = keyof typeof REQUEST_CHECKS;
/** method → [params, result] */
export type RunnerRequests = {
  [M in RunnerMethod]: [Checked<(typeof REQUEST_CHECKS)[M][0]>, Checked<(typeof REQUEST_CHECKS)[M][1]>];
};
export type RequestParams<M extends RunnerMethod> = RunnerRequests[M][0];
export type RequestResult<M extends RunnerMethod> = RunnerRequests[M][1];
export const RUNNER_METHODS = Object.keys(REQUEST_CHECKS) as RunnerMethod[];

// ---- events: name → data -------------------------------------------------------------------------

const EVENT_CHECKS = {
  log: obj({ level: literal('debug', 'info', 'warn', 'error'), message: str }),
  progress: obj({
    step: int(0),
    total: int(0),
    loss: nullable(num),
    lr: num,
    tokens_per_second: num,
    eta_s: nullable(num),
    epoch: num,
  }),
  metrics: metricsRecordCheck,
  token: obj({ requestId: int(0), text: str }),
  state: obj({ status: runStatusCheck, run_dir: nullable(str), message: opt(str) }),
  error: obj({ message: str, where: opt(str), stderrTail: opt(str) }),
} as const satisfies Record<string, Check<unknown>>;

export type RunnerEventName = keyof typeof EVENT_CHECKS;
/** event → data */
export type RunnerEvents = { [E in RunnerEventName]: Checked<(typeof EVENT_CHECKS)[E]> };
export const RUNNER_EVENTS = Object.keys(EVENT_CHECKS) as RunnerEventName[];

// ---- envelopes -----------------------------------------------------------------------------------

export type RequestMessage<M extends RunnerMethod = RunnerMethod> = {
  [K in M]: { kind: 'request'; id: number; method: K; params: RequestParams<K> };
}[M];
export interface ReplyError {
  message: string;
  where?: string;
}
export type ReplyMessage<M extends RunnerMethod = RunnerMethod> =
  | { [K in M]: { kind: 'reply'; id: number; ok: true; result: RequestResult<K> } }[M]
  | { kind: 'reply'; id: number; ok: false; error: ReplyError };
export type EventMessage<E extends RunnerEventName = RunnerEventName> = {
  [K in E]: { kind: 'event'; event: K; data: RunnerEvents[K] };
}[E];

export function makeRequest<M extends RunnerMethod>(id: number, method: M, params: RequestParams<M>): RequestMessage<M> {
  return { kind: 'request', id, method, params } as RequestMessage<M>;
}
export function makeReply<M extends RunnerMethod>(id: number, _method: M, result: RequestResult<M>): ReplyMessage<M> {
  return { kind: 'reply', id, ok: true, result } as ReplyMessage<M>;
}
export function makeErrorReply(id: number, message: string, where?: string): ReplyMessage {
  return { kind: 'reply', id, ok: false, error: where === undefined ? { message } : { message, where } };
}
export function makeEvent<E extends RunnerEventName>(event: E, data: RunnerEvents[E]): EventMessage<E> {
  return { kind: 'event', event, data } as EventMessage<E>;
}

export type Parsed<T> = { ok: true; message: T } | { ok: false; reason: string; id?: number };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
function has<T extends object>(o: T, k: PropertyKey): k is keyof T {
  return Object.prototype.hasOwnProperty.call(o, k);
}

/** Runner side: checks one decoded line is a valid request. `id` is set in the failure when it was readable, so the runner can reply with the error. */
export function parseRequest(value: unknown): Parsed<RequestMessage> {
  if (!isRecord(value)) return { ok: false, reason: 'message: expected object' };
  const id = typeof value.id === 'number' && Number.isInteger(value.id) && value.id >= 0 ? value.id : undefined;
  if (value.kind !== 'request') return { ok: false, reason: `message.kind: expected "request", got ${JSON.stringify(value.kind)}`, id };
  if (id === undefined) return { ok: false, reason: 'message.id: expected integer >= 0' };
  const extra = Object.keys(value).find((k) => !['kind', 'id', 'method', 'params'].includes(k));
  if (extra) return { ok: false, reason: `message.${extra}: unknown field`, id };
  const method = value.method;
  if (typeof method !== 'string' || !has(REQUEST_CHECKS, method)) {
    return { ok: false, reason: `unknown method ${JSON.stringify(method)} (known: ${RUNNER_METHODS.join(', ')})`, id };
  }
  const params = value.params === undefined ? {} : value.params;
  const err = REQUEST_CHECKS[method][0](params, 'params');
  if (err) return { ok: false, reason: `${method}: ${err}`, id };
  return { ok: true, message: { kind: 'request', id, method, params } as RequestMessage };
}

/** Checks a result before the runner sends it (catches runner bugs at the source) — returns a reason or null. */
export function checkResult<M extends RunnerMethod>(method: M, result: unknown): string | null {
  return REQUEST_CHECKS[method][1](result, 'result');
}

/** Checks event data — returns a reason or null. */
export function checkEvent(event: RunnerEventName, data: unknown): string | null {
  return EVENT_CHECKS[event](data, 'data');
}

/**
 * Host side: checks one decoded line is a valid reply or event. `methodOf(id)` names the method of a
 * pending request (undefined when no such request is pending: the reply is rejected).
 */
export function parseHostMessage(value: unknown, methodOf: (id: number) => RunnerMethod | undefined): Parsed<ReplyMessage | EventMessage> {
  if (!isRecord(value)) return { ok: false, reason: 'message: expected object' };
  if (value.kind === 'event') {
    const name = value.event;
    if (typeof name !== 'string' || !has(EVENT_CHECKS, name)) {
      return { ok: false, reason: `unknown event ${JSON.stringify(name)} (known: ${RUNNER_EVENTS.join(', ')})` };
    }
    const err = EVENT_CHECKS[name](value.data, 'data');
    if (err) return { ok: false, reason: `event ${name}: ${err}` };
    return { ok: true, message: { kind: 'event', event: name, data: value.data } as EventMessage };
  }
  if (value.kind === 'reply') {
    const id = value.id;
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) return { ok: false, reason: 'reply.id: expected integer >= 0' };
    const method = methodOf(id);
    if (method === undefined) return { ok: false, reason: `reply ${id}: no such pending request`, id };
    if (value.ok === false) {
      const e = obj({ message: str, where: opt(str) })(value.error, 'reply.error');
      if (e) return { ok: false, reason: e, id };
      return { ok: true, message: value as unknown as ReplyMessage };
    }
    if (value.ok !== true) return { ok: false, reason: 'reply.ok: expected boolean', id };
    const err = REQUEST_CHECKS[method][1](value.result, 'result');
    if (err) return { ok: false, reason: `${method} reply: ${err}`, id };
    return { ok: true, message: value as unknown as ReplyMessage };
  }
  return { ok: false, reason: `message.kind: expected "reply" or "event", got ${JSON.stringify(value.kind)}` };
}
