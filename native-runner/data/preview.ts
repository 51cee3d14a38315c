/**
 * What `sft preview` and the extension's Dataset Preview show: a page (offset, limit) of a dataset file's
 * examples as they will be trained (rendered text, ids after truncation, trained flags, per-token text),
 * the statistics of the whole file, and its bad lines (preview always skips and lists them; oasst1 messages
 * whose parent is not in the file are listed among them, as training skips them too). The result
 * has the shape of the runner protocol's `preview` reply (snake_case). The last whole-file tokenisation
 * is cached in memory, so paging through a large file does not tokenise it again.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TextTokenizer } from '../model/types';
import { loadConversations, resolveDatasetPath } from './dataset';
import { orphanReason, type FormatChoice, type OasstPaths } from './formats';
import type { HubProgress } from './hub';
import { DEFAULT_TEMPLATE, type ChatTemplate } from './render';
import { computeStats, type DataStats } from './stats';
import { checkMaxLength, tokenizeConversation } from './tokenize';
import { splitTrainEval } from './split';
import type { BadLine, TokenizedExample } from './types';
import { SftError } from '../util/errors';

export interface PreviewOptions {
  dataset: string;
  dataset_format?: FormatChoice;
  tokenizer: TextTokenizer;
  /** Identifies the tokenizer in the cache key (e.g. the model folder). */
  tokenizerKey?: string;
  max_length?: number;
  assistant_only_loss?: boolean;
  offset?: number;
  limit?: number;
  oasst_paths?: OasstPaths;
  oasst_lang?: string;
  template?: ChatTemplate;
  baseDir?: string;
  /** Bad lines returned (all are counted in bad_line_count). Default 200. */
  maxBadLines?: number;
  /**
   * Which examples to page through: "all" (file order, default), or the "train" / "eval" part of the
   * split training uses (test_size, seed as splitTrainEval), so `train` shows what the recipe's
   * prepare_dataset.py prints as Example 1, 2, 3. Statistics always cover the whole file.
   */
  split?: 'all' | 'train' | 'eval';
  test_size?: number;
  seed?: number;
  /** Progress of a hub dataset download (first use of a hub id). */
  onProgress?: (p: HubProgress) => void;
  /** Cancels the download, the reading and the tokenisation (an SftError "… cancelled"); nothing is cached. */
  signal?: AbortSignal;
}

/** Conversations tokenised between yields to the event loop (where a cancel can arrive). */
const TOKENIZE_CHUNK = 256;

export interface PreviewExampleJson {
  index: number;
  text: string;
  input_ids: number[];
  trained: (0 | 1)[];
  tokens?: string[];
  truncated: boolean;
  full_length: number;
  source?: { file: string; line: number };
}

export interface PreviewStatsJson {
  examples: number;
  tokens: number;
  trained_tokens: number;
  truncated: number;
  no_trained_tokens: number;
  skipped?: number;
  length_histogram?: { lo: number; hi: number; count: number }[];
}

export interface PreviewResult {
  format_used: string;
  /** Examples that can be paged through (the whole file after skipping, or the chosen split part). */
  total: number;
  offset: number;
  examples: PreviewExampleJson[];
  stats: PreviewStatsJson;
  bad_lines: { file?: string; line: number; reason: string }[];
  bad_line_count: number;
  /** Full statistics (histogram edges, padding efficiency, …) for human output. */
  detail: DataStats;
  detected: boolean;
}

interface CacheEntry {
  key: string;
  examples: TokenizedExample[];
  formatUsed: string;
  detected: boolean;
  badLines: BadLine[];
  badLineCount: number;
  skipped: number;
  stats: DataStats;
}

let cache: CacheEntry | undefined;

/**
 * Per-token text for highlighting: each token decoded on its own; a token that ends inside a multi-byte
 * character is joined with the following ones (up to 4) and the joined text goes to the first of them.
 */
export function tokenPieces(tokenizer: Pick<TextTokenizer, 'decode'>, ids: readonly number[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < ids.length; ) {
    let j = i + 1;
    let s = tokenizer.decode([ids[i]!]);
    while (s.includes('\uFFFD') && j < ids.length && j - i < 4) {
      const joined = tokenizer.decode(ids.slice(i, j + 1));
      j++;
      s = joined;
      if (!joined.includes('\uFFFD')) break;
    }
    out.push(s);
    for (let k = i + 1; k < j; k++) out.push('');
    i = j;
  }
  return out;
}

function statsJson(s: DataStats): PreviewStatsJson {
  return {
    examples: s.examples,
    tokens: s.tokens,
    trained_tokens: s.trainedTokens,
    truncated: s.truncated,
    no_trained_tokens: s.noTrainedTokens,
    skipped: s.skipped,
    length_histogram: s.histogram.counts.map((count, i) => ({ lo: s.histogram.edges[i]!, hi: s.histogram.edges[i + 1]!, count })),
  };
}

/** Loads (or reuses) the whole file's examples and returns one page of them. */
export async function previewDataset(opts: PreviewOptions): Promise<PreviewResult> {
  const maxLength = opts.max_length ?? 512;
  checkMaxLength(maxLength);
  const aol = opts.assistant_only_loss ?? true;
  const resolved = await resolveDatasetPath(opts.dataset, { baseDir: opts.baseDir, onProgress: opts.onProgress, signal: opts.signal });
  const st = fs.statSync(resolved.file);
  const format = opts.dataset_format ?? resolved.format ?? 'auto';
  const template = opts.template ?? DEFAULT_TEMPLATE;
  const key = JSON.stringify([resolved.file, st.size, st.mtimeMs, format, opts.tokenizerKey ?? null, maxLength, aol, opts.oasst_paths ?? 'best', opts.oasst_lang ?? '', template]);
  if (!cache || cache.key !== key || !opts.tokenizerKey) {
    const label = path.isAbsolute(opts.dataset) || resolved.format ? resolved.file : opts.dataset;
    const set = await loadConversations(resolved.file, { format, onBadLine: 'skip', oasstPaths: opts.oasst_paths, oasstLang: opts.oasst_lang, label, signal: opts.signal });
    // loadConversations already skipped (and counted) conversations without an assistant turn.
    const skipped = set.skipped;
    const examples: TokenizedExample[] = [];
    for (let i = 0; i < set.conversations.length; i++) {
      if (opts.signal && i % TOKENIZE_CHUNK === 0) {
        if (i > 0) await new Promise((r) => setImmediate(r));
        if (opts.signal.aborted) throw new SftError('preview cancelled', label);
      }
      const ex = tokenizeConversation(opts.tokenizer, set.conversations[i]!, { maxLength, assistantOnlyLoss: aol, template });
      if (ex) examples.push(ex);
    }
    // Orphaned oasst1 messages are no error for training (it skips them with a note); here they are listed
    // with the bad lines so that each can be opened at its line.
    const orphanLines: BadLine[] = set.orphans.map((o) => ({ file: o.src.file, line: o.src.line, reason: orphanReason(o) }));
    const badLines = orphanLines.length ? [...set.badLines, ...orphanLines].sort((a, b) => a.line - b.line) : set.badLines;
    cache = {
      key,
      examples,
      formatUsed: set.formatUsed,
      detected: set.detected,
      badLines,
      badLineCount: set.badLineCount + orphanLines.length,
      skipped,
      stats: computeStats(examples, { maxLength, batchSize: 8, skipped }),
    };
  }
  const c = cache;
  const offset = Math.max(0, Math.floor(opts.offset ?? 0));
  const limit = Math.max(0, Math.floor(opts.limit ?? 3));
  let pool = c.examples;
  if (opts.split && opts.split !== 'all') {
    const parts = splitTrainEval(c.examples, opts.test_size ?? 0.05, opts.seed ?? 42);
    pool = opts.split === 'train' ? parts.train : parts.test;
  }
  const page = pool.slice(offset, offset + limit).map(
    (ex, k): PreviewExampleJson => ({
      index: offset + k,
      text: ex.text,
      input_ids: ex.inputIds.slice(),
      trained: Array.from(ex.trained, (t) => (t ? 1 : 0)),
      tokens: tokenPieces(opts.tokenizer, ex.inputIds),
      truncated: ex.fullLength > ex.inputIds.length,
      full_length: ex.fullLength,
      source: { file: ex.source.file, line: ex.source.line },
    }),
  );
  return {
    format_used: c.formatUsed,
    total: pool.length,
    offset,
    examples: page,
    stats: statsJson(c.stats),
    bad_lines: c.badLines.slice(0, opts.maxBadLines ?? 200).map((b) => ({ file: b.file, line: b.line, reason: b.reason })),
    bad_line_count: c.badLineCount,
    detail: c.stats,
    detected: c.detected,
  };
}

/** Forgets the cached tokenisation (tests, or after the tokenizer changed under the same key). */
export function clearPreviewCache(): void {
  cache = undefined;
}
