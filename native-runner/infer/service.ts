/**
 * Request-level inference API for the CLI commands and `sft serve` (the extension's chat panel):
 *   openInferenceModel(dir, device)  loaded model + EngineLM, cached per (folder, device) — the 2 most recently
 *                                    used stay loaded (setInferenceCacheSize) — and reloaded when the weights
 *                                    file changes (a checkpoint overwritten by training)
 *   chat(request)                    one answer to a conversation, streamed through onToken, cancellable
 *   perplexityOfText / perplexityOfFile / evalLossOfExamples   measurement helpers
 *   closeInferenceModels()           frees every cached model
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
  stamp: string;
  model: Promise<InferenceModel>;
}
const cache = new Map<string, CacheEntry>();
/** Models kept loaded at once (least recently used ones are closed first). */
let maxCached = 2;

/** Sets how many models stay loaded (≥ 1); extra ones are closed, least recently used first. Returns the previous size. */
export function setInferenceCacheSize(n: number): number {
  const previous = maxCached;
  maxCached = Math.max(1, Math.floor(n));
  evictOverflow();
  return previous;
}

function evictOverflow(): void {
  while (cache.size > maxCached) {
    const [key, entry] = cache.entries().next().value as [string, CacheEntry];
    cache.delete(key);
    void entry.model.then((m) => m.lm.dispose()).catch(() => undefined);
  }
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

/** Loads (or reuses) a model folder for inference on `device`. */
export async function openInferenceModel(dir: string, device: Device = 'cpu'): Promise<InferenceModel> {
  const abs = resolve(dir);
  const key = `${device}\u0000${abs}`;
  const stamp = weightsStamp(abs);
  const hit = cache.get(key);
  if (hit && hit.stamp === stamp) {
    cache.delete(key); // most recently used goes last
    cache.set(key, hit);
    return hit.model;
  }
  if (hit) {
    cache.delete(key);
    void hit.model.then((m) => m.lm.dispose()).catch(() => undefined);
  }
  const model = (async () => {
    const m = await loadModel(abs);
    const lm = new EngineLM(m.config, m.params, { device });
    return { dir: abs, device, model: m, lm, defaultMode: hasChatTokens(m.tokenizer) ? 'chat' : 'raw' } satisfies InferenceModel;
  })();
  const entry = { stamp, model };
  cache.set(key, entry);
  model.catch(() => {
    if (cache.get(key) === entry) cache.delete(key);
  });
  evictOverflow();
  return model;
}

/** Frees every cached model. */
export async function closeInferenceModels(): Promise<void> {
  const all = [...cache.values()];
  cache.clear();
  for (const e of all) {
    try {
      await (await e.model).lm.dispose();
    } catch {
      /* failed loads have nothing to free */
    }
  }
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
  const m = await openInferenceModel(req.model, req.device ?? 'cpu');
  return chatWith(m, req);
}

/** chat() on an already opened model. */
export async function chatWith(m: InferenceModel, req: Omit<ChatRequest, 'model' | 'device'>): Promise<ChatReply> {
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
  return perplexityOfIds(m.lm, ids, opts);
}

/** perplexityOfText on a UTF-8 file of a model folder (the protocol's evaluate {kind:'perplexity'}). */
export async function perplexityOfFile(
  modelDir: string,
  file: string,
  opts: { device?: Device; window?: number; stride?: number; batchSize?: number; signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {},
): Promise<PerplexityResult> {
  const text = readTextFile(file);
  const m = await openInferenceModel(modelDir, opts.device ?? 'cpu');
  return perplexityOfText(m, text, opts);
}

/**
 * Mean NLL over trained tokens of tokenised examples (as training's eval loss: position t is trained when
 * trained[t+1] = 1, the data layer's shift). Examples longer than n_positions + 1 are cut to that length.
 */
export async function evalLossOfExamples(m: InferenceModel, examples: TokenizedExample[], opts: { batchSize?: number; signal?: AbortSignal } = {}): Promise<{ loss: number; tokens: number }> {
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
