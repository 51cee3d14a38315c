/**
 * Sliding-window perplexity. Windows of `window` tokens start every `stride` tokens (0, S, 2S, …) until one
 * reaches the end of the text. Each token after the first is predicted exactly once, in the first window
 * that contains it at a position > 0, with the context that window gives (the tokens of the window before
 * it). ppl = exp(Σ NLL / predicted). With window ≥ length there is one window: a full forward pass.
 */
import { SftError } from '../util/errors';
import type { CausalLM } from './causalLM';

export interface PerplexityWindow {
  /** Token range [start, end) fed to the model. */
  start: number;
  end: number;
  /** First token index predicted in this window (tokens predictFrom..end−1 are scored). */
  predictFrom: number;
}

export interface PerplexityResult {
  tokens: number;
  predicted: number;
  nllSum: number;
  ppl: number;
  windows: number;
}

export interface PerplexityOptions {
  /** Tokens per window; default nPositions. */
  window?: number;
  /** Start-to-start distance; default floor(window / 2). */
  stride?: number;
  /** Windows per scoreRows call. Default 4. */
  batchSize?: number;
  signal?: AbortSignal;
  onProgress?: (doneWindows: number, totalWindows: number) => void;
}

/** The windows for `n` tokens. */
export function planWindows(n: number, window: number, stride: number): PerplexityWindow[] {
  if (!(Number.isInteger(window) && window >= 2)) throw new SftError(`--window must be an integer ≥ 2, got ${window}`);
  if (!(Number.isInteger(stride) && stride >= 1 && stride <= window)) throw new SftError(`--stride must be an integer in [1, window=${window}], got ${stride}`);
  const out: PerplexityWindow[] = [];
  let covered = 1; // tokens < covered are predicted (token 0 never is)
  for (let start = 0; covered < n; start += stride) {
    const end = Math.min(start + window, n);
    const predictFrom = Math.max(covered, start + 1);
    if (predictFrom < end) out.push({ start, end, predictFrom });
    covered = Math.max(covered, end);
  }
  return out;
}

/** Perplexity of the id sequence `ids` under `lm`. */
export async function perplexityOfIds(lm: CausalLM, ids: number[], opts: PerplexityOptions = {}): Promise<PerplexityResult> {
  const window = opts.window ?? lm.nPositions;
  if (window > lm.nPositions) throw new SftError(`--window ${window} is longer than the model's context (n_positions ${lm.nPositions})`);
  const stride = opts.stride ?? Math.max(1, Math.floor(window / 2));
  const plan = planWindows(ids.length, window, stride);
  const batch = Math.max(1, opts.batchSize ?? 4);
  let nllSum = 0;
  let predicted = 0;
  for (let b = 0; b < plan.length; b += batch) {
    if (opts.signal?.aborted) throw new SftError('perplexity cancelled');
    const group = plan.slice(b, b + batch);
    const scores = await lm.scoreRows(group.map((w) => ids.slice(w.start, w.end)));
    group.forEach((w, gi) => {
      const lp = scores[gi]!.logprobs;
      // lp[t] predicts token start + t + 1
      for (let i = w.predictFrom; i < w.end; i++) {
        nllSum -= lp[i - w.start - 1]!;
        predicted++;
      }
    });
    opts.onProgress?.(Math.min(b + batch, plan.length), plan.length);
  }
  return { tokens: ids.length, predicted, nllSum, ppl: predicted ? Math.exp(nllSum / predicted) : NaN, windows: plan.length };
}
