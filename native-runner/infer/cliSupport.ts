/**
 * Shared pieces of the inference commands (chat, compare, perplexity, score, bench): the sampling and
 * device options, output streams that tests can replace, and the prompts-file reader.
 */
import { extname } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { numberOption } from '../cli/command';
import type { Device } from '../engine/ortSession';
import { SftError } from '../util/errors';
import { readTextFile } from '../util/textFile';

export interface CommandIO {
  stdin: Readable & { isTTY?: boolean };
  stdout: Writable;
  stderr: Writable;
}

let epipeHandled = false;

/** The process's streams; a closed stdout (`sft … | head`) ends the process quietly instead of crashing. */
export function processIO(): CommandIO {
  if (!epipeHandled) {
    epipeHandled = true;
    process.stdout.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(0);
      throw e;
    });
  }
  return { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr };
}

export const SAMPLING_OPTIONS = {
  temperature: { type: 'string' },
  top_p: { type: 'string' },
  top_k: { type: 'string' },
  repetition_penalty: { type: 'string' },
  max_new_tokens: { type: 'string' },
  seed: { type: 'string' },
  device: { type: 'string' },
} as const;

export interface SamplingArgs {
  temperature: number;
  top_p: number;
  top_k: number;
  repetition_penalty: number;
  max_new_tokens: number;
  seed: number | undefined;
}

function intOption(v: string | undefined, name: string, fallback: number | undefined, min: number): number | undefined {
  const n = numberOption(v, name, fallback);
  if (n === undefined) return undefined;
  if (!Number.isInteger(n) || n < min) throw new SftError(`--${name} must be an integer ≥ ${min}, got "${v}"`);
  return n;
}

/** Reads the sampling options with the given defaults. */
export function samplingArgs(values: Record<string, unknown>, defaults: { temperature: number; top_p: number; top_k: number; max_new_tokens: number; seed?: number }): SamplingArgs {
  const s = (k: string) => values[k] as string | undefined;
  return {
    temperature: numberOption(s('temperature'), 'temperature', defaults.temperature),
    top_p: numberOption(s('top_p'), 'top_p', defaults.top_p),
    top_k: intOption(s('top_k'), 'top_k', defaults.top_k, 0)!,
    repetition_penalty: numberOption(s('repetition_penalty'), 'repetition_penalty', 1),
    max_new_tokens: intOption(s('max_new_tokens'), 'max_new_tokens', defaults.max_new_tokens, 1)!,
    seed: intOption(s('seed'), 'seed', defaults.seed, 0),
  };
}

export function deviceArg(v: string | undefined): Device {
  if (v === undefined || v === 'cpu') return 'cpu';
  if (v === 'cuda') return 'cuda';
  throw new SftError(`--device must be cpu or cuda, got "${v}"`);
}

export function positiveInt(v: string | undefined, name: string, fallback?: number): number | undefined {
  return intOption(v, name, fallback, 1);
}

/**
 * Prompts from a file: a JSON array (strings or objects), JSONL (one string or object per line), or plain
 * text (one prompt per non-empty line). Objects use "prompt", "instruction", "question" or "text".
 */
export function readPromptsFile(file: string): string[] {
  const text = readTextFile(file);
  const fromValue = (v: unknown, where: string): string => {
    if (typeof v === 'string') return v;
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      for (const k of ['prompt', 'instruction', 'question', 'text']) {
        const x = (v as Record<string, unknown>)[k];
        if (typeof x === 'string') return x;
      }
    }
    throw new SftError('expected a string or an object with "prompt" (or "instruction", "question", "text")', where);
  };
  const ext = extname(file).toLowerCase();
  let prompts: string[];
  if (ext === '.json' || (ext !== '.jsonl' && text.trimStart().startsWith('['))) {
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (e) {
      throw new SftError(`invalid JSON: ${(e as Error).message}`, file);
    }
    if (!Array.isArray(data)) throw new SftError('expected a JSON array of prompts', file);
    prompts = data.map((v, i) => fromValue(v, `${file}: item ${i + 1}`));
  } else if (ext === '.jsonl') {
    prompts = [];
    text.split(/\r?\n/).forEach((line, i) => {
      if (!line.trim()) return;
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch (e) {
        throw new SftError(`invalid JSON: ${(e as Error).message}`, `${file}:${i + 1}`);
      }
      prompts.push(fromValue(v, `${file}:${i + 1}`));
    });
  } else {
    prompts = text
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l !== '');
  }
  if (prompts.length === 0) throw new SftError('no prompts in the file', file);
  return prompts;
}

/** Whether a stream is a terminal (progress lines only go there). */
export function isTTY(w: Writable): boolean {
  return Boolean((w as Writable & { isTTY?: boolean }).isTTY);
}

/** Writes a line to a stream. */
export function println(w: Writable, s = ''): void {
  w.write(`${s}\n`);
}

/** Rounds for display without losing the JSON value. */
export function fmt(x: number, digits = 4): string {
  return Number.isFinite(x) ? x.toFixed(digits) : String(x);
}
