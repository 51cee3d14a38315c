// Checkpoints: atomic save + completion marker, rotation, incomplete folders ignored, and SIGKILL at random
// points during saves (20 times): the newest complete checkpoint always loads with consistent content.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModel } from '../../native-runner/model/modelFolder';
import type { LoadedModel } from '../../native-runner/model/types';
import {
  checkpointProblem, findLatestCheckpoint, listCheckpointDirs, readOptimizerState, readTrainerState, removeStaleTemp, COMPLETE_MARKER,
} from '../../native-runner/train/checkpoint';
import { Rng } from '../../native-runner/util/rng';

const ROOT = path.join(__dirname, '../..');

async function verify(dir: string, step: number) {
  assert.equal(checkpointProblem(dir), null);
  const state = readTrainerState(dir);
  assert.equal(state.global_step, step);
  assert.deepEqual(state.rng, new Rng(step).getState());
  const model = await loadModel(dir); // the HF folder loads (config, weights, tokenizer)
  const wte = model.params.get('transformer.wte.weight')!;
  assert.equal(wte.data[0], step, `checkpoint-${step} holds its own weights`);
  assert.equal(wte.data[1], original!.params.get('transformer.wte.weight')!.data[1]);
  assert.equal(model.tokenizer.tokenToId('<|assistant|>'), 50258);
  const opt = readOptimizerState(dir);
  assert.equal(opt.m.size, model.params.size);
  assert.equal(opt.m.get('transformer.wte.weight')!.data[0], step * 10);
  assert.equal(opt.v.get('transformer.wte.weight')!.data[0], step * 100);
  assert.equal(opt.v.get('transformer.h.1.mlp.c_fc.weight')!.data[3], 0);
}

let original: LoadedModel | undefined;

/**
 * Runs the save loop in a child. `afterSaves`: SIGKILL once that many saves completed. `randomWithin`: after
 * the first completed save, SIGKILL at a random moment within the next 1.5 save durations (measured), so the
 * kill lands inside a save most of the time whatever the machine's speed.
 */
function runChild(out: string, kill: { afterSaves?: number; randomWithin?: Rng }): Promise<{ saved: number; ready: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, 'helpers/saveLoop.ts'), out], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    let ready = -1;
    let saved = 0;
    let err = '';
    let startedAt = 0;
    let armed = false;
    child.stderr.on('data', (d) => (err += d));
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const n = Number(line.split(' ')[1]);
        if (line.startsWith('ready')) ready = n;
        else if (line.startsWith('saving')) startedAt = performance.now();
        else if (line.startsWith('saved')) {
          saved = n;
          if (kill.afterSaves !== undefined && saved - ready >= kill.afterSaves) child.kill('SIGKILL');
          if (kill.randomWithin && !armed) {
            armed = true;
            const took = performance.now() - startedAt;
            setTimeout(() => child.kill('SIGKILL'), kill.randomWithin.nextFloat() * 1.5 * took);
          }
        }
      }
    });
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve({ saved, ready });
      else reject(new Error(`child exited ${code}: ${err}`));
    });
  });
}

test('SIGKILL at random points during saves, 20 times: the newest complete checkpoint always loads', { timeout: 180_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-ckpt-kill-'));
  original = await loadModel(path.join(ROOT, 'samples/tiny-gpt2-chat'));
  const rng = new Rng(7);
  let lastSaved = 0;
  let sawIncompleteOrTemp = 0;
  try {
    for (let round = 0; round < 20; round++) {
      const { saved, ready } = await runChild(out, { randomWithin: rng });
      // the child resumed from the newest complete checkpoint we last verified (or a later one it completed)
      assert.ok(ready >= lastSaved, `round ${round}: resumed at ${ready}, expected >= ${lastSaved}`);
      const names = fs.readdirSync(out);
      if (names.some((n) => n.includes('.tmp-') || n.includes('.old-') || n.endsWith('.deleting'))) sawIncompleteOrTemp++;
      const latest = findLatestCheckpoint(out);
      assert.ok(latest, `round ${round}: a checkpoint exists`);
      assert.ok(latest.step >= saved, `round ${round}: newest complete ${latest.step} >= last reported ${saved}`);
      await verify(latest.dir, latest.step);
      // rotation keeps at most 2 complete checkpoints (+ possibly one being deleted when killed)
      const complete = listCheckpointDirs(out).filter((c) => checkpointProblem(c.dir) === null);
      assert.ok(complete.length <= 3, `round ${round}: ${complete.length} complete checkpoints`);
      lastSaved = latest.step;
    }
    assert.ok(lastSaved >= 20, `made progress: ${lastSaved}`);
    // a kill mid-save left temp folders at least once (otherwise the test did not test much)
    assert.ok(sawIncompleteOrTemp > 0, 'at least one kill landed inside a save');
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test('a checkpoint folder without its marker, or with a file of the wrong size, is ignored with a message', async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-ckpt-'));
  try {
    await runChild(out, { afterSaves: 2 });
    const all = listCheckpointDirs(out).filter((c) => checkpointProblem(c.dir) === null);
    assert.ok(all.length >= 2, `have ${all.length} checkpoints`);
    const [newest, older] = all;
    fs.rmSync(path.join(newest!.dir, COMPLETE_MARKER));
    const messages: string[] = [];
    assert.equal(findLatestCheckpoint(out, (m) => messages.push(m))!.step, older!.step);
    assert.match(messages[0]!, new RegExp(`ignoring checkpoint-${newest!.step}: no completion marker`));
    fs.truncateSync(path.join(older!.dir, 'model.safetensors'), 100);
    messages.length = 0;
    const r = findLatestCheckpoint(out, (m) => messages.push(m));
    assert.equal(r, null);
    assert.match(messages[1]!, /model\.safetensors has 100 bytes, the marker says \d+/);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test('removeStaleTemp clears leftovers of interrupted saves (checkpoint temp folders, saveModel staging) and nothing else', () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-stale-'));
  try {
    // incomplete (empty) leftovers: nothing to recover from them
    const stale = [
      'checkpoint-4.tmp-123-1', 'checkpoint-2.tmp-123-2.old', 'checkpoint-3.old-123-5', 'checkpoint-3.tmp-123-5', 'checkpoint-1.deleting',
      '.save-123-1700000000000', 'model.tmp-123-6',
    ];
    const kept = ['checkpoint-3', 'metrics.jsonl', 'run.json', '.saved-notes', 'notes.tmp', 'checkpoint-9.old'];
    for (const n of [...stale, ...kept]) fs.mkdirSync(path.join(out, n));
    fs.writeFileSync(path.join(out, 'run.json.tmp-123-7'), '{'); // writeFileAtomic's temp file
    const messages: string[] = [];
    removeStaleTemp(out, (m) => messages.push(m));
    assert.deepEqual(fs.readdirSync(out).sort(), [...kept].sort());
    assert.equal(messages.length, stale.length + 1);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});
