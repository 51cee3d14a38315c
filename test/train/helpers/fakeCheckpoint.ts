// Small stand-in checkpoints for the crash tests (a few hundred bytes each instead of the tiny model's 10 MB,
// so every crash state can be copied): config.json, model.safetensors, tokenizer.json, optimizer, trainer
// state and marker, all made by the real saveCheckpoint. Every file encodes the step and a version tag, and
// `versionOf` fails unless all files of a folder agree (a folder mixing two saves is caught).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ParamSet } from '../../../native-runner/model/types';
import { readSafetensors, writeSafetensorsSynced } from '../../../native-runner/model/safetensors';
import { checkpointProblem, newTrainerState, readOptimizerState, readTrainerState, saveCheckpoint } from '../../../native-runner/train/checkpoint';
import { writeFileSynced } from '../../../native-runner/util/atomic';
import { Rng } from '../../../native-runner/util/rng';

export const TAGS = ['old', 'new'] as const;
export type Tag = (typeof TAGS)[number];
const code = (step: number, tag: Tag) => step * 10 + TAGS.indexOf(tag) + 1;

function tensors(value: number): ParamSet {
  return new Map([['w', { shape: [2, 3], data: Float32Array.from({ length: 6 }, (_, i) => value + i / 8) }]]);
}

export async function saveFake(out: string, step: number, tag: Tag, saveTotalLimit: number | null): Promise<string> {
  const c = code(step, tag);
  return saveCheckpoint(out, {
    step,
    writeModel: (dir) => {
      writeFileSynced(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'gpt2', sft_test_code: c }));
      writeSafetensorsSynced(path.join(dir, 'model.safetensors'), tensors(c));
      writeFileSynced(path.join(dir, 'tokenizer.json'), JSON.stringify({ sft_test_code: c }));
    },
    optimizer: { m: tensors(c * 10), v: tensors(c * 100), step },
    state: newTrainerState({
      global_step: step, epoch: step / 10, data_cursor: { epoch: 0, micro_batch: step }, rng: new Rng(c).getState(),
      schedule: { total_steps: 100, warmup_steps: 0, steps_per_epoch: 10, micro_batches_per_epoch: 10, lr_scheduler_type: 'constant', learning_rate: 1e-3 },
      best_eval: null, log_history: [], pending_log: { loss_sum: 0, tokens: 0, steps: 0, grad_norm_last: 0, seconds: 0 }, elapsed_s: c, tokens_seen: c,
    }),
    saveTotalLimit,
  });
}

/** The version a complete checkpoint folder of `step` holds; fails when it is incomplete or its files disagree. */
export function versionOf(dir: string, step: number): Tag {
  assert.equal(checkpointProblem(dir), null, `${dir} is complete`);
  const c = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).sft_test_code as number;
  const tag = TAGS.find((t) => code(step, t) === c);
  assert.ok(tag, `${dir}: config.json of step ${step} (code ${c})`);
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')).sft_test_code, c);
  assert.equal(readSafetensors(path.join(dir, 'model.safetensors')).get('w')!.data[0], c);
  const state = readTrainerState(dir);
  assert.equal(state.global_step, step);
  assert.equal(state.elapsed_s, c);
  assert.deepEqual(state.rng, new Rng(c).getState());
  const opt = readOptimizerState(dir);
  assert.equal(opt.m.get('w')!.data[0], c * 10);
  assert.equal(opt.v.get('w')!.data[5], c * 100 + 5 / 8);
  return tag;
}
