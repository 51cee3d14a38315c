// Reproduces transformers' reference SFT run (tiny-golden.json `train`): 3 AdamW steps at lr 1e-3 (constant),
// wd 0.01 (not on biases/LayerNorm), clip 1.0, each on the same two-example batch — going through run.json
// parsing, the data pipeline (Dolly file → chat template → tokens → padded batch), the schedule and the engine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readSafetensors } from '../../native-runner/model/safetensors';
import { parseRunConfig } from '../../native-runner/train/config';
import { readMetrics } from '../../native-runner/train/metricsLog';
import { defaultDeps } from '../../native-runner/train/runtime';
import { Trainer } from '../../native-runner/train/trainer';
import type { TrainRecord } from '../../protocol/runner';

const ROOT = path.join(__dirname, '../..');
const golden = JSON.parse(fs.readFileSync(path.join(ROOT, 'test/fixtures/golden/tiny-golden.json'), 'utf8'));

test('3 SFT steps through config -> data -> engine match transformers (loss, grad norm 1e-5 rel; weights 1e-5 abs)', { timeout: 120_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-golden-'));
  try {
    const { config } = parseRunConfig(
      {
        model_name_or_path: path.join(ROOT, 'samples/tiny-gpt2-chat'),
        dataset: 'golden-pair.jsonl',
        dataset_format: 'dolly',
        test_size: 0,
        output_dir: out,
        per_device_train_batch_size: 2,
        gradient_accumulation_steps: 1,
        num_train_epochs: 3,
        learning_rate: 1e-3,
        lr_scheduler_type: 'constant',
        warmup_ratio: 0,
        weight_decay: 0.01,
        max_grad_norm: 1.0,
        shuffle: false,
        logging_steps: 1,
        eval_strategy: 'no',
        save_strategy: 'no',
        max_length: 128,
        dropout: 0,
        steps_per_run: 3,
      },
      path.join(ROOT, 'test/fixtures/train'),
    );
    const trainer = await Trainer.prepare(config, defaultDeps());
    assert.equal(trainer.totalSteps, 3);
    const outcome = await trainer.run();
    assert.equal(outcome.status, 'finished');
    const train = readMetrics(path.join(out, 'metrics.jsonl')).filter((r): r is TrainRecord => r.type === 'train');
    assert.deepEqual(train.map((r) => r.step), [1, 2, 3]);
    const steps = golden.train.steps as { loss: number; grad_norm_before_clip: number }[];
    steps.forEach((g, i) => {
      const r = train[i]!;
      assert.ok(Math.abs(r.loss - g.loss) / g.loss <= 1e-5, `step ${i + 1} loss ${r.loss} vs ${g.loss}`);
      assert.ok(Math.abs(r.grad_norm - g.grad_norm_before_clip) / g.grad_norm_before_clip <= 1e-5, `step ${i + 1} grad norm ${r.grad_norm} vs ${g.grad_norm_before_clip}`);
      assert.equal(r.learning_rate, 1e-3);
    });
    // 2 examples: the trained tokens per step are the golden labels' count (answer + closing eos)
    const labels = golden.forward.labels as number[][];
    const trainedCount = labels.flat().filter((l) => l !== -100).length;
    assert.equal(train[0]!.tokens, trainedCount);

    const expected = readSafetensors(path.join(ROOT, 'test/fixtures/golden/tiny-params-after3.safetensors'));
    const got = readSafetensors(path.join(out, 'model.safetensors'));
    let worst = 0;
    let compared = 0;
    for (const [name, t] of expected) {
      if (name === 'lm_head.weight') continue; // tied to wte
      const g = got.get(name);
      assert.ok(g, `saved model has ${name}`);
      assert.deepEqual(g.shape, t.shape, name);
      for (let i = 0; i < t.data.length; i++) worst = Math.max(worst, Math.abs(g.data[i]! - t.data[i]!));
      compared++;
    }
    assert.ok(compared >= 20, `compared ${compared} tensors`);
    assert.ok(worst <= 1e-5, `max abs weight difference after 3 steps ${worst}`);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});
