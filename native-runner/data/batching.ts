/**
 * Tokenised examples → MicroBatch (engine/types.ts) → optimizer steps.
 *
 * Shapes: every array is row-major [B, T]; B ≤ batchSize rows, T = the longest row of the batch.
 * Targets are shifted here: for an example with ids x[0..n) placed at row offset o,
 *   inputIds[o+t] = x[t], targets[o+t] = x[t+1], weights[o+t] = trained[t+1]  (t < n-1),
 *   targets[o+n-1] = pad, weights[o+n-1] = 0   (no target crosses an example's end),
 *   positions[o+t] = t (padded rows continue t into the padding), segments = 1..k per example, 0 for pad.
 * Padding is never trained; the real closing <|endoftext|> is (its weight sits at the position before it).
 *
 * Order: `epochOrder(n, seed, epoch)` is a PCG32 permutation with stream = epoch + 1 (identity when
 * shuffle is false). Without packing, micro-batches take examples in that order, batchSize at a time (the
 * last may be short). With packing, examples are packed best-fit-decreasing into bins of maxLength (by
 * length, ties by index, so the bins do not depend on the epoch); bins are then ordered by the earliest
 * position any of their examples has in the epoch order, and batched batchSize bins at a time. Everything
 * is a pure function of (examples, seed, epoch), so a data cursor {epoch, microBatchIndex} resumes exactly.
 */
import { Rng } from '../util/rng';
import { SftError } from '../util/errors';
import type { MicroBatch } from '../engine/types';
import type { TokenizedExample } from './types';

type Example = Pick<TokenizedExample, 'inputIds' | 'trained'>;

export interface BatchOptions {
  batchSize: number;
  padId: number;
  packing?: boolean;
  /** Bin capacity for packing (required when packing). */
  maxLength?: number;
}

/** Where training stands in the data: the next micro-batch to run. */
export interface DataCursor {
  epoch: number;
  microBatchIndex: number;
}

/** The example order of one epoch: a seeded permutation, or 0..n-1 when shuffle is false. */
export function epochOrder(n: number, seed: number, epoch: number, shuffle = true): number[] {
  if (!shuffle) return Array.from({ length: n }, (_, i) => i);
  return new Rng(BigInt(Math.trunc(seed)), BigInt(epoch) + 1n).permutation(n);
}

/**
 * Best-fit-decreasing packing of lengths into bins of `capacity`. Returns bins as lists of example
 * indices (each bin's examples longest first). Lengths must be 1..capacity.
 */
export function packBestFitDecreasing(lengths: readonly number[], capacity: number): number[][] {
  const idx = lengths.map((_, i) => i).sort((a, b) => lengths[b]! - lengths[a]! || a - b);
  const bins: number[][] = [];
  const free: number[] = [];
  // byFree[r] = bins with exactly r tokens free, each stack in creation order; take the oldest.
  const byFree: number[][] = Array.from({ length: capacity + 1 }, () => []);
  for (const i of idx) {
    const len = lengths[i]!;
    if (!(len >= 1 && len <= capacity)) throw new SftError(`example ${i} has length ${len}, outside 1..${capacity}`, 'packing');
    let chosen = -1;
    for (let r = len; r <= capacity; r++) {
      const list = byFree[r]!;
      if (list.length > 0) {
        // Best fit: the bin with the least room that still fits; among equals the oldest bin.
        let k = 0;
        for (let j = 1; j < list.length; j++) if (list[j]! < list[k]!) k = j;
        chosen = list[k]!;
        list.splice(k, 1);
        break;
      }
    }
    if (chosen < 0) {
      chosen = bins.length;
      bins.push([]);
      free.push(capacity);
    }
    bins[chosen]!.push(i);
    free[chosen] = free[chosen]! - len;
    byFree[free[chosen]!]!.push(chosen);
  }
  // Bins with 0 free were pushed to byFree[0]; harmless (never searched since len ≥ 1).
  return bins;
}

/** Builds one micro-batch whose rows are lists of examples (one example per row without packing). */
export function buildMicroBatch(rows: readonly (readonly Example[])[], padId: number): MicroBatch {
  const B = rows.length;
  let T = 1;
  for (const row of rows) {
    let len = 0;
    for (const ex of row) len += ex.inputIds.length;
    T = Math.max(T, len);
  }
  const inputIds = new Int32Array(B * T).fill(padId);
  const targets = new Int32Array(B * T).fill(padId);
  const weights = new Float32Array(B * T);
  const positions = new Int32Array(B * T);
  const segments = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    const base = b * T;
    let o = 0;
    let seg = 0;
    for (const ex of rows[b]!) {
      seg++;
      const n = ex.inputIds.length;
      for (let t = 0; t < n; t++) {
        inputIds[base + o + t] = ex.inputIds[t]!;
        positions[base + o + t] = t;
        segments[base + o + t] = seg;
        if (t + 1 < n) {
          targets[base + o + t] = ex.inputIds[t + 1]!;
          weights[base + o + t] = ex.trained[t + 1]!;
        }
      }
      o += n;
    }
    // Padding: positions continue (for a single-example row they are simply t), segment 0, weight 0.
    const lastLen = rows[b]!.length > 0 ? rows[b]![rows[b]!.length - 1]!.inputIds.length : 0;
    for (let t = o; t < T; t++) positions[base + t] = rows[b]!.length === 1 ? t : lastLen + (t - o);
  }
  return { B, T, inputIds, targets, weights, positions, segments };
}

function checkBatchOptions(opts: BatchOptions): void {
  if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) throw new SftError(`must be a positive integer, got ${opts.batchSize}`, 'per_device_train_batch_size');
  if (opts.packing && !(Number.isInteger(opts.maxLength) && opts.maxLength! >= 2)) throw new SftError('packing needs max_length (an integer >= 2)', 'max_length');
}

/** The rows of an epoch's micro-batches, as lists of example indices per row, before building tensors. */
export function planRows(examples: readonly Example[], order: readonly number[], opts: BatchOptions): number[][] {
  checkBatchOptions(opts);
  if (!opts.packing) return order.map((i) => [i]);
  const bins = packBestFitDecreasing(
    examples.map((e) => e.inputIds.length),
    opts.maxLength!,
  );
  const rankOf = new Int32Array(examples.length);
  order.forEach((ex, pos) => (rankOf[ex] = pos));
  const key = bins.map((bin) => Math.min(...bin.map((i) => rankOf[i]!)));
  return bins.map((bin, i) => ({ bin, k: key[i]! })).sort((a, b) => a.k - b.k).map((x) => x.bin);
}

/** Micro-batches of one epoch (see the file comment for the layout). `order` is epochOrder's result. */
export function makeMicroBatches(examples: readonly Example[], order: readonly number[], opts: BatchOptions): MicroBatch[] {
  const rows = planRows(examples, order, opts);
  const out: MicroBatch[] = [];
  for (let s = 0; s < rows.length; s += opts.batchSize) {
    const chunk = rows.slice(s, s + opts.batchSize);
    out.push(buildMicroBatch(chunk.map((r) => r.map((i) => examples[i]!)), opts.padId));
  }
  return out;
}

/** Number of micro-batches an epoch has (without building them). */
export function microBatchCount(examples: readonly Example[], opts: BatchOptions): number {
  const rows = opts.packing ? planRows(examples, examples.map((_, i) => i), opts).length : examples.length;
  return Math.ceil(rows / opts.batchSize);
}

/** Groups micro-batches into optimizer steps of `accum` each; a short last group still steps. */
export function groupIntoSteps<T>(microBatches: readonly T[], accum: number): T[][] {
  if (!Number.isInteger(accum) || accum < 1) throw new SftError(`must be a positive integer, got ${accum}`, 'gradient_accumulation_steps');
  const steps: T[][] = [];
  for (let s = 0; s < microBatches.length; s += accum) steps.push(microBatches.slice(s, s + accum));
  return steps;
}

/** The micro-batches of an epoch from a seed: epochOrder + makeMicroBatches. */
export function epochMicroBatches(examples: readonly Example[], seed: number, epoch: number, opts: BatchOptions & { shuffle?: boolean }): MicroBatch[] {
  return makeMicroBatches(examples, epochOrder(examples.length, seed, epoch, opts.shuffle ?? true), opts);
}

/** Trained target positions in a micro-batch (Σ weights). */
export function trainedTargets(mb: MicroBatch): number {
  let n = 0;
  for (let i = 0; i < mb.weights.length; i++) n += mb.weights[i]!;
  return n;
}
