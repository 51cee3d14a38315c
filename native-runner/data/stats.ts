/**
 * Dataset statistics shown before training: counts, token totals, a length histogram, truncation, examples
 * with nothing trained, skipped conversations, and how much of the batches is real tokens.
 *
 * paddingEfficiency = Σ tokens / Σ over micro-batches (rows × longest row), in the given order (file order
 * by default) with `batchSize` rows per batch; packingEfficiency = Σ tokens / (bins × max_length) with
 * best-fit-decreasing bins (batching.ts). Both are in (0, 1]; 1 means no padding.
 */
import { packBestFitDecreasing } from './batching';
import type { TokenizedExample } from './types';

export interface LengthHistogram {
  /** Bucket i counts lengths in [edges[i], edges[i+1]); the last bucket includes its upper edge. */
  edges: number[];
  counts: number[];
}

export interface DataStats {
  examples: number;
  /** Tokens after truncation. */
  tokens: number;
  trainedTokens: number;
  /** Examples longer than max_length before truncation. */
  truncated: number;
  /** Tokens cut off in total, and at most from one example. */
  truncatedTokens: number;
  maxTruncatedBy: number;
  /** Examples with no trained token (e.g. cut before their answer). */
  noTrainedTokens: number;
  /** Conversations skipped for having no assistant turn (filled in by the caller). */
  skipped: number;
  minLength: number;
  meanLength: number;
  maxLength: number;
  /** Lengths after truncation. */
  histogram: LengthHistogram;
  paddingEfficiency?: number;
  packingEfficiency?: number;
}

export interface StatsOptions {
  maxLength: number;
  /** Micro-batch rows, for the padding efficiency. */
  batchSize?: number;
  /** Report packing efficiency (bins of maxLength) instead of padding efficiency. */
  packing?: boolean;
  skipped?: number;
  buckets?: number;
}

/** Equal-width histogram over 0..maxLength (at most `buckets` buckets, width ≥ 1). */
export function lengthHistogram(lengths: readonly number[], maxLength: number, buckets = 16): LengthHistogram {
  const width = Math.max(1, Math.ceil(maxLength / buckets));
  const n = Math.max(1, Math.ceil(maxLength / width));
  const edges = Array.from({ length: n + 1 }, (_, i) => Math.min(i * width, maxLength));
  const counts = new Array<number>(n).fill(0);
  for (const len of lengths) counts[Math.min(n - 1, Math.floor(len / width))]!++;
  return { edges, counts };
}

/** Padding efficiency of batching `lengths` in order, `batchSize` rows per batch, each padded to its longest. */
export function paddingEfficiency(lengths: readonly number[], batchSize: number): number {
  let real = 0;
  let padded = 0;
  for (let s = 0; s < lengths.length; s += batchSize) {
    const chunk = lengths.slice(s, s + batchSize);
    const longest = Math.max(...chunk);
    for (const l of chunk) real += l;
    padded += longest * chunk.length;
  }
  return padded === 0 ? 1 : real / padded;
}

export function computeStats(examples: readonly TokenizedExample[], opts: StatsOptions): DataStats {
  let tokens = 0;
  let trainedTokens = 0;
  let truncated = 0;
  let truncatedTokens = 0;
  let maxTruncatedBy = 0;
  let noTrained = 0;
  let minLength = Infinity;
  let maxLength = 0;
  const lengths: number[] = [];
  for (const ex of examples) {
    const len = ex.inputIds.length;
    lengths.push(len);
    tokens += len;
    minLength = Math.min(minLength, len);
    maxLength = Math.max(maxLength, len);
    let t = 0;
    for (let i = 0; i < ex.trained.length; i++) t += ex.trained[i]!;
    trainedTokens += t;
    if (t === 0) noTrained++;
    const cut = ex.fullLength - len;
    if (cut > 0) {
      truncated++;
      truncatedTokens += cut;
      maxTruncatedBy = Math.max(maxTruncatedBy, cut);
    }
  }
  const stats: DataStats = {
    examples: examples.length,
    tokens,
    trainedTokens,
    truncated,
    truncatedTokens,
    maxTruncatedBy,
    noTrainedTokens: noTrained,
    skipped: opts.skipped ?? 0,
    minLength: examples.length ? minLength : 0,
    meanLength: examples.length ? tokens / examples.length : 0,
    maxLength,
    histogram: lengthHistogram(lengths, opts.maxLength, opts.buckets),
  };
  if (examples.length > 0) {
    if (opts.packing) {
      const bins = packBestFitDecreasing(lengths, opts.maxLength);
      stats.packingEfficiency = tokens / (bins.length * opts.maxLength);
    } else if (opts.batchSize) {
      stats.paddingEfficiency = paddingEfficiency(lengths, opts.batchSize);
    }
  }
  return stats;
}

/** Human-readable summary lines (for the CLI and logs). */
export function formatStats(s: DataStats): string[] {
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const lines = [
    `examples: ${s.examples}` + (s.skipped ? ` (${s.skipped} skipped: no assistant turn)` : ''),
    `tokens: ${s.tokens} (${s.trainedTokens} trained, ${s.tokens ? pct(s.trainedTokens / s.tokens) : '0%'})`,
    `length: min ${s.minLength}, mean ${s.meanLength.toFixed(1)}, max ${s.maxLength}`,
    `truncated: ${s.truncated}` + (s.truncated ? ` (${s.truncatedTokens} tokens cut, at most ${s.maxTruncatedBy} from one example)` : ''),
    `examples with nothing trained: ${s.noTrainedTokens}`,
  ];
  if (s.paddingEfficiency !== undefined) lines.push(`padding efficiency: ${pct(s.paddingEfficiency)}`);
  if (s.packingEfficiency !== undefined) lines.push(`packing efficiency: ${pct(s.packingEfficiency)}`);
  const peak = Math.max(1, ...s.histogram.counts);
  lines.push('length histogram:');
  const first = s.histogram.counts.findIndex((c) => c > 0);
  const last = s.histogram.counts.length - 1 - [...s.histogram.counts].reverse().findIndex((c) => c > 0);
  s.histogram.counts.forEach((c, i) => {
    if (first < 0 || i < first || i > last) return; // empty buckets at either end are not shown
    const lo = s.histogram.edges[i]!;
    const hi = s.histogram.edges[i + 1]!;
    lines.push(`  ${String(lo).padStart(5)}-${String(hi).padEnd(5)} ${String(c).padStart(6)} ${'#'.repeat(Math.round((30 * c) / peak))}`);
  });
  return lines;
}
