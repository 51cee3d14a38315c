// run.json parsing: defaults = the seed recipe, key validation naming the key, typo suggestions, paths.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseRunConfig, readRunConfig, runConfigToJson, RUN_CONFIG_DEFAULTS } from '../../native-runner/train/config';
import { SftError } from '../../native-runner/util/errors';

const base = { model_name_or_path: './model', dataset: 'data/train.jsonl' };

test('defaults are the seed recipe', () => {
  const { config } = parseRunConfig(base, '/runs/a');
  assert.equal(config.learning_rate, 2e-5);
  assert.equal(config.lr_scheduler_type, 'cosine');
  assert.equal(config.warmup_ratio, 0.1);
  assert.equal(config.per_device_train_batch_size, 8);
  assert.equal(config.gradient_accumulation_steps, 4);
  assert.equal(config.num_train_epochs, 3);
  assert.equal(config.weight_decay, 0.01);
  assert.equal(config.max_grad_norm, 1.0);
  assert.equal(config.max_length, 512);
  assert.equal(config.logging_steps, 10);
  assert.equal(config.eval_steps, 200);
  assert.equal(config.save_steps, 500);
  assert.equal(config.save_total_limit, 3);
  assert.equal(config.packing, false);
  assert.equal(config.assistant_only_loss, true);
  assert.equal(config.seed, 42);
  assert.equal(config.test_size, 0.05);
  assert.deepEqual([config.adam_beta1, config.adam_beta2, config.adam_epsilon], [0.9, 0.999, 1e-8]);
  assert.equal(config.bf16, false);
  assert.equal(config.device, 'cpu');
  assert.equal(config.shuffle, true);
  assert.equal(config.dropout, null);
});

test('relative paths resolve against the run.json folder; hub ids stay ids', () => {
  const { config } = parseRunConfig({ ...base, output_dir: 'out', eval_dataset: 'databricks/databricks-dolly-15k' }, '/runs/a');
  assert.equal(config.model_name_or_path, '/runs/a/model');
  assert.equal(config.dataset, '/runs/a/data/train.jsonl');
  assert.equal(config.output_dir, '/runs/a/out');
  assert.equal(config.eval_dataset, 'databricks/databricks-dolly-15k');
  const hub = parseRunConfig({ model_name_or_path: 'openai-community/gpt2', dataset: 'databricks/databricks-dolly-15k' }, '/runs/a').config;
  assert.equal(hub.model_name_or_path, 'openai-community/gpt2');
  assert.equal(hub.dataset, 'databricks/databricks-dolly-15k');
  // legacy one-word model ids stay ids unless such a folder exists; dataset files never become ids
  const bare = parseRunConfig({ model_name_or_path: 'gpt2', dataset: 'train.jsonl' }, '/runs/a').config;
  assert.equal(bare.model_name_or_path, 'gpt2');
  assert.equal(bare.dataset, '/runs/a/train.jsonl');
});

function throwsNaming(json: unknown, re: RegExp) {
  assert.throws(() => parseRunConfig(json, '/x', 'cfg/run.json'), (e: unknown) => {
    assert.ok(e instanceof SftError, String(e));
    assert.match((e as Error).message, re);
    return true;
  });
}

test('unknown keys and bad values are errors naming the key (typos get a suggestion)', () => {
  throwsNaming({ ...base, learning_rte: 1e-4 }, /^cfg\/run\.json: learning_rte: unknown key \(did you mean "learning_rate"\?\)/);
  throwsNaming({ ...base, per_device_train_batchsize: 4 }, /did you mean "per_device_train_batch_size"/);
  throwsNaming({ ...base, frobnicate: 1 }, /frobnicate: unknown key$/);
  throwsNaming({ ...base, learning_rate: '2e-5' }, /^cfg\/run\.json: learning_rate: expected a number >= 0 and <= 10, got "2e-5"$/);
  throwsNaming({ ...base, per_device_train_batch_size: 0 }, /per_device_train_batch_size: expected an integer >= 1/);
  throwsNaming({ ...base, gradient_accumulation_steps: 2.5 }, /gradient_accumulation_steps: expected an integer/);
  throwsNaming({ ...base, lr_scheduler_type: 'polynomial' }, /lr_scheduler_type: expected one of linear \| cosine \| constant \| constant_with_warmup/);
  throwsNaming({ ...base, dataset_format: 'alpaca' }, /dataset_format: expected one of auto/);
  throwsNaming({ ...base, warmup_ratio: 1.5 }, /warmup_ratio: expected a number >= 0 and <= 1/);
  throwsNaming({ ...base, packing: 'yes' }, /packing: expected true or false/);
  throwsNaming({ ...base, device: 'tpu' }, /device: expected one of cpu \| cuda/);
  // bf16: unset → on for cuda, off for cpu; a pasted bf16 true on the cpu trains in fp32 with a note naming bf16
  const cpuBf16 = parseRunConfig({ ...base, bf16: true }, '/tmp');
  assert.equal(cpuBf16.config.bf16, false);
  assert.ok(cpuBf16.notes.some((n) => /^bf16: needs "device": "cuda"/.test(n)), cpuBf16.notes.join('; '));
  assert.equal(parseRunConfig({ ...base, bf16: true, device: 'cuda' }, '/tmp').config.bf16, true);
  assert.equal(parseRunConfig({ ...base, device: 'cuda' }, '/tmp').config.bf16, true);
  assert.equal(parseRunConfig({ ...base, bf16: false, device: 'cuda' }, '/tmp').config.bf16, false);
  throwsNaming({ ...base, logging_steps: 2.5 }, /logging_steps: expected a positive integer/);
  throwsNaming({ dataset: 'x.jsonl' }, /model_name_or_path: missing/);
  throwsNaming({ ...base, optim: 'sgd' }, /optim: only AdamW/);
  throwsNaming({ ...base, max_seq_length: 256, max_length: 128 }, /both "max_seq_length" and "max_length"/);
  throwsNaming([1], /expected a JSON object/);
});

test('max_seq_length is read as max_length; no-effect TRL keys are accepted with a note', () => {
  const r = parseRunConfig({ ...base, max_seq_length: 256, report_to: 'none', dataloader_num_workers: 4, optim: 'adamw_torch', eval_steps: null, save_total_limit: null }, '/x');
  assert.equal(r.config.max_length, 256);
  assert.equal(r.config.eval_steps, null);
  assert.equal(r.config.save_total_limit, null);
  assert.ok(r.notes.some((n) => n.includes('max_seq_length read as max_length')));
  assert.ok(r.notes.some((n) => n.includes('report_to')));
});

test('readRunConfig: bad JSON names the file; the resolved config round-trips through runConfigToJson', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-config-'));
  try {
    const f = path.join(dir, 'run.json');
    fs.writeFileSync(f, '{"model_name_or_path": "m", ');
    assert.throws(() => readRunConfig(f), (e: unknown) => e instanceof SftError && e.message.startsWith(`${f}: invalid JSON`));
    fs.writeFileSync(f, '\uFEFF' + JSON.stringify({ ...base, learning_rate: 1e-3 }));
    const r = readRunConfig(f);
    assert.equal(r.config.dataset, path.join(dir, 'data/train.jsonl'));
    const json = runConfigToJson(r.config);
    assert.equal(Object.keys(json).length, Object.keys(RUN_CONFIG_DEFAULTS).length + 2);
    const again = parseRunConfig(JSON.parse(JSON.stringify(json)), '/elsewhere').config;
    assert.deepEqual(again, r.config);
    assert.throws(() => readRunConfig(path.join(dir, 'nope.json')), /nope\.json: cannot read the run config \(ENOENT\)/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
