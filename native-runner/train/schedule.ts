/**
 * The optimizer-step schedule of a run, with transformers' semantics.
 *   steps per epoch = ceil(micro-batches per epoch / gradient_accumulation_steps)  (a short last group steps)
 *   total           = max_steps when > 0, else ceil(num_train_epochs × steps per epoch)
 *   warmup          = warmup_steps when > 0, else ceil(warmup_ratio × total)
 * and the learning rate of step s (0-based, the s-th optimizer step) is the LambdaLR value of
 * get_{linear,cosine,constant,constant_with_warmup}_schedule_with_warmup at s, computed with the same
 * floating-point operations so values match transformers to the last bits.
 *
 * Data cursor: optimizer step s (0-based) uses epoch ⌊s / stepsPerEpoch⌋ and, inside it, micro-batches
 * [g·A, min((g+1)·A, M)) with g = s mod stepsPerEpoch (A accumulation, M micro-batches per epoch).
 */
import type { SchedulerType } from './config';

export interface ScheduleInput {
  microBatchesPerEpoch: number;
  gradientAccumulationSteps: number;
  numTrainEpochs: number;
  /** ≤ 0: derived from epochs. */
  maxSteps: number;
  warmupRatio: number;
  warmupSteps: number;
}

export interface StepSchedule {
  microBatchesPerEpoch: number;
  accumulation: number;
  stepsPerEpoch: number;
  totalSteps: number;
  warmupSteps: number;
  /** Epochs the data is iterated over (a fraction of the last one may be used). */
  epochs: number;
}

export function computeStepSchedule(i: ScheduleInput): StepSchedule {
  const stepsPerEpoch = Math.ceil(i.microBatchesPerEpoch / i.gradientAccumulationSteps);
  const totalSteps = i.maxSteps > 0 ? i.maxSteps : Math.ceil(i.numTrainEpochs * stepsPerEpoch);
  const warmupSteps = i.warmupSteps > 0 ? i.warmupSteps : Math.ceil(totalSteps * i.warmupRatio);
  const epochs = stepsPerEpoch > 0 ? Math.ceil(totalSteps / stepsPerEpoch) : 0;
  return { microBatchesPerEpoch: i.microBatchesPerEpoch, accumulation: i.gradientAccumulationSteps, stepsPerEpoch, totalSteps, warmupSteps, epochs };
}

export interface LrSchedule {
  type: SchedulerType;
  learningRate: number;
  warmupSteps: number;
  totalSteps: number;
}

/** transformers' lr_lambda of the schedule at `step` (0-based). */
export function lrFactor(type: SchedulerType, step: number, warmup: number, total: number): number {
  switch (type) {
    case 'constant':
      return 1.0;
    case 'constant_with_warmup':
      return step < warmup ? step / Math.max(1.0, warmup) : 1.0;
    case 'linear':
      if (step < warmup) return step / Math.max(1, warmup);
      return Math.max(0.0, (total - step) / Math.max(1, total - warmup));
    case 'cosine': {
      if (step < warmup) return step / Math.max(1, warmup);
      const progress = (step - warmup) / Math.max(1, total - warmup);
      const numCycles = 0.5;
      return Math.max(0.0, 0.5 * (1.0 + Math.cos(Math.PI * numCycles * 2.0 * progress)));
    }
  }
}

/** Learning rate used by optimizer step `step` (0-based). */
export function learningRateAt(s: LrSchedule, step: number): number {
  return s.learningRate * lrFactor(s.type, step, s.warmupSteps, s.totalSteps);
}

/** Where the data of optimizer step `step` (0-based) comes from. */
export interface StepCursor {
  epoch: number;
  /** Index of the step inside its epoch. */
  stepInEpoch: number;
  /** Micro-batch range [start, end) of that epoch. */
  microStart: number;
  microEnd: number;
}

export function cursorOfStep(s: StepSchedule, step: number): StepCursor {
  const epoch = Math.floor(step / s.stepsPerEpoch);
  const stepInEpoch = step - epoch * s.stepsPerEpoch;
  const microStart = stepInEpoch * s.accumulation;
  return { epoch, stepInEpoch, microStart, microEnd: Math.min(microStart + s.accumulation, s.microBatchesPerEpoch) };
}

/** transformers' epoch value after `stepsDone` optimizer steps (as logged: a float). */
export function epochAfter(s: StepSchedule, stepsDone: number): number {
  return s.stepsPerEpoch > 0 ? stepsDone / s.stepsPerEpoch : 0;
}

/**
 * An interval setting (logging_steps, eval_steps, save_steps) in steps: an integer, or a ratio in (0, 1)
 * of the total as transformers reads it (ceil(total × ratio)).
 */
export function resolveInterval(value: number, totalSteps: number): number {
  return value < 1 ? Math.max(1, Math.ceil(totalSteps * value)) : Math.round(value);
}

/** The 1-based steps in 1..total where an every-`n` event fires (and at `total` when `atEnd`). */
export function stepsEvery(n: number, total: number, atEnd = false): number[] {
  const out: number[] = [];
  for (let s = n; s <= total; s += n) out.push(s);
  if (atEnd && total > 0 && out[out.length - 1] !== total) out.push(total);
  return out;
}
