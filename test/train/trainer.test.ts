// End to end: train the tiny fixture model on a small Dolly file of our own, reload output_dir (shapes,
// tokenizer, chat template), eval loss down; metrics.jsonl layout, checkpoint rotation; non-finite stop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModel } from '../../native-runner/model/modelFolder';
import { listCheckpointDirs, checkpointProblem } from '../../native-runner/train/checkpoint';
import { parseRunConfig } from '../../native-runner/train/config';
import { evalModelOnFile } from '../../native-runner/train/evaluate';
import { readMetrics } from '../../native-runner/train/metricsLog';
import { defaultDeps } from '../../native-runner/train/runtime';
import { planRun } from '../../native-runner/train/services';
import { Trainer } from '../../native-runner/train/trainer';
import { SftError } from '../../native-runner/util/errors';
import type { MetricsRecord } from '../../protocol/runner';
import { withEnv } from '../engine/helpers';
import { checkEvent } from '../../protocol/runner';

const ROOT = path.join(__dirname, '../..');
const MODEL = path.join(ROOT, 'samples/tiny-gpt2-chat');
const DATA = path.join(ROOT, 'test/fixtures/train/dolly-small.jsonl');

test('train a few steps, reload output_dir: same shapes, chat tokenizer, eval loss down', { timeout: 180_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-train-'));
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
        save_steps: 4,
        save_total_limit: 1,
        steps_per_run: 3,
      },
      '/',
    );
    const events: MetricsRecord[] = [];
    const states: string[] = [];
    const trainer = await Trainer.prepare(config, defaultDeps(), {
      listener: {
        metrics: (r) => {
          assert.equal(checkEvent('metrics', r), null);
          events.push(r);
        },
        state: (s) => states.push(s),
        progress: (p) => assert.equal(checkEvent('progress', p), null),
      },
    });
    // 16 train examples / batch 4 = 4 steps per epoch, 2 epochs
    assert.equal(trainer.totalSteps, 8);
    const outcome = await trainer.run();
    assert.equal(outcome.status, 'finished');
    assert.deepEqual(states, ['training', 'finished']);

    const metrics = readMetrics(path.join(out, 'metrics.jsonl'));
    assert.deepEqual(metrics, events, 'metrics.jsonl holds exactly the emitted records');
    const steps = (type: string) => metrics.filter((r) => r.type === type).map((r) => r.step);
    assert.deepEqual(steps('train'), [1, 2, 4, 6, 8], 'logging_first_step, every 2 steps');
    assert.deepEqual(steps('eval'), [4, 8]);
    assert.deepEqual(steps('save'), [4, 8]);
    const epochs = metrics.filter((r) => r.type === 'train').map((r) => (r as { epoch: number }).epoch);
    assert.deepEqual(epochs, [0.25, 0.5, 1, 1.5, 2]);
    const evals = metrics.filter((r) => r.type === 'eval') as { eval_loss: number }[];
    assert.ok(evals[1]!.eval_loss < evals[0]!.eval_loss, `eval loss ${evals[0]!.eval_loss} -> ${evals[1]!.eval_loss}`);

    // save_total_limit 1: only the newest checkpoint is left, and it is complete
    const ckpts = listCheckpointDirs(out);
    assert.deepEqual(ckpts.map((c) => c.step), [8]);
    assert.equal(checkpointProblem(ckpts[0]!.dir), null);

    // the final model folder reloads with the same shapes and a chat tokenizer
    const before = await loadModel(MODEL);
    const after = await loadModel(out);
    assert.deepEqual([...after.params.keys()].sort(), [...before.params.keys()].sort());
    for (const [name, t] of before.params) assert.deepEqual(after.params.get(name)!.shape, t.shape, name);
    assert.equal(after.tokenizer.tokenToId('<|user|>'), 50257);
    assert.equal(after.tokenizer.tokenToId('<|assistant|>'), 50258);
    assert.equal(after.tokenizer.tokenToId('<|system|>'), 50259);
    const tc = JSON.parse(fs.readFileSync(path.join(out, 'tokenizer_config.json'), 'utf8'));
    assert.match(tc.chat_template, /<\|assistant\|>/);
    const runJson = JSON.parse(fs.readFileSync(path.join(out, 'run.json'), 'utf8'));
    assert.equal(runJson.learning_rate, 3e-3);
    assert.equal(runJson.lr_scheduler_type, 'cosine');
    assert.equal(runJson.dataset, DATA);
    // weights changed, and the whole-file eval loss went down
    assert.ok(after.params.get('transformer.h.0.mlp.c_fc.weight')!.data.some((x, i) => x !== before.params.get('transformer.h.0.mlp.c_fc.weight')!.data[i]));
    const e0 = await evalModelOnFile({ model: MODEL, dataset: DATA, dataset_format: 'dolly' });
    const e1 = await evalModelOnFile({ model: out, dataset: DATA, dataset_format: 'dolly' });
    assert.equal(e0.eval_tokens, e1.eval_tokens);
    assert.ok(e1.eval_loss < e0.eval_loss - 0.05, `eval loss ${e0.eval_loss} -> ${e1.eval_loss}`);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test('a non-finite loss stops the run naming the step and keeps the last good checkpoint', { timeout: 120_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-nan-'));
  try {
    const { config } = parseRunConfig(
      {
        model_name_or_path: MODEL,
        dataset: DATA,
        dataset_format: 'dolly',
        output_dir: out,
        test_size: 0,
        per_device_train_batch_size: 4,
        gradient_accumulation_steps: 1,
        max_steps: 4,
        weight_decay: 0,
        lr_scheduler_type: 'constant',
        logging_steps: 1,
        save_steps: 1,
        steps_per_run: 1,
      },
      '/',
    );
    config.learning_rate = 1e30; // beyond what run.json accepts: blows the weights up after step 1
    const trainer = await Trainer.prepare(config, defaultDeps());
    await assert.rejects(trainer.run(), (e: unknown) => {
      assert.ok(e instanceof SftError, String(e));
      assert.match(e.message, /^step 2: non-finite (loss|gradient norm) at step 2 .*the last good checkpoint is .*checkpoint-1/);
      return true;
    });
    assert.equal(trainer.currentStatus, 'failed');
    assert.deepEqual(listCheckpointDirs(out).map((c) => c.step), [1]);
    assert.equal(fs.existsSync(path.join(out, 'model.safetensors')), false, 'no final model from a diverged run');
    const m = await loadModel(path.join(out, 'checkpoint-1'));
    assert.ok(m.params.get('transformer.wte.weight')!.data.every(Number.isFinite));
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test('packing trains with the plan\'s micro-batch count; a fresh start over old checkpoints needs overwrite_output_dir', { timeout: 120_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-pack-'));
  try {
    const raw = {
      model_name_or_path: MODEL,
      dataset: DATA,
      dataset_format: 'dolly',
      output_dir: out,
      test_size: 0,
      packing: true,
      max_length: 96,
      per_device_train_batch_size: 2,
      gradient_accumulation_steps: 1,
      max_steps: 2,
      logging_steps: 1,
      save_steps: 2,
    };
    const { config } = parseRunConfig(raw, '/');
    const trainer = await Trainer.prepare(config, defaultDeps());
    // 20 examples of 20-60 tokens packed into rows of 96: far fewer micro-batches than 20 / 2 = 10
    assert.ok(trainer.schedule.microBatchesPerEpoch < 10, `${trainer.schedule.microBatchesPerEpoch} packed micro-batches`);
    const plan = await planRun(config);
    assert.equal(plan.micro_batches_per_epoch, trainer.schedule.microBatchesPerEpoch, 'the pre-flight plan agrees with the run');
    assert.equal(plan.total_steps, 2);
    assert.ok(plan.packing && plan.efficiency > 0.5 && plan.efficiency <= 1);
    await trainer.run();
    const train = readMetrics(path.join(out, 'metrics.jsonl')).filter((r) => r.type === 'train') as { loss: number; tokens: number }[];
    assert.equal(train.length, 2);
    assert.ok(train.every((r) => Number.isFinite(r.loss) && r.tokens > 0));

    await assert.rejects(Trainer.prepare(parseRunConfig(raw, '/').config, defaultDeps()), /holds checkpoints of an earlier run \(checkpoint-2\): resume it/);
    const again = await Trainer.prepare(parseRunConfig({ ...raw, overwrite_output_dir: true }, '/').config, defaultDeps());
    assert.deepEqual(listCheckpointDirs(out), [], 'old checkpoints removed');
    await again.run();
    assert.deepEqual(listCheckpointDirs(out).map((c) => c.step), [2]);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test('eval_packing (default: packing) evaluates packed rows: the same eval loss over fewer micro-batches', { timeout: 120_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-evalpack-'));
  try {
    const raw = { model_name_or_path: MODEL, dataset: DATA, dataset_format: 'dolly', output_dir: out, test_size: 8, packing: true, max_length: 128, per_device_train_batch_size: 2, per_device_eval_batch_size: 2, max_steps: 1 };
    const evalWith = async (extra: Record<string, unknown>) => {
      const { config } = parseRunConfig({ ...raw, ...extra }, '/');
      const trainer = await Trainer.prepare(config, defaultDeps());
      try {
        const r = await trainer.evaluate();
        return { ...r!, microBatches: (trainer as unknown as { evalBatches: unknown[] }).evalBatches.length };
      } finally {
        await trainer.discard();
      }
    };
    const packed = await evalWith({});
    const padded = await evalWith({ eval_packing: false });
    // 8 examples of 20-60 tokens: 4 padded micro-batches of 2; packed into rows of 128, 2 rows at most.
    assert.equal(padded.microBatches, 4);
    assert.ok(packed.microBatches < padded.microBatches, `${packed.microBatches} packed eval micro-batches`);
    assert.equal(packed.eval_tokens, padded.eval_tokens);
    assert.ok(Math.abs(packed.eval_loss - padded.eval_loss) <= 1e-5 * padded.eval_loss, `packed ${packed.eval_loss} vs padded ${padded.eval_loss}`);
    assert.throws(() => parseRunConfig({ ...raw, eval_packing: 'yes' }, '/'), /eval_packing: expected true or false/);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test('in-run evaluation: eval steps no longer end runs, and the records are those of evaluating between runs', { timeout: 180_000 }, async () => {
  // 16 train examples, batch 4: 4 steps per epoch, 8 in all; eval every 3 steps, logging every 5, K = 8. On the CPU
  // runs end at logging steps, and without in-run evaluation also at eval steps: runs 1-3, 4-5, 6, 7-8 against 1-5, 6-8.
  const trainWith = async (inRun: string) => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-inrun-'));
    try {
      const { config } = parseRunConfig(
        { model_name_or_path: MODEL, dataset: DATA, dataset_format: 'dolly', output_dir: out, test_size: 4, per_device_train_batch_size: 4, gradient_accumulation_steps: 1, num_train_epochs: 2, learning_rate: 3e-3, warmup_steps: 1, logging_steps: 5, logging_first_step: false, eval_steps: 3, save_steps: 100, steps_per_run: 8 },
        '/',
      );
      const deps = defaultDeps();
      const runs: number[] = [];
      const create = deps.createEngine;
      deps.createEngine = async (o) => {
        const e = await create(o);
        const run = e.runSteps.bind(e);
        e.runSteps = (steps, opts) => {
          runs.push(steps.length);
          return run(steps, opts);
        };
        return e;
      };
      const outcome = await withEnv('SFT_EVAL_IN_RUN', inRun, async () => (await Trainer.prepare(config, deps)).run());
      const records = readMetrics(path.join(out, 'metrics.jsonl')).map((r) => {
        const { elapsed_s: _e, tokens_per_second: _t, path: _p, ...rest } = r as Record<string, unknown>;
        return rest;
      });
      return { runs, records, outcome };
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  };
  const between = await trainWith('0');
  const inRun = await trainWith('1');
  assert.deepEqual(between.runs, [3, 2, 1, 2]);
  assert.deepEqual(inRun.runs, [5, 3]);
  assert.deepEqual(
    inRun.records.filter((r) => r.type === 'eval').map((r) => r.step),
    [3, 6, 8],
  );
  // Same dropout masks, same parameters, same eval graph: the same numbers, bit for bit, in the same order.
  assert.deepEqual(inRun.records, between.records);
  assert.deepEqual(inRun.outcome.finalEval, between.outcome.finalEval);
  assert.ok(inRun.outcome.finalEval && inRun.outcome.finalEval.eval_tokens > 0);
});

test('evalModelOnFile refuses max_length < 2 with the shared rule before loading anything', async () => {
  for (const bad of [1, 0, 2.5]) {
    await assert.rejects(
      evalModelOnFile({ model: '/nonexistent/model', dataset: '/nonexistent/data.jsonl', max_length: bad }),
      (e: unknown) => e instanceof SftError && e.message === `max_length: expected an integer >= 2 and <= 1048576, got ${bad}`,
    );
  }
});
