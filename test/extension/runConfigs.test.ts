// Run config discovery and the Start Training form's starting values (seed recipe defaults under the file).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FORM_KEYS, formConfig, isRunConfig, newConfigPath } from '../../src/runConfigs';
import { parseRunConfig } from '../../native-runner/train/config';

test('isRunConfig: objects with model_name_or_path and dataset only', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sft-cfg-'));
  try {
    const w = (name: string, text: string) => (writeFileSync(join(dir, name), text), join(dir, name));
    assert.ok(isRunConfig(w('run.json', '\uFEFF{"model_name_or_path": "m", "dataset": "d.jsonl"}')));
    assert.ok(!isRunConfig(w('config.json', '{"model_type": "gpt2"}')));
    assert.ok(!isRunConfig(w('list.json', '[{"model_name_or_path": "m", "dataset": "d"}]')));
    assert.ok(!isRunConfig(w('bad.json', '{"model_name_or_path": ')));
    assert.ok(!isRunConfig(join(dir, 'missing.json')));
    assert.equal(newConfigPath(dir), join(dir, 'sft-run.json'));
    w('sft-run.json', '{}');
    assert.equal(newConfigPath(dir), join(dir, 'sft-run-2.json'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('formConfig: seed defaults, then settings, then the file; the result is a valid run config', () => {
  const c = formConfig({ learning_rate: 1e-4, shuffle: false }, { model: 'models/gpt2', dataset: 'dolly.jsonl', device: 'cpu' });
  assert.equal(c.per_device_train_batch_size, 8);
  assert.equal(c.gradient_accumulation_steps, 4);
  assert.equal(c.num_train_epochs, 3);
  assert.equal(c.lr_scheduler_type, 'cosine');
  assert.equal(c.warmup_ratio, 0.1);
  assert.equal(c.max_length, 512);
  assert.equal(c.learning_rate, 1e-4, 'the file wins over defaults');
  assert.equal(c.shuffle, false, 'keys the form does not show are kept');
  assert.equal(c.model_name_or_path, 'models/gpt2');
  for (const k of FORM_KEYS) assert.ok(k in c, k);
  // What the form sends (nulls dropped, as webview/train.ts does) is accepted by the runner's parser.
  const sent = Object.fromEntries(Object.entries(c).filter(([, v]) => v !== null));
  const { config } = parseRunConfig(sent, '/tmp');
  assert.equal(config.learning_rate, 1e-4);
  assert.equal(formConfig({ model_name_or_path: 'x', dataset: 'y' }, { model: 'models/gpt2', dataset: 'd', device: 'cuda' }).model_name_or_path, 'x');
});
