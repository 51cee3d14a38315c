// Schedule: step counts as the seed recipe's run computes them, and lr values equal to transformers'.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { computeStepSchedule, cursorOfStep, learningRateAt, lrFactor, resolveInterval, stepsEvery } from '../../native-runner/train/schedule';

const golden = JSON.parse(fs.readFileSync(path.join(__dirname, '../fixtures/golden/tiny-golden.json'), 'utf8'));

test('cosine schedule equals transformers get_cosine_schedule_with_warmup (golden, 1335 steps) within 1e-12', () => {
  const cs = golden.cosine_schedule as { lr: number; warmup: number; total: number; lrs: number[] };
  assert.equal(cs.lrs.length, cs.total);
  let worst = 0;
  for (let s = 0; s < cs.total; s++) {
    const v = learningRateAt({ type: 'cosine', learningRate: cs.lr, warmupSteps: cs.warmup, totalSteps: cs.total }, s);
    worst = Math.max(worst, Math.abs(v - cs.lrs[s]!));
  }
  assert.ok(worst <= 1e-12, `max abs diff ${worst}`);
  assert.equal(cs.lrs[0], 0);
});

test('seed recipe: 14,250 examples, batch 8 x accumulation 4, 3 epochs -> 1782 micro-batches, 446 steps/epoch, 1338 total, warmup 134', () => {
  const microBatchesPerEpoch = Math.ceil(14250 / 8);
  assert.equal(microBatchesPerEpoch, 1782);
  const s = computeStepSchedule({ microBatchesPerEpoch, gradientAccumulationSteps: 4, numTrainEpochs: 3, maxSteps: -1, warmupRatio: 0.1, warmupSteps: 0 });
  assert.equal(s.stepsPerEpoch, 446);
  assert.equal(s.totalSteps, 1338);
  assert.equal(s.warmupSteps, 134);
  assert.equal(s.epochs, 3);
  // the last group of an epoch is short: 1782 = 445*4 + 2
  assert.deepEqual(cursorOfStep(s, 445), { epoch: 0, stepInEpoch: 445, microStart: 1780, microEnd: 1782 });
  assert.deepEqual(cursorOfStep(s, 446), { epoch: 1, stepInEpoch: 0, microStart: 0, microEnd: 4 });
});

test('max_steps overrides epochs, warmup_steps overrides the ratio, fractional epochs round up', () => {
  const s = computeStepSchedule({ microBatchesPerEpoch: 10, gradientAccumulationSteps: 3, numTrainEpochs: 3, maxSteps: 9, warmupRatio: 0.5, warmupSteps: 2 });
  assert.equal(s.stepsPerEpoch, 4);
  assert.equal(s.totalSteps, 9);
  assert.equal(s.warmupSteps, 2);
  assert.equal(s.epochs, 3);
  const f = computeStepSchedule({ microBatchesPerEpoch: 10, gradientAccumulationSteps: 1, numTrainEpochs: 1.25, maxSteps: -1, warmupRatio: 0, warmupSteps: 0 });
  assert.equal(f.totalSteps, 13);
  assert.equal(f.warmupSteps, 0);
});

test('linear, constant and constant_with_warmup follow transformers lambdas', () => {
  // linear with warmup 2, total 10
  assert.deepEqual([0, 1, 2, 6, 10, 11].map((s) => lrFactor('linear', s, 2, 10)), [0, 0.5, 1, 0.5, 0, 0]);
  assert.deepEqual([0, 1, 2, 50].map((s) => lrFactor('constant_with_warmup', s, 2, 10)), [0, 0.5, 1, 1]);
  assert.deepEqual([0, 5].map((s) => lrFactor('constant', s, 2, 10)), [1, 1]);
  // cosine without warmup: halfway is 0.5, end is 0
  assert.ok(Math.abs(lrFactor('cosine', 5, 0, 10) - 0.5) < 1e-15);
  assert.equal(lrFactor('cosine', 0, 0, 10), 1);
  assert.ok(lrFactor('cosine', 10, 0, 10) < 1e-15);
});

test('intervals: integers, ratios and the fire steps', () => {
  assert.equal(resolveInterval(10, 1338), 10);
  assert.equal(resolveInterval(0.1, 1338), 134);
  assert.deepEqual(stepsEvery(500, 1338), [500, 1000]);
  assert.deepEqual(stepsEvery(500, 1338, true), [500, 1000, 1338]);
  assert.deepEqual(stepsEvery(5, 5, true), [5]);
});
