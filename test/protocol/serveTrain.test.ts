// The real runner trains over the protocol: bad config → error reply naming the key, train → progress /
// metrics / state events, a second train is refused, stop mid-run saves at the step boundary, and closing
// stdin during training ends the process cleanly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkpointProblem } from '../../native-runner/train/checkpoint';
import { readMetrics } from '../../native-runner/train/metricsLog';
import { ROOT, RunnerProcess } from './helpers/runnerProcess';

function config(out: string, extra: Record<string, unknown> = {}) {
  return {
    model_name_or_path: 'samples/tiny-gpt2-chat',
    dataset: 'test/fixtures/train/dolly-small.jsonl',
    dataset_format: 'dolly',
    output_dir: out,
    test_size: 0,
    per_device_train_batch_size: 2,
    gradient_accumulation_steps: 1,
    max_steps: 500,
    logging_steps: 1,
    save_steps: 1000,
    ...extra,
  };
}

test('serve: train, refuse a second run, stop mid-run with a checkpoint, then exit on stdin close', { timeout: 180_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-serve-train-'));
  const r = new RunnerProcess();
  try {
    const bad = await r.request('train', { config: { ...config(out), learning_rte: 1 }, base_dir: ROOT });
    assert.equal(bad.ok, false);
    if (!bad.ok) assert.match(bad.message, /learning_rte: unknown key \(did you mean "learning_rate"\?\)/);

    const started = await r.request('train', { config: config(out), base_dir: ROOT });
    assert.ok(started.ok, started.ok ? '' : started.message);
    if (started.ok) {
      assert.equal(started.result.run_dir, out);
      assert.equal(started.result.total_steps, 500);
      assert.equal(started.result.start_step, 0);
    }
    await r.waitEvent((e) => e.event === 'state' && e.data.status === 'training');
    const again = await r.request('train', { config: config(out), base_dir: ROOT });
    assert.equal(again.ok, false);
    if (!again.ok) assert.match(again.message, /already in progress/);

    await r.waitEvent((e) => e.event === 'progress' && e.data.step >= 3);
    const st = await r.request('status', {});
    assert.ok(st.ok && st.result.status === 'training' && st.result.step >= 3);
    const stop = await r.request('stop', { save: true });
    assert.ok(stop.ok && stop.result.stopping);
    const done = await r.waitEvent((e) => e.event === 'state' && e.data.status === 'finished');
    const m = /stopped at step (\d+) of 500/.exec((done.data as { message?: string }).message ?? '');
    assert.ok(m, JSON.stringify(done.data));
    const step = Number(m[1]);
    assert.ok(step >= 3 && step < 500);
    assert.equal(checkpointProblem(path.join(out, `checkpoint-${step}`)), null, 'a complete checkpoint at the stop step');
    const after = await r.request('status', {});
    assert.ok(after.ok);
    if (after.ok) {
      assert.equal(after.result.status, 'finished');
      assert.equal(after.result.step, step);
    }
    // the metrics events are metrics.jsonl's records
    const evs = r.events.filter((e) => e.event === 'metrics').map((e) => e.data);
    assert.deepEqual(evs, readMetrics(path.join(out, 'metrics.jsonl')));
    assert.deepEqual(evs[evs.length - 1], { type: 'save', step, path: path.join(out, `checkpoint-${step}`) });

    r.close();
    const ex = await r.exited;
    assert.equal(ex.code, 0, r.stderr);
    assert.deepEqual(r.invalid, []);
  } finally {
    r.child.kill();
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test('serve: closing stdin during training stops at the next boundary and exits 0', { timeout: 120_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-serve-close-'));
  const r = new RunnerProcess();
  try {
    const started = await r.request('train', { config: config(out), base_dir: ROOT });
    assert.ok(started.ok, started.ok ? '' : started.message);
    await r.waitEvent((e) => e.event === 'progress' && e.data.step >= 2);
    const t0 = Date.now();
    r.close();
    const ex = await r.exited;
    assert.equal(ex.code, 0, r.stderr);
    assert.ok(Date.now() - t0 < 15_000, `exited after ${Date.now() - t0} ms`);
    assert.deepEqual(r.invalid, []);
    assert.deepEqual(fs.readdirSync(out).filter((f) => f.startsWith('checkpoint-')), [], 'closing stdin does not save');
  } finally {
    r.child.kill();
    fs.rmSync(out, { recursive: true, force: true });
  }
});
