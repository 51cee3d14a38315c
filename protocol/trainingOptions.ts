/**
 * Training option values that the runner, the extension host and the webviews must agree on, defined once:
 * the dataset formats (run.json `dataset_format`, `sft preview --dataset_format`, the Start Training form's
 * choices), the learning-rate schedules and devices (run.json `lr_scheduler_type` / `device`, the form's
 * choices) and the max_length rule (run.json, `sft preview`, the data layer). Pure and dependency-free, so
 * the browser bundles of the webviews can import it without pulling in Node modules.
 */
import type { Check } from './schema';

/** The dataset formats the data layer reads (native-runner/data/formats.ts converts each). */
export const DATASET_FORMATS = ['dolly', 'oasst1', 'sharegpt', 'messages', 'prompt_completion', 'text'] as const;
export type DatasetFormat = (typeof DATASET_FORMATS)[number];

/** What `dataset_format` may be set to: a format, or "auto" (detected from the first records' fields). */
export const DATASET_FORMAT_CHOICES = ['auto', ...DATASET_FORMATS] as const;
export type FormatChoice = (typeof DATASET_FORMAT_CHOICES)[number];

/** run.json `lr_scheduler_type`: transformers' names of the schedules native-runner/train/schedule.ts computes. */
export const LR_SCHEDULER_TYPES = ['linear', 'cosine', 'constant', 'constant_with_warmup'] as const;
export type LrSchedulerType = (typeof LR_SCHEDULER_TYPES)[number];

/** run.json `device`: where the runner trains (ONNX Runtime's CPU or CUDA execution provider). */
export const DEVICES = ['cpu', 'cuda'] as const;
export type Device = (typeof DEVICES)[number];

/** max_length bounds (tokens per example): at least one input and one target; at most 2^20. */
export const MAX_LENGTH_MIN = 2;
export const MAX_LENGTH_MAX = 1 << 20;

/**
 * Why `v` is not a valid max_length, or null when it is one. Callers put their own "where" in front
 * (`run.json: max_length: …`, `--max_length: …`), so every entry point refuses the same values in the same words.
 */
export function maxLengthProblem(v: unknown): string | null {
  if (typeof v === 'number' && Number.isInteger(v) && v >= MAX_LENGTH_MIN && v <= MAX_LENGTH_MAX) return null;
  return `expected an integer >= ${MAX_LENGTH_MIN} and <= ${MAX_LENGTH_MAX}, got ${typeof v === 'number' ? String(v) : (JSON.stringify(v) ?? String(v))}`;
}

/**
 * maxLengthProblem as a protocol field check (protocol/schema Check): the runner's `preview` and `evaluate`
 * params and the Dataset Preview's setOptions refuse what run.json refuses, with the field's path in front.
 */
export const maxLengthCheck: Check<number> = (v, p) => {
  const problem = maxLengthProblem(v);
  return problem === null ? null : `${p}: ${problem}`;
};
