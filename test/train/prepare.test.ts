// Trainer.prepare's start-up plan speaks of the max_length actually used: when run.json asks for more than
// the model's context (n_positions 128 for the tiny model), examples are cut at 128 and the truncation
// warning says so. A stub engine keeps this test free of ONNX Runtime.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { prepareForChat } from '../../native-runner/model/chat';
import { parseRunConfig } from '../../native-runner/train/config';
import { Trainer, type StepEngine } from '../../native-runner/train/trainer';

const ROOT = path.join(__dirname, '../..');

test('prepare: max_length above n_positions — the truncation warning names the context actually used', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-prepare-'));
  try {
    const data = path.join(dir, 'data.jsonl');
    const rows = [
      { instruction: 'Say a lot.', context: '', response: 'word '.repeat(300).trim() },
      { instruction: 'Say little.', context: '', response: 'Fine.' },
    ];
    fs.writeFileSync(data, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    const { config } = parseRunConfig(
      { model_name_or_path: path.join(ROOT, 'samples/tiny-gpt2-chat'), dataset: data, dataset_format: 'dolly', output_dir: path.join(dir, 'out'), test_size: 0, max_length: 1000, max_steps: 1 },
      dir,
    );
    const stub: StepEngine = {
      runSteps: async () => [],
      evalBatch: async () => ({ nllSum: 0, tokens: 0 }),
      getParams: () => new Map(),
      getOptimizerState: () => ({ m: new Map(), v: new Map(), step: 0 }),
      dispose: () => undefined,
    };
    const warnings: string[] = [];
    const t = await Trainer.prepare(config, { prepareForChat, createEngine: async () => stub }, { listener: { log: (level, m) => level === 'warn' && warnings.push(m) } });
    await t.discard();
    const w = warnings.find((m) => /truncated/.test(m));
    assert.ok(w, JSON.stringify(warnings));
    assert.match(w, /1 of 2 examples are longer than max_length 128 and will be truncated/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
