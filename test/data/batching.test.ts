// Micro-batches: shifted targets and weights, padding, packing invariants (no cross-example targets,
// positions restarting, segment ids), determinism for resume, and the golden padded batch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  buildMicroBatch,
  epochMicroBatches,
  epochOrder,
  groupIntoSteps,
  makeMicroBatches,
  microBatchCount,
  packBestFitDecreasing,
  trainedTargets,
} from '../../native-runner/data/batching';
import { Rng } from '../../native-runner/util/rng';
import type { MicroBatch } from '../../native-runner/engine/types';

const PAD = 50256;
type Ex = { inputIds: number[]; trained: Uint8Array };
const ex = (ids: number[], trained: number[]): Ex => ({ inputIds: ids, trained: Uint8Array.from(trained) });

/** Σ over t ≥ 1 of trained[t]: what the shifted weights must add up to for one example. */
const shiftedTrained = (e: Ex) => e.trained.slice(1).reduce((s, x) => s + x, 0);

function randomExamples(n: number, maxLen: number, seed: number): Ex[] {
  const r = new Rng(seed);
  return Array.from({ length: n }, () => {
    const len = 2 + r.nextInt(maxLen - 1);
    const ids = Array.from({ length: len }, () => r.nextInt(50000));
    const cut = 1 + r.nextInt(len - 1); // prompt then answer
    return ex(ids, ids.map((_, i) => (i >= cut ? 1 : 0)));
  });
}

test('golden padded batch: ids, shifted targets and weights match transformers (pad = eos never trained, real eos trained)', () => {
  const g = JSON.parse(fs.readFileSync(path.join(__dirname, '../fixtures/golden/tiny-golden.json'), 'utf8')).forward as {
    input_ids: number[][];
    attention_mask: number[][];
    labels: number[][];
  };
  const examples = g.input_ids.map((row, b) => {
    const n = g.attention_mask[b]!.reduce((s, x) => s + x, 0);
    return ex(row.slice(0, n), g.labels[b]!.slice(0, n).map((l) => (l === -100 ? 0 : 1)));
  });
  const [mb] = makeMicroBatches(examples, [0, 1], { batchSize: 2, padId: PAD });
  assert.equal(mb!.B, 2);
  assert.equal(mb!.T, 35);
  assert.deepEqual(Array.from(mb!.inputIds), g.input_ids.flat());
  for (let b = 0; b < 2; b++) {
    for (let t = 0; t < 35; t++) {
      const next = t + 1 < 35 ? g.labels[b]![t + 1]! : -100;
      assert.equal(mb!.weights[b * 35 + t], next === -100 ? 0 : 1, `weight b${b} t${t}`);
      if (next !== -100) assert.equal(mb!.targets[b * 35 + t], next);
      assert.equal(mb!.segments[b * 35 + t], g.attention_mask[b]![t]);
      assert.equal(mb!.positions[b * 35 + t], t);
    }
  }
  assert.equal(trainedTargets(mb!), 8 + 23);
});

test('padded batches: in order, batchSize rows, last batch short, right-padded to the longest row', () => {
  const exs = [ex([1, 2, 3], [0, 1, 1]), ex([4, 5], [0, 1]), ex([6, 7, 8, 9], [0, 0, 1, 1]), ex([10, 11], [0, 0])];
  const mbs = makeMicroBatches(exs, [2, 0, 1, 3], { batchSize: 3, padId: 0 });
  assert.equal(mbs.length, 2);
  const [a, b] = mbs as [MicroBatch, MicroBatch];
  assert.deepEqual([a.B, a.T, b.B, b.T], [3, 4, 1, 2]);
  assert.deepEqual(Array.from(a.inputIds), [6, 7, 8, 9, 1, 2, 3, 0, 4, 5, 0, 0]);
  assert.deepEqual(Array.from(a.targets), [7, 8, 9, 0, 2, 3, 0, 0, 5, 0, 0, 0]);
  assert.deepEqual(Array.from(a.weights), [0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0]);
  assert.deepEqual(Array.from(a.positions), [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]);
  assert.deepEqual(Array.from(a.segments), [1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0]);
  // An example with nothing trained yields an all-zero weight row (finite, valid ids) rather than anything odd.
  assert.deepEqual(Array.from(b.weights), [0, 0]);
  assert.deepEqual(Array.from(b.targets), [11, 0]);
  assert.equal(microBatchCount(exs, { batchSize: 3, padId: 0 }), 2);
});

test('epoch order: deterministic per (seed, epoch), differs across epochs, identity without shuffle', () => {
  const a = epochOrder(50, 42, 0);
  assert.deepEqual(a, epochOrder(50, 42, 0));
  assert.deepEqual([...a].sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i));
  assert.notDeepEqual(a, epochOrder(50, 42, 1));
  assert.notDeepEqual(a, epochOrder(50, 7, 0));
  assert.deepEqual(epochOrder(5, 42, 3, false), [0, 1, 2, 3, 4]);
});

test('best-fit-decreasing packing: known small case and capacity respected', () => {
  // Lengths sorted: 5(i0) 4(i1) 3(i2) 3(i3) 2(i4) 1(i5), capacity 8:
  // 5→bin0 (3 free); 4→bin1 (4 free); 3→bin0 (exact fit); 3→bin1 (1 free); 2→bin2; 1→bin1 (best fit).
  assert.deepEqual(packBestFitDecreasing([5, 4, 3, 3, 2, 1], 8), [[0, 2], [1, 3, 5], [4]]);
  const lengths = randomExamples(300, 64, 5).map((e) => e.inputIds.length);
  const bins = packBestFitDecreasing(lengths, 128);
  const seen = bins.flat().sort((x, y) => x - y);
  assert.deepEqual(seen, lengths.map((_, i) => i));
  for (const b of bins) assert.ok(b.reduce((s, i) => s + lengths[i]!, 0) <= 128);
  const total = lengths.reduce((s, x) => s + x, 0);
  assert.ok(bins.length <= Math.ceil(total / 128) + 2, `${bins.length} bins for ${total} tokens`);
  assert.throws(() => packBestFitDecreasing([3, 9], 8), /packing: example 1 has length 9, outside 1\.\.8/);
});

test('packed micro-batches: no target crosses examples, positions restart, segments 1..k, exact trained counts', () => {
  const exs = randomExamples(200, 60, 11);
  const maxLength = 128;
  const mbs = epochMicroBatches(exs, 42, 0, { batchSize: 4, padId: PAD, packing: true, maxLength });
  const seenExamples: string[] = [];
  let weightSum = 0;
  for (const mb of mbs) {
    assert.ok(mb.T <= maxLength);
    for (let b = 0; b < mb.B; b++) {
      let prevSeg = 0;
      let start = 0;
      for (let t = 0; t < mb.T; t++) {
        const i = b * mb.T + t;
        const seg = mb.segments[i]!;
        if (seg === 0) {
          assert.equal(mb.weights[i], 0, 'padding is never trained');
          continue;
        }
        if (seg !== prevSeg) {
          assert.equal(seg, prevSeg + 1, 'segments count up');
          assert.equal(mb.positions[i], 0, 'positions restart at each example');
          start = t;
          prevSeg = seg;
        } else assert.equal(mb.positions[i], t - start);
        const nextSeg = t + 1 < mb.T ? mb.segments[i + 1]! : 0;
        if (nextSeg !== seg) assert.equal(mb.weights[i], 0, 'last token of an example has no target');
        else assert.equal(mb.targets[i], mb.inputIds[i + 1]);
        weightSum += mb.weights[i]!;
      }
      // Reassemble each example of the row to check that every example appears exactly once.
      for (let s = 1; s <= prevSeg; s++) {
        const ids: number[] = [];
        for (let t = 0; t < mb.T; t++) if (mb.segments[b * mb.T + t] === s) ids.push(mb.inputIds[b * mb.T + t]!);
        seenExamples.push(ids.join(','));
      }
    }
  }
  assert.deepEqual(seenExamples.sort(), exs.map((e) => e.inputIds.join(',')).sort());
  assert.equal(weightSum, exs.reduce((s, e) => s + shiftedTrained(e), 0));
  const tokens = exs.reduce((s, e) => s + e.inputIds.length, 0);
  const rows = mbs.reduce((s, mb) => s + mb.B, 0);
  assert.ok(tokens / (rows * maxLength) > 0.9, `packing fill ${tokens / (rows * maxLength)}`);
});

test('packed bins are ordered by the epoch order; same seed and epoch give identical batches (resume)', () => {
  const exs = randomExamples(120, 40, 3);
  const opts = { batchSize: 3, padId: PAD, packing: true, maxLength: 96 };
  const e0 = epochMicroBatches(exs, 42, 0, opts);
  const again = epochMicroBatches(exs, 42, 0, opts);
  assert.deepEqual(again.map((m) => Array.from(m.inputIds)), e0.map((m) => Array.from(m.inputIds)));
  const e1 = epochMicroBatches(exs, 42, 1, opts);
  assert.equal(e1.length, e0.length);
  assert.notDeepEqual(e1.map((m) => m.inputIds[0]), e0.map((m) => m.inputIds[0]));
  // Without packing: the first row of batch k is example order[k * B].
  const order = epochOrder(exs.length, 42, 2);
  const plain = epochMicroBatches(exs, 42, 2, { batchSize: 5, padId: PAD });
  plain.forEach((mb, k) => assert.deepEqual(Array.from(mb.inputIds.slice(0, exs[order[k * 5]!]!.inputIds.length)), exs[order[k * 5]!]!.inputIds));
  assert.equal(plain.reduce((s, m) => s + trainedTargets(m), 0), exs.reduce((s, e) => s + shiftedTrained(e), 0));
});

test('a packed row pads after its last example with segment 0 and no weight', () => {
  const mb = buildMicroBatch([[ex([1, 2, 3], [0, 1, 1]), ex([4, 5], [0, 1])], [ex([6, 7], [1, 1])]], 0);
  assert.equal(mb.T, 5);
  assert.deepEqual(Array.from(mb.segments), [1, 1, 1, 2, 2, 1, 1, 0, 0, 0]);
  assert.deepEqual(Array.from(mb.positions.slice(0, 5)), [0, 1, 2, 0, 1]);
  assert.deepEqual(Array.from(mb.weights), [1, 1, 0, 1, 0, 1, 0, 0, 0, 0]);
  assert.deepEqual(Array.from(mb.targets.slice(0, 5)), [2, 3, 0, 5, 0]);
});

test('groupIntoSteps: accum micro-batches per step, a short last group still steps', () => {
  assert.deepEqual(groupIntoSteps([1, 2, 3, 4, 5], 2), [[1, 2], [3, 4], [5]]);
  assert.deepEqual(groupIntoSteps([1, 2], 4), [[1, 2]]);
  assert.throws(() => groupIntoSteps([1], 0), /gradient_accumulation_steps: must be a positive integer/);
  assert.throws(() => makeMicroBatches([], [], { batchSize: 0, padId: 0 }), /per_device_train_batch_size/);
});
