/**
 * Reads dataset files into raw records, each tagged with its file and 1-based line (for Parquet: row).
 *
 * - JSONL (one JSON object per line): streamed chunk by chunk, so files of any size work in bounded
 *   memory. UTF-8 with or without BOM, LF or CRLF line ends; blank lines are ignored.
 * - A JSON array file (`[ {...}, {...} ]`, first non-blank character `[`): read whole, each element gets
 *   the line it starts on.
 * - Parquet (`.parquet`, or the `PAR1` magic): rows through hyparquet, line = 1-based row number.
 *
 * Lines that are not valid JSON, or whose value is not an object, are yielded as BadLine entries rather
 * than thrown: the caller decides (on_bad_line) whether that is fatal.
 */
import * as fs from 'node:fs';
import { SftError } from '../util/errors';
import type { BadLine } from './types';

export interface RawRecord {
  kind: 'record';
  value: Record<string, unknown>;
  file: string;
  line: number;
}

export interface RawBad {
  kind: 'bad';
  bad: BadLine;
}

export type RawItem = RawRecord | RawBad;

export type FileKind = 'jsonl' | 'json-array' | 'parquet';

function openForRead(file: string): number {
  try {
    const st = fs.statSync(file);
    if (st.isDirectory()) throw new SftError('is a folder, expected a .jsonl, .json or .parquet file', file);
    return fs.openSync(file, 'r');
  } catch (e) {
    if (e instanceof SftError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new SftError(code === 'ENOENT' ? 'dataset file not found' : `cannot read dataset file (${code ?? String(e)})`, file);
  }
}

/** Decides how a file is read from its first bytes (and its extension for Parquet). */
export function detectFileKind(file: string): FileKind {
  const fd = openForRead(file);
  try {
    const head = Buffer.alloc(4096);
    const n = fs.readSync(fd, head, 0, head.length, 0);
    if (n >= 4 && head.subarray(0, 4).toString('latin1') === 'PAR1') return 'parquet';
    if (/\.parquet$/i.test(file)) return 'parquet';
    let text = head.subarray(0, n).toString('utf8');
    if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    const first = text.trimStart()[0];
    return first === '[' ? 'json-array' : 'jsonl';
  } finally {
    fs.closeSync(fd);
  }
}

function describeType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

function jsonError(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return `invalid JSON (${msg.replace(/\s+/g, ' ').slice(0, 120)})`;
}

function toItem(text: string, file: string, line: number): RawItem {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return { kind: 'bad', bad: { file, line, reason: jsonError(e) } };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { kind: 'bad', bad: { file, line, reason: `expected a JSON object, got ${describeType(value)}` } };
  }
  return { kind: 'record', value: value as Record<string, unknown>, file, line };
}

/** Streams a JSONL file: one item per non-blank line. */
export async function* readJsonlRecords(file: string, label = file): AsyncGenerator<RawItem> {
  fs.closeSync(openForRead(file));
  const stream = fs.createReadStream(file, { encoding: 'utf8', highWaterMark: 1 << 20 });
  let carry = '';
  let lineNo = 0;
  let first = true;
  for await (const chunk of stream as AsyncIterable<string>) {
    let text = carry + chunk;
    if (first) {
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      first = false;
    }
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      if (nl < 0) break;
      lineNo++;
      let end = nl;
      if (end > start && text.charCodeAt(end - 1) === 13) end--;
      const line = text.slice(start, end);
      if (line.trim() !== '') yield toItem(line, label, lineNo);
      start = nl + 1;
    }
    carry = text.slice(start);
  }
  if (carry.length > 0) {
    lineNo++;
    if (first && carry.charCodeAt(0) === 0xfeff) carry = carry.slice(1);
    if (carry.endsWith('\r')) carry = carry.slice(0, -1);
    if (carry.trim() !== '') yield toItem(carry, label, lineNo);
  }
}

/**
 * Splits a JSON array text into its top-level elements with the line each starts on. A structural error
 * (unterminated string, missing `]`) ends the scan with one bad entry at the line where it was found.
 */
export function splitJsonArray(text: string, file: string): RawItem[] {
  const out: RawItem[] = [];
  let i = 0;
  let line = 1;
  const n = text.length;
  if (text.charCodeAt(0) === 0xfeff) i = 1;
  const skipWs = () => {
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 10) line++;
      else if (c !== 32 && c !== 9 && c !== 13) break;
      i++;
    }
  };
  skipWs();
  if (text[i] !== '[') return [{ kind: 'bad', bad: { file, line, reason: 'expected a JSON array' } }];
  i++;
  skipWs();
  if (text[i] === ']') return out;
  for (;;) {
    skipWs();
    const start = i;
    const startLine = line;
    let depth = 0;
    let inString = false;
    for (; i < n; i++) {
      const c = text.charCodeAt(i);
      if (c === 10) line++;
      if (inString) {
        if (c === 92) i++; // backslash: skip the escaped char (never a newline in valid JSON)
        else if (c === 34) inString = false;
        continue;
      }
      if (c === 34) inString = true;
      else if (c === 123 || c === 91) depth++;
      else if (c === 125 || c === 93) {
        if (depth === 0) break; // the array's closing bracket
        depth--;
      } else if (c === 44 && depth === 0) break;
    }
    if (i >= n) {
      out.push({ kind: 'bad', bad: { file, line: startLine, reason: 'unterminated JSON array (missing "]" or a quote)' } });
      return out;
    }
    const elem = text.slice(start, i).trim();
    if (elem === '') out.push({ kind: 'bad', bad: { file, line: startLine, reason: 'empty array element' } });
    else out.push(toItem(elem, file, startLine));
    if (text[i] === ']') {
      i++;
      skipWs();
      if (i < n) out.push({ kind: 'bad', bad: { file, line, reason: 'unexpected text after the closing "]"' } });
      return out;
    }
    i++; // the comma
  }
}

/** Reads a JSON array file whole (elements keep their starting line). */
export async function* readJsonArrayRecords(file: string, label = file): AsyncGenerator<RawItem> {
  let text: string;
  try {
    text = await fs.promises.readFile(file, 'utf8');
  } catch (e) {
    throw new SftError(`cannot read dataset file (${(e as NodeJS.ErrnoException).code ?? String(e)})`, label);
  }
  yield* splitJsonArray(text, label);
}

/** Parquet column values: BigInt → number, typed arrays and Dates left alone. */
function plainValue(v: unknown): unknown {
  if (typeof v === 'bigint') return Number(v);
  return v;
}

/** Reads a Parquet file row by row group; `line` is the 1-based row number. */
export async function* readParquetRecords(file: string, label = file): AsyncGenerator<RawItem> {
  fs.closeSync(openForRead(file));
  const hp = await import('hyparquet');
  let meta;
  let buffer;
  try {
    buffer = await hp.asyncBufferFromFile(file);
    meta = await hp.parquetMetadataAsync(buffer);
  } catch (e) {
    throw new SftError(`not a readable Parquet file (${e instanceof Error ? e.message : String(e)})`, label);
  }
  let rowStart = 0;
  for (const rg of meta.row_groups) {
    const rowEnd = rowStart + Number(rg.num_rows);
    let rows: Record<string, unknown>[];
    try {
      rows = (await hp.parquetReadObjects({ file: buffer, metadata: meta, rowStart, rowEnd })) as Record<string, unknown>[];
    } catch (e) {
      throw new SftError(`rows ${rowStart + 1}-${rowEnd}: cannot decode Parquet data (${e instanceof Error ? e.message : String(e)})`, label);
    }
    for (let k = 0; k < rows.length; k++) {
      const row = rows[k]!;
      const value: Record<string, unknown> = {};
      for (const key of Object.keys(row)) value[key] = plainValue(row[key]);
      yield { kind: 'record', value, file: label, line: rowStart + k + 1 };
    }
    rowStart = rowEnd;
  }
}

/** Reads any supported file, choosing the reader from its content. */
export async function* readRecords(file: string, label = file): AsyncGenerator<RawItem> {
  const kind = detectFileKind(file);
  if (kind === 'parquet') yield* readParquetRecords(file, label);
  else if (kind === 'json-array') yield* readJsonArrayRecords(file, label);
  else yield* readJsonlRecords(file, label);
}
