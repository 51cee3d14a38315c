// Shared helpers of the model tests: fixture paths, temp dirs, SftError assertions, the base tokenizer folder.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SftError } from '../../native-runner/util/errors';

export const REPO = path.join(__dirname, '../..');
export const TINY_DIR = path.join(REPO, 'samples/tiny-gpt2-chat');
export const FAST_TOKENIZER_DIR = path.join(REPO, 'test/fixtures/gpt2-tokenizer');
export const SLOW_TOKENIZER_DIR = path.join(REPO, 'test/fixtures/gpt2-tokenizer-slow');
export const BASE_TOKENIZER_FILES = path.join(REPO, 'test/fixtures/model/gpt2-base-tokenizer');
export const GOLDEN_TOKENIZER = path.join(REPO, 'test/fixtures/golden/tokenizer-golden.json');

/** A fresh temp dir removed when the process exits. */
export function tempDir(prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  process.on('exit', () => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Asserts `fn` throws a one-line SftError whose message contains every part; returns the message. */
export function expectSftError(fn: () => unknown, ...parts: (string | RegExp)[]): string {
  let msg = '';
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SftError, `expected SftError, got ${e instanceof Error ? e.stack : String(e)}`);
    msg = e.message;
    return true;
  });
  for (const p of parts) {
    if (typeof p === 'string') assert.ok(msg.includes(p), `"${msg}" should contain "${p}"`);
    else assert.match(msg, p);
  }
  assert.ok(!msg.includes('\n'), `one-line message: ${msg}`);
  return msg;
}

export async function expectSftErrorAsync(fn: () => Promise<unknown>, ...parts: (string | RegExp)[]): Promise<string> {
  let err: unknown;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  return expectSftError(() => {
    if (err === undefined) return;
    throw err;
  }, ...parts);
}

/** The base GPT-2 tokenizer (no role tokens) in the slow layout, assembled in `dir`. */
export function makeBaseTokenizerDir(dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  for (const f of ['vocab.json', 'merges.txt']) fs.copyFileSync(path.join(SLOW_TOKENIZER_DIR, f), path.join(dir, f));
  for (const f of ['tokenizer_config.json', 'special_tokens_map.json']) fs.copyFileSync(path.join(BASE_TOKENIZER_FILES, f), path.join(dir, f));
  return dir;
}

export interface TokenizerGolden {
  texts: string[];
  ids: number[][];
  decoded: string[];
  vocab_size: number;
  special: Record<string, number>;
}
export function readTokenizerGolden(): TokenizerGolden {
  return JSON.parse(fs.readFileSync(GOLDEN_TOKENIZER, 'utf8')) as TokenizerGolden;
}
