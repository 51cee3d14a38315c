// util/atomic under Windows' file-locking behaviour, simulated by making fs calls fail the way Windows does
// while another process (virus scanner, indexer) holds a file: renames are retried on win32 only and the
// last error surfaces; a backup or leftover that cannot be deleted does not fail a finished replacement and
// is cleaned up by the next recovery.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import type { PathLike, RmOptions } from 'node:fs';
import { leftoversOf, recoverDir, renameRetrying, writeDirAtomic, writeFileSynced } from '../../native-runner/util/atomic';

// The CommonJS module object the runner's `import * as fs from 'node:fs'` reads through (live bindings).
const fs = createRequire(__filename)('node:fs') as typeof import('node:fs');

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: operation not permitted (simulated)`), { code });
}

function tmp(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** fs.renameSync failing with `code` for the first `failures` calls, then renaming; counts calls. */
function flakyRename(code: string, failures: number) {
  const real = fs.renameSync;
  let calls = 0;
  const m = mock.method(fs, 'renameSync', (a: PathLike, b: PathLike) => {
    calls++;
    if (calls <= failures) throw errno(code);
    real(a, b);
  });
  return { calls: () => calls, restore: () => m.mock.restore() };
}

test('renameRetrying: EPERM/EBUSY twice on win32 then success; final elsewhere; a lasting lock surfaces after ~1 s', () => {
  const root = tmp('sft-win-rename-');
  try {
    const a = path.join(root, 'a');
    fs.writeFileSync(a, 'x');
    for (const code of ['EPERM', 'EBUSY', 'EACCES']) {
      const r = flakyRename(code, 2);
      try {
        renameRetrying(a, path.join(root, 'b'), 'win32');
      } finally {
        r.restore();
      }
      assert.equal(r.calls(), 3, code);
      assert.equal(fs.readFileSync(path.join(root, 'b'), 'utf8'), 'x');
      fs.renameSync(path.join(root, 'b'), a);
    }
    // not Windows: one attempt, the error as it came
    let r = flakyRename('EPERM', 1);
    try {
      assert.throws(() => renameRetrying(a, path.join(root, 'b'), 'linux'), /EPERM/);
    } finally {
      r.restore();
    }
    assert.equal(r.calls(), 1);
    // other errors are never retried
    r = flakyRename('ENOENT', 1);
    try {
      assert.throws(() => renameRetrying(a, path.join(root, 'b'), 'win32'), /ENOENT/);
    } finally {
      r.restore();
    }
    assert.equal(r.calls(), 1);
    // a lock that does not go away: 8 attempts over about 1.3 s, then the error
    r = flakyRename('EPERM', Infinity);
    const t0 = Date.now();
    try {
      assert.throws(() => renameRetrying(a, path.join(root, 'b'), 'win32'), /EPERM/);
    } finally {
      r.restore();
    }
    assert.equal(r.calls(), 8);
    assert.ok(Date.now() - t0 >= 1200, `${Date.now() - t0} ms of retries`);
    assert.ok(fs.existsSync(a));
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('writeDirAtomic: a backup that cannot be deleted does not fail the finished replacement; recovery removes it later', async () => {
  const root = tmp('sft-win-backup-');
  try {
    const dir = path.join(root, 'model');
    const write = (content: string) => writeDirAtomic(dir, (t) => writeFileSynced(path.join(t, 'f.txt'), content));
    await write('old');
    const realRm = fs.rmSync;
    const rm = mock.method(fs, 'rmSync', (p: PathLike, o?: RmOptions) => {
      if (/\.old-\d+-\d+$/.test(String(p))) throw errno('EBUSY');
      realRm(p, o);
    });
    try {
      await write('new');
    } finally {
      rm.mock.restore();
    }
    assert.equal(fs.readFileSync(path.join(dir, 'f.txt'), 'utf8'), 'new');
    const left = leftoversOf(dir);
    assert.deepEqual(left.map((l) => l.kind), ['backup'], 'the undeletable backup stays, under its recognised name');
    assert.equal(fs.readFileSync(path.join(left[0]!.path, 'f.txt'), 'utf8'), 'old');
    // a recovery that cannot delete it either says so and goes on
    const logs: string[] = [];
    const rm2 = mock.method(fs, 'rmSync', () => {
      throw errno('EBUSY');
    });
    try {
      assert.equal(recoverDir(dir, { log: (m) => logs.push(m) }), dir);
    } finally {
      rm2.mock.restore();
    }
    assert.match(logs.join('\n'), /could not remove model\.old-\d+-\d+ \(left by an interrupted save; tried again at the next start\): EBUSY/);
    // the next start removes it; the content stays the new one
    recoverDir(dir);
    assert.deepEqual(leftoversOf(dir), []);
    assert.deepEqual(fs.readdirSync(root), ['model']);
    assert.equal(fs.readFileSync(path.join(dir, 'f.txt'), 'utf8'), 'new');
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
