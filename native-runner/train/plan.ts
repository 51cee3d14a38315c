/**
 * The pre-flight plan of a run: what `sft train` will do with a config and a tokenised dataset, before it
 * does it — steps per epoch, total and warmup steps, the lr curve, where evals and saves happen and which
 * checkpoints survive save_total_limit, tokens per step and how much of each batch is padding (or how
 * well packing fills rows). `computePlan` is pure (config + per-example lengths); the Start Training form
 * (protocol `plan`) and the trainer's start-up log both use it.
 *
 * Micro-batches per epoch: padded: ceil(n / B); packed: ceil(bins / B) with bins from best-fit-decreasing
 * of the example lengths into rows of max_length (the data layer's packer; see packedRowLengths).
 */
import type { TrainingPlan } from '../../protocol/runner';
import { packBestFitDecreasing } from '../data/batching';
import { defaultStepsPerRun, type RunConfig } from './config';
import { computeStepSchedule, learningRateAt, resolveInterval, stepsEvery, type StepSchedule } from './schedule';

export interface PlanData {
  /** Token count of each training example after truncation, in the order of the first epoch. */
  trainLengths: readonly number[];
  /** Trained (loss) tokens of each training example, same order. */
  trainedCounts: readonly number[];
  evalExamples: number;
  truncated: number;
  noTrained: number;
}

/**
 * Row lengths of one packed epoch in feeding order: the data layer's best-fit-decreasing bins, each bin
 * placed at the earliest position of its examples in the given order (lengths are in epoch order).
 */
export function packedRowLengths(lengths: readonly number[], capacity: number): number[] {
  const bins = packBestFitDecreasing(lengths.map((l) => Math.min(Math.max(1, l), capacity)), capacity);
  return bins
    .map((bin) => ({ first: Math.min(...bin), len: bin.reduce((a, i) => a + Math.min(Math.max(1, lengths[i]!), capacity), 0) }))
    .sort((a, b) => a.first - b.first)
    .map((r) => r.len);
}

/** Rows of one epoch in feeding order and the slots they occupy once each micro-batch is padded to its longest row. */
function batchSlots(rowLengths: readonly number[], batchSize: number): { microBatches: number; slots: number } {
  let slots = 0;
  let microBatches = 0;
  for (let i = 0; i < rowLengths.length; i += batchSize) {
    const rows = rowLengths.slice(i, i + batchSize);
    slots += rows.length * Math.max(...rows);
    microBatches++;
  }
  return { microBatches, slots };
}

/** At most `n` evenly spaced samples of 1..total, always including the first, the warmup end and the last. */
function curveSteps(total: number, warmup: number, n = 200): number[] {
  if (total <= 0) return [];
  const set = new Set<number>([1, total]);
  if (warmup >= 1 && warmup <= total) set.add(warmup);
  if (warmup + 1 <= total) set.add(warmup + 1);
  for (let i = 0; i < n; i++) set.add(1 + Math.round((i * (total - 1)) / Math.max(1, n - 1)));
  return [...set].sort((a, b) => a - b);
}

/** Intervals and event steps of a run (shared with the trainer so the plan and the run agree). */
export interface RunEvents {
  loggingEvery: number;
  evalAt: number[];
  saveAt: number[];
}

export function runEvents(c: RunConfig, s: StepSchedule, hasEval: boolean): RunEvents {
  const total = s.totalSteps;
  const loggingEvery = resolveInterval(c.logging_steps, total);
  let evalAt: number[] = [];
  if (hasEval && c.eval_strategy === 'steps') evalAt = stepsEvery(resolveInterval(c.eval_steps ?? c.logging_steps, total), total, true);
  if (hasEval && c.eval_strategy === 'epoch') evalAt = stepsEvery(Math.max(1, s.stepsPerEpoch), total, true);
  let saveAt: number[] = [];
  if (c.save_strategy === 'steps') saveAt = stepsEvery(resolveInterval(c.save_steps, total), total, true);
  if (c.save_strategy === 'epoch') saveAt = stepsEvery(Math.max(1, s.stepsPerEpoch), total, true);
  return { loggingEvery, evalAt, saveAt };
}

export function computePlan(c: RunConfig, d: PlanData): TrainingPlan {
  const B = c.per_device_train_batch_size;
  const A = c.gradient_accumulation_steps;
  const n = d.trainLengths.length;
  const rows = c.packing ? packedRowLengths(d.trainLengths, c.max_length) : [...d.trainLengths];
  const { microBatches, slots } = batchSlots(rows, B);
  const schedule = computeStepSchedule({
    microBatchesPerEpoch: microBatches,
    gradientAccumulationSteps: A,
    numTrainEpochs: c.num_train_epochs,
    maxSteps: c.max_steps,
    warmupRatio: c.warmup_ratio,
    warmupSteps: c.warmup_steps,
  });
  const total = schedule.totalSteps;
  const ev = runEvents(c, schedule, d.evalExamples > 0);
  const realTokens = d.trainLengths.reduce((a, b) => a + b, 0);
  const trainedTokens = d.trainedCounts.reduce((a, b) => a + b, 0);
  const lr = { type: c.lr_scheduler_type, learningRate: c.learning_rate, warmupSteps: schedule.warmupSteps, totalSteps: total };
  const kept = c.save_total_limit === null ? ev.saveAt : ev.saveAt.slice(-c.save_total_limit);

  const warnings: string[] = [];
  if (n === 0) warnings.push('the training set is empty');
  if (n > 0 && n < B * A) warnings.push(`fewer examples (${n}) than one effective batch (${B} x ${A} = ${B * A}): every step sees the whole set`);
  if (total > 0 && schedule.warmupSteps >= total) warnings.push(`warmup (${schedule.warmupSteps} steps) covers the whole run (${total} steps)`);
  if (d.truncated > 0) warnings.push(`${d.truncated} of ${n} examples are longer than max_length ${c.max_length} and will be truncated`);
  if (d.noTrained > 0) warnings.push(`${d.noTrained} examples have no trained tokens (answer cut by truncation?); they add nothing to the loss`);
  if (c.eval_strategy !== 'no' && d.evalExamples === 0) warnings.push('no eval examples: evaluation is skipped');
  if (c.save_strategy === 'no') warnings.push('save_strategy "no": no checkpoints, so the run cannot be resumed');

  return {
    train_examples: n,
    eval_examples: d.evalExamples,
    micro_batch_size: B,
    gradient_accumulation_steps: A,
    effective_batch_size: B * A,
    micro_batches_per_epoch: microBatches,
    steps_per_epoch: schedule.stepsPerEpoch,
    num_train_epochs: c.max_steps > 0 ? (schedule.stepsPerEpoch > 0 ? total / schedule.stepsPerEpoch : 0) : c.num_train_epochs,
    total_steps: total,
    warmup_steps: schedule.warmupSteps,
    lr_scheduler_type: c.lr_scheduler_type,
    learning_rate: c.learning_rate,
    lr_curve: curveSteps(total, schedule.warmupSteps).map((s) => ({ step: s, lr: learningRateAt(lr, s - 1) })),
    logging_steps: ev.loggingEvery,
    steps_per_run: defaultStepsPerRun(c, ev.loggingEvery),
    eval_at: ev.evalAt,
    save_at: ev.saveAt,
    kept_checkpoints: kept,
    tokens_per_step: schedule.stepsPerEpoch > 0 ? slots / schedule.stepsPerEpoch : 0,
    trained_tokens_per_step: schedule.stepsPerEpoch > 0 ? trainedTokens / schedule.stepsPerEpoch : 0,
    packing: c.packing,
    efficiency: slots > 0 ? realTokens / slots : 1,
    truncated_examples: d.truncated,
    no_trained_examples: d.noTrained,
    warnings,
  };
}
