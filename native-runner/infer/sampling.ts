/**
 * Next-token choice from logits [V], with transformers' semantics and order:
 *   repetition penalty (RepetitionPenaltyLogitsProcessor: over every distinct id already in the sequence,
 *   prompt included, logit < 0 → logit · r, else logit / r) → and, when sampling, temperature (logits / t)
 *   → top-k (keep logits ≥ the k-th largest, ties kept) → top-p (TopPLogitsWarper: sort ascending, drop the
 *   tokens whose ascending cumulative probability ≤ 1 − top_p, always keep the most likely one)
 *   → a draw from softmax of what is left, with util/rng for reproducibility.
 * Greedy (doSample false) applies only the repetition penalty, then takes the first argmax, as HF does. Logits with
 * a NaN (a diverged model) give the first NaN's id in both modes: torch.argmax's choice (NaN ranks first).
 */
import { Rng } from '../util/rng';
import { SftError } from '../util/errors';

export interface SamplingOptions {
  /** false = greedy decoding. */
  doSample: boolean;
  /** > 0; 1 = unchanged. Ignored when greedy. */
  temperature: number;
  /** [0, 1]; 1 = off; 0 keeps only the most likely token. */
  topP: number;
  /** 0 = off. */
  topK: number;
  /** ≥ 0 (> 0 in practice); 1 = off. */
  repetitionPenalty: number;
}

/** transformers' generate() defaults when do_sample=True (GenerationConfig: top_k 50, top_p 1, temperature 1). */
export const HF_SAMPLING_DEFAULTS: SamplingOptions = { doSample: true, temperature: 1, topP: 1, topK: 50, repetitionPenalty: 1 };

/** Checks ranges; names the offending option (CLI spelling). */
export function validateSampling(o: SamplingOptions): SamplingOptions {
  if (o.doSample && !(o.temperature > 0 && Number.isFinite(o.temperature))) throw new SftError(`--temperature must be > 0 when sampling, got ${o.temperature} (use 0 for greedy decoding)`);
  if (!(o.topP >= 0 && o.topP <= 1)) throw new SftError(`--top_p must be in [0, 1], got ${o.topP}`);
  if (!(Number.isInteger(o.topK) && o.topK >= 0)) throw new SftError(`--top_k must be a non-negative integer, got ${o.topK}`);
  if (!(o.repetitionPenalty > 0 && Number.isFinite(o.repetitionPenalty))) throw new SftError(`--repetition_penalty must be > 0, got ${o.repetitionPenalty}`);
  return o;
}

/** Builds SamplingOptions from user-level values: temperature 0 means greedy. */
export function samplingFrom(v: { temperature?: number; topP?: number; topK?: number; repetitionPenalty?: number; doSample?: boolean }): SamplingOptions {
  const temperature = v.temperature ?? 1;
  if (!(temperature >= 0 && Number.isFinite(temperature))) throw new SftError(`--temperature must be ≥ 0 (0 = greedy), got ${temperature}`);
  const doSample = v.doSample ?? temperature > 0;
  return validateSampling({
    doSample,
    temperature: doSample ? temperature : 1,
    topP: v.topP ?? 1,
    topK: v.topK ?? (doSample ? HF_SAMPLING_DEFAULTS.topK : 0),
    repetitionPenalty: v.repetitionPenalty ?? 1,
  });
}

/** In place: HF repetition penalty over the distinct ids of `seen`. */
export function applyRepetitionPenalty(scores: Float32Array, seen: Iterable<number>, penalty: number): void {
  if (penalty === 1) return;
  const done = new Set<number>();
  for (const id of seen) {
    if (done.has(id) || id < 0 || id >= scores.length) continue;
    done.add(id);
    const s = scores[id]!;
    scores[id] = s < 0 ? s * penalty : s / penalty;
  }
}

/** In place: scores / t. */
export function applyTemperature(scores: Float32Array, t: number): void {
  if (t === 1) return;
  for (let i = 0; i < scores.length; i++) scores[i] = scores[i]! / t;
}

/** The k-th largest finite-or-not value of `scores` (k ≥ 1), via a small min-heap (O(V log k)). */
function kthLargest(scores: Float32Array, k: number): number {
  const heap = new Float64Array(k);
  let n = 0;
  const siftDown = (i: number) => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && heap[l]! < heap[m]!) m = l;
      if (r < n && heap[r]! < heap[m]!) m = r;
      if (m === i) return;
      const t = heap[i]!;
      heap[i] = heap[m]!;
      heap[m] = t;
      i = m;
    }
  };
  for (let i = 0; i < scores.length; i++) {
    const x = scores[i]!;
    if (n < k) {
      let j = n++;
      heap[j] = x;
      while (j > 0) {
        const p = (j - 1) >> 1;
        if (heap[p]! <= heap[j]!) break;
        const t = heap[p]!;
        heap[p] = heap[j]!;
        heap[j] = t;
        j = p;
      }
    } else if (x > heap[0]!) {
      heap[0] = x;
      siftDown(0);
    }
  }
  return heap[0]!;
}

/** In place: HF TopKLogitsWarper — everything below the k-th largest score becomes −∞ (ties with it stay). */
export function applyTopK(scores: Float32Array, k: number): void {
  if (k <= 0 || k >= scores.length) return;
  const kth = kthLargest(scores, k);
  for (let i = 0; i < scores.length; i++) if (scores[i]! < kth) scores[i] = -Infinity;
}

/**
 * In place: HF TopPLogitsWarper. Keeps the most likely tokens whose cumulative probability, counted from the
 * most likely down, first reaches top_p (a token is kept when the mass strictly above it is < top_p), at least one.
 */
export function applyTopP(scores: Float32Array, topP: number): void {
  if (topP >= 1) return;
  let max = -Infinity;
  for (let i = 0; i < scores.length; i++) if (scores[i]! > max) max = scores[i]!;
  if (!(max > -Infinity && max < Infinity)) return; // nothing finite to rank (sampleFromScores takes the argmax)
  let z = 0;
  for (let i = 0; i < scores.length; i++) z += Math.exp(scores[i]! - max);
  // Candidates: tokens with probability ≥ τ, lowering τ until they carry ≥ top_p of the mass; the kept set
  // is a prefix of the descending order and therefore inside the candidates.
  let tau = 1 / 64;
  let cand: number[] = [];
  for (;;) {
    cand = [];
    let mass = 0;
    const cut = Math.log(tau * z) + max; // score whose probability is τ
    for (let i = 0; i < scores.length; i++) {
      if (scores[i]! >= cut) {
        cand.push(i);
        mass += Math.exp(scores[i]! - max) / z;
      }
    }
    if (mass >= topP || tau < 1e-300) break;
    tau /= 64;
  }
  cand.sort((a, b) => scores[b]! - scores[a]! || a - b);
  const keep = new Uint8Array(scores.length);
  let above = 0;
  for (const i of cand) {
    if (above >= topP && above > 0) break; // the most likely token always stays
    keep[i] = 1;
    above += Math.exp(scores[i]! - max) / z;
  }
  for (let i = 0; i < scores.length; i++) if (!keep[i]) scores[i] = -Infinity;
}

/** First index of the largest value. */
export function argmax(scores: ArrayLike<number>): number {
  let best = 0;
  let max = -Infinity;
  for (let i = 0; i < scores.length; i++) {
    if (scores[i]! > max) {
      max = scores[i]!;
      best = i;
    }
  }
  return best;
}

/**
 * Draws an index from softmax(scores) (−∞ entries have probability 0) with one uniform from `rng`; when the scores
 * hold NaN or +∞ (no distribution), the first maximum (argmax), the uniform still consumed.
 */
export function sampleFromScores(scores: Float32Array, rng: Rng): number {
  let max = -Infinity;
  for (let i = 0; i < scores.length; i++) if (scores[i]! > max) max = scores[i]!;
  let z = 0;
  for (let i = 0; i < scores.length; i++) z += Math.exp(scores[i]! - max);
  const r = rng.nextFloat(); // drawn even when unused below: one uniform per sampled token on every path
  // NaN scores (a diverged model) or +∞ ones (s / t overflowing float): no distribution; the first maximum.
  if (!(z > 0 && z < Infinity)) return argmax(scores);
  const u = r * z;
  let acc = 0;
  let last = -1;
  for (let i = 0; i < scores.length; i++) {
    const s = scores[i]!;
    if (s === -Infinity) continue;
    last = i;
    acc += Math.exp(s - max);
    if (u < acc) return i;
  }
  return last >= 0 ? last : argmax(scores);
}

/** The processed scores HF would sample from (a copy; `logits` is not modified). */
export function processLogits(logits: Float32Array, seen: Iterable<number>, o: SamplingOptions): Float32Array {
  const scores = Float32Array.from(logits);
  applyRepetitionPenalty(scores, seen, o.repetitionPenalty);
  if (!o.doSample) return scores;
  applyTemperature(scores, o.temperature);
  applyTopK(scores, o.topK);
  applyTopP(scores, o.topP);
  return scores;
}

/** Picks the next token: greedy argmax or a seeded draw after the warpers. */
export function chooseToken(logits: Float32Array, seen: Iterable<number>, o: SamplingOptions, rng: Rng): number {
  // NaN logits (a diverged model): the first NaN's id, as torch.argmax picks it for greedy decoding; a sampled step
  // has no distribution either and takes the same id (its uniform still drawn, one per sampled token).
  const nan = logits.findIndex((x) => Number.isNaN(x));
  if (nan >= 0) {
    if (o.doSample) rng.nextFloat();
    return nan;
  }
  const scores = processLogits(logits, seen, o);
  return o.doSample ? sampleFromScores(scores, rng) : argmax(scores);
}
