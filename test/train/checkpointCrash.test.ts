// Crash safety of checkpoint saves at every filesystem step. The on-disk state after each step is captured
// through util/atomic's step hook (test/util/helpers/crashStates), and for the replacement of an existing
// checkpoint also produced for real by SIGKILLing a child right after each step (the two must match). For each
// state: the read-only finder still finds the newest checkpoint, old or new but complete and never mixed; no
// completed checkpoint is missing (rotation may delete only after the new one is in place); the trainer's
// start-up cleanup (removeStaleTemp) puts it back as checkpoint-<step>, also when itself crashed at any step;
// and a resumed run saves on top of the result. The trainer resumes from such a state with --resume (latest)
// and with --resume DIR: DIR in output_dir, in another folder (read in place), or named by its leftover name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkpointDir, findLatestCheckpoint, listCheckpointDirs, locateCheckpoint, removeStaleTemp } from '../../native-runner/train/checkpoint';
import { parseRunConfig } from '../../native-runner/train/config';
import { defaultDeps } from '../../native-runner/train/runtime';
import { Trainer } from '../../native-runner/train/trainer';
import { captureCrashStates, treeSignature, type CrashState } from '../util/helpers/crashStates';
import { saveFake, versionOf, type Tag } from './helpers/fakeCheckpoint';

const ROOT = path.join(__dirname, '../..');

function tmp(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

function indexOf(states: CrashState[], prefix: string): number {
  const i = states.findIndex((s) => s.label.startsWith(prefix));
  assert.ok(i > 0, `no step "${prefix}" in ${states.map((s) => s.label).join(', ')}`);
  return i;
}

interface Expect {
  /** The newest checkpoint and its version. */
  latest: { step: number; version: Tag };
  /** The other checkpoints, complete (step → version); after recovery nothing else is left. */
  kept: Record<number, Tag>;
}

/** Checks a crash state (`out`) read-only, then runs the start-up cleanup (crashed at each of its own steps), then a resumed save. */
async function checkState(out: string, scratch: string, what: string, e: Expect): Promise<void> {
  const messages: string[] = [];
  const latest = findLatestCheckpoint(out, (m) => messages.push(m));
  assert.ok(latest, `${what}: a checkpoint is found`);
  assert.equal(latest.step, e.latest.step, `${what}: newest step`);
  assert.equal(versionOf(latest.dir, latest.step), e.latest.version, `${what}: version of checkpoint-${latest.step}`);
  if (latest.dir !== checkpointDir(out, latest.step)) assert.match(messages.join('\n'), /is missing; using checkpoint-\d+\.tmp-\d+-\d+, left complete by an interrupted save/);
  for (const [step, version] of Object.entries(e.kept)) assert.equal(versionOf(checkpointDir(out, Number(step)), Number(step)), version, `${what}: checkpoint-${step}`);

  const expectedNames = [...new Set([e.latest.step, ...Object.keys(e.kept).map(Number)])].sort((a, b) => a - b).map((s) => `checkpoint-${s}`);
  const recovery = await captureCrashStates(out, scratch, () => removeStaleTemp(out));
  for (const r of [...recovery, { index: -1, label: 'recovery finished', dir: out }]) {
    const w = `${what}, recovery crashed after "${r.label}"`;
    const again = findLatestCheckpoint(r.dir);
    assert.equal(again?.step, e.latest.step, w);
    assert.equal(versionOf(again!.dir, again!.step), e.latest.version, w);
    removeStaleTemp(r.dir);
    assert.equal(findLatestCheckpoint(r.dir)?.dir, checkpointDir(r.dir, e.latest.step), `${w}: back under its name`);
    assert.equal(versionOf(checkpointDir(r.dir, e.latest.step), e.latest.step), e.latest.version, w);
    assert.deepEqual(fs.readdirSync(r.dir).sort(), expectedNames, `${w}: only complete checkpoints remain`);
  }
  fs.rmSync(scratch, { recursive: true, force: true });
  // the resumed run saves its next checkpoint on top (rotation to 2)
  await saveFake(out, e.latest.step + 1, 'new', 2);
  assert.deepEqual(listCheckpointDirs(out).map((c) => c.step), [e.latest.step + 1, e.latest.step], `${what}: resumed save`);
}

/** output_dir with checkpoints 4, 5 and 6 (version "old"). */
async function threeCheckpoints(out: string): Promise<void> {
  for (const step of [4, 5, 6]) await saveFake(out, step, 'old', null);
}

/** What a crash after step `i` of re-saving checkpoint-6 (limit 2) must leave. */
function replacingExpect(states: CrashState[]): (i: number) => Expect {
  const movedAside = indexOf(states, 'moved old aside checkpoint-6.old-');
  const placed = indexOf(states, 'renamed into place checkpoint-6');
  const rotation = indexOf(states, 'moved aside for deletion checkpoint-4.deleting');
  assert.ok(movedAside < placed && placed < rotation);
  return (i) => {
    const kept: Record<number, Tag> = i < rotation ? { 4: 'old', 5: 'old' } : { 5: 'old' };
    return { latest: { step: 6, version: i >= movedAside ? 'new' : 'old' }, kept };
  };
}

test('re-saving an existing checkpoint: a crash after any filesystem step loses nothing and recovers', { timeout: 120_000 }, async () => {
  const root = tmp('sft-ckpt-replace-');
  try {
    const out = path.join(root, 'out');
    await threeCheckpoints(out);
    const states = await captureCrashStates(out, path.join(root, 'states'), () => saveFake(out, 6, 'new', 2));
    assert.ok(states.length >= 20, `${states.length} crash points`);
    const expect = replacingExpect(states);
    let window = 0;
    for (const s of states) {
      if (!fs.existsSync(checkpointDir(s.dir, 6))) window++;
      await checkState(s.dir, path.join(root, 'rec'), `crash after "${s.label}"`, expect(s.index));
    }
    assert.equal(window, 1, 'exactly one crash point falls between moving the old folder aside and renaming the new one in');
    // the finished save
    assert.equal(versionOf(checkpointDir(out, 6), 6), 'new');
    assert.deepEqual(fs.readdirSync(out).sort(), ['checkpoint-5', 'checkpoint-6']);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('saving a new checkpoint: a crash after any filesystem step leaves the previous or the new one, complete', { timeout: 120_000 }, async () => {
  const root = tmp('sft-ckpt-new-');
  try {
    const out = path.join(root, 'out');
    for (const step of [5, 6]) await saveFake(out, step, 'old', null);
    const states = await captureCrashStates(out, path.join(root, 'states'), () => saveFake(out, 7, 'new', 2));
    // the staging folder counts once its marker is written (complete), whether or not it was renamed yet
    const marked = indexOf(states, 'wrote COMPLETE');
    const rotation = indexOf(states, 'moved aside for deletion checkpoint-5.deleting');
    for (const s of states) {
      const kept: Record<number, Tag> = s.index < marked ? { 5: 'old' } : s.index < rotation ? { 5: 'old', 6: 'old' } : { 6: 'old' };
      const e: Expect = { latest: s.index < marked ? { step: 6, version: 'old' } : { step: 7, version: 'new' }, kept };
      await checkState(s.dir, path.join(root, 'rec'), `crash after "${s.label}"`, e);
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

function runChild(out: string, killAt: number): Promise<{ signal: NodeJS.Signals | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, 'helpers/crashSave.ts'), out, '6', '2', String(killAt)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (code, signal) => (signal === 'SIGKILL' || code === 0 ? resolve({ signal, stdout }) : reject(new Error(`child exited ${code}: ${stderr}`))));
  });
}

test('re-saving an existing checkpoint: SIGKILL right after each filesystem step leaves the captured state, and it recovers', { timeout: 180_000 }, async () => {
  const root = tmp('sft-ckpt-kill-step-');
  try {
    const template = path.join(root, 'template');
    await threeCheckpoints(template);
    const out = path.join(root, 'out');
    fs.cpSync(template, out, { recursive: true });
    const states = await captureCrashStates(out, path.join(root, 'states'), () => saveFake(out, 6, 'new', 2));
    const expect = replacingExpect(states);
    // the child's steps are the in-process ones
    const full = path.join(root, 'full');
    fs.cpSync(template, full, { recursive: true });
    const done = await runChild(full, 0);
    const labels = done.stdout.split('\n').filter((l) => l.startsWith('step ')).map((l) => l.slice(5).replace(/\.(tmp|old)-\d+-\d+/g, '.$1-ID'));
    assert.deepEqual(labels, states.slice(1).map((s) => s.label.replace(/\.(tmp|old)-\d+-\d+/g, '.$1-ID')));
    assert.match(done.stdout, /done\n$/);
    for (let k = 1; k < states.length; k++) {
      const dir = path.join(root, `kill-${k}`);
      fs.cpSync(template, dir, { recursive: true });
      const r = await runChild(dir, k);
      assert.equal(r.signal, 'SIGKILL', `k=${k}`);
      const what = `SIGKILL after "${states[k]!.label}"`;
      assert.deepEqual(treeSignature(dir), treeSignature(states[k]!.dir), `${what}: same state as captured`);
      await checkState(dir, path.join(root, 'rec'), what, expect(k));
      fs.rmSync(dir, { recursive: true, force: true });
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('leftovers of the earlier writeDirAtomic (old folder at checkpoint-N.tmp-<id>.old) are recovered too', async () => {
  const root = tmp('sft-ckpt-legacy-');
  try {
    const out = path.join(root, 'out');
    await threeCheckpoints(out);
    const fresh = path.join(root, 'fresh');
    await saveFake(fresh, 6, 'new', null);
    // the earlier version's crash window: old moved to `.tmp-<id>.old`, the complete new one at `.tmp-<id2>`
    fs.renameSync(checkpointDir(out, 6), path.join(out, 'checkpoint-6.tmp-77-1.old'));
    fs.renameSync(checkpointDir(fresh, 6), path.join(out, 'checkpoint-6.tmp-77-2'));
    let latest = findLatestCheckpoint(out)!;
    assert.equal(path.basename(latest.dir), 'checkpoint-6.tmp-77-2');
    assert.equal(versionOf(latest.dir, 6), 'new');
    // a checkpoint named by path (sft train --resume <folder>) is located the same way
    const notes: string[] = [];
    assert.equal(locateCheckpoint(checkpointDir(out, 6), (m) => notes.push(m)), latest.dir);
    assert.match(notes[0]!, /checkpoint-6 is missing; using checkpoint-6\.tmp-77-2/);
    assert.equal(locateCheckpoint(checkpointDir(out, 5)), checkpointDir(out, 5));
    assert.equal(locateCheckpoint(checkpointDir(out, 8)), checkpointDir(out, 8), 'nothing there: the path itself, reported missing by the caller');
    // without the new one (its marker lost), the old one is found
    fs.rmSync(path.join(out, 'checkpoint-6.tmp-77-2', 'COMPLETE'));
    latest = findLatestCheckpoint(out)!;
    assert.equal(path.basename(latest.dir), 'checkpoint-6.tmp-77-1.old');
    const messages: string[] = [];
    removeStaleTemp(out, (m) => messages.push(m));
    assert.equal(versionOf(checkpointDir(out, 6), 6), 'old');
    assert.deepEqual(fs.readdirSync(out).sort(), ['checkpoint-4', 'checkpoint-5', 'checkpoint-6']);
    assert.deepEqual(messages.sort(), ['recovered checkpoint-6 from checkpoint-6.tmp-77-1.old (left by an interrupted save)', 'removed checkpoint-6.tmp-77-2 (left by an interrupted save)']);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

/** Trains the tiny model 4 of 6 steps into `out` (stopped at the step-4 save: checkpoints 2 and 4); returns its run.json. */
async function trainFourOfSixSteps(out: string): Promise<Record<string, unknown>> {
  const raw = {
    model_name_or_path: path.join(ROOT, 'samples/tiny-gpt2-chat'), dataset: path.join(ROOT, 'test/fixtures/train/dolly-small.jsonl'), dataset_format: 'dolly',
    output_dir: out, test_size: 4, per_device_train_batch_size: 4, gradient_accumulation_steps: 1, max_steps: 6, learning_rate: 1e-3,
    logging_steps: 2, eval_steps: 100, save_steps: 2, steps_per_run: 2,
  };
  const trainer: Trainer = await Trainer.prepare(parseRunConfig(raw, '/').config, defaultDeps(), {
    listener: { metrics: (r) => void (r.type === 'save' && r.step === 4 && trainer.requestStop(false)) },
  });
  await trainer.run();
  assert.deepEqual(listCheckpointDirs(out).map((c) => c.step), [4, 2]);
  return raw;
}

test('the trainer resumes from a checkpoint whose replacement was interrupted (not from an older one)', { timeout: 120_000 }, async () => {
  const out = tmp('sft-ckpt-trainer-');
  try {
    const raw = await trainFourOfSixSteps(out);
    // the crash window of re-saving checkpoint-4: old folder aside, the complete new one still at its staging name
    const ck4 = checkpointDir(out, 4);
    fs.cpSync(ck4, `${ck4}.tmp-99-1`, { recursive: true });
    fs.renameSync(ck4, `${ck4}.old-99-1`);
    const logs: string[] = [];
    const resumed = await Trainer.prepare(parseRunConfig(raw, '/').config, defaultDeps(), { resume: true, listener: { log: (_l, m) => logs.push(m) } });
    assert.equal(resumed.currentStep, 4, logs.join('\n'));
    assert.match(logs.join('\n'), /recovered checkpoint-4 from checkpoint-4\.tmp-99-1/);
    assert.deepEqual(fs.readdirSync(out).filter((n) => n.startsWith('checkpoint-')).sort(), ['checkpoint-2', 'checkpoint-4']);
    await resumed.discard();
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test('--resume DIR caught mid-replacement: in output_dir (recovered), in another folder (read in place, untouched), and named by its leftover name', { timeout: 120_000 }, async () => {
  const root = tmp('sft-ckpt-resume-dir-');
  try {
    const out = path.join(root, 'out');
    const raw = await trainFourOfSixSteps(out);
    const ck4 = checkpointDir(out, 4);
    /** The crash window of re-saving checkpoint-4 in `dir`: old folder aside, the complete new one at its staging name. */
    const midReplacement = (dir: string) => {
      const ck = checkpointDir(dir, 4);
      fs.cpSync(ck, `${ck}.tmp-99-1`, { recursive: true });
      fs.renameSync(ck, `${ck}.old-99-1`);
    };
    const template = path.join(root, 'template');
    fs.cpSync(out, template, { recursive: true });
    const resume = async (resumeDir: string, outputDir: string) => {
      const logs: string[] = [];
      const t = await Trainer.prepare(parseRunConfig({ ...raw, output_dir: outputDir }, '/').config, defaultDeps(), { resume: resumeDir, listener: { log: (_l, m) => logs.push(m) } });
      const step = t.currentStep;
      await t.discard();
      return { step, logs: logs.join('\n') };
    };

    // 1. DIR in output_dir: the start-up cleanup puts checkpoint-4 back, the trainer resumes at step 4 (not 2)
    midReplacement(out);
    let r = await resume(ck4, out);
    assert.equal(r.step, 4, r.logs);
    assert.match(r.logs, /recovered checkpoint-4 from checkpoint-4\.tmp-99-1/);
    assert.deepEqual(fs.readdirSync(out).filter((n) => n.startsWith('checkpoint-')).sort(), ['checkpoint-2', 'checkpoint-4']);

    // 2. DIR in another run's folder: read from its complete leftover, that folder left as it was
    const other = path.join(root, 'other');
    fs.cpSync(template, other, { recursive: true });
    midReplacement(other);
    const before = treeSignature(other);
    r = await resume(checkpointDir(other, 4), path.join(root, 'out2'));
    assert.equal(r.step, 4, r.logs);
    assert.match(r.logs, /checkpoint-4 is missing; using checkpoint-4\.tmp-99-1, left complete by an interrupted save/);
    assert.deepEqual(treeSignature(other), before, 'the other folder is only read');

    // 3. DIR named by its leftover name inside output_dir: the cleanup renames it back first, the trainer follows it
    fs.rmSync(out, { recursive: true });
    fs.cpSync(template, out, { recursive: true });
    midReplacement(out);
    r = await resume(`${ck4}.tmp-99-1`, out);
    assert.equal(r.step, 4, r.logs);
    assert.match(r.logs, /checkpoint-4\.tmp-99-1 is gone \(a leftover of an interrupted save, cleaned up at start\); using checkpoint-4/);
    // ... and the backup's name too (deleted by the cleanup)
    midReplacement(out);
    r = await resume(`${ck4}.old-99-1`, out);
    assert.equal(r.step, 4, r.logs);
    // 4. a leftover name in another folder is used as named when it is there and complete
    r = await resume(path.join(other, 'checkpoint-4.tmp-99-1'), path.join(root, 'out3'));
    assert.equal(r.step, 4, r.logs);
    assert.deepEqual(treeSignature(other), before);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
