/**
 * The language-model contract the inference layer is written against. Everything in infer/ (sampling,
 * generation, perplexity, log-likelihood scoring, benchmarks, chat) talks to a CausalLM; the engine-backed
 * implementation lives in engineLM.ts, tests also use small toy models of their own.
 *
 * Legend: T tokens in a row, V vocabulary (logit width), P n_positions.
 */

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
