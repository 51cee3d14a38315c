// util/atomic: folder replacement is crash-safe. A crash after every single filesystem step of
// writeDirAtomic (states captured through the fs-step hook) leaves the old or the new complete folder
// findable (locateDir) and put back in place by recoverDir, never a mix and never nothing; the same for a
// crash inside the recovery itself, for writeFileAtomic, and for the leftovers older versions left.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { leftoversOf, locateDir, recoverDir, writeDirAtomic, writeFileAtomic, writeFileSynced } from '../../native-runner/util/atomic';
import { captureCrashStates, readTree } from './helpers/crashStates';

const OLD = { 'a.txt': 'old a', 'b.txt': 'old b', 'shared.txt': 'old shared' };
const NEW = { 'a.txt': 'new a', 'c.txt': 'new c', 'shared.txt': 'new shared, longer' };

function tmp(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

async function writeFolder(dir: string, files: Record<string, string>): Promise<void> {
  await writeDirAtomic(dir, (t) => {
    for (const [n, c] of Object.entries(files)) writeFileSynced(path.join(t, n), c);
  });
}

/** 'old' | 'new' for a folder that holds exactly one of the two file sets; fails on anything else. */
function versionOf(dir: string): 'old' | 'new' {
  const tree = readTree(dir);
  if (JSON.stringify(tree) === JSON.stringify(OLD)) return 'old';
  if (JSON.stringify(tree) === JSON.stringify(NEW)) return 'new';
  assert.fail(`${dir} holds neither the old nor the new folder: ${JSON.stringify(tree)}`);
}

test('writeDirAtomic replacing a folder: a crash after any step leaves the old or the new folder, recovered in place', async () => {
  const root = tmp('sft-atomic-');
  try {
    const work = path.join(root, 'work');
    const target = path.join(work, 'model');
    await writeFolder(target, OLD);
    fs.writeFileSync(path.join(work, 'neighbour.txt'), 'untouched');
    const states = await captureCrashStates(work, path.join(root, 'states'), () => writeFolder(target, NEW));
    assert.equal(versionOf(target), 'new');
    assert.deepEqual(leftoversOf(target), [], 'a finished replacement leaves nothing behind');
    // from the moment the old folder is moved aside, the complete new one is what is found
    const movedAside = states.findIndex((s) => s.label.startsWith('moved old aside model.old-'));
    const placed = states.findIndex((s) => s.label === 'renamed into place model');
    assert.ok(movedAside > 0 && placed === movedAside + 1, states.map((s) => s.label).join(', '));
    let missingInWindow = 0;
    for (const s of states) {
      const dir = path.join(s.dir, 'model');
      if (!fs.existsSync(dir)) missingInWindow++;
      const at = locateDir(dir);
      assert.ok(at, `after "${s.label}": nothing findable`);
      const v = versionOf(at);
      assert.equal(v, s.index >= movedAside ? 'new' : 'old', `after "${s.label}"`);
      // the writer's recovery, itself crashed after each of its steps, converges on the same version
      const sub = await captureCrashStates(s.dir, path.join(root, `rec-${s.index}`), () => recoverDir(dir));
      for (const r of sub) {
        const rdir = path.join(r.dir, 'model');
        assert.equal(versionOf(locateDir(rdir)!), v, `after "${s.label}", recovery crashed after "${r.label}"`);
        assert.equal(recoverDir(rdir), rdir);
        assert.equal(versionOf(rdir), v);
        assert.deepEqual(fs.readdirSync(r.dir).sort(), ['model', 'neighbour.txt'], `after "${s.label}" / "${r.label}": leftovers removed, neighbour kept`);
      }
      fs.rmSync(path.join(root, `rec-${s.index}`), { recursive: true, force: true });
    }
    // the window the recovery exists for was hit: the old folder moved aside, the new not yet in place
    assert.equal(missingInWindow, 1);
    assert.ok(states.length >= 10, `${states.length} crash points`);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('writeDirAtomic creating a folder: a crash before it is in place leaves no folder and no usable leftover', async () => {
  const root = tmp('sft-atomic-new-');
  try {
    const work = path.join(root, 'work');
    fs.mkdirSync(work);
    const target = path.join(work, 'model');
    const states = await captureCrashStates(work, path.join(root, 'states'), () => writeFolder(target, NEW));
    const placed = states.findIndex((s) => s.label === 'renamed into place model');
    for (const s of states) {
      const dir = path.join(s.dir, 'model');
      const at = locateDir(dir);
      if (s.index < placed) assert.equal(at, null, `after "${s.label}": an unfinished staging folder is not offered`);
      else assert.equal(versionOf(at!), 'new');
      recoverDir(dir);
      assert.deepEqual(fs.readdirSync(s.dir), s.index < placed ? [] : ['model'], `after "${s.label}"`);
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('a failing fill keeps the old folder and removes the staging folder; writing again after a crash recovers first', async () => {
  const root = tmp('sft-atomic-fail-');
  try {
    const target = path.join(root, 'model');
    await writeFolder(target, OLD);
    await assert.rejects(
      writeDirAtomic(target, (t) => {
        writeFileSynced(path.join(t, 'a.txt'), 'half');
        throw new Error('disk full');
      }),
      /disk full/,
    );
    assert.equal(versionOf(target), 'old');
    assert.deepEqual(fs.readdirSync(root), ['model']);
    // a crash in the window (hand-made: old aside, complete staging with the same id)
    fs.renameSync(target, `${target}.old-1-1`);
    fs.mkdirSync(`${target}.tmp-1-1`);
    for (const [n, c] of Object.entries(NEW)) fs.writeFileSync(path.join(`${target}.tmp-1-1`, n), c);
    fs.mkdirSync(`${target}.tmp-1-2`); // an unfinished later attempt: never offered
    fs.writeFileSync(path.join(`${target}.tmp-1-2`, 'a.txt'), 'torn');
    assert.equal(locateDir(target), `${target}.tmp-1-1`);
    // a failed write after that crash still leaves the recovered folder
    await assert.rejects(writeDirAtomic(target, () => Promise.reject(new Error('no'))), /no/);
    assert.equal(versionOf(target), 'new');
    assert.deepEqual(fs.readdirSync(root), ['model']);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('a backup without its staging folder is used only when a completeness check accepts it; a torn one is removed', () => {
  const root = tmp('sft-atomic-backup-');
  try {
    const target = path.join(root, 'model');
    const backup = `${target}.old-5-9`;
    fs.mkdirSync(backup);
    fs.writeFileSync(path.join(backup, 'a.txt'), 'x');
    assert.equal(locateDir(target), null, 'no check: a lone backup may be half-deleted');
    const hasB = (p: string) => fs.existsSync(path.join(p, 'b.txt'));
    assert.equal(locateDir(target, hasB), null, 'check rejects it');
    fs.writeFileSync(path.join(backup, 'b.txt'), 'y');
    assert.equal(locateDir(target, hasB), backup);
    // legacy backup name of earlier versions (`<dir>.tmp-<id>.old`) is recognised too
    fs.renameSync(backup, `${target}.tmp-5-9.old`);
    assert.equal(locateDir(target, hasB), `${target}.tmp-5-9.old`);
    const messages: string[] = [];
    assert.equal(recoverDir(target, { isComplete: hasB, log: (m) => messages.push(m) }), target);
    assert.deepEqual(readTree(target), { 'a.txt': 'x', 'b.txt': 'y' });
    assert.match(messages[0]!, /recovered model from model\.tmp-5-9\.old/);
    // an existing folder wins; leftovers next to it (a half-deleted backup) go
    fs.mkdirSync(`${target}.old-5-10`);
    fs.writeFileSync(path.join(`${target}.old-5-10`, 'b.txt'), 'stale');
    assert.equal(locateDir(target, hasB), target);
    recoverDir(target, { isComplete: hasB });
    assert.deepEqual(fs.readdirSync(root), ['model']);
    assert.deepEqual(readTree(target), { 'a.txt': 'x', 'b.txt': 'y' });
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('writeFileAtomic: a crash after any step leaves the old or the new file; its temp file is a removable leftover', async () => {
  const root = tmp('sft-atomic-file-');
  try {
    const file = path.join(root, 'work', 'run.json');
    writeFileAtomic(file, 'old content');
    const states = await captureCrashStates(path.join(root, 'work'), path.join(root, 'states'), () => writeFileAtomic(file, ['new ', 'content']));
    assert.equal(fs.readFileSync(file, 'utf8'), 'new content');
    const placed = states.findIndex((s) => s.label === 'renamed into place run.json');
    assert.ok(placed > 0);
    for (const s of states) {
      const f = path.join(s.dir, 'run.json');
      assert.equal(fs.readFileSync(f, 'utf8'), s.index >= placed ? 'new content' : 'old content', `after "${s.label}"`);
      recoverDir(f);
      assert.deepEqual(fs.readdirSync(s.dir), ['run.json']);
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
