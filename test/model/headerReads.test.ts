// Each safetensors header is read once per model load (single file and sharded), counted with an fs spy:
// a header read starts with the 8-byte length prefix at file position 0, and tensor data never starts there.
// Also: a header handed to readSafetensors for a file that has since changed size is refused by name.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { loadModel, readParamShapes } from '../../native-runner/model/modelFolder';
import { readSafetensors, readSafetensorsHeader, readShardedHeaders, readShardedSafetensors, writeSafetensors } from '../../native-runner/model/safetensors';
import { expectSftError, tempDir, TINY_DIR } from './helpers';
import * as fsp from 'node:fs';

// The CommonJS module object the runner's `import * as fs from 'node:fs'` reads through (live bindings).
const fs = createRequire(__filename)('node:fs') as typeof import('node:fs');
const tmp = tempDir('sft-hdr-');

/** Runs fn while counting, per file base name, the reads at position 0 (header length prefixes). */
function countHeaderReads<T>(fn: () => T): { result: T; reads: Map<string, number> } {
  const fdPath = new Map<number, string>();
  const reads = new Map<string, number>();
  const realOpen = fs.openSync;
  const realRead = fs.readSync;
  const open = mock.method(fs, 'openSync', (...args: Parameters<typeof fs.openSync>) => {
    const fd = realOpen(...args);
    fdPath.set(fd, path.basename(String(args[0])));
    return fd;
  });
  const read = mock.method(fs, 'readSync', (...args: unknown[]) => {
    const [fd, , , , position] = args as [number, unknown, unknown, unknown, unknown];
    const name = fdPath.get(fd);
    if (name !== undefined && position === 0) reads.set(name, (reads.get(name) ?? 0) + 1);
    return (realRead as (...a: unknown[]) => number)(...args);
  });
  try {
    return { result: fn(), reads };
  } finally {
    open.mock.restore();
    read.mock.restore();
  }
}

function shardedCopy(name: string): string {
  const d = path.join(tmp, name);
  fsp.cpSync(TINY_DIR, d, { recursive: true });
  const t = readSafetensors(path.join(d, 'model.safetensors'));
  fsp.rmSync(path.join(d, 'model.safetensors'));
  const a = new Map([...t].filter(([k]) => k.includes('wte') || k.includes('h.0.')));
  const b = new Map([...t].filter(([k]) => !(k.includes('wte') || k.includes('h.0.'))));
  writeSafetensors(path.join(d, 'model-00001-of-00002.safetensors'), a);
  writeSafetensors(path.join(d, 'model-00002-of-00002.safetensors'), b);
  const wm: Record<string, string> = {};
  for (const k of a.keys()) wm[k] = 'model-00001-of-00002.safetensors';
  for (const k of b.keys()) wm[k] = 'model-00002-of-00002.safetensors';
  fsp.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: wm }));
  return d;
}

test('the spy sees header reads: readSafetensorsHeader counts one for its file', () => {
  const { reads } = countHeaderReads(() => readSafetensorsHeader(path.join(TINY_DIR, 'model.safetensors')));
  assert.deepEqual([...reads], [['model.safetensors', 1]]);
});

test('loadModel reads each shard header once (sharded) and the single file header once', async () => {
  const d = shardedCopy('sharded');
  const sharded = countHeaderReads(() => loadModel(d));
  const m = await sharded.result;
  assert.equal(m.params.size, 28);
  assert.deepEqual(
    [...sharded.reads].sort(),
    [
      ['model-00001-of-00002.safetensors', 1],
      ['model-00002-of-00002.safetensors', 1],
    ],
  );
  const single = countHeaderReads(() => loadModel(TINY_DIR));
  const s = await single.result;
  assert.deepEqual([...single.reads], [['model.safetensors', 1]]);
  // Same tensors either way.
  for (const [name, t] of s.params) assert.deepEqual(m.params.get(name)!.data, t.data, name);
});

test('headers handed on: readShardedSafetensors({ shards }) and readSafetensors({ header }) read no header', () => {
  const d = shardedCopy('handed');
  const idx = path.join(d, 'model.safetensors.index.json');
  const shards = readShardedHeaders(idx);
  assert.deepEqual([...shards.headers.keys()], ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
  const { result, reads } = countHeaderReads(() => readShardedSafetensors(idx, { shards }));
  assert.equal(reads.size, 0);
  assert.equal(result.size, 28);
  const { shapes, headers } = readParamShapes(d);
  assert.equal(headers.kind, 'sharded');
  assert.deepEqual(shapes.get('transformer.wte.weight'), [50260, 32]);
});

test('a handed-on header of a file that changed size since is an SftError naming the file', () => {
  const f = path.join(tmp, 'changing.safetensors');
  writeSafetensors(f, new Map([['w', { shape: [2], data: new Float32Array([1, 2]) }]]));
  const header = readSafetensorsHeader(f);
  writeSafetensors(f, new Map([['w', { shape: [3], data: new Float32Array([1, 2, 3]) }]]));
  expectSftError(() => readSafetensors(f, { header }), 'changing.safetensors', 'file changed while loading');
});

test('a handed-on header of a file replaced by one of the same size (another layout) is refused, not misread', () => {
  const f = path.join(tmp, 'same-size.safetensors');
  const t = (v: number) => ({ shape: [2], data: new Float32Array([v, v + 1]) });
  writeSafetensors(f, new Map([['a', t(1)], ['b', t(10)]]));
  const header = readSafetensorsHeader(f);
  // same names, shapes and byte count; only the values (and, where the writer orders data by insertion, the offsets) differ
  writeSafetensors(f, new Map([['b', t(20)], ['a', t(2)]]));
  assert.equal(readSafetensorsHeader(f).fileSize, header.fileSize, 'the replacement has the same size');
  expectSftError(() => readSafetensors(f, { header }), 'same-size.safetensors', 'file changed while loading', 'replaced or rewritten');
  // without a handed-on header the new content reads normally
  assert.deepEqual([...readSafetensors(f).get('a')!.data], [2, 3]);
});
