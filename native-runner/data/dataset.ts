/**
 * The data layer's entry points.
 *
 * loadConversations: a dataset file → Conversations (format chosen or detected, bad lines collected,
 *   on_bad_line applied).
 * loadTrainingData: what the runner calls before training: dataset (a local path or a known hub id) →
 *   train/eval split → rendered, tokenised examples → statistics. Throws SftError (before any training)
 *   on bad lines when on_bad_line is "error", and when nothing usable is left.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SftError } from '../util/errors';
import type { TextTokenizer } from '../model/types';
import { readRecords, type RawRecord } from './readRecords';
import {
  buildOasstConversations,
  detectFormat,
  oasstFileRows,
  OASST_READY_STATE,
  isFormatChoice,
  recordToConversation,
  DATASET_FORMATS,
  type DatasetFormat,
  type FormatChoice,
  type OasstOrphan,
  type OasstPaths,
} from './formats';
import { DEFAULT_TEMPLATE, templateMarkers, type ChatTemplate } from './render';
import { tokenizeConversation } from './tokenize';
import { splitTrainEval } from './split';
import { computeStats, type DataStats } from './stats';
import { isHubDatasetId, looksLikeDatasetId, resolveHubDataset, type HubProgress } from './hub';
import type { BadLine, Conversation, TokenizedExample } from './types';

export type OnBadLine = 'error' | 'skip';

export interface ConversationOptions {
  format?: FormatChoice;
  /** "error" (default) throws an SftError listing the first bad lines; "skip" skips and counts them. */
  onBadLine?: OnBadLine;
  oasstPaths?: OasstPaths;
  oasstLang?: string;
  /** How files are named in messages (default: the path as given). */
  label?: string;
  /** Bad lines kept in the result (all are counted). Default 1000. */
  keepBadLines?: number;
  /** Stops reading with SftError "<label>: reading cancelled" once aborted (checked per record). */
  signal?: AbortSignal;
}

export interface ConversationSet {
  conversations: Conversation[];
  formatUsed: DatasetFormat;
  /** True when the format was picked by `auto`. */
  detected: boolean;
  badLines: BadLine[];
  badLineCount: number;
  /** Conversations / OASST paths without an assistant turn. */
  skipped: number;
  /** oasst1: messages dropped (deleted, review_result false, other language) with their subtrees. */
  droppedMessages: number;
  /**
   * oasst1: messages whose parent_id is not in the file, skipped with their replies, in file order. They are
   * reported (training notes, preview bad lines) but never fail the load, whatever on_bad_line says.
   */
  orphans: OasstOrphan[];
  /** oasst1 nested trees skipped for a tree_state other than ready_for_export, counted by state. */
  skippedTrees: Record<string, number>;
}

const BAD_LINES_SHOWN = 5;

function formatBadLine(b: BadLine): string {
  return `${b.file}:${b.line}: ${b.reason}`;
}

/** Orphans named in a training note (all are counted). */
const ORPHANS_NAMED = 3;

/** The training note for oasst1 messages skipped because their parent is not in the file; null when none. */
export function orphansNote(orphans: readonly OasstOrphan[]): string | null {
  const n = orphans.length;
  if (n === 0) return null;
  const named = orphans.slice(0, ORPHANS_NAMED).map((o) => {
    const replies = o.replies === 0 ? '' : `, ${o.replies} repl${o.replies === 1 ? 'y' : 'ies'}`;
    const bad = o.parentBadLine === undefined ? '' : ` at bad line ${o.parentBadLine}`;
    return `${o.src.file}:${o.src.line} (message_id "${o.messageId}", parent_id "${o.parentId}"${bad}${replies})`;
  });
  const more = n > ORPHANS_NAMED ? `, and ${n - ORPHANS_NAMED} more` : '';
  const where = orphans.some((o) => o.parentBadLine !== undefined) ? 'is not in the file or is a bad line' : 'is not in the file';
  return `oasst1: skipped ${n} message${n > 1 ? 's' : ''} whose parent_id ${where} (with the replies below them): ${named.join(', ')}${more}`;
}

/**
 * The training note for oasst1 nested trees skipped for their tree_state (the Hugging Face dataset holds
 * only ready_for_export trees); null when none. `label` names the file, as train and eval files may differ.
 */
export function skippedTreesNote(skippedTrees: Readonly<Record<string, number>>, label: string): string | null {
  const states = Object.entries(skippedTrees);
  const n = states.reduce((s, [, k]) => s + k, 0);
  if (n === 0) return null;
  const byState = states.map(([state, k]) => `${k} ${JSON.stringify(state)}`).join(', ');
  return `oasst1: skipped ${n} tree${n > 1 ? 's' : ''} of ${label} whose tree_state is not "${OASST_READY_STATE}" (${byState})`;
}

/** The SftError thrown for bad lines under on_bad_line "error": first line names the first bad line. */
export function badLinesError(bad: BadLine[], count: number): SftError {
  const head = formatBadLine(bad[0]!);
  const more = count > 1 ? ` (and ${count - 1} more bad line${count > 2 ? 's' : ''}; on_bad_line: "skip" skips them)` : ' (on_bad_line: "skip" skips bad lines)';
  const rest = bad.slice(1, BAD_LINES_SHOWN).map((b) => `  ${formatBadLine(b)}`);
  return new SftError([head + more, ...rest].join('\n'));
}

/** Reads a dataset file into conversations. */
export async function loadConversations(file: string, opts: ConversationOptions = {}): Promise<ConversationSet> {
  const choice = opts.format ?? 'auto';
  if (!isFormatChoice(choice)) throw new SftError(`unknown format "${choice}" (expected auto, ${DATASET_FORMATS.join(', ')})`, 'dataset_format');
  const label = opts.label ?? file;
  const keep = opts.keepBadLines ?? 1000;
  const badLines: BadLine[] = [];
  let badLineCount = 0;
  const addBad = (b: BadLine) => {
    badLineCount++;
    if (badLines.length < keep) badLines.push(b);
  };
  const conversations: Conversation[] = [];
  let skipped = 0;
  let droppedMessages = 0;
  let orphans: OasstOrphan[] = [];
  let skippedTrees: Record<string, number> = {};
  let format: DatasetFormat | undefined = choice === 'auto' ? undefined : choice;
  const pending: RawRecord[] = [];
  const oasstRows: RawRecord[] = [];

  const consume = (r: RawRecord) => {
    if (format === 'oasst1') {
      oasstRows.push(r);
      return;
    }
    const res = recordToConversation(format!, r.value, { file: r.file, line: r.line });
    if (!res.ok) addBad({ file: r.file, line: r.line, reason: res.reason });
    else conversations.push(res.conversation);
  };

  for await (const item of readRecords(file, label)) {
    if (opts.signal?.aborted) throw new SftError('reading cancelled', label);
    if (item.kind === 'bad') {
      // Keep file order of bad lines relative to pending records: pending ones are only ever non-bad.
      addBad(item.bad);
      continue;
    }
    if (format === undefined) {
      const f = detectFormat(item.value);
      pending.push(item);
      if (f === undefined) continue;
      format = f;
      for (const p of pending) consume(p);
      pending.length = 0;
      continue;
    }
    consume(item);
  }
  if (format === undefined) {
    if (pending.length === 0 && badLineCount === 0) throw new SftError('the dataset file has no records', label);
    if (pending.length === 0) throw badLinesError(badLines, badLineCount);
    const keys = Object.keys(pending[0]!.value).slice(0, 8).join(', ');
    throw new SftError(
      `${label}:${pending[0]!.line}: cannot tell the dataset format from the fields {${keys}}; set dataset_format to one of ${DATASET_FORMATS.join(', ')}`,
    );
  }
  if (format === 'oasst1') {
    // Nested trees become flat rows here, so that the tree rules below are the flat dataset's exactly.
    const file = oasstFileRows(oasstRows.map((r) => ({ value: r.value, src: { file: r.file, line: r.line } })));
    if ('mixed' in file) throw new SftError(file.mixed.reason, `${file.mixed.src.file}:${file.mixed.src.line}`);
    for (const b of file.bad) addBad({ file: b.src.file, line: b.src.line, reason: b.reason });
    skippedTrees = file.skippedTrees;
    const res = buildOasstConversations(file.rows, { paths: opts.oasstPaths ?? 'best', lang: opts.oasstLang });
    for (const b of res.bad) addBad({ file: b.src.file, line: b.src.line, reason: b.reason });
    conversations.push(...res.conversations);
    skipped += res.skipped;
    droppedMessages = res.droppedMessages;
    orphans = res.orphanRows;
  }
  badLines.sort((a, b) => a.line - b.line);
  if (badLineCount > 0 && (opts.onBadLine ?? 'error') === 'error') throw badLinesError(badLines, badLineCount);
  // Conversations without an assistant turn are counted here for per-record formats.
  const usable: Conversation[] = [];
  for (const c of conversations) {
    if (c.rawText !== undefined || c.turns.some((t) => t.role === 'assistant')) usable.push(c);
    else skipped++;
  }
  return { conversations: usable, formatUsed: format, detected: choice === 'auto', badLines, badLineCount, skipped, droppedMessages, orphans, skippedTrees };
}

export interface TrainingDataOptions {
  /** A local .jsonl/.json/.parquet path, or a known hub id (databricks/databricks-dolly-15k, …). */
  dataset: string;
  dataset_format?: FormatChoice;
  /** A separate eval file; when set, test_size is not used. */
  eval_dataset?: string;
  /** Fraction (< 1) or count (≥ 1) split off for eval; 0 = no eval. Default 0.05. */
  test_size?: number;
  seed?: number;
  max_length: number;
  assistant_only_loss?: boolean;
  on_bad_line?: OnBadLine;
  oasst_paths?: OasstPaths;
  oasst_lang?: string;
  tokenizer: Pick<TextTokenizer, 'encode' | 'tokenToId'>;
  template?: ChatTemplate;
  /** For the padding-efficiency statistic (default 8) and packing efficiency. */
  per_device_train_batch_size?: number;
  packing?: boolean;
  /** Relative dataset paths resolve against this folder (default: cwd). */
  baseDir?: string;
  /** Hub downloads: cache root (default $SFT_CACHE or ~/.cache/sft-studio) and progress callback. */
  cacheDir?: string;
  onProgress?: (p: HubProgress) => void;
  signal?: AbortSignal;
}

export interface TrainingData {
  train: TokenizedExample[];
  eval: TokenizedExample[];
  formatUsed: DatasetFormat;
  /** The local file that was read (the cache file for hub ids). */
  datasetPath: string;
  badLines: BadLine[];
  badLineCount: number;
  skipped: number;
  droppedMessages: number;
  stats: DataStats;
  evalStats: DataStats | null;
  /** Things the user should know (auto-detected format, role markers the tokenizer splits, …). */
  notes: string[];
}

/** Resolves `dataset` to a local file: an existing path, else a known hub id (downloaded once). */
export async function resolveDatasetPath(
  spec: string,
  opts: { baseDir?: string; cacheDir?: string; onProgress?: (p: HubProgress) => void; signal?: AbortSignal; key?: string } = {},
): Promise<{ file: string; format?: DatasetFormat }> {
  const key = opts.key ?? 'dataset';
  if (typeof spec !== 'string' || spec.trim() === '') throw new SftError('is required (a .jsonl/.json/.parquet file or a hub dataset id)', key);
  const local = path.resolve(opts.baseDir ?? process.cwd(), spec);
  if (fs.existsSync(local)) return { file: local };
  if (isHubDatasetId(spec) || looksLikeDatasetId(spec)) return resolveHubDataset(spec, { cacheDir: opts.cacheDir, onProgress: opts.onProgress, signal: opts.signal });
  throw new SftError(`file not found: ${spec}`, key);
}

/** Tokenises conversations that loadConversations kept (each has an assistant turn or is raw text). */
function tokenizeAll(
  convs: readonly Conversation[],
  tokenizer: Pick<TextTokenizer, 'encode'>,
  opts: { max_length: number; assistant_only_loss?: boolean; template?: ChatTemplate },
): TokenizedExample[] {
  const examples: TokenizedExample[] = [];
  for (const c of convs) {
    const ex = tokenizeConversation(tokenizer, c, { maxLength: opts.max_length, assistantOnlyLoss: opts.assistant_only_loss ?? true, template: opts.template });
    if (ex) examples.push(ex);
  }
  return examples;
}

/** Loads, splits, renders and tokenises the training (and eval) data. */
export async function loadTrainingData(opts: TrainingDataOptions): Promise<TrainingData> {
  const template = opts.template ?? DEFAULT_TEMPLATE;
  const resolved = await resolveDatasetPath(opts.dataset, opts);
  const label = path.isAbsolute(opts.dataset) || resolved.format ? resolved.file : opts.dataset;
  const convOpts: ConversationOptions = {
    format: opts.dataset_format ?? resolved.format ?? 'auto',
    onBadLine: opts.on_bad_line ?? 'error',
    oasstPaths: opts.oasst_paths,
    oasstLang: opts.oasst_lang,
    signal: opts.signal,
  };
  const main = await loadConversations(resolved.file, { ...convOpts, label });
  const notes: string[] = [];
  if (main.detected) notes.push(`dataset_format auto: using "${main.formatUsed}"`);
  if (main.badLineCount > 0) notes.push(`skipped ${main.badLineCount} bad line${main.badLineCount > 1 ? 's' : ''}`);
  if (main.droppedMessages > 0) notes.push(`oasst1: dropped ${main.droppedMessages} messages (deleted, rejected in review, or other language) with their subtrees`);
  const mainOrphans = orphansNote(main.orphans);
  if (mainOrphans) notes.push(mainOrphans);
  const mainTrees = skippedTreesNote(main.skippedTrees, label);
  if (mainTrees) notes.push(mainTrees);
  for (const m of templateMarkers(template)) {
    if (opts.tokenizer.tokenToId(m) === undefined) notes.push(`the tokenizer has no token ${m}; it is tokenised as plain text`);
  }

  let trainConvs: Conversation[];
  let evalConvs: Conversation[];
  let badLines = main.badLines;
  let badLineCount = main.badLineCount;
  let skipped = main.skipped;
  let droppedMessages = main.droppedMessages;
  if (opts.eval_dataset) {
    const ev = await resolveDatasetPath(opts.eval_dataset, { ...opts, key: 'eval_dataset' });
    const evalLabel = path.isAbsolute(opts.eval_dataset) || ev.format ? ev.file : opts.eval_dataset;
    const evalSet = await loadConversations(ev.file, { ...convOpts, format: opts.dataset_format ?? ev.format ?? 'auto', label: evalLabel });
    trainConvs = main.conversations;
    evalConvs = evalSet.conversations;
    badLines = [...badLines, ...evalSet.badLines];
    badLineCount += evalSet.badLineCount;
    skipped += evalSet.skipped;
    droppedMessages += evalSet.droppedMessages;
    const evalOrphans = orphansNote(evalSet.orphans);
    if (evalOrphans) notes.push(evalOrphans);
    const evalTrees = skippedTreesNote(evalSet.skippedTrees, evalLabel);
    if (evalTrees) notes.push(evalTrees);
  } else {
    const testSize = opts.test_size ?? 0.05;
    if (testSize === 0) {
      trainConvs = main.conversations;
      evalConvs = [];
    } else {
      const split = splitTrainEval(main.conversations, testSize, opts.seed ?? 42);
      trainConvs = split.train;
      evalConvs = split.test;
    }
  }
  const tOpts = { max_length: opts.max_length, assistant_only_loss: opts.assistant_only_loss, template };
  const train = tokenizeAll(trainConvs, opts.tokenizer, tOpts);
  const evalExamples = tokenizeAll(evalConvs, opts.tokenizer, tOpts);
  if (train.length === 0) throw new SftError(`no usable training examples (${skipped} skipped, ${badLineCount} bad lines)`, label);
  const statOpts = { maxLength: opts.max_length, batchSize: opts.per_device_train_batch_size ?? 8, packing: opts.packing };
  const stats = computeStats(train, { ...statOpts, skipped });
  const evalStats = evalExamples.length ? computeStats(evalExamples, statOpts) : null;
  if (stats.noTrainedTokens > 0) notes.push(`${stats.noTrainedTokens} training example(s) have nothing trained (cut before their answer at max_length ${opts.max_length})`);
  return {
    train,
    eval: evalExamples,
    formatUsed: main.formatUsed,
    datasetPath: resolved.file,
    badLines,
    badLineCount,
    skipped,
    droppedMessages,
    stats,
    evalStats,
    notes,
  };
}
