/**
 * The language-model contract the inference layer is written against. Everything in infer/ (sampling,
 * generation, perplexity, log-likelihood scoring, benchmarks, chat) talks to a CausalLM; the engine-backed
 * implementation lives in engineLM.ts, tests also use small toy models of their own.
 *
 * Legend: T tokens in a row, V vocabulary (logit width), P n_positions.
 */
import type { SamplingOptions } from './sampling';

/** Next-token scores of one row of ids (see CausalLM.scoreRows). Length = row length − 1. */
export interface RowScores {
  /** logprobs[t] = log p(row[t+1] | row[0..t]) (natural log). */
  logprobs: Float64Array;
  /** greedy[t] = 1 when row[t+1] is the argmax of the distribution at t (first max wins), else 0. */
  greedy: Uint8Array;
}

/** One prompt being continued token by token; it owns the key/value cache of what it has seen. */
export interface GenerationSession {
  /** Tokens fed so far (prompt + pushed tokens). */
  readonly length: number;
  /** Logits [V] of the next token after everything fed so far. Valid until the next push. */
  readonly logits: Float32Array;
  /** Feeds one token (decode step, reusing the cache) and returns the next logits [V]. */
  push(token: number): Promise<Float32Array>;
  /** Frees the cache. Safe to call twice. */
  dispose(): void;
}

/** What a chunked decoder applies inside its runs (the same settings for the whole generation). */
export interface ChunkedDecoding {
  sampling: SamplingOptions;
  /** Ids that end a run (the stop id is returned as the run's last token). */
  stopIds: number[];
}

/**
 * One prompt continued several tokens per model run (the cache stays inside the run): see generationGraph.ts
 * 'decode'. The host supplies one uniform per token, from the stream the per-token sampler would draw from.
 */
export interface ChunkedGeneration {
  /** Tokens already in the cache. */
  readonly cachedLength: number;
  /** Tokens the next run feeds first: the prompt, then the last token of the previous run. */
  readonly pendingLength: number;
  /**
   * Generates up to `count` tokens (1 ≤ count ≤ nPositions − cachedLength − pendingLength + 1), the i-th
   * sampled with `uniforms[i]` (ignored when greedy); ends early after a stop id, which is then the last token.
   */
  nextChunk(count: number, uniforms: Float64Array): Promise<number[]>;
  /** Frees the cache. Safe to call twice. */
  dispose(): void;
}

export interface CausalLM {
  /** Width of the logits (config.vocab_size). */
  readonly vocabSize: number;
  /** Longest context the model accepts (config.n_positions). */
  readonly nPositions: number;
  /**
   * Teacher-forced scoring: for each row (2 ≤ length ≤ nPositions + 1) the model reads row[0..L−2] and
   * predicts row[1..L−1]. Rows may have different lengths; results are independent of how they are batched.
   */
  scoreRows(rows: number[][]): Promise<RowScores[]>;
  /** Prefill: feeds the prompt (1 ≤ length ≤ nPositions) and returns a session holding its cache. */
  startGeneration(prompt: number[]): Promise<GenerationSession>;
  /**
   * Optional multi-token decoding: tokens per run that generate() uses by default (0 or absent = one token per
   * push through startGeneration), and the decoder itself.
   */
  readonly decodeChunk?: number;
  startChunkedGeneration?(prompt: number[], decoding: ChunkedDecoding): Promise<ChunkedGeneration>;
  /** Releases sessions and native memory. */
  dispose(): Promise<void>;
}

/** log-softmax of `logits` at `target` and whether `target` is the (first) argmax. */
export function logProbAndGreedy(logits: ArrayLike<number>, target: number): { logprob: number; greedy: boolean } {
  let max = -Infinity;
  let arg = 0;
  for (let i = 0; i < logits.length; i++) {
    const x = logits[i]!;
    if (x > max) {
      max = x;
      arg = i;
    }
  }
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return { logprob: logits[target]! - max - Math.log(sum), greedy: arg === target };
}
