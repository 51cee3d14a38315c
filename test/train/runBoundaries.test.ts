// On CUDA a run boundary may cost a host round trip of the whole training state, so runs there span logging
// steps (only evals, saves and the end cut them) while the train records stay per logging step. Checked here
// with the CPU engine standing in for the CUDA one: same records, fewer and longer runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseRunConfig } from '../../native-runner/train/config';
import { defaultDeps } from '../../native-runner/train/runtime';
import { Trainer, type TrainerDeps } from '../../native-runner/train/trainer';
import type { MetricsRecord } from '../../protocol/runner';

const ROOT = path.join(__dirname, '../..');
const MODEL = path.join(ROOT, 'samples/tiny-gpt2-chat');
const DATA = path.join(ROOT, 'test/fixtures/train/dolly-small.jsonl');

async function runWith(device: 'cpu' | 'cuda'): Promise<{ records: MetricsRecord[]; runs: number[] }> {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), `sft-runs-${device}-`));
  try {
    const { config } = parseRunConfig(
      {
        model_name_or_path: MODEL,
        dataset: DATA,
        dataset_format: 'dolly',
        output_dir: out,
        test_size: 4,
        per_device_train_batch_size: 4,
        gradient_accumulation_steps: 1,
        num_train_epochs: 2,
        learning_rate: 3e-3,
        warmup_steps: 1,
        logging_steps: 2,
        eval_steps: 4,
        save_steps: 8,
        steps_per_run: 8,
        bf16: false,
        device,
      },
      '/',
    );
    const runs: number[] = [];
    const base = defaultDeps();
    const deps: TrainerDeps = {
      ...base,
      async createEngine(o) {
        const engine = await base.createEngine({ ...o, device: 'cpu' });
        const runSteps = engine.runSteps.bind(engine);
        engine.runSteps = async (steps) => {
          runs.push(steps.length);
          return runSteps(steps);
        };
        return engine;
      },
    };
    const records: MetricsRecord[] = [];
    const trainer = await Trainer.prepare(config, deps, { listener: { metrics: (r) => records.push(r) } });
    await trainer.run();
    return { records, runs };
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

const strip = (rs: MetricsRecord[]) =>
  rs.map((r) => {
    const { tokens_per_second: _t, elapsed_s: _e, path: _p, ...rest } = r as Record<string, unknown>;
    return rest;
  });

test('on cuda runs span logging steps; the train, eval and save records are the same as on the cpu', { timeout: 180_000 }, async () => {
  const cpu = await runWith('cpu');
  const cuda = await runWith('cuda');
  assert.deepEqual(cpu.runs, [1, 1, 2, 2, 2], 'cpu: runs end at logging_first_step and every logging step');
  assert.deepEqual(cuda.runs, [4, 4], 'cuda: runs end only at evals, saves and the end');
  assert.deepEqual(
    cuda.records.filter((r) => r.type === 'train').map((r) => r.step),
    [1, 2, 4, 6, 8],
  );
  const a = strip(cpu.records);
  const b = strip(cuda.records);
  assert.equal(b.length, a.length);
  for (let i = 0; i < a.length; i++) {
    for (const [k, v] of Object.entries(a[i]!)) {
      const w = (b[i] as Record<string, unknown>)[k];
      if (typeof v === 'number') assert.ok(Math.abs(v - (w as number)) <= 1e-5 * Math.max(1, Math.abs(v)), `record ${i} ${k}: ${v} vs ${w}`);
      else assert.deepEqual(w, v, `record ${i} ${k}`);
    }
  }
});
