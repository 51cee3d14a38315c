// Checkpoint rotation and start-up cleanup when a folder cannot be moved or deleted (as on Windows while
// another process holds a file; simulated by failing fs calls): the finished save is not failed, the old
// checkpoint stays complete and is rotated at the next save, the cleanup logs and goes on.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import type { PathLike, RmOptions } from 'node:fs';
import { checkpointDir, listCheckpointDirs, removeStaleTemp, rotateCheckpoints } from '../../native-runner/train/checkpoint';
import { saveFake, versionOf } from './helpers/fakeCheckpoint';

// The CommonJS module object the runner's `import * as fs from 'node:fs'` reads through (live bindings).
const fs = createRequire(__filename)('node:fs') as typeof import('node:fs');

const busy = () => Object.assign(new Error('EBUSY: resource busy or locked (simulated)'), { code: 'EBUSY' });

test('rotation: a checkpoint that cannot be moved aside stays (logged), the save succeeds, the next rotation deletes it', async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-ckpt-locked-'));
  try {
    for (const step of [2, 4]) await saveFake(out, step, 'old', null);
    const realRename = fs.renameSync;
    const rename = mock.method(fs, 'renameSync', (a: PathLike, b: PathLike) => {
      if (String(b).endsWith('checkpoint-2.deleting')) throw busy();
      realRename(a, b);
    });
    const logs: string[] = [];
    let removed: string[];
    try {
      await saveFake(out, 6, 'new', null);
      removed = rotateCheckpoints(out, 2, (m) => logs.push(m));
    } finally {
      rename.mock.restore();
    }
    assert.deepEqual(removed, []);
    assert.match(logs.join('\n'), /could not delete checkpoint-2 \(save_total_limit 2\), kept for now: EBUSY/);
    assert.deepEqual(listCheckpointDirs(out).map((c) => c.step), [6, 4, 2]);
    assert.equal(versionOf(checkpointDir(out, 2), 2), 'old', 'still complete');
    // the lock is gone: the next save rotates it
    await saveFake(out, 8, 'new', 2);
    assert.deepEqual(listCheckpointDirs(out).map((c) => c.step), [8, 6]);

    // a `.deleting` folder that cannot be removed at start-up: logged, the cleanup goes on
    fs.mkdirSync(path.join(out, 'checkpoint-4.deleting'));
    fs.mkdirSync(path.join(out, 'checkpoint-8.tmp-5-5'));
    const realRm = fs.rmSync;
    const rm = mock.method(fs, 'rmSync', (p: PathLike, o?: RmOptions) => {
      if (String(p).endsWith('.deleting')) throw busy();
      realRm(p, o);
    });
    const startLogs: string[] = [];
    try {
      removeStaleTemp(out, (m) => startLogs.push(m));
    } finally {
      rm.mock.restore();
    }
    assert.match(startLogs.join('\n'), /could not remove checkpoint-4\.deleting .*EBUSY/);
    assert.deepEqual(fs.readdirSync(out).sort(), ['checkpoint-4.deleting', 'checkpoint-6', 'checkpoint-8']);
    removeStaleTemp(out);
    assert.deepEqual(fs.readdirSync(out).sort(), ['checkpoint-6', 'checkpoint-8']);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});
