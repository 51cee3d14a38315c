// Merging a step's accumulation micro-batches (engine/mergeMicroBatches.ts; TrainingEngineOptions.mergeMicroBatches,
// run.json merge_micro_batches, SFT_MERGE_MICRO_BATCHES):
// - the merged micro-batch holds the rows in order, padded on the right with the engine's padding;
// - training with groups of 2 or 4 gives the step of the unmerged engine: same losses and gradient norms to fp32
//   summation order, same parameters after 3 steps (tiny model, fp32, dropout 0, micro-batches of different T,
//   a packed one among them, a step whose micro-batch count the factor does not divide);
// - bad factors are errors naming the option / variable / run.json key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { mergeMicroBatches } from '../../native-runner/engine/mergeMicroBatches';
import { mergeFactorOf, TrainingEngine } from '../../native-runner/engine/trainingEngine';
import type { StepInput } from '../../native-runner/engine/types';
import { parseRunConfig } from '../../native-runner/train/config';
import { readConfig } from '../../native-runner/model/config';
import { initGpt2Params } from '../../native-runner/model/gpt2Params';
import { packedBatch, paddedBatch, relL2, type Example } from './helpers';

const ex = (ids: number[]): Example => ({ ids, trained: ids.map((_, i) => i > 0) });
const A = paddedBatch([ex([5, 6, 7]), ex([8, 9])], 0); // B2 T3
const Bm = paddedBatch([ex([10, 11, 12, 13, 14])], 0); // B1 T5
const Cm = packedBatch([[ex([1, 2]), ex([3, 4, 5])]], 6, 0); // B1 T6, two segments

test('mergeMicroBatches: rows stacked in order, each padded to the group T with ids/targets/positions 0, weight 0, segment 0', () => {
  const [m] = mergeMicroBatches([A, Bm], 2);
  assert.equal(m!.B, 3);
  assert.equal(m!.T, 5);
  const row = (arr: ArrayLike<number>, r: number) => Array.from(arr).slice(r * 5, r * 5 + 5);
  assert.deepEqual(row(m!.inputIds, 0), [5, 6, 7, 0, 0]);
  assert.deepEqual(row(m!.inputIds, 1), [8, 9, 0, 0, 0]);
  assert.deepEqual(row(m!.inputIds, 2), [10, 11, 12, 13, 14]);
  assert.deepEqual(row(m!.segments, 0), [1, 1, 1, 0, 0]);
  assert.deepEqual(row(m!.weights, 1), [1, 0, 0, 0, 0]);
  assert.deepEqual(row(m!.targets, 0), [6, 7, 0, 0, 0]);
  assert.deepEqual(row(m!.positions, 0), [0, 1, 2, 0, 0]);
  // Groups of 2 over 3 micro-batches: [A+B], [C] (C as it is); factor 1 and a single micro-batch: unchanged.
  const g = mergeMicroBatches([A, Bm, Cm], 2);
  assert.equal(g.length, 2);
  assert.equal(g[1], Cm);
  assert.deepEqual(mergeMicroBatches([A, Bm], 1), [A, Bm]);
  assert.equal(mergeMicroBatches([A, Bm, Cm], 8).length, 1);
  assert.throws(() => mergeMicroBatches([A], 0), /merge_micro_batches must be an integer ≥ 1, got 0/);
});

test('merge factor: option, else SFT_MERGE_MICRO_BATCHES, else 1; bad values name their source; run.json merge_micro_batches is checked', () => {
  assert.equal(mergeFactorOf(undefined, {}), 1);
  assert.equal(mergeFactorOf(undefined, { SFT_MERGE_MICRO_BATCHES: ' 4 ' }), 4);
  assert.equal(mergeFactorOf(2, { SFT_MERGE_MICRO_BATCHES: '4' }), 2);
  assert.throws(() => mergeFactorOf(undefined, { SFT_MERGE_MICRO_BATCHES: 'two' }), /SFT_MERGE_MICRO_BATCHES must be an integer ≥ 1, got "two"/);
  assert.throws(() => mergeFactorOf(1.5, {}), /merge_micro_batches must be an integer ≥ 1, got 1.5/);
  const base = { model_name_or_path: '/m', dataset: '/d.jsonl' };
  assert.equal(parseRunConfig({ ...base, merge_micro_batches: 4 }, '/').config.merge_micro_batches, 4);
  assert.equal(parseRunConfig(base, '/').config.merge_micro_batches, 1);
  assert.throws(() => parseRunConfig({ ...base, merge_micro_batches: 0 }, '/'), /merge_micro_batches/);
  assert.throws(() => parseRunConfig({ ...base, merge_micro_batches: 2.5 }, '/'), /merge_micro_batches/);
});

const config = readConfig(path.resolve(__dirname, '../../samples/tiny-gpt2-chat'));

// Adam's eps at 1: the update is ~lr·m (linear in the gradients), so the parameter change compares the gradients
// themselves; at 1e-8 the first step is lr·sign(g), which flips on fp32 noise where g ≈ 0.
const EPS = 1;

async function train(merge: number) {
  const e = await TrainingEngine.create({ config, params: initGpt2Params(config, 7), device: 'cpu', stepsPerRun: 3, mergeMicroBatches: merge, dropout: 0, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: EPS, maxGradNorm: 1, seed: 0 });
  try {
    const steps: StepInput[] = [
      { lr: 1e-3, microBatches: [A, Bm, Cm, A] },
      { lr: 2e-3, microBatches: [Bm, Cm, A] }, // 3 micro-batches: groups of 2 leave one alone
      { lr: 1e-3, microBatches: [Cm, A, Bm, Cm] },
    ];
    const metrics = await e.runSteps(steps);
    return { metrics, params: e.getParams() };
  } finally {
    await e.dispose();
  }
}

test("tiny model, 3 steps, fp32: groups of 2 and of 4 train the same steps as one micro-batch at a time", async (t) => {
  let worst = 0;
  const one = await train(1);
  for (const merge of [2, 4]) {
    const m = await train(merge);
    m.metrics.forEach((s, k) => {
      const r = one.metrics[k]!;
      assert.ok(Math.abs(s.loss - r.loss) <= 1e-6 * r.loss, `merge ${merge} step ${k + 1}: loss ${s.loss} vs ${r.loss}`);
      assert.ok(Math.abs(s.gradNorm - r.gradNorm) <= 1e-5 * r.gradNorm, `merge ${merge} step ${k + 1}: norm ${s.gradNorm} vs ${r.gradNorm}`);
      assert.equal(s.tokens, r.tokens);
    });
    // The change of every parameter tensor over the 3 steps.
    const p0 = initGpt2Params(config, 7);
    for (const [name, t] of one.params) {
      const before = p0.get(name)!.data;
      const change = (x: Float32Array) => x.map((v, i) => v - before[i]!);
      const d = relL2(change(m.params.get(name)!.data), change(t.data));
      worst = Math.max(worst, d);
      assert.ok(d < 1e-4, `merge ${merge}: ${name} changed differently (relative L2 ${d})`);
    }
  }
  t.diagnostic(`worst relative L2 of a parameter change: ${worst.toExponential(2)}`);
});
