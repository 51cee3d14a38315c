// The Start Training form's pre-flight plan: the runner's computePlan for the seed recipe (14,250 train
// examples, batch 8 × accumulation 4, 3 epochs, warmup 10 %, eval 200, save 500, keep 3) rendered into the
// rows the user reads — the step counts users expect from HF Trainer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRunConfig } from '../../native-runner/train/config';
import { computePlan } from '../../native-runner/train/plan';
import { formatCount, formatStepList, renderPlan } from '../../src/planView';

function seedPlan(overrides: Record<string, unknown> = {}, n = 14_250) {
  const { config } = parseRunConfig({ model_name_or_path: '/m', dataset: '/d.jsonl', ...overrides }, '/tmp');
  // Lengths 100..499 tokens, cycled; a quarter of each example trained.
  const trainLengths = Array.from({ length: n }, (_, i) => 100 + (i % 400));
  return computePlan(config, { trainLengths, trainedCounts: trainLengths.map((l) => Math.floor(l / 4)), evalExamples: 750, truncated: 0, noTrained: 0 });
}

function row(view: ReturnType<typeof renderPlan>, label: string): string {
  const r = view.rows.find((x) => x.label === label);
  assert.ok(r, `no row "${label}" in ${view.rows.map((x) => x.label).join(', ')}`);
  return r.value;
}

test('seed recipe: 14,250 examples, 8 × 4, 3 epochs → 1,782 micro-batches, 446 steps/epoch, 1,338 total, 134 warmup', () => {
  const plan = seedPlan();
  const v = renderPlan(plan);
  assert.equal(row(v, 'Examples'), '14,250 train · 750 eval');
  assert.equal(row(v, 'Batch'), '8 × 4 accumulation = 32 examples per step');
  assert.equal(row(v, 'Micro-batches per epoch'), '1,782');
  assert.equal(row(v, 'Steps per epoch'), '446');
  assert.equal(row(v, 'Total steps'), '1,338');
  assert.equal(row(v, 'Warmup steps'), '134 (10.0%)');
  assert.equal(row(v, 'Learning rate'), '2.00e-5 peak, cosine schedule');
  // Evals every 200 steps and at the end; saves every 500 and at the end (HF saves the final step).
  assert.deepEqual(v.evalSteps.slice(0, 6), [200, 400, 600, 800, 1000, 1200]);
  assert.equal(v.evalSteps.at(-1), 1338);
  assert.equal(row(v, 'Evaluations'), `${v.evalSteps.length} at steps ${formatStepList(v.evalSteps)}`);
  assert.deepEqual(v.saveSteps.slice(0, 2), [500, 1000]);
  assert.equal(v.keptCheckpoints.length, Math.min(3, v.saveSteps.length));
  assert.deepEqual(v.keptCheckpoints, v.saveSteps.slice(-3));
  assert.equal(row(v, 'Checkpoints kept at the end'), v.keptCheckpoints.map((s) => `checkpoint-${s}`).join(', '));
  assert.equal(v.totalSteps, 1338);
  assert.equal(v.warmupSteps, 134);
  // The lr curve rises through warmup to the peak and decays to ~0 at the end.
  const peak = Math.max(...v.lrCurve.map((p) => p.lr));
  assert.ok(Math.abs(peak - 2e-5) < 1e-9);
  assert.ok(v.lrCurve.at(-1)!.lr < 1e-7);
  assert.ok(/of fed slots are real tokens$/.test(row(v, 'Padding efficiency')));
});

test('max_steps and packing change the rows that say so', () => {
  const v = renderPlan(seedPlan({ max_steps: 100, packing: true, save_total_limit: 1 }));
  assert.equal(row(v, 'Total steps'), '100');
  assert.equal(row(v, 'Warmup steps'), '10 (10.0%)');
  assert.ok(row(v, 'Packing efficiency'));
  assert.equal(v.keptCheckpoints.length, 1);
  assert.equal(v.keptCheckpoints[0], v.saveSteps.at(-1));
});

test('tiny data sets produce warnings the form shows', () => {
  const v = renderPlan(seedPlan({}, 10));
  assert.ok(v.warnings.some((w) => /fewer examples \(10\) than one effective batch/.test(w)), v.warnings.join('\n'));
});

test('number formatting', () => {
  assert.equal(formatCount(1234567), '1,234,567');
  assert.equal(formatCount(999), '999');
  assert.equal(formatCount(1234.5678, 1), '1,234.6');
  assert.equal(formatStepList([]), 'none');
  assert.equal(formatStepList([1, 2, 3]), '1, 2, 3');
  assert.equal(formatStepList([1, 2, 3, 4, 5, 6, 7, 8], 4), '1, 2, 3 … 8 (8 in all)');
});
