/**
 * lm-evaluation-harness log-likelihood requests {context, continuation}, scored as its HFLM does:
 * - trailing whitespace of the context moves to the front of the continuation;
 * - continuation ids = enc(context + continuation)[len(enc(context)):] (an empty context uses [eos] as the
 *   context and enc(continuation));
 * - the sequence (context ids + continuation ids) keeps its last nPositions + 1 tokens (left truncation), the
 *   model reads all but the last and the continuation's tokens are scored;
 * - loglik = Σ log p(continuation token), is_greedy = every continuation token is the argmax.
 */
import type { TextTokenizer } from '../model/types';
import { SftError } from '../util/errors';
import type { CausalLM } from './causalLM';

export interface LoglikRequest {
  context: string;
  continuation: string;
}

export interface LoglikResult {
  loglik: number;
  isGreedy: boolean;
  nTokens: number;
}

/** Anything that answers log-likelihood requests (the engine-backed scorer or a test double). */
export interface LoglikScorer {
  loglikelihood(requests: LoglikRequest[], opts?: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void }): Promise<LoglikResult[]>;
}

export interface EncodedPair {
  contextIds: number[];
  continuationIds: number[];
}

/** lm-eval's _encode_pair (plus its empty-context rule). */
export function encodePair(tokenizer: Pick<TextTokenizer, 'encode' | 'eosId'>, context: string, continuation: string): EncodedPair {
  if (context === '') {
    return { contextIds: [tokenizer.eosId], continuationIds: tokenizer.encode(continuation) };
  }
  const trimmed = context.replace(/\s+$/u, '');
  const nSpaces = context.length - trimmed.length;
  if (nSpaces > 0) {
    continuation = context.slice(trimmed.length) + continuation;
    context = trimmed;
  }
  const whole = tokenizer.encode(context + continuation);
  const contextIds = tokenizer.encode(context);
  return { contextIds, continuationIds: whole.slice(contextIds.length) };
}

/** The row scoreRows reads for a pair: left-truncated to nPositions + 1 tokens. */
export function scoringRow(pair: EncodedPair, nPositions: number): number[] {
  const all = [...pair.contextIds, ...pair.continuationIds];
  return all.length > nPositions + 1 ? all.slice(all.length - (nPositions + 1)) : all;
}

/** Scores requests with an engine-backed CausalLM, batching rows of similar length. */
export class CausalLMScorer implements LoglikScorer {
  constructor(
    private readonly lm: CausalLM,
    private readonly tokenizer: Pick<TextTokenizer, 'encode' | 'eosId'>,
    private readonly batchSize = 8,
  ) {}

  async loglikelihood(requests: LoglikRequest[], opts: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {}): Promise<LoglikResult[]> {
    const rows: number[][] = [];
    const nCont: number[] = [];
    requests.forEach((r, i) => {
      if (typeof r.context !== 'string' || typeof r.continuation !== 'string') throw new SftError(`request ${i + 1}: "context" and "continuation" must be strings`);
      const pair = encodePair(this.tokenizer, r.context, r.continuation);
      if (pair.continuationIds.length === 0) throw new SftError(`request ${i + 1}: the continuation encodes to no tokens`);
      if (pair.continuationIds.length > this.lm.nPositions) throw new SftError(`request ${i + 1}: the continuation has ${pair.continuationIds.length} tokens, more than the model's context (${this.lm.nPositions})`);
      rows.push(scoringRow(pair, this.lm.nPositions));
      nCont.push(pair.continuationIds.length);
    });
    // Longest first (similar lengths share a batch, less padding); results go back to request order.
    const order = rows.map((_, i) => i).sort((a, b) => rows[b]!.length - rows[a]!.length || a - b);
    const out: LoglikResult[] = new Array(requests.length);
    for (let b = 0; b < order.length; b += this.batchSize) {
      if (opts.signal?.aborted) throw new SftError('scoring cancelled');
      const idx = order.slice(b, b + this.batchSize);
      const scores = await this.lm.scoreRows(idx.map((i) => rows[i]!));
      idx.forEach((ri, k) => {
        const s = scores[k]!;
        const n = nCont[ri]!;
        let loglik = 0;
        let greedy = true;
        for (let t = s.logprobs.length - n; t < s.logprobs.length; t++) {
          loglik += s.logprobs[t]!;
          if (!s.greedy[t]) greedy = false;
        }
        out[ri] = { loglik, isGreedy: greedy, nTokens: n };
      });
      opts.onProgress?.(Math.min(b + this.batchSize, order.length), order.length);
    }
    return out;
  }
}
