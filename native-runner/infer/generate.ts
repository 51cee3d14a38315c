/**
 * Autoregressive generation over a CausalLM: prefill the prompt once, then one cached decode step per new
 * token; greedy or seeded sampling (sampling.ts), stop at a stop id (the stop token itself is not part of
 * the output), at max_new_tokens, at the model's context length, or when the AbortSignal fires. Text is
 * streamed through onToken as UTF-8-safe deltas (textStream.ts) and also available as an async iterator.
 *
 * Two paths with the same results: per token (startGeneration/push, sampling on the host) and chunked
 * (startChunkedGeneration: several tokens per model run, sampling in the graph) when the model offers it and
 * decodeChunk > 0 (the model's default: on for CUDA). Both consume the seeded Rng identically — one uniform per
 * sampled token, in token order (greedy: none) — so a seed gives the same tokens on either path. The chunked path
 * draws a run's uniforms before the run; tokens after a stop are never reported. Chunks: the first run makes
 * `firstChunk` tokens (1 by default: the first token is not delayed), later runs `decodeChunk`; cancellation is
 * seen before each run and before each token is reported.
 */
import type { TextTokenizer } from '../model/types';
import { Rng } from '../util/rng';
import { SftError } from '../util/errors';
import type { CausalLM } from './causalLM';
import { chooseToken, type SamplingOptions, samplingFrom } from './sampling';
import { TokenTextStream } from './textStream';

export type StopReason = 'stop_token' | 'max_new_tokens' | 'context_full' | 'aborted';

export interface GenerateOptions {
  sampling?: SamplingOptions;
  maxNewTokens: number;
  /** Seed of the sampling Rng (ignored for greedy). Default 0. */
  seed?: number;
  /** Ids that end generation (typically eos); empty = never stop early. */
  stopIds?: Iterable<number>;
  signal?: AbortSignal;
  /** Needed for text output (onText, result.text). */
  tokenizer?: Pick<TextTokenizer, 'decode'>;
  /** Called with each newly complete piece of text. */
  onText?: (delta: string) => void;
  /** Called with each new token id (before the stop check; the stop token is reported too). */
  onTokenId?: (id: number) => void;
  /** Tokens per model run when the model can decode in chunks (0 = per token). Default: the model's decodeChunk. */
  decodeChunk?: number;
  /** Tokens of the first chunked run (default 1, at most decodeChunk). */
  firstChunk?: number;
}

export interface GenerationResult {
  /** Prompt ids actually fed (after left-truncation to fit the context). */
  promptIds: number[];
  /** New ids, without the stop token. */
  newIds: number[];
  /** The stop token that ended generation, if any. */
  stopId: number | null;
  stopReason: StopReason;
  /** decode(newIds) when a tokenizer was given, else ''. */
  text: string;
  /** Milliseconds from the call to the first new token, and in total. */
  firstTokenMs: number;
  totalMs: number;
}

/**
 * The most prompt tokens to keep: enough room for maxNewTokens when the context allows, but never less than
 * half the context (a long answer then stops at the context's end instead of erasing the prompt).
 */
export function maxPromptTokens(nPositions: number, maxNewTokens: number): number {
  return Math.max(1, nPositions - maxNewTokens, Math.floor(nPositions / 2));
}

/** Keeps the last maxPromptTokens(…) tokens of `prompt`. */
export function fitPrompt(prompt: number[], nPositions: number, maxNewTokens: number): number[] {
  const room = maxPromptTokens(nPositions, maxNewTokens);
  return prompt.length > room ? prompt.slice(prompt.length - room) : prompt;
}

/** Generates up to maxNewTokens after `prompt`. Never throws on abort: the result says 'aborted'. */
export async function generate(lm: CausalLM, prompt: number[], opts: GenerateOptions): Promise<GenerationResult> {
  const t0 = performance.now();
  if (prompt.length === 0) throw new SftError('generation needs a non-empty prompt');
  if (!(Number.isInteger(opts.maxNewTokens) && opts.maxNewTokens >= 0)) throw new SftError(`--max_new_tokens must be a non-negative integer, got ${opts.maxNewTokens}`);
  const sampling = opts.sampling ?? samplingFrom({ temperature: 0 });
  let rng = new Rng(opts.seed ?? 0);
  const stop = new Set(opts.stopIds ?? []);
  const promptIds = fitPrompt(prompt, lm.nPositions, opts.maxNewTokens);
  const stream = opts.tokenizer ? new TokenTextStream(opts.tokenizer) : null;
  const seen: number[] = [...promptIds];
  const newIds: number[] = [];
  let text = '';
  let stopId: number | null = null;
  let stopReason: StopReason = 'max_new_tokens';
  let firstTokenMs = 0;
  const emit = (delta: string) => {
    if (!delta) return;
    text += delta;
    opts.onText?.(delta);
  };
  if (opts.signal?.aborted) {
    return { promptIds, newIds, stopId, stopReason: 'aborted', text, firstTokenMs, totalMs: performance.now() - t0 };
  }
  const chunk = opts.decodeChunk ?? lm.decodeChunk ?? 0;
  if (!(Number.isInteger(chunk) && chunk >= 0)) throw new SftError(`decodeChunk must be a non-negative integer, got ${chunk}`);
  if (chunk > 0 && lm.startChunkedGeneration) {
    let reported = false;
    try {
      const decoder = await lm.startChunkedGeneration(promptIds, { sampling, stopIds: [...stop] });
      let first = true;
      try {
        let produced = 0;
        outer: while (produced < opts.maxNewTokens) {
          if (opts.signal?.aborted) {
            stopReason = 'aborted';
            break;
          }
          const room = lm.nPositions - decoder.cachedLength - decoder.pendingLength + 1;
          const want = first ? Math.min(chunk, Math.max(1, opts.firstChunk ?? 1)) : chunk;
          const n = Math.min(want, opts.maxNewTokens - produced, room);
          const uniforms = new Float64Array(n);
          if (sampling.doSample) for (let k = 0; k < n; k++) uniforms[k] = rng.nextFloat();
          const ids = await decoder.nextChunk(n, uniforms);
          if (first) firstTokenMs = performance.now() - t0;
          first = false;
          for (const id of ids) {
            if (opts.signal?.aborted) {
              stopReason = 'aborted';
              break outer;
            }
            reported = true;
            opts.onTokenId?.(id);
            if (stop.has(id)) {
              stopId = id;
              stopReason = 'stop_token';
              break outer;
            }
            newIds.push(id);
            produced++;
            if (stream) emit(stream.push(id));
          }
          if (produced === opts.maxNewTokens) break;
          // The last token is chosen but not yet fed: a full context cannot take it (as push would refuse).
          if (decoder.cachedLength + decoder.pendingLength > lm.nPositions) {
            stopReason = 'context_full';
            break;
          }
        }
      } finally {
        decoder.dispose();
      }
      if (stream) emit(stream.flush());
      return { promptIds, newIds, stopId, stopReason, text, firstTokenMs, totalMs: performance.now() - t0 };
    } catch (e) {
      // Chunked decoding is an optimisation: when its graph fails before any token was reported (e.g. a device
      // that cannot run it; EngineLM then turns it off for the model), the per-token path makes the same tokens.
      if (reported || (lm.decodeChunk ?? 0) > 0) throw e;
      rng = new Rng(opts.seed ?? 0);
      stopReason = 'max_new_tokens';
      firstTokenMs = 0;
    }
  }
  const session = await lm.startGeneration(promptIds);
  try {
    let logits = session.logits;
    for (let i = 0; i < opts.maxNewTokens; i++) {
      if (opts.signal?.aborted) {
        stopReason = 'aborted';
        break;
      }
      const id = chooseToken(logits, seen, sampling, rng);
      if (i === 0) firstTokenMs = performance.now() - t0;
      opts.onTokenId?.(id);
      if (stop.has(id)) {
        stopId = id;
        stopReason = 'stop_token';
        break;
      }
      newIds.push(id);
      seen.push(id);
      if (stream) emit(stream.push(id));
      if (i + 1 === opts.maxNewTokens) break;
      if (session.length >= lm.nPositions) {
        stopReason = 'context_full';
        break;
      }
      logits = await session.push(id);
    }
  } finally {
    session.dispose();
  }
  if (stream) emit(stream.flush());
  return { promptIds, newIds, stopId, stopReason, text, firstTokenMs, totalMs: performance.now() - t0 };
}

/** The same generation as an async iterator of text deltas; the final result is the iterator's return value. */
export async function* generateText(lm: CausalLM, prompt: number[], opts: GenerateOptions & { tokenizer: Pick<TextTokenizer, 'decode'> }): AsyncGenerator<string, GenerationResult> {
  const queue: string[] = [];
  let wake: (() => void) | null = null;
  let done = false;
  let failure: unknown = null;
  let result: GenerationResult | null = null;
  const run = generate(lm, prompt, {
    ...opts,
    onText: (d) => {
      opts.onText?.(d);
      queue.push(d);
      wake?.();
    },
  }).then(
    (r) => {
      result = r;
      done = true;
      wake?.();
    },
    (e) => {
      failure = e;
      done = true;
      wake?.();
    },
  );
  while (true) {
    if (queue.length) {
      yield queue.shift()!;
      continue;
    }
    if (done) break;
    await new Promise<void>((r) => (wake = r));
    wake = null;
  }
  await run;
  if (failure) throw failure;
  return result!;
}
