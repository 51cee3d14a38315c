/**
 * The host ↔ webview protocol: every message that crosses `postMessage` between the extension host
 * (src/) and a panel front end (webview/). One message union per panel and direction, each with a runtime
 * validator. Contract: the host passes every incoming webview message through `parse<Panel>FromWebview`
 * and drops (and logs) anything that is not exactly one of the declared shapes — unknown `type`, missing
 * or extra keys, wrong types, oversized strings/arrays are all rejected with a reason naming the field.
 * Webviews validate what the host sends the same way. Shared by both sides as source.
 */

import { arrayOf, bool, int as intMin, literal, nullable, obj as object, opt, record as plainObject, str as anyString, type Check, type Checked, type ObjectOf } from './schema';
import { DEVICES, maxLengthCheck } from './trainingOptions';

// ---------------------------------------------------------------------------------------------------
// Bounded checks on top of protocol/schema.ts: a webview is untrusted input, so sizes are capped.

export type Schema<T> = Check<T>;
export type Infer<S> = Checked<S>;
export { bool, opt };

const MAX_STRING = 1_000_000;
const MAX_ARRAY = 100_000;

export const str = (max = MAX_STRING): Check<string> => (v, p) => anyString(v, p) ?? ((v as string).length > max ? `${p}: longer than ${max} characters` : null);
export const num = (min = -Infinity, max = Infinity): Check<number> => (v, p) =>
  typeof v !== 'number' || !Number.isFinite(v) ? `${p}: expected a finite number` : v < min || v > max ? `${p}: ${v} is outside [${min}, ${max}]` : null;
export const int = (min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER): Check<number> => (v, p) =>
  intMin(min)(v, p) ?? ((v as number) > max ? `${p}: ${v} is above ${max}` : null);
export const oneOf = literal;
export const arr = <T>(item: Check<T>, max = MAX_ARRAY): Check<T[]> => arrayOf(item, max);
export const orNull = nullable;
export const obj = object;
/** A plain object of JSON values no larger than 1 MB serialised (run configs, validated by the runner itself). */
export const record: Check<Record<string, unknown>> = (v, p) => {
  const e = plainObject(v, p);
  if (e) return e;
  try {
    return JSON.stringify(v).length > 1_000_000 ? `${p}: larger than 1 MB` : null;
  } catch {
    return `${p}: not JSON`;
  }
};

type Shape = Record<string, Check<unknown>>;

/** A union of messages discriminated by their `type` field; each variant is a strict object. */
export function messages<M extends Record<string, Shape>>(defs: M) {
  const checks = Object.fromEntries(Object.entries(defs).map(([t, shape]) => [t, obj({ ...shape, type: literal(t) })]));
  type Msg = { [K in keyof M]: { type: K } & ObjectOf<M[K]> }[keyof M];
  return {
    types: Object.keys(defs) as (keyof M & string)[],
    parse(v: unknown): { ok: true; message: Msg } | { ok: false; error: string } {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) return { ok: false, error: 'message: expected an object' };
      const t = (v as { type?: unknown }).type;
      if (typeof t !== 'string') return { ok: false, error: 'message.type: missing' };
      const c = Object.prototype.hasOwnProperty.call(checks, t) ? checks[t] : undefined;
      if (!c) return { ok: false, error: `message.type: unknown message "${t.slice(0, 60)}"` };
      const e = c(v, t);
      return e ? { ok: false, error: e } : { ok: true, message: v as Msg };
    },
  };
}
export type MessageOf<P> = P extends { parse(v: unknown): infer R } ? (R extends { ok: true; message: infer M } ? M : never) : never;

// ---------------------------------------------------------------------------------------------------
// Shared shapes.

const PATH = str(4096);
const turn = obj({ role: oneOf('system', 'user', 'assistant'), content: str(200_000) });
export type ChatTurn = Infer<typeof turn>;

/** A model the chat can use: the base model folder, a checkpoint, or a run's final model. */
const modelChoice = obj({ path: PATH, label: str(500), detail: str(2000) });
export type ModelChoice = Infer<typeof modelChoice>;

const samplingParams = obj({
  temperature: num(0, 5),
  top_p: num(0, 1),
  top_k: int(0, 100_000),
  max_new_tokens: int(1, 8192),
  seed: int(0, 2 ** 32 - 1),
});
export type SamplingParams = Infer<typeof samplingParams>;

/** One metrics.jsonl record as the runner writes it (train | eval | save | …); known fields are type-checked, others pass. */
const metricRecord = obj({
  type: str(40),
  step: int(0),
  epoch: opt(num()),
  loss: opt(num()),
  grad_norm: opt(num()),
  learning_rate: opt(num()),
  tokens: opt(num()),
  tokens_per_second: opt(num()),
  elapsed_s: opt(num()),
  eval_loss: opt(num()),
  eval_tokens: opt(num()),
  path: opt(str(4096)),
  total_steps: opt(int(0)),
  message: opt(str(10_000)),
}, false);
export type MetricRecord = Infer<typeof metricRecord>;

/** As the runner's progress event: loss is null before the first step (or when not finite), eta_s null while unknown. */
const progress = obj({ step: int(0), total: int(0), loss: orNull(num()), lr: num(), tokens_per_second: num(), eta_s: orNull(num()), epoch: num() });
export type ProgressInfo = Infer<typeof progress>;

// ---------------------------------------------------------------------------------------------------
// Dashboard.

export const DashboardFromWebview = messages({
  ready: {},
  /** The user clicked an eval point: open a chat with the checkpoint nearest to `step`. */
  openChatAt: { runDir: PATH, step: int(0) },
  /** Overlay these runs (add or remove). */
  chooseRuns: {},
});
export const DashboardToWebview = messages({
  /** Full state: every shown run with all of its records (rebuilt from metrics.jsonl). */
  runs: { runs: arr(obj({ runDir: PATH, name: str(500), status: str(40), totalSteps: orNull(int(0)), records: arr(metricRecord, 1_000_000) }), 20) },
  /** New records for one run (live). */
  append: { runDir: PATH, records: arr(metricRecord, 100_000) },
  /** Live progress of the training run. */
  progress: { runDir: PATH, progress },
});
export type DashboardMsgFromWebview = MessageOf<typeof DashboardFromWebview>;
export type DashboardMsgToWebview = MessageOf<typeof DashboardToWebview>;

// ---------------------------------------------------------------------------------------------------
// Chat (one or two panes; pane 1 exists in side-by-side mode).

const pane = int(0, 1);
export const ChatFromWebview = messages({
  ready: {},
  /** Generate the next assistant turn for one pane. `messages` is that pane's full history incl. the new user turn. */
  generate: { pane, model: PATH, system: str(100_000), messages: arr(turn, 1000), params: samplingParams },
  /** Stop every generation in progress. */
  stop: {},
  /** Ask the host to pick a model for a pane (a quick pick of checkpoints / base / folder). */
  pickModel: { pane },
});
export const ChatToWebview = messages({
  init: { models: arr(modelChoice, 1000), selected: arr(orNull(PATH), 2), sideBySide: bool, params: samplingParams },
  modelPicked: { pane, model: modelChoice },
  token: { pane, text: str(100_000) },
  done: { pane, text: str(1_000_000), stopped: bool },
  error: { pane, message: str(20_000) },
});
export type ChatMsgFromWebview = MessageOf<typeof ChatFromWebview>;
export type ChatMsgToWebview = MessageOf<typeof ChatToWebview>;

// ---------------------------------------------------------------------------------------------------
// Dataset preview (sidebar view).

const previewExample = obj({
  index: int(0),
  file: PATH,
  line: int(0),
  /** Rendered conversation text, as the seed prints it. */
  text: str(),
  /** Token pieces (decoded per id) and whether the loss sees each one. */
  tokens: arr(str(1000), 200_000),
  trained: arr(int(0, 1), 200_000),
  /** Token count before truncation; > tokens.length means the example was cut at max_length. */
  fullLength: int(0),
});
export type PreviewExample = Infer<typeof previewExample>;
const previewStats = obj({
  examples: int(0),
  truncated: int(0),
  nothingTrained: int(0),
  histogram: arr(obj({ from: int(0), to: int(0), count: int(0) }), 1000),
  meanLength: num(),
  maxLength: int(0),
});
export type PreviewStats = Infer<typeof previewStats>;
const badLine = obj({ file: PATH, line: int(0), reason: str(5000) });
export type PreviewBadLine = Infer<typeof badLine>;

export const PreviewFromWebview = messages({
  ready: {},
  /** Show the page starting at record `offset`. */
  page: { offset: int(0) },
  /** Open the dataset file at a 1-based line (bad-line links, example sources). */
  openLine: { file: PATH, line: int(1) },
  pickDataset: {},
  setOptions: { max_length: maxLengthCheck, assistant_only_loss: bool },
});
export const PreviewToWebview = messages({
  loading: { dataset: PATH },
  data: {
    dataset: PATH,
    format: str(100),
    model: PATH,
    max_length: maxLengthCheck,
    assistant_only_loss: bool,
    offset: int(0),
    limit: int(1),
    total: int(0),
    examples: arr(previewExample, 1000),
    stats: previewStats,
    badLines: arr(badLine, 10_000),
    /** All bad lines of the file (badLines lists the first ones). */
    badLineCount: int(0),
  },
  error: { message: str(20_000) },
  empty: { message: str(2000) },
});
export type PreviewMsgFromWebview = MessageOf<typeof PreviewFromWebview>;
export type PreviewMsgToWebview = MessageOf<typeof PreviewToWebview>;

// ---------------------------------------------------------------------------------------------------
// Start Training form.

/** The pre-flight plan as the form shows it (computed by the runner's plan method, rendered by src/planView). */
const planView = obj({
  rows: arr(obj({ label: str(200), value: str(2000) }), 100),
  lrCurve: arr(obj({ step: int(0), lr: num() }), 10_000),
  evalSteps: arr(int(0), 100_000),
  saveSteps: arr(int(0), 100_000),
  keptCheckpoints: arr(int(0), 10_000),
  totalSteps: int(0),
  warmupSteps: int(0),
  warnings: arr(str(2000), 100),
});
export type PlanView = Infer<typeof planView>;

export const TrainFormFromWebview = messages({
  ready: {},
  /** The form changed: compute the plan for this config. */
  plan: { config: record },
  /** Start training with this config (saved to `configPath`). */
  start: { config: record, configPath: PATH },
  /** Pick a folder or file for a field. */
  browse: { field: oneOf('model_name_or_path', 'dataset', 'output_dir', 'eval_dataset'), kind: oneOf('file', 'folder') },
});
export const TrainFormToWebview = messages({
  init: { config: record, configPath: PATH, device: oneOf(...DEVICES) },
  plan: { plan: planView },
  planError: { message: str(20_000) },
  browsed: { field: str(100), path: PATH },
  started: { runDir: PATH },
  startError: { message: str(20_000) },
});
export type TrainFormMsgFromWebview = MessageOf<typeof TrainFormFromWebview>;
export type TrainFormMsgToWebview = MessageOf<typeof TrainFormToWebview>;
