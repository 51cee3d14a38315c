/**
 * run.json: the run configuration, with TRL SFTConfig key names so users can paste their settings, plus
 * ours (shuffle, dropout, device, steps_per_run, merge_micro_batches, on_bad_line, oasst_paths, oasst_lang). Defaults are the
 * seed recipe's (lr 2e-5 cosine, warmup 10 %, batch 8 × accumulation 4, 3 epochs, max_length 512, …).
 *
 * `parseRunConfig(json, file)` validates every key: an unknown key is an SftError naming it (with the
 * closest known key when it looks like a typo), a bad value names the key and what was expected.
 * Relative paths are resolved against the run.json's folder; strings that look like hub ids
 * (`databricks/databricks-dolly-15k`, `openai-community/gpt2`) are kept when no such local path exists.
 * `max_seq_length` (TRL's old name) is accepted as an alias of `max_length`. A few TRL/Trainer keys that
 * have no effect here (report_to, dataloader_num_workers, …) are accepted and listed in `notes`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TrainingDataOptions } from '../data/dataset';
import type { FormatChoice } from '../data/formats';
import { DATASET_FORMAT_CHOICES, DEVICES, LR_SCHEDULER_TYPES, maxLengthProblem } from '../../protocol/trainingOptions';
import { HUB_ID } from '../util/download';
import { SftError } from '../util/errors';

export type SchedulerType = 'linear' | 'cosine' | 'constant' | 'constant_with_warmup';
export type IntervalStrategy = 'steps' | 'epoch' | 'no';

export interface RunConfig {
  model_name_or_path: string;
  dataset: string;
  dataset_format: string;
  eval_dataset: string | null;
  test_size: number;
  output_dir: string;
  /** Start over in an output_dir that holds an earlier run's checkpoints (they are deleted). */
  overwrite_output_dir: boolean;
  per_device_train_batch_size: number;
  per_device_eval_batch_size: number;
  gradient_accumulation_steps: number;
  learning_rate: number;
  num_train_epochs: number;
  /** −1 (or 0): derived from num_train_epochs. */
  max_steps: number;
  lr_scheduler_type: SchedulerType;
  warmup_ratio: number;
  /** > 0 overrides warmup_ratio. */
  warmup_steps: number;
  weight_decay: number;
  adam_beta1: number;
  adam_beta2: number;
  adam_epsilon: number;
  max_grad_norm: number;
  /** Integers, or a ratio of the total steps when in (0, 1) as in transformers. */
  logging_steps: number;
  logging_first_step: boolean;
  eval_strategy: IntervalStrategy;
  /** null = logging_steps (transformers' default). */
  eval_steps: number | null;
  save_strategy: IntervalStrategy;
  save_steps: number;
  /** null = keep every checkpoint. */
  save_total_limit: number | null;
  max_length: number;
  packing: boolean;
  /** Pack the eval set too (TRL's eval_packing); null = as `packing`. The eval loss is the same either way. */
  eval_packing: boolean | null;
  assistant_only_loss: boolean;
  bf16: boolean;
  seed: number;
  // ours
  shuffle: boolean;
  /** null = the model config's dropout probabilities. */
  dropout: number | null;
  device: 'cpu' | 'cuda';
  /** Optimizer steps per session.run (K); null = min(logging_steps, 8) on cpu. */
  steps_per_run: number | null;
  /**
   * The engine computes each optimizer step's gradient_accumulation_steps micro-batches in groups of this many,
   * each group as one micro-batch (engine/mergeMicroBatches.ts): the same step, fewer passes over the parameters,
   * this many times the activation memory. 1 (default) = one micro-batch at a time, as the Trainer does.
   */
  merge_micro_batches: number;
  on_bad_line: 'error' | 'skip';
  oasst_paths: 'best' | 'all';
  oasst_lang: string | null;
}

export const RUN_CONFIG_DEFAULTS: Omit<RunConfig, 'model_name_or_path' | 'dataset'> = {
  dataset_format: 'auto',
  eval_dataset: null,
  test_size: 0.05,
  output_dir: 'sft-output',
  overwrite_output_dir: false,
  per_device_train_batch_size: 8,
  per_device_eval_batch_size: 8,
  gradient_accumulation_steps: 4,
  learning_rate: 2e-5,
  num_train_epochs: 3,
  max_steps: -1,
  lr_scheduler_type: 'cosine',
  warmup_ratio: 0.1,
  warmup_steps: 0,
  weight_decay: 0.01,
  adam_beta1: 0.9,
  adam_beta2: 0.999,
  adam_epsilon: 1e-8,
  max_grad_norm: 1.0,
  logging_steps: 10,
  logging_first_step: true,
  eval_strategy: 'steps',
  eval_steps: 200,
  save_strategy: 'steps',
  save_steps: 500,
  save_total_limit: 3,
  max_length: 512,
  packing: false,
  eval_packing: null,
  assistant_only_loss: true,
  bf16: false,
  seed: 42,
  shuffle: true,
  dropout: null,
  device: 'cpu',
  steps_per_run: null,
  merge_micro_batches: 1,
  on_bad_line: 'error',
  oasst_paths: 'best',
  oasst_lang: null,
};

type Parser = (v: unknown, key: string) => unknown;

function fail(_key: string, expected: string, v: unknown): never {
  throw new SftError(`expected ${expected}, got ${JSON.stringify(v) ?? String(v)}`);
}
const str: Parser = (v, k) => (typeof v === 'string' && v.trim() !== '' ? v : fail(k, 'a non-empty string', v));
const nullableStr: Parser = (v, k) => (v === null ? null : str(v, k));
const bool: Parser = (v, k) => (typeof v === 'boolean' ? v : fail(k, 'true or false', v));
function numIn(lo: number, hi: number, opts: { integer?: boolean; loOpen?: boolean } = {}): Parser {
  return (v, k) => {
    const ok =
      typeof v === 'number' && Number.isFinite(v) && (opts.loOpen ? v > lo : v >= lo) && v <= hi && (!opts.integer || Number.isInteger(v));
    const what = `${opts.integer ? 'an integer' : 'a number'} ${opts.loOpen ? '>' : '>='} ${lo}${hi === Infinity ? '' : ` and <= ${hi}`}`;
    return ok ? v : fail(k, what, v);
  };
}
function oneOf(...values: string[]): Parser {
  return (v, k) => (typeof v === 'string' && values.includes(v) ? v : fail(k, `one of ${values.join(' | ')}`, v));
}
function nullable(p: Parser): Parser {
  return (v, k) => (v === null ? null : p(v, k));
}
/** Step intervals: a positive integer, or a ratio in (0, 1) of the total steps. */
const interval: Parser = (v, k) =>
  typeof v === 'number' && Number.isFinite(v) && v > 0 && (Number.isInteger(v) || v < 1) ? v : fail(k, 'a positive integer (or a ratio in (0, 1))', v);

const KEYS: Record<keyof RunConfig, Parser> = {
  model_name_or_path: str,
  dataset: str,
  dataset_format: oneOf(...DATASET_FORMAT_CHOICES),
  eval_dataset: nullableStr,
  test_size: numIn(0, Infinity),
  output_dir: str,
  overwrite_output_dir: bool,
  per_device_train_batch_size: numIn(1, 1 << 16, { integer: true }),
  per_device_eval_batch_size: numIn(1, 1 << 16, { integer: true }),
  gradient_accumulation_steps: numIn(1, 1 << 16, { integer: true }),
  learning_rate: numIn(0, 10),
  num_train_epochs: numIn(0, 1e6, { loOpen: true }),
  max_steps: (v, k) => (typeof v === 'number' && Number.isInteger(v) && v >= -1 ? v : fail(k, 'an integer >= -1 (-1 = use num_train_epochs)', v)),
  lr_scheduler_type: oneOf(...LR_SCHEDULER_TYPES),
  warmup_ratio: numIn(0, 1),
  warmup_steps: numIn(0, Infinity, { integer: true }),
  weight_decay: numIn(0, 10),
  adam_beta1: (v, k) => (typeof v === 'number' && v >= 0 && v < 1 ? v : fail(k, 'a number in [0, 1)', v)),
  adam_beta2: (v, k) => (typeof v === 'number' && v >= 0 && v < 1 ? v : fail(k, 'a number in [0, 1)', v)),
  adam_epsilon: numIn(0, 1, { loOpen: true }),
  max_grad_norm: numIn(0, Infinity),
  logging_steps: interval,
  logging_first_step: bool,
  eval_strategy: oneOf('steps', 'epoch', 'no'),
  eval_steps: nullable(interval),
  save_strategy: oneOf('steps', 'epoch', 'no'),
  save_steps: interval,
  save_total_limit: nullable(numIn(1, Infinity, { integer: true })),
  max_length: (v) => {
    const problem = maxLengthProblem(v);
    if (problem) throw new SftError(problem);
    return v;
  },
  packing: bool,
  eval_packing: nullable(bool),
  assistant_only_loss: bool,
  bf16: bool,
  seed: numIn(0, 2 ** 53, { integer: true }),
  shuffle: bool,
  dropout: nullable(numIn(0, 1)),
  device: oneOf(...DEVICES),
  steps_per_run: nullable(numIn(1, 4096, { integer: true })),
  merge_micro_batches: numIn(1, 1024, { integer: true }),
  on_bad_line: oneOf('error', 'skip'),
  oasst_paths: oneOf('best', 'all'),
  oasst_lang: nullableStr,
};

/** TRL/Trainer keys accepted for paste-compatibility although they change nothing here (value checked loosely). */
const ACCEPTED_NO_EFFECT: Record<string, (v: unknown) => string | null> = {
  report_to: (v) => (v === 'none' || v === null || (Array.isArray(v) && v.length === 0) ? null : 'only "none" is supported (metrics go to metrics.jsonl)'),
  dataloader_num_workers: (v) => (typeof v === 'number' ? null : 'expected a number'),
  optim: (v) => (v === 'adamw_torch' || v === 'adamw_torch_fused' || v === 'adamw_hf' ? null : 'only AdamW (adamw_torch) is implemented'),
  fp16: (v) => (v === false ? null : 'fp16 is not supported; use bf16 on cuda'),
  do_train: (v) => (typeof v === 'boolean' ? null : 'expected true or false'),
  do_eval: (v) => (typeof v === 'boolean' ? null : 'expected true or false'),
  logging_dir: (v) => (typeof v === 'string' ? null : 'expected a string'),
  run_name: (v) => (typeof v === 'string' ? null : 'expected a string'),
  dataset_text_field: (v) => (typeof v === 'string' ? null : 'expected a string'),
  gradient_checkpointing: (v) => (v === false ? null : 'not supported (the whole graph is kept in memory)'),
};

const ALIASES: Record<string, keyof RunConfig> = { max_seq_length: 'max_length', evaluation_strategy: 'eval_strategy' };

export interface ParsedRunConfig {
  config: RunConfig;
  /** Folder relative paths were resolved against. */
  baseDir: string;
  /** Accepted keys without effect, aliases used. */
  notes: string[];
}

/** Levenshtein distance (small strings). */
function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length]!;
}

/** The known key closest to `key`, when close enough to be a typo. */
export function closestKey(key: string): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of [...Object.keys(KEYS), ...Object.keys(ALIASES), ...Object.keys(ACCEPTED_NO_EFFECT)]) {
    const d = editDistance(key.toLowerCase(), k);
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(key.length / 4)) ? best : undefined;
}

const FILE_EXT = /\.(jsonl|json|parquet|txt|safetensors)$/i;

/**
 * A local path resolved against baseDir, or the string unchanged when it is a hub id with no such local
 * path (`owner/name`; with `allowBareId` also legacy one-word ids such as `gpt2`).
 */
export function resolveLocalOrHub(value: string, baseDir: string, allowBareId = false): string {
  if (path.isAbsolute(value)) return value;
  const local = path.resolve(baseDir, value);
  if (value.startsWith('.') || fs.existsSync(local)) return local;
  if (HUB_ID.test(value) && (value.includes('/') || allowBareId) && !FILE_EXT.test(value)) return value;
  return local;
}

/** Validates a run.json object. `where` names the file in messages (`run.json: learning_rate: …`). */
export function parseRunConfig(json: unknown, baseDir: string, where = 'run.json'): ParsedRunConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new SftError('expected a JSON object of settings', where);
  const notes: string[] = [];
  const values: Record<string, unknown> = {};
  for (const [rawKey, v] of Object.entries(json as Record<string, unknown>)) {
    let key = rawKey;
    if (rawKey in ALIASES) {
      key = ALIASES[rawKey]!;
      if (key in (json as object)) throw new SftError(`both "${rawKey}" and "${key}" are set; keep one (${rawKey} is the old name of ${key})`, `${where}: ${rawKey}`);
      notes.push(`${rawKey} read as ${key}`);
    }
    if (rawKey in ACCEPTED_NO_EFFECT) {
      const problem = ACCEPTED_NO_EFFECT[rawKey]!(v);
      if (problem) throw new SftError(problem, `${where}: ${rawKey}`);
      notes.push(`${rawKey} has no effect here`);
      continue;
    }
    if (!(key in KEYS)) {
      const near = closestKey(rawKey);
      throw new SftError(`unknown key${near ? ` (did you mean "${near}"?)` : ''}`, `${where}: ${rawKey}`);
    }
    try {
      values[key] = KEYS[key as keyof RunConfig](v, key);
    } catch (e) {
      if (e instanceof SftError) throw new SftError(e.message, `${where}: ${key}`);
      throw e;
    }
  }
  for (const k of ['model_name_or_path', 'dataset'] as const) {
    if (values[k] === undefined) throw new SftError('missing (required)', `${where}: ${k}`);
  }
  const config = { ...RUN_CONFIG_DEFAULTS, ...values } as RunConfig;
  config.model_name_or_path = resolveLocalOrHub(config.model_name_or_path, baseDir, true);
  config.dataset = resolveLocalOrHub(config.dataset, baseDir);
  if (config.eval_dataset !== null) config.eval_dataset = resolveLocalOrHub(config.eval_dataset, baseDir);
  config.output_dir = path.resolve(baseDir, config.output_dir);
  // The recipe's "bf16 on GPU": unset means bf16 on CUDA and fp32 on the CPU. A pasted `bf16: true` on the CPU
  // trains in fp32 with a note (ONNX Runtime has no bfloat16 MatMul/Gemm kernels on the CPU).
  if (values.bf16 === undefined) config.bf16 = config.device === 'cuda';
  else if (config.device === 'cpu' && config.bf16) {
    notes.push('bf16: needs "device": "cuda" (ONNX Runtime has no bfloat16 MatMul/Gemm kernels on the CPU); this CPU run trains in fp32');
    config.bf16 = false;
  }
  return { config, baseDir, notes };
}

/** Reads and validates a run.json file; paths inside are relative to its folder. */
export function readRunConfig(file: string): ParsedRunConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new SftError(`cannot read the run config (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, file);
  }
  let json: unknown;
  try {
    json = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (e) {
    throw new SftError(`invalid JSON (${(e as Error).message})`, file);
  }
  return parseRunConfig(json, path.dirname(path.resolve(file)), file);
}

/** The resolved config as written to output_dir/run.json (every key, defaults filled in). */
export function runConfigToJson(c: RunConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(KEYS) as (keyof RunConfig)[]) out[k] = c[k];
  return out;
}

/**
 * Optimizer steps per run on CUDA when steps_per_run is not set. Runs also end at evaluation and save steps
 * (trainer.ts nextBoundary), so with the recipe's eval_steps 200 this only caps the stretch between them.
 * Large on purpose: when onnxruntime-node cannot keep the state on the GPU, every run boundary moves the
 * parameters and both moments to the host and back (≈ 1.3 s for GPT-2 124M at ~2.3 GB/s), which K = 256
 * steps of ~40 ms (B8 T~150 × 4 accumulated) keep near a tenth of the wall time; the batches of K steps are
 * small (K × micro-batches × B × T × 20 bytes: 84 MB at K 256, 4 × B8 T512).
 */
export const CUDA_STEPS_PER_RUN = 256;

/** Steps-per-run default: min(logging_steps, 8) on cpu, CUDA_STEPS_PER_RUN on cuda. */
export function defaultStepsPerRun(c: RunConfig, loggingEvery: number): number {
  if (c.steps_per_run !== null) return c.steps_per_run;
  // CUDA runs span logging steps (trainer.ts nextBoundary), so K is not tied to logging_steps there.
  return c.device === 'cuda' ? CUDA_STEPS_PER_RUN : Math.max(1, Math.min(loggingEvery, 8));
}

/**
 * The loadTrainingData options of a run: its data keys, max_length cut at the model's context
 * (`nPositions`), and the tokenizer training uses. Shared by `sft train` and the pre-flight plan so
 * both see the same examples.
 */
export function trainingDataOptions(
  c: RunConfig,
  nPositions: number,
  tokenizer: TrainingDataOptions['tokenizer'],
  signal?: AbortSignal,
): TrainingDataOptions {
  return {
    dataset: c.dataset,
    dataset_format: c.dataset_format as FormatChoice,
    eval_dataset: c.eval_dataset ?? undefined,
    test_size: c.eval_dataset ? undefined : c.test_size,
    seed: c.seed,
    max_length: Math.min(c.max_length, nPositions),
    assistant_only_loss: c.assistant_only_loss,
    on_bad_line: c.on_bad_line,
    oasst_paths: c.oasst_paths,
    oasst_lang: c.oasst_lang ?? undefined,
    tokenizer,
    per_device_train_batch_size: c.per_device_train_batch_size,
    packing: c.packing,
    signal,
  };
}
