/**
 * The accumulation micro-batches of one optimizer step, computed as fewer, larger ones (TrainingEngineOptions.
 * mergeMicroBatches; run.json `merge_micro_batches`, env SFT_MERGE_MICRO_BATCHES).
 *
 *   mergeMicroBatches(mbs, factor) → ⌈A / factor⌉ micro-batches; group i = rows of mbs[i·factor … i·factor+factor−1]
 *     stacked in order, each row padded on the right to the group's largest T with padding positions (ids,
 *     targets, positions 0; weight 0; segment 0 — the engine's own padding).
 *
 * The step is the same: its loss is Σ w·NLL / Σ w over all rows of the step, and its gradient the sum of the
 * rows' gradients, however the rows are grouped (HF Trainer's num_items_in_batch normalisation; engine/
 * trainGraph.ts). Only the summation order changes, and which Dropout mask a row gets. What changes is the
 * cost: the train graph's per-micro-batch work on parameter-shaped tensors (the gradient accumulation Cast +
 * Add over all 124M parameters, the [V,C] lm-head gradient) runs ⌈A/factor⌉ times instead of A times, and the
 * GEMMs are larger. bench/step-traffic.ts, GPT-2 124M bf16, one step of 4 × B8 T512: 107 ms / 205 GB modelled as
 * four micro-batches, 98 ms / 192 GB as one B32 micro-batch. The price is activation memory: factor × larger
 * (bench/results: 12.8 GB peak at B8, 38.6 GB at B32 on the H200). With padded (unpacked) data, rows of different
 * lengths are padded to the group's longest: more positions computed, so it pays most with packing.
 * Legend: A micro-batches per step, B rows, T length.
 */
import type { MicroBatch } from './types';
import { SftError } from '../util/errors';

/** Rows of `group` stacked into one micro-batch of max(T) columns (see the header). */
function stackRows(group: readonly MicroBatch[]): MicroBatch {
  const B = group.reduce((s, mb) => s + mb.B, 0);
  const T = Math.max(...group.map((mb) => mb.T));
  const out: MicroBatch = { B, T, inputIds: new Int32Array(B * T), targets: new Int32Array(B * T), weights: new Float32Array(B * T), positions: new Int32Array(B * T), segments: new Int32Array(B * T) };
  let row = 0;
  for (const mb of group) {
    for (let b = 0; b < mb.B; b++, row++) {
      const src = b * mb.T;
      const dst = row * T;
      out.inputIds.set(mb.inputIds.subarray(src, src + mb.T), dst);
      out.targets.set(mb.targets.subarray(src, src + mb.T), dst);
      out.weights.set(mb.weights.subarray(src, src + mb.T), dst);
      out.positions.set(mb.positions.subarray(src, src + mb.T), dst);
      out.segments.set(mb.segments.subarray(src, src + mb.T), dst);
    }
  }
  return out;
}

/** The step's micro-batches in groups of `factor` (the last group may be smaller), each group as one micro-batch. */
export function mergeMicroBatches(mbs: readonly MicroBatch[], factor: number): MicroBatch[] {
  if (!(Number.isInteger(factor) && factor >= 1)) throw new SftError(`merge_micro_batches must be an integer ≥ 1, got ${factor}`, 'merge_micro_batches');
  if (factor === 1 || mbs.length <= 1) return mbs.slice();
  const out: MicroBatch[] = [];
  for (let i = 0; i < mbs.length; i += factor) {
    const group = mbs.slice(i, i + factor);
    out.push(group.length === 1 ? group[0]! : stackRows(group));
  }
  return out;
}
