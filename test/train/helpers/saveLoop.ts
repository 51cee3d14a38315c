// Child process for the kill-during-save test: resumes from the newest complete checkpoint of argv[2] and
// saves real checkpoints of the tiny model forever (save_total_limit 2), printing "saved N". Each
// checkpoint's weights and moments encode its step (wte[0] = step, m[0] = 10·step, v[0] = 100·step).
import * as path from 'node:path';
import type { ParamSet } from '../../../native-runner/model/types';
import { loadModel, writeModelFiles } from '../../../native-runner/model/modelFolder';
import { findLatestCheckpoint, newTrainerState, readTrainerState, removeStaleTemp, saveCheckpoint } from '../../../native-runner/train/checkpoint';
import { Rng } from '../../../native-runner/util/rng';

const out = process.argv[2]!;
const ROOT = path.join(__dirname, '../../..');

function marked(src: ParamSet, value: number): ParamSet {
  const set: ParamSet = new Map();
  for (const [name, t] of src) set.set(name, { shape: t.shape, data: name === 'transformer.wte.weight' ? Float32Array.from(t.data, (x, i) => (i === 0 ? value : x)) : t.data });
  return set;
}

async function main() {
  const model = await loadModel(path.join(ROOT, 'samples/tiny-gpt2-chat'));
  const zeros: ParamSet = new Map([...model.params].map(([n, t]) => [n, { shape: t.shape, data: new Float32Array(t.data.length) }]));
  removeStaleTemp(out);
  const latest = findLatestCheckpoint(out);
  let step = latest ? readTrainerState(latest.dir).global_step : 0;
  process.stdout.write(`ready ${step}\n`);
  for (;;) {
    step++;
    process.stdout.write(`saving ${step}\n`);
    await saveCheckpoint(out, {
      step,
      writeModel: (dir) => writeModelFiles(dir, { config: model.config, params: marked(model.params, step), tokenizer: model.tokenizer }),
      optimizer: { m: marked(zeros, step * 10), v: marked(zeros, step * 100), step },
      state: newTrainerState({
        global_step: step, epoch: step / 10, data_cursor: { epoch: 0, micro_batch: step * 2 }, rng: new Rng(step).getState(),
        schedule: { total_steps: 1e9, warmup_steps: 0, steps_per_epoch: 10, micro_batches_per_epoch: 20, lr_scheduler_type: 'constant', learning_rate: 1e-3 },
        best_eval: null, log_history: [], pending_log: { loss_sum: 0, tokens: 0, steps: 0, grad_norm_last: 0, seconds: 0 }, elapsed_s: step, tokens_seen: step,
      }),
      saveTotalLimit: 2,
    });
    process.stdout.write(`saved ${step}\n`);
  }
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
