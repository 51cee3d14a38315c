/**
 * JSON parsing for model files with errors that say where. `parseJsonStrict` is a small recursive-descent
 * parser (RFC 8259) that also rejects duplicate object keys — JSON.parse silently keeps the last one, which
 * for a safetensors header would hide a second tensor of the same name. `parseJsonFile` reads a file with the
 * fast built-in parser and turns its syntax errors into `file: invalid JSON at line L, column C: …`.
 */
import * as fs from 'node:fs';
import { SftError } from '../util/errors';

const MAX_DEPTH = 256;

function lineCol(text: string, pos: number): string {
  let line = 1;
  let col = 1;
  for (let i = 0; i < pos && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      col = 1;
    } else col++;
  }
  return `line ${line}, column ${col}`;
}

/** Parses `text` as JSON, rejecting duplicate keys; errors are SftErrors prefixed with `where`. */
export function parseJsonStrict(text: string, where: string): unknown {
  let i = 0;
  const fail = (msg: string, at = i): never => {
    throw new SftError(`invalid JSON at ${lineCol(text, at)}: ${msg}`, where);
  };
  const ws = () => {
    for (;;) {
      const c = text.charCodeAt(i);
      if (c === 32 || c === 9 || c === 10 || c === 13) i++;
      else return;
    }
  };
  const str = (): string => {
    const start = i;
    i++; // opening quote
    let plain = true;
    for (;;) {
      if (i >= text.length) fail('unterminated string', start);
      const c = text.charCodeAt(i);
      if (c === 34) break;
      if (c < 32) fail('control character in string');
      if (c === 92) {
        plain = false;
        i += 2;
      } else i++;
    }
    i++; // closing quote
    const raw = text.slice(start, i);
    if (plain) return raw.slice(1, -1);
    try {
      return JSON.parse(raw) as string;
    } catch {
      return fail('bad escape in string', start);
    }
  };
  const NUM = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
  const value = (depth: number): unknown => {
    if (depth > MAX_DEPTH) fail(`nesting deeper than ${MAX_DEPTH}`);
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const obj: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
      const seen = new Set<string>();
      ws();
      if (text[i] === '}') {
        i++;
        return { ...obj };
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail('expected a string key');
        const keyAt = i;
        const key = str();
        if (seen.has(key)) fail(`duplicate key "${key}"`, keyAt);
        seen.add(key);
        ws();
        if (text[i] !== ':') fail('expected ":"');
        i++;
        obj[key] = value(depth + 1);
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          break;
        }
        fail('expected "," or "}"');
      }
      // A plain object (the null-prototype one guards against "__proto__" keys while parsing).
      const out: Record<string, unknown> = {};
      for (const k of Object.keys(obj)) Object.defineProperty(out, k, { value: obj[k], enumerable: true, writable: true, configurable: true });
      return out;
    }
    if (c === '[') {
      i++;
      const arr: unknown[] = [];
      ws();
      if (text[i] === ']') {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(value(depth + 1));
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === ']') {
          i++;
          break;
        }
        fail('expected "," or "]"');
      }
      return arr;
    }
    if (c === '"') return str();
    if (text.startsWith('true', i)) {
      i += 4;
      return true;
    }
    if (text.startsWith('false', i)) {
      i += 5;
      return false;
    }
    if (text.startsWith('null', i)) {
      i += 4;
      return null;
    }
    NUM.lastIndex = i;
    const m = NUM.exec(text);
    if (m) {
      i += m[0].length;
      return Number(m[0]);
    }
    return fail(i >= text.length ? 'unexpected end of input' : `unexpected character ${JSON.stringify(text[i])}`);
  };
  const v = value(0);
  ws();
  if (i < text.length) fail('unexpected text after the JSON value');
  return v;
}

/**
 * JSON.parse (fast) with errors turned into an SftError naming `where` and the line/column: on failure the
 * text is re-parsed with the strict parser, whose message says where it stopped.
 */
export function parseJsonText(text: string, where: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    parseJsonStrict(text, where); // throws with line/column
    throw new SftError(`invalid JSON: ${(e as Error).message}`, where);
  }
}

/** Reads and parses a JSON file; a missing/unreadable file or bad JSON is an SftError naming it. */
export function parseJsonFile(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new SftError(code === 'ENOENT' ? 'file not found' : `cannot read: ${(e as Error).message}`, file);
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  return parseJsonText(text, file);
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
