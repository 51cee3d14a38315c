// safetensors reader/writer: round trips, dtype conversion, sharding, and malformed files (made in a temp dir).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  readSafetensors,
  readSafetensorsHeader,
  readShardedSafetensors,
  writeSafetensors,
  MAX_HEADER_BYTES,
} from '../../native-runner/model/safetensors';
import { SftError } from '../../native-runner/util/errors';
import type { ParamTensor } from '../../native-runner/model/types';

const TINY = path.join(__dirname, '../../samples/tiny-gpt2-chat/model.safetensors');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-st-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

/** Builds a safetensors file from a raw header object (not validated) and `dataBytes` bytes of data. */
function rawFile(name: string, header: unknown, dataBytes: number | Uint8Array, opts: { headerText?: string; lengthOverride?: bigint } = {}): string {
  const text = opts.headerText ?? JSON.stringify(header);
  const hb = Buffer.from(text, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(opts.lengthOverride ?? BigInt(hb.length));
  const data = typeof dataBytes === 'number' ? Buffer.alloc(dataBytes) : Buffer.from(dataBytes);
  const f = path.join(tmp, name);
  fs.writeFileSync(f, Buffer.concat([len, hb, data]));
  return f;
}

function expectError(fn: () => unknown, ...parts: (string | RegExp)[]): string {
  let msg = '';
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SftError, `expected SftError, got ${String(e)}`);
    msg = e.message;
    return true;
  });
  for (const p of parts) {
    if (typeof p === 'string') assert.ok(msg.includes(p), `"${msg}" should contain "${p}"`);
    else assert.match(msg, p);
  }
  assert.ok(!msg.includes('\n'), 'one-line message');
  return msg;
}

test('tiny fixture: 28 tensors with HF shapes, metadata format=pt', () => {
  const h = readSafetensorsHeader(TINY);
  assert.equal(h.metadata.format, 'pt');
  assert.equal(h.entries.length, 28);
  const m = readSafetensors(TINY);
  assert.deepEqual(m.get('transformer.wte.weight')!.shape, [50260, 32]);
  assert.deepEqual(m.get('transformer.h.1.attn.c_attn.weight')!.shape, [32, 96]);
  assert.equal(m.get('transformer.h.0.ln_1.weight')!.data[5], 1);
  let total = 0;
  for (const t of m.values()) total += t.data.length;
  assert.equal(total, 1_637_888);
  // The filter loads a subset only.
  const sub = readSafetensors(TINY, { filter: (n) => n.endsWith('.bias') });
  assert.ok(sub.size > 0 && [...sub.keys()].every((n) => n.endsWith('.bias')));
});

test('write → read round-trips bytes exactly; header is 8-byte aligned and sorted', () => {
  const m = readSafetensors(TINY);
  const out = path.join(tmp, 'rt.safetensors');
  writeSafetensors(out, m);
  const h = readSafetensorsHeader(out);
  assert.equal(h.dataStart % 8, 0);
  assert.deepEqual(h.metadata, { format: 'pt' });
  const names = h.entries.map((e) => e.name);
  assert.deepEqual(names, [...names].sort());
  const back = readSafetensors(out);
  assert.equal(back.size, m.size);
  for (const [k, t] of m) {
    const u = back.get(k)!;
    assert.deepEqual(u.shape, t.shape);
    assert.ok(Buffer.from(u.data.buffer, u.data.byteOffset, u.data.byteLength).equals(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)), k);
  }
  // No temp files left behind.
  assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-')), []);
});

test('F16 and BF16 tensors load as fp32 with exact values', () => {
  // F16: 1.0 = 0x3c00, -2.0 = 0xc000, 65504 = 0x7bff, smallest subnormal 0x0001 = 2^-24.
  // BF16: 1.0 = 0x3f80, -0.5 = 0xbf00, 3.140625 = 0x4049.
  const data = new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x3f80, 0xbf00, 0x4049, 0]);
  const f = rawFile('half.safetensors', { a: { dtype: 'F16', shape: [2, 2], data_offsets: [0, 8] }, b: { dtype: 'BF16', shape: [4], data_offsets: [8, 16] } }, new Uint8Array(data.buffer));
  const m = readSafetensors(f);
  assert.deepEqual([...m.get('a')!.data], [1, -2, 65504, 2 ** -24]);
  assert.deepEqual([...m.get('b')!.data], [1, -0.5, 3.140625, 0]);
});

test('sharded checkpoint: index → all shards; missing/misplaced tensors named', () => {
  const a: ParamTensor = { shape: [2], data: new Float32Array([1, 2]) };
  const b: ParamTensor = { shape: [1, 3], data: new Float32Array([3, 4, 5]) };
  const dir = path.join(tmp, 'sharded');
  fs.mkdirSync(dir);
  writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), new Map([['x.a', a]]));
  writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), new Map([['x.b', b]]));
  const idx = path.join(dir, 'model.safetensors.index.json');
  fs.writeFileSync(idx, JSON.stringify({ metadata: { total_size: 20 }, weight_map: { 'x.a': 'model-00001-of-00002.safetensors', 'x.b': 'model-00002-of-00002.safetensors' } }));
  const m = readShardedSafetensors(idx);
  assert.deepEqual([...m.get('x.b')!.data], [3, 4, 5]);
  assert.deepEqual(m.get('x.a')!.shape, [2]);

  fs.writeFileSync(idx, JSON.stringify({ weight_map: { 'x.a': 'model-00001-of-00002.safetensors', 'x.b': 'model-00002-of-00002.safetensors', 'x.c': 'model-00002-of-00002.safetensors' } }));
  expectError(() => readShardedSafetensors(idx), 'model.safetensors.index.json', 'x.c', 'missing from model-00002-of-00002.safetensors');
  fs.writeFileSync(idx, JSON.stringify({ weight_map: { 'x.a': 'model-00001-of-00002.safetensors', 'x.b': 'model-00003-of-00002.safetensors' } }));
  expectError(() => readShardedSafetensors(idx), 'model-00003-of-00002.safetensors', 'missing');
  writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), new Map([['x.b', b], ['x.d', a]]));
  fs.writeFileSync(idx, JSON.stringify({ weight_map: { 'x.a': 'model-00001-of-00002.safetensors', 'x.b': 'model-00002-of-00002.safetensors' } }));
  expectError(() => readShardedSafetensors(idx), 'x.d', 'not in the weight_map');
  fs.writeFileSync(idx, '{"weight_map": {"x.a": ');
  expectError(() => readShardedSafetensors(idx), 'model.safetensors.index.json', 'invalid JSON');
});

// ---- malformed files: each must be a one-line SftError naming the file (and the tensor where one is at fault).

const ok = { w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] }, b: { dtype: 'F32', shape: [3], data_offsets: [24, 36] } };

test('malformed: truncated file (data shorter than the header promises)', () => {
  const f = rawFile('trunc.safetensors', ok, 30);
  expectError(() => readSafetensors(f), 'trunc.safetensors', 'truncated', 'tensor b');
});

test('malformed: shorter than 8 bytes', () => {
  const f = path.join(tmp, 'tiny.safetensors');
  fs.writeFileSync(f, Buffer.from([1, 2, 3]));
  expectError(() => readSafetensors(f), 'tiny.safetensors', 'too short');
});

test('malformed: header length past the end of the file', () => {
  const f = rawFile('past.safetensors', ok, 36, { lengthOverride: 5000n });
  expectError(() => readSafetensorsHeader(f), 'past.safetensors', 'header length 5000 runs past the end');
});

test('malformed: huge header length is refused before allocating', () => {
  const f = rawFile('huge.safetensors', ok, 36, { lengthOverride: 0xffff_ffff_ffffn });
  expectError(() => readSafetensors(f), 'huge.safetensors', `exceeds the ${MAX_HEADER_BYTES}-byte limit`);
});

test('malformed: overlapping offsets', () => {
  const f = rawFile('overlap.safetensors', { w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] }, b: { dtype: 'F32', shape: [3], data_offsets: [20, 32] } }, 32);
  expectError(() => readSafetensors(f), 'overlap.safetensors', 'tensor b', 'overlap');
});

test('malformed: hole between tensors', () => {
  const f = rawFile('hole.safetensors', { w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] }, b: { dtype: 'F32', shape: [3], data_offsets: [28, 40] } }, 40);
  expectError(() => readSafetensors(f), 'hole.safetensors', 'tensor b', 'hole');
});

test('malformed: shape × dtype does not match the byte length', () => {
  const f = rawFile('mismatch.safetensors', { w: { dtype: 'F32', shape: [768, 2304], data_offsets: [0, 7077884] } }, 7077884);
  expectError(() => readSafetensorsHeader(f), 'mismatch.safetensors', 'tensor w', 'needs 7077888 bytes, header says 7077884');
});

test('malformed: unknown dtype, and a known dtype that cannot be a parameter', () => {
  const f = rawFile('dtype.safetensors', { w: { dtype: 'F33', shape: [2], data_offsets: [0, 8] } }, 8);
  expectError(() => readSafetensors(f), 'dtype.safetensors', 'tensor w', 'unknown dtype "F33"');
  const g = rawFile('i64.safetensors', { w: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, 16);
  assert.equal(readSafetensorsHeader(g).entries[0]!.dtype, 'I64');
  expectError(() => readSafetensors(g), 'i64.safetensors', 'tensor w', 'I64 cannot be loaded');
});

test('malformed: duplicate tensor names', () => {
  const text = '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}';
  const f = rawFile('dup.safetensors', null, 8, { headerText: text });
  expectError(() => readSafetensors(f), 'dup.safetensors', 'duplicate key "w"');
});

test('malformed: trailing bytes after the last tensor', () => {
  const f = rawFile('trail.safetensors', ok, 40);
  expectError(() => readSafetensors(f), 'trail.safetensors', '4 unexpected trailing bytes');
});

test('malformed: header is not JSON / not an object / bad entry fields', () => {
  const f = rawFile('badjson.safetensors', null, 0, { headerText: '{"w": {"dtype": "F32",' });
  expectError(() => readSafetensors(f), 'badjson.safetensors', 'invalid JSON');
  const g = rawFile('arr.safetensors', null, 0, { headerText: '[1,2]' });
  expectError(() => readSafetensors(g), 'arr.safetensors', 'JSON object');
  const h = rawFile('shape.safetensors', { w: { dtype: 'F32', shape: [2, -1], data_offsets: [0, 8] } }, 8);
  expectError(() => readSafetensors(h), 'shape.safetensors', 'tensor w', '"shape"');
  const i = rawFile('offs.safetensors', { w: { dtype: 'F32', shape: [2], data_offsets: [0] } }, 8);
  expectError(() => readSafetensors(i), 'offs.safetensors', 'tensor w', 'data_offsets');
  const j = rawFile('meta.safetensors', { __metadata__: { format: 7 } }, 0);
  expectError(() => readSafetensors(j), 'meta.safetensors', '__metadata__.format');
});

test('missing file is an SftError naming it', () => {
  expectError(() => readSafetensors(path.join(tmp, 'nope.safetensors')), 'nope.safetensors', 'not found');
});

test('empty tensor set and zero-size tensors are valid', () => {
  const f = rawFile('empty.safetensors', { __metadata__: { format: 'pt' } }, 0);
  assert.equal(readSafetensors(f).size, 0);
  const g = rawFile('zero.safetensors', { z: { dtype: 'F32', shape: [0, 4], data_offsets: [0, 0] }, a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, 4);
  const m = readSafetensors(g);
  assert.equal(m.get('z')!.data.length, 0);
  assert.equal(m.get('a')!.data.length, 1);
});
