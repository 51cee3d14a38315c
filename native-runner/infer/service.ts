/**
 * Request-level inference API for the CLI commands and `sft serve` (the extension's chat panel):
 *   openInferenceModel(dir, device)  loaded model + EngineLM, cached per (folder, device) — the 2 most recently
 *                                    used stay loaded (setInferenceCacheSize) — and reloaded when the weights
 *                                    file changes (a checkpoint overwritten by training)
 *   holdInferenceModel(m)            keeps a cached model open until the returned release() is called
 *   withInferenceModel(dir, dev, fn) runs fn on the opened model, held from before its load to fn's end
 *   chat(request)                    one answer to a conversation, streamed through onToken, cancellable
 *   perplexityOfText / perplexityOfFile / evalLossOfExamples   measurement helpers
 *   closeInferenceModels()           frees every cached model
 * Models in use are reference counted: chat, chatWith, the perplexity and eval-loss helpers hold their model
 * while they run (and holdInferenceModel holds it on request). Eviction never closes a held model: it skips
 * it (the cache may hold more than its size meanwhile) and closes it once the last user releases it, if it is
 * still over the size then. A replaced (weights changed) or closed model that is held is closed on release.
 */
import { statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { LoadedModel } from '../model/types';
import type { TokenizedExample } from '../data/types';
import { loadModel } from '../model/modelFolder';
import type { Device } from '../engine/ortSession';
import { SftError } from '../util/errors';
import { readTextFile } from '../util/textFile';
import { EngineLM } from './engineLM';
import { buildPrompt, chatStopIds, extractAnswer, hasChatTokens, type ChatMessage, type PromptMode } from './chatFormat';
import { generate, maxPromptTokens, type StopReason } from './generate';
import { samplingFrom } from './sampling';
import { perplexityOfIds, type PerplexityResult } from './perplexity';

export interface InferenceModel {
  dir: string;
  device: Device;
  model: LoadedModel;
  lm: EngineLM;
  /** 'chat' when the tokenizer has the role tokens, else 'raw'. */
  defaultMode: PromptMode;
}

interface CacheEntry {
  key: string;
  stamp: string;
  model: Promise<InferenceModel>;
  /** Holders right now (calls in flight, holdInferenceModel); eviction never closes an entry with users. */
  users: number;
  /** Out of the cache (evicted, replaced by newer weights, or closeInferenceModels): closed once unused. */
  retired: boolean;
  closed: boolean;
}
/** Least recently used first. Every entry here is neither retired nor closed. */
const cache = new Map<string, CacheEntry>();
/** The entry of each loaded model (to hold the object a caller got from openInferenceModel). */
const entryOf = new WeakMap<InferenceModel, CacheEntry>();
/** Models kept loaded at once (least recently used ones are closed first). */
let maxCached = 2;

/**
 * Sets how many models stay loaded (≥ 1); extra ones are closed, least recently used first (models in use
 * are closed when released). Returns the previous size.
 */
export function setInferenceCacheSize(n: number): number {
  const previous = maxCached;
  maxCached = Math.max(1, Math.floor(n));
  evictOverflow();
  return previous;
}

function closeEntry(e: CacheEntry): Promise<void> {
  if (e.closed) return Promise.resolve();
  e.closed = true;
  return e.model.then((m) => m.lm.dispose()).catch(() => undefined);
}

/** Takes `e` out of service: closed now when unused, else by its last release. */
function retire(e: CacheEntry): void {
  e.retired = true;
  if (e.users === 0) void closeEntry(e);
}

/** Closes least recently used unheld models while the cache is over its size; `keep` (just opened) stays. */
function evictOverflow(keep?: CacheEntry): void {
  for (const [key, e] of cache) {
    if (cache.size <= maxCached) break;
    if (e.users > 0 || e === keep) continue;
    cache.delete(key);
    retire(e);
  }
}

/** Counts one more user of `e` (and marks it most recently used); the returned function releases it once. */
function acquire(e: CacheEntry): () => void {
  if (e.closed) throw new SftError('the model was closed');
  e.users++;
  if (!e.retired && cache.get(e.key) === e) {
    cache.delete(e.key);
    cache.set(e.key, e);
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
    e.users--;
    if (e.users > 0) return;
    if (e.retired) void closeEntry(e);
    else evictOverflow();
  };
}

function weightsStamp(dir: string): string {
  for (const f of ['model.safetensors', 'model.safetensors.index.json']) {
    try {
      const st = statSync(join(dir, f));
      return `${f}:${st.size}:${st.mtimeMs}`;
    } catch {
      /* try the next layout */
    }
  }
  return 'missing';
}

/** The cache entry of (dir, device), loading it when missing or when its weights file changed. */
function openEntry(dir: string, device: Device): CacheEntry {
  const abs = resolve(dir);
  const key = `${device}\u0000${abs}`;
  const stamp = weightsStamp(abs);
  const hit = cache.get(key);
  if (hit && hit.stamp === stamp) {
    cache.delete(key); // most recently used goes last
    cache.set(key, hit);
    return hit;
  }
  if (hit) {
    cache.delete(key);
    retire(hit);
  }
  const entry: CacheEntry = { key, stamp, model: undefined as unknown as Promise<InferenceModel>, users: 0, retired: false, closed: false };
  entry.model = (async () => {
    const m = await loadModel(abs);
    const lm = new EngineLM(m.config, m.params, { device });
    const im: InferenceModel = { dir: abs, device, model: m, lm, defaultMode: hasChatTokens(m.tokenizer) ? 'chat' : 'raw' };
    entryOf.set(im, entry);
    return im;
  })();
  cache.set(key, entry);
  entry.model.catch(() => {
    if (cache.get(key) === entry) cache.delete(key);
  });
  evictOverflow(entry);
  return entry;
}

/**
 * Loads (or reuses) a model folder for inference on `device`. The model is not held: a later open of other
 * models may close it once it is over the cache size and unused — hold it (holdInferenceModel) across calls.
 */
export async function openInferenceModel(dir: string, device: Device = 'cpu'): Promise<InferenceModel> {
  return openEntry(dir, device).model;
}

/**
 * Keeps `m` (from openInferenceModel) open until the returned release() is called (calling it again does
 * nothing): eviction passes over it meanwhile. A model not from the cache is not tracked (release is a no-op).
 * Throws "the model was closed" when it already was.
 */
export function holdInferenceModel(m: InferenceModel): () => void {
  const e = entryOf.get(m);
  return e ? acquire(e) : () => undefined;
}

/** Runs `fn` with `m` held. */
async function withHeld<T>(m: InferenceModel, fn: () => Promise<T>): Promise<T> {
  const release = holdInferenceModel(m);
  try {
    return await fn();
  } finally {
    release();
  }
}

/**
 * Opens (dir, device) and runs `fn` on it, held from before the load starts until `fn` settles — unlike
 * openInferenceModel + holdInferenceModel, other opens during the load cannot close it.
 */
export async function withInferenceModel<T>(dir: string, device: Device, fn: (m: InferenceModel) => Promise<T>): Promise<T> {
  const e = openEntry(dir, device);
  const release = acquire(e);
  try {
    return await fn(await e.model);
  } finally {
    release();
  }
}

/** Frees every cached model (one in use is closed when its call releases it). */
export async function closeInferenceModels(): Promise<void> {
  const all = [...cache.values()];
  cache.clear();
  const closing: Promise<void>[] = [];
  for (const e of all) {
    e.retired = true;
    if (e.users === 0) closing.push(closeEntry(e));
  }
  await Promise.all(closing);
}

export interface ChatRequest {
  /** Model folder. */
  model: string;
  device?: Device;
  /** The conversation so far, ending with the user's message (a leading system message is allowed). */
  messages: ChatMessage[];
  /** System prompt (overrides a system message in `messages`). */
  system?: string;
  /** 'auto' (default): chat template when the tokenizer has role tokens, else the raw last message. */
  mode?: PromptMode | 'auto';
  /** 0 = greedy. Default 0.7 (the seed's test_sft.py). */
  temperature?: number;
  /** Default 0.9 (test_sft.py). */
  top_p?: number;
  /** Default 50 (transformers' generate default); 0 = off. */
  top_k?: number;
  repetition_penalty?: number;
  /** Default 150. */
  max_new_tokens?: number;
  /** Default: a random seed (reported in the reply). */
  seed?: number;
  signal?: AbortSignal;
  /** Streamed answer text (leading whitespace held back, as the answer is stripped). */
  onToken?: (text: string) => void;
}

export interface ChatReply {
  /** The answer: generated text up to the stop token, stripped. */
  text: string;
  /** The generated text as produced (before stripping). */
  raw: string;
  mode: PromptMode;
  seed: number;
  promptTokens: number;
  newTokens: number;
  droppedTurns: number;
  stopReason: StopReason;
  /** The protocol's wording: eos (a stop token), length (max_new_tokens or the context), cancelled. */
  finishReason: 'eos' | 'length' | 'cancelled';
  firstTokenMs: number;
  totalMs: number;
  tokensPerSecond: number;
}

/** One chat answer. Cancelling through `signal` returns what was generated so far (stopReason 'aborted'). */
export async function chat(req: ChatRequest): Promise<ChatReply> {
  return withInferenceModel(req.model, req.device ?? 'cpu', (m) => chatWith(m, req));
}

/** chat() on an already opened model (held while it generates). */
export async function chatWith(m: InferenceModel, req: Omit<ChatRequest, 'model' | 'device'>): Promise<ChatReply> {
  return withHeld(m, () => chatOn(m, req));
}

async function chatOn(m: InferenceModel, req: Omit<ChatRequest, 'model' | 'device'>): Promise<ChatReply> {
  const tok = m.model.tokenizer;
  const sampling = samplingFrom({ temperature: req.temperature ?? 0.7, topP: req.top_p ?? 0.9, topK: req.top_k, repetitionPenalty: req.repetition_penalty });
  const maxNew = req.max_new_tokens ?? 150;
  if (!(Number.isInteger(maxNew) && maxNew >= 1)) throw new SftError(`max_new_tokens must be a positive integer, got ${maxNew}`);
  const mode = !req.mode || req.mode === 'auto' ? m.defaultMode : req.mode;
  const prompt = buildPrompt(tok, req.messages, { system: req.system, mode, maxPromptTokens: maxPromptTokens(m.lm.nPositions, maxNew) });
  const seed = req.seed ?? Math.floor(Math.random() * 2 ** 31);
  let started = false;
  const r = await generate(m.lm, prompt.ids, {
    sampling,
    maxNewTokens: maxNew,
    seed,
    stopIds: chatStopIds(tok, mode),
    signal: req.signal,
    tokenizer: tok,
    onText: (d) => {
      if (!req.onToken) return;
      if (!started) {
        d = d.replace(/^\s+/u, '');
        if (!d) return;
        started = true;
      }
      req.onToken(d);
    },
  });
  const decodeMs = r.totalMs - r.firstTokenMs;
  return {
    text: extractAnswer(r.text),
    raw: r.text,
    mode,
    seed,
    promptTokens: r.promptIds.length,
    newTokens: r.newIds.length,
    droppedTurns: prompt.droppedTurns,
    stopReason: r.stopReason,
    finishReason: r.stopReason === 'stop_token' ? 'eos' : r.stopReason === 'aborted' ? 'cancelled' : 'length',
    firstTokenMs: r.firstTokenMs,
    totalMs: r.totalMs,
    tokensPerSecond: r.newIds.length > 1 && decodeMs > 0 ? ((r.newIds.length - 1) * 1000) / decodeMs : 0,
  };
}

/** Sliding-window perplexity of a text (tokenised without special-token handling beyond the tokenizer's). */
export async function perplexityOfText(
  m: InferenceModel,
  text: string,
  opts: { window?: number; stride?: number; batchSize?: number; signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {},
): Promise<PerplexityResult> {
  const ids = m.model.tokenizer.encode(text);
  if (ids.length < 2) throw new SftError(`the text has ${ids.length} token(s); perplexity needs at least 2`);
  return withHeld(m, () => perplexityOfIds(m.lm, ids, opts));
}

/** perplexityOfText on a UTF-8 file of a model folder (the protocol's evaluate {kind:'perplexity'}). */
export async function perplexityOfFile(
  modelDir: string,
  file: string,
  opts: { device?: Device; window?: number; stride?: number; batchSize?: number; signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {},
): Promise<PerplexityResult> {
  const text = readTextFile(file);
  return withInferenceModel(modelDir, opts.device ?? 'cpu', (m) => perplexityOfText(m, text, opts));
}

/**
 * Mean NLL over trained tokens of tokenised examples (as training's eval loss: position t is trained when
 * trained[t+1] = 1, the data layer's shift). Examples longer than n_positions + 1 are cut to that length.
 */
export async function evalLossOfExamples(m: InferenceModel, examples: TokenizedExample[], opts: { batchSize?: number; signal?: AbortSignal } = {}): Promise<{ loss: number; tokens: number }> {
  return withHeld(m, () => evalLossHeld(m, examples, opts));
}

async function evalLossHeld(m: InferenceModel, examples: TokenizedExample[], opts: { batchSize?: number; signal?: AbortSignal }): Promise<{ loss: number; tokens: number }> {
  const P = m.lm.nPositions;
  const rows = examples.map((e) => e.inputIds.slice(0, P + 1)).filter((r) => r.length >= 2);
  const kept = examples.filter((e) => e.inputIds.length >= 2);
  const bs = Math.max(1, opts.batchSize ?? 8);
  let nll = 0;
  let tokens = 0;
  for (let b = 0; b < rows.length; b += bs) {
    if (opts.signal?.aborted) throw new SftError('evaluation cancelled');
    const scores = await m.lm.scoreRows(rows.slice(b, b + bs));
    scores.forEach((s, k) => {
      const ex = kept[b + k]!;
      for (let t = 0; t < s.logprobs.length; t++) {
        if (ex.trained[t + 1]) {
          nll -= s.logprobs[t]!;
          tokens++;
        }
      }
    });
  }
  return { loss: tokens ? nll / tokens : 0, tokens };
}
