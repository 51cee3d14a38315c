/**
 * safetensors files (https://github.com/huggingface/safetensors, format section):
 *   [u64 little-endian N][N bytes UTF-8 JSON header][data bytes]
 * The header maps tensor name → {dtype, shape, data_offsets: [begin, end]} (offsets relative to the data
 * start) plus an optional "__metadata__" string→string map.
 *
 * The reader validates the whole header before allocating any tensor memory: N ≤ 100 MB and inside the file,
 * a JSON object without duplicate keys, every entry well formed, a known dtype, dtype size × Π shape = byte
 * length, offsets that tile the data region from 0 without holes or overlaps, and a file length that ends
 * exactly at the last tensor. Every error names the file and, where it applies, the tensor.
 * F32/F16/BF16 tensors load as fp32 (`ParamTensor`), F32 by positional reads straight into the Float32Array.
 *
 * The writer emits F32 tensors sorted by name, a header padded with spaces so the data starts 8-byte
 * aligned and `__metadata__: {"format": "pt"}` (what transformers' from_pretrained expects), written
 * atomically (temp file, fsync, rename).
 *
 * Sharded checkpoints (`model.safetensors.index.json` with a `weight_map` name → shard file) load through
 * `readShardedSafetensors`, which checks that each listed tensor is in the shard the map names.
 *
 * Each header is read once per load: `readShardedHeaders` (index + every shard header, cross-checked) and
 * `readSafetensorsHeader` results can be handed to `readShardedSafetensors({ shards })` /
 * `readSafetensors({ header })`, which then only read tensor data (model/modelFolder.ts loadParams does).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SftError } from '../util/errors';
import { writeFileAtomic, writeFileSynced } from '../util/atomic';
import type { ParamTensor } from './types';
import { isPlainObject, parseJsonFile, parseJsonStrict } from './strictJson';

/** Upper bound on the JSON header (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100_000_000;

/** Element sizes of every dtype the format defines; only F32/F16/BF16 can be loaded as parameters. */
const DTYPE_BYTES: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, I16: 2, U16: 2, F16: 2, BF16: 2, I32: 4, U32: 4, F32: 4, I64: 8, U64: 8, F64: 8,
};
export type LoadableDtype = 'F32' | 'F16' | 'BF16';
const LOADABLE = new Set<string>(['F32', 'F16', 'BF16']);

export interface SafetensorsEntry {
  name: string;
  dtype: string;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  file: string;
  fileSize: number;
  /** Byte offset in the file where the data region starts (8 + header length). */
  dataStart: number;
  /** Tensors in header order. */
  entries: SafetensorsEntry[];
  metadata: Record<string, string>;
  /**
   * Which file this header was read from (device, inode, size, mtime of the open file): a header handed on to
   * readSafetensors is refused when the file there now has another stamp (replaced by a rename, rewritten).
   */
  fileStamp: string;
}

/** The identity stamp of an open file (see SafetensorsHeader.fileStamp). */
function fileStampOf(fd: number): string {
  const st = fs.fstatSync(fd);
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
}

function fileSizeOf(file: string): number {
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) throw new SftError('not a file', file);
    return st.size;
  } catch (e) {
    if (e instanceof SftError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new SftError(code === 'ENOENT' ? 'file not found' : `cannot read: ${(e as Error).message}`, file);
  }
}

function readExactly(fd: number, into: Uint8Array, position: number, file: string): void {
  let off = 0;
  while (off < into.byteLength) {
    const n = fs.readSync(fd, into, off, into.byteLength - off, position + off);
    if (n === 0) throw new SftError(`unexpected end of file at byte ${position + off}`, file);
    off += n;
  }
}

function parseHeaderBytes(file: string, fileSize: number, headerBytes: Uint8Array, dataStart: number, fileStamp: string): SafetensorsHeader {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new SftError('header is not valid UTF-8', file);
  }
  if (!text.startsWith('{')) throw new SftError(`header must be a JSON object starting with "{", found ${JSON.stringify(text.slice(0, 16))}`, file);
  const json = parseJsonStrict(text, `${file}: header`);
  if (!isPlainObject(json)) throw new SftError('header is not a JSON object', file);

  let metadata: Record<string, string> = {};
  const entries: SafetensorsEntry[] = [];
  for (const [name, v] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isPlainObject(v)) throw new SftError('__metadata__ must be an object of strings', file);
      for (const [k, s] of Object.entries(v)) {
        if (typeof s !== 'string') throw new SftError(`__metadata__.${k} must be a string`, file);
      }
      metadata = v as Record<string, string>;
      continue;
    }
    const where = `${file}: tensor ${name}`;
    if (!isPlainObject(v)) throw new SftError('entry must be an object {dtype, shape, data_offsets}', where);
    for (const k of Object.keys(v)) {
      if (k !== 'dtype' && k !== 'shape' && k !== 'data_offsets') throw new SftError(`unexpected field "${k}"`, where);
    }
    const { dtype, shape, data_offsets: offs } = v;
    if (typeof dtype !== 'string') throw new SftError('missing or non-string "dtype"', where);
    const elemBytes = DTYPE_BYTES[dtype];
    if (elemBytes === undefined) throw new SftError(`unknown dtype "${dtype}" (known: ${Object.keys(DTYPE_BYTES).join(', ')})`, where);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      throw new SftError(`"shape" must be an array of non-negative integers, got ${JSON.stringify(shape)}`, where);
    }
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      throw new SftError(`"data_offsets" must be [begin, end] with non-negative integers, got ${JSON.stringify(offs)}`, where);
    }
    const [b, e] = offs as [number, number];
    if (e < b) throw new SftError(`data_offsets [${b}, ${e}] end before begin`, where);
    let count = 1;
    for (const d of shape as number[]) count *= d;
    const need = count * elemBytes;
    if (!Number.isSafeInteger(need)) throw new SftError(`shape ${JSON.stringify(shape)} is too large`, where);
    if (need !== e - b) {
      throw new SftError(`shape ${JSON.stringify(shape)} ${dtype} needs ${need} bytes, header says ${e - b} (data_offsets [${b}, ${e}])`, where);
    }
    entries.push({ name, dtype, shape: shape as number[], begin: dataStart + b, end: dataStart + e });
  }

  // Offsets must tile [0, dataLength) exactly: sorted by begin, each starting where the previous ended.
  const sorted = [...entries].sort((x, y) => x.begin - y.begin || x.end - y.end);
  let cursor = dataStart;
  for (const t of sorted) {
    const rel = (n: number) => n - dataStart;
    if (t.begin > cursor) throw new SftError(`hole in the data: bytes ${rel(cursor)}..${rel(t.begin)} belong to no tensor (data_offsets [${rel(t.begin)}, ${rel(t.end)}])`, `${file}: tensor ${t.name}`);
    if (t.begin < cursor) throw new SftError(`data_offsets [${rel(t.begin)}, ${rel(t.end)}] overlap the previous tensor, which ends at ${rel(cursor)}`, `${file}: tensor ${t.name}`);
    cursor = t.end;
  }
  if (cursor !== fileSize) {
    const last = sorted[sorted.length - 1];
    const which = last ? ` after tensor ${last.name}` : '';
    throw new SftError(
      cursor > fileSize
        ? `file is truncated: tensors need ${cursor} bytes, file has ${fileSize}${last ? ` (tensor ${last.name} ends past the end)` : ''}`
        : `file has ${fileSize - cursor} unexpected trailing bytes${which} (expected length ${cursor}, got ${fileSize})`,
      file,
    );
  }
  return { file, fileSize, dataStart, entries, metadata, fileStamp };
}

/** Reads and validates the header only (no tensor data is read). */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const fileSize = fileSizeOf(file);
  const fd = fs.openSync(file, 'r');
  try {
    return readHeaderFd(fd, file, fileSize);
  } finally {
    fs.closeSync(fd);
  }
}

function readHeaderFd(fd: number, file: string, fileSize: number): SafetensorsHeader {
  if (fileSize < 8) throw new SftError(`file is ${fileSize} bytes, too short for the 8-byte header length`, file);
  const lenBuf = Buffer.alloc(8);
  readExactly(fd, lenBuf, 0, file);
  const n = lenBuf.readBigUInt64LE(0);
  if (n > BigInt(MAX_HEADER_BYTES)) throw new SftError(`header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit (corrupt or not a safetensors file)`, file);
  const headerLen = Number(n);
  if (8 + headerLen > fileSize) throw new SftError(`header length ${headerLen} runs past the end of the file (${fileSize} bytes)`, file);
  if (headerLen < 2) throw new SftError(`header length ${headerLen} is too short for a JSON object`, file);
  const headerBytes = Buffer.alloc(headerLen);
  readExactly(fd, headerBytes, 8, file);
  return parseHeaderBytes(file, fileSize, headerBytes, 8 + headerLen, fileStampOf(fd));
}

/** IEEE half → float32, for every element (F16 checkpoints). */
function f16ToF32(src: Uint16Array, dst: Float32Array): void {
  for (let i = 0; i < src.length; i++) {
    const h = src[i]!;
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) dst[i] = s * m * 2 ** -24;
    else if (e === 31) dst[i] = m ? NaN : s * Infinity;
    else dst[i] = s * (1 + m / 1024) * 2 ** (e - 15);
  }
}

/** bfloat16 → float32: the 16 bits are the high half of the float32. */
function bf16ToF32(src: Uint16Array, dst: Float32Array): void {
  const out = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i]! << 16;
}

export interface ReadOptions {
  /** Load only the tensors for which this returns true (the header is still validated in full). */
  filter?: (name: string) => boolean;
  /**
   * The file's header as readSafetensorsHeader returned it: not read again (the file must still be the one
   * the header was read from, same size and fileStamp, else an SftError says it changed).
   */
  header?: SafetensorsHeader;
}

function readEntry(fd: number, file: string, t: SafetensorsEntry): ParamTensor {
  if (!LOADABLE.has(t.dtype)) throw new SftError(`dtype ${t.dtype} cannot be loaded as a parameter (supported: F32, F16, BF16)`, `${file}: tensor ${t.name}`);
  const bytes = t.end - t.begin;
  if (t.dtype === 'F32') {
    const data = new Float32Array(bytes / 4);
    readExactly(fd, new Uint8Array(data.buffer), t.begin, file);
    return { shape: [...t.shape], data };
  }
  const half = new Uint16Array(bytes / 2);
  readExactly(fd, new Uint8Array(half.buffer), t.begin, file);
  const data = new Float32Array(half.length);
  if (t.dtype === 'F16') f16ToF32(half, data);
  else bf16ToF32(half, data);
  return { shape: [...t.shape], data };
}

/** Loads every (or every filtered) tensor of a safetensors file as fp32, in header order. */
export function readSafetensors(file: string, opts: ReadOptions = {}): Map<string, ParamTensor> {
  const given = opts.header;
  if (given && path.resolve(given.file) !== path.resolve(file)) throw new Error(`readSafetensors(${file}) was given the header of ${given.file}`);
  const fileSize = fileSizeOf(file);
  const fd = fs.openSync(file, 'r');
  try {
    if (given && fileSize !== given.fileSize) throw new SftError(`file changed while loading: ${fileSize} bytes now, ${given.fileSize} when its header was read`, file);
    // Same size is not the same file: a re-save of the same layout, or another layout of equal length.
    if (given && fileStampOf(fd) !== given.fileStamp) throw new SftError('file changed while loading: replaced or rewritten since its header was read', file);
    const header = given ?? readHeaderFd(fd, file, fileSize);
    const wanted = header.entries.filter((t) => !opts.filter || opts.filter(t.name));
    for (const t of wanted) {
      if (!LOADABLE.has(t.dtype)) throw new SftError(`dtype ${t.dtype} cannot be loaded as a parameter (supported: F32, F16, BF16)`, `${file}: tensor ${t.name}`);
    }
    const out = new Map<string, ParamTensor>();
    for (const t of wanted) out.set(t.name, readEntry(fd, file, t));
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

/** Metadata of a sharded checkpoint's index file. */
export interface ShardIndex {
  file: string;
  /** Tensor name → shard file name (relative to the index's folder). */
  weightMap: Map<string, string>;
  metadata: Record<string, unknown>;
}

export function readShardIndex(indexFile: string): ShardIndex {
  const json = parseJsonFile(indexFile);
  if (!isPlainObject(json)) throw new SftError('must be a JSON object with a "weight_map"', indexFile);
  const wm = json.weight_map;
  if (!isPlainObject(wm)) throw new SftError('"weight_map" is missing or not an object of tensor name → shard file', indexFile);
  const weightMap = new Map<string, string>();
  const dir = path.dirname(indexFile);
  for (const [name, shard] of Object.entries(wm)) {
    if (typeof shard !== 'string' || shard === '') throw new SftError(`weight_map["${name}"] must be a shard file name`, indexFile);
    const resolved = path.resolve(dir, shard);
    if (path.dirname(resolved) !== path.resolve(dir)) throw new SftError(`weight_map["${name}"] = "${shard}" must name a file in the same folder`, indexFile);
    weightMap.set(name, shard);
  }
  if (weightMap.size === 0) throw new SftError('"weight_map" lists no tensors', indexFile);
  return { file: indexFile, weightMap, metadata: isPlainObject(json.metadata) ? json.metadata : {} };
}

/** A sharded checkpoint's index and the validated header of every shard it names (by shard file name, sorted). */
export interface ShardedHeaders {
  index: ShardIndex;
  headers: Map<string, SafetensorsHeader>;
}

/**
 * Reads the index and every shard's header (once each) and cross-checks them: each listed tensor is in the
 * shard the weight_map names, and every tensor a shard holds is listed (under that shard).
 */
export function readShardedHeaders(indexFile: string): ShardedHeaders {
  const index = readShardIndex(indexFile);
  const dir = path.dirname(indexFile);
  const shards = [...new Set(index.weightMap.values())].sort();
  const headers = new Map<string, SafetensorsHeader>();
  for (const shard of shards) {
    const f = path.join(dir, shard);
    if (!fs.existsSync(f)) throw new SftError(`shard ${shard} named in the weight_map is missing`, indexFile);
    headers.set(shard, readSafetensorsHeader(f));
  }
  for (const [name, shard] of index.weightMap) {
    const h = headers.get(shard)!;
    if (!h.entries.some((t) => t.name === name)) throw new SftError(`tensor ${name} is listed in the weight_map but missing from ${shard}`, indexFile);
  }
  for (const [shard, h] of headers) {
    for (const t of h.entries) {
      const listed = index.weightMap.get(t.name);
      if (listed === undefined) throw new SftError(`tensor ${t.name} is in ${shard} but not in the weight_map`, indexFile);
      if (listed !== shard) throw new SftError(`tensor ${t.name} is in ${shard} but the weight_map says ${listed}`, indexFile);
    }
  }
  return { index, headers };
}

export interface ShardedReadOptions {
  /** Load only the tensors for which this returns true. */
  filter?: (name: string) => boolean;
  /** readShardedHeaders(indexFile)'s result, when the caller already has it (no header is read again). */
  shards?: ShardedHeaders;
}

/**
 * Loads a sharded checkpoint: every shard the index names (headers validated and cross-checked first, see
 * readShardedHeaders), each listed tensor found in its shard.
 */
export function readShardedSafetensors(indexFile: string, opts: ShardedReadOptions = {}): Map<string, ParamTensor> {
  const { headers } = opts.shards ?? readShardedHeaders(indexFile);
  const dir = path.dirname(indexFile);
  const out = new Map<string, ParamTensor>();
  for (const [shard, header] of headers) {
    const part = readSafetensors(path.join(dir, shard), { filter: opts.filter, header });
    for (const [name, t] of part) out.set(name, t);
  }
  return out;
}

/** Builds the file as chunks (header then tensor bytes) without copying tensor data; metadata always has format "pt". */
export function encodeSafetensors(tensors: Map<string, ParamTensor>, metadata: Record<string, string> = {}): Uint8Array[] {
  const names = [...tensors.keys()].sort();
  // transformers refuses safetensors without __metadata__.format; callers' keys are added next to it.
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', ...metadata } };
  const chunks: Uint8Array[] = [];
  let off = 0;
  for (const name of names) {
    if (name === '__metadata__') throw new SftError('"__metadata__" cannot be a tensor name', 'safetensors writer');
    const t = tensors.get(name)!;
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (!(t.data instanceof Float32Array) || t.data.length !== count) {
      throw new SftError(`tensor ${name}: shape ${JSON.stringify(t.shape)} needs ${count} floats, data has ${t.data?.length}`, 'safetensors writer');
    }
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [off, off + bytes.byteLength] };
    chunks.push(bytes);
    off += bytes.byteLength;
  }
  let json = JSON.stringify(header);
  const jsonBytes = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - ((8 + jsonBytes) % 8)) % 8);
  const headerBuf = Buffer.from(json, 'utf8');
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(headerBuf.byteLength));
  return [lenBuf, headerBuf, ...chunks];
}

/** Writes `tensors` (fp32) atomically: temp file, fsync, rename. */
export function writeSafetensors(file: string, tensors: Map<string, ParamTensor>, metadata: Record<string, string> = {}): void {
  writeFileAtomic(file, encodeSafetensors(tensors, metadata));
}

/** Writes into a folder that is being built atomically (see util/atomic writeDirAtomic): fsync, no rename. */
export function writeSafetensorsSynced(file: string, tensors: Map<string, ParamTensor>, metadata: Record<string, string> = {}): void {
  writeFileSynced(file, encodeSafetensors(tensors, metadata));
}

