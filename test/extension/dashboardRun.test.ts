// The dashboard's per-run data (src/runFolder readDashboardRun, what src/panels/dashboard.ts posts as 'runs'):
// summary and records from a single read of metrics.jsonl, counted with an fs spy; readRun given the parsed
// metrics reads none.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readDashboardRun, readMetrics, readRun } from '../../src/runFolder';

// The CommonJS module object that runFolder's `import { readFileSync } from 'node:fs'` calls through.
const fs = createRequire(__filename)('node:fs') as typeof import('node:fs');

function countMetricsReads<T>(fn: () => T): { result: T; reads: number } {
  let reads = 0;
  const real = fs.readFileSync;
  const spy = mock.method(fs, 'readFileSync', (...args: unknown[]) => {
    if (String(args[0]).endsWith('metrics.jsonl')) reads++;
    return (real as (...a: unknown[]) => unknown)(...args);
  });
  try {
    return { result: fn(), reads };
  } finally {
    spy.mock.restore();
  }
}

const train = (step: number, loss: number) => JSON.stringify({ type: 'train', step, epoch: step / 10, loss, grad_norm: 1, learning_rate: 1e-4, tokens: 100, tokens_per_second: 50, elapsed_s: step });
const evalRec = (step: number, eval_loss: number) => JSON.stringify({ type: 'eval', step, eval_loss, eval_tokens: 40 });

test('readDashboardRun: status, total steps and all records from one read of metrics.jsonl', () => {
  const root = mkdtempSync(join(tmpdir(), 'sft-dash-'));
  try {
    const dir = join(root, 'run-b');
    mkdirSync(join(dir, 'checkpoint-20'), { recursive: true });
    writeFileSync(join(dir, 'checkpoint-20', 'COMPLETE'), '');
    writeFileSync(join(dir, 'metrics.jsonl'), [JSON.stringify({ type: 'start', step: 0, total_steps: 40 }), train(10, 3.1), evalRec(20, 2.2), train(20, 2.4), 'not json'].join('\n') + '\n');
    writeFileSync(join(dir, 'run.json'), JSON.stringify({ max_steps: 99 }));

    const { result: d, reads } = countMetricsReads(() => readDashboardRun(dir));
    assert.equal(reads, 1);
    assert.equal(d.runDir, dir);
    assert.equal(d.name, 'run-b');
    assert.equal(d.status, 'stopped');
    assert.equal(d.totalSteps, 40);
    assert.deepEqual(d.records.map((r) => `${r.type}@${r.step}`), ['start@0', 'train@10', 'eval@20', 'train@20']);

    const live = countMetricsReads(() => readDashboardRun(dir, { status: 'training', step: 25, total: 50 }));
    assert.equal(live.reads, 1);
    assert.equal(live.result.status, 'training');
    assert.equal(live.result.totalSteps, 50);

    // The spy does count: readRun alone reads it once, and none when handed the parsed metrics.
    assert.equal(countMetricsReads(() => readRun(dir)).reads, 1);
    const metrics = readMetrics(dir);
    const given = countMetricsReads(() => readRun(dir, undefined, metrics));
    assert.equal(given.reads, 0);
    assert.equal(given.result.badMetricLines, 1);
    assert.deepEqual(given.result.bestEval, { step: 20, loss: 2.2 });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
