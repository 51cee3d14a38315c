// Pre-flight plan: the seed recipe's numbers, eval/save steps, surviving checkpoints, padding/packing efficiency.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRunConfig } from '../../native-runner/train/config';
import { computePlan, packedRowLengths } from '../../native-runner/train/plan';
import { checkResult } from '../../protocol/runner';

const cfg = (extra: Record<string, unknown> = {}) => parseRunConfig({ model_name_or_path: '/m', dataset: '/d.jsonl', ...extra }, '/').config;

test('seed recipe on 14,250 examples: 1782 micro-batches/epoch, 446 steps/epoch, 1338 total, warmup 134', () => {
  const lengths = Array.from({ length: 14250 }, (_, i) => 100 + (i % 50));
  const plan = computePlan(cfg(), { trainLengths: lengths, trainedCounts: lengths.map((l) => l >> 1), evalExamples: 750, truncated: 0, noTrained: 0 });
  assert.equal(checkResult('plan', plan), null, 'the plan satisfies the protocol schema');
  assert.equal(plan.micro_batches_per_epoch, 1782);
  assert.equal(plan.steps_per_epoch, 446);
  assert.equal(plan.total_steps, 1338);
  assert.equal(plan.warmup_steps, 134);
  assert.equal(plan.effective_batch_size, 32);
  assert.deepEqual(plan.eval_at, [200, 400, 600, 800, 1000, 1200, 1338]);
  assert.deepEqual(plan.save_at, [500, 1000, 1338]);
  assert.deepEqual(plan.kept_checkpoints, [500, 1000, 1338]);
  assert.equal(plan.logging_steps, 10);
  assert.equal(plan.steps_per_run, 8);
  // lr curve: starts at 0, peaks at the end of warmup (step 135 uses s = 134), ends near 0
  assert.equal(plan.lr_curve[0]!.step, 1);
  assert.equal(plan.lr_curve[0]!.lr, 0);
  const peak = plan.lr_curve.find((p) => p.step === 135)!;
  assert.equal(peak.lr, 2e-5);
  assert.ok(plan.lr_curve[plan.lr_curve.length - 1]!.lr < 1e-9);
  // padding: consecutive lengths within a batch of 8 differ by at most 7 -> efficiency close to 1
  assert.ok(plan.efficiency > 0.95 && plan.efficiency < 1, String(plan.efficiency));
});

test('save_total_limit keeps the newest checkpoints; padding efficiency is exact for a known batch', () => {
  const plan = computePlan(cfg({ per_device_train_batch_size: 2, gradient_accumulation_steps: 1, num_train_epochs: 1, save_steps: 1, save_total_limit: 2, eval_strategy: 'no' }), {
    trainLengths: [10, 30, 20, 20, 5],
    trainedCounts: [1, 2, 3, 4, 5],
    evalExamples: 0,
    truncated: 1,
    noTrained: 0,
  });
  assert.equal(plan.micro_batches_per_epoch, 3);
  assert.equal(plan.total_steps, 3);
  assert.deepEqual(plan.save_at, [1, 2, 3]);
  assert.deepEqual(plan.kept_checkpoints, [2, 3]);
  assert.deepEqual(plan.eval_at, []);
  // slots: 2*30 + 2*20 + 1*5 = 105, real 85
  assert.equal(plan.efficiency, 85 / 105);
  assert.equal(plan.tokens_per_step, 35);
  assert.equal(plan.trained_tokens_per_step, 5);
  assert.ok(plan.warnings.some((w) => w.includes('truncated')));
});

test('packing: best-fit-decreasing rows never exceed max_length and hold every token', () => {
  const lengths = Array.from({ length: 500 }, (_, i) => 1 + ((i * 7919) % 120));
  const rows = packedRowLengths(lengths, 128);
  assert.ok(rows.every((r) => r <= 128));
  assert.equal(rows.reduce((a, b) => a + b, 0), lengths.reduce((a, b) => a + b, 0));
  const lowerBound = Math.ceil(lengths.reduce((a, b) => a + b, 0) / 128);
  assert.ok(rows.length <= lowerBound * 1.1 + 1, `${rows.length} rows vs bound ${lowerBound}`);
  const plan = computePlan(cfg({ packing: true, max_length: 128, per_device_train_batch_size: 4 }), {
    trainLengths: lengths, trainedCounts: lengths, evalExamples: 10, truncated: 0, noTrained: 0,
  });
  assert.equal(plan.micro_batches_per_epoch, Math.ceil(rows.length / 4));
  assert.ok(plan.efficiency > 0.9, `packing efficiency ${plan.efficiency}`);
});
