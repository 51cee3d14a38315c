/**
 * Dataset formats: turns one raw record (or, for oasst1, a whole file of message rows) into Conversations.
 *
 *   dolly              {instruction, context?, response, category?} → user (+ "\n\nContext: {context}" when
 *                      context.strip() is non-empty; the unstripped context is used), assistant
 *   sharegpt           {conversations: [{from: system|human|gpt, value}]}
 *   messages           {messages: [{role: system|user|assistant, content}]}
 *   prompt_completion  {prompt, completion} → one user turn, one assistant turn
 *   text               {text} → a raw example (no template, every token trained)
 *   oasst1             message rows {message_id, parent_id, role: prompter|assistant, text, lang, rank,
 *                      deleted, review_result, …} → conversations along tree paths (see buildOasstConversations);
 *                      or OpenAssistant's nested trees.jsonl, one tree a line {message_tree_id, tree_state,
 *                      prompt: {message…, replies: [message…, …]}}, expanded into those rows (oasstFileRows)
 *
 * A record that does not fit its format gives a reason string (`missing "response"`) that the caller turns
 * into a BadLine `file:line: reason`.
 */
import { DATASET_FORMAT_CHOICES, type DatasetFormat, type FormatChoice } from '../../protocol/trainingOptions';
import type { Conversation, Role, SourceRef, Turn } from './types';

// The list of formats is defined in protocol/ (shared with the webviews: the Start Training form offers these).
export { DATASET_FORMATS, DATASET_FORMAT_CHOICES, type DatasetFormat, type FormatChoice } from '../../protocol/trainingOptions';

export function isFormatChoice(s: string): s is FormatChoice {
  return (DATASET_FORMAT_CHOICES as readonly string[]).includes(s);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

/** Picks a format from the fields of a record; undefined when none fits. */
export function detectFormat(rec: Record<string, unknown>): DatasetFormat | undefined {
  if (Array.isArray(rec.conversations)) return 'sharegpt';
  if (Array.isArray(rec.messages)) return 'messages';
  if ('instruction' in rec && 'response' in rec) return 'dolly';
  if (isOasstTree(rec)) return 'oasst1';
  if ('prompt' in rec && 'completion' in rec) return 'prompt_completion';
  if ('message_id' in rec && 'parent_id' in rec && 'role' in rec) return 'oasst1';
  if (typeof rec.text === 'string') return 'text';
  return undefined;
}

/** Result of converting one record: a conversation, or the reason the record is bad. */
export type RecordResult = { ok: true; conversation: Conversation } | { ok: false; reason: string };

const bad = (reason: string): RecordResult => ({ ok: false, reason });
const good = (turns: Turn[], source: SourceRef, rawText?: string): RecordResult => ({
  ok: true,
  conversation: rawText === undefined ? { turns, source } : { turns, source, rawText },
});

function requireString(rec: Record<string, unknown>, key: string): string | { reason: string } {
  if (!(key in rec) || rec[key] === undefined) return { reason: `missing "${key}"` };
  const v = rec[key];
  if (typeof v !== 'string') return { reason: `"${key}" must be a string, got ${typeName(v)}` };
  return v;
}

/** The Dolly user turn: instruction, plus the context when it is not blank (unstripped, as the recipe does). */
export function dollyUserText(instruction: string, context: string | null | undefined): string {
  return context && context.trim() !== '' ? `${instruction}\n\nContext: ${context}` : instruction;
}

function convertDolly(rec: Record<string, unknown>, src: SourceRef): RecordResult {
  const instruction = requireString(rec, 'instruction');
  if (typeof instruction !== 'string') return bad(instruction.reason);
  const response = requireString(rec, 'response');
  if (typeof response !== 'string') return bad(response.reason);
  const context = rec.context;
  if (context !== undefined && context !== null && typeof context !== 'string') {
    return bad(`"context" must be a string or null, got ${typeName(context)}`);
  }
  return good(
    [
      { role: 'user', content: dollyUserText(instruction, context as string | null | undefined) },
      { role: 'assistant', content: response },
    ],
    src,
  );
}

function convertTurnList(
  rec: Record<string, unknown>,
  src: SourceRef,
  listKey: string,
  roleKey: string,
  contentKey: string,
  roles: Record<string, Role>,
): RecordResult {
  if (!(listKey in rec)) return bad(`missing "${listKey}"`);
  const list = rec[listKey];
  if (!Array.isArray(list)) return bad(`"${listKey}" must be an array, got ${typeName(list)}`);
  const turns: Turn[] = [];
  for (let i = 0; i < list.length; i++) {
    const m = list[i] as unknown;
    const at = `${listKey}[${i}]`;
    if (m === null || typeof m !== 'object' || Array.isArray(m)) return bad(`${at} must be an object, got ${typeName(m)}`);
    const obj = m as Record<string, unknown>;
    const r = obj[roleKey];
    if (typeof r !== 'string') return bad(r === undefined ? `${at}: missing "${roleKey}"` : `${at}.${roleKey} must be a string, got ${typeName(r)}`);
    const role = Object.prototype.hasOwnProperty.call(roles, r) ? roles[r] : undefined;
    if (!role) return bad(`${at}.${roleKey}: unknown role "${r}" (expected ${Object.keys(roles).join(', ')})`);
    const c = obj[contentKey];
    if (typeof c !== 'string') return bad(c === undefined ? `${at}: missing "${contentKey}"` : `${at}.${contentKey} must be a string, got ${typeName(c)}`);
    turns.push({ role, content: c });
  }
  return good(turns, src);
}

const SHAREGPT_ROLES: Record<string, Role> = { system: 'system', human: 'user', gpt: 'assistant' };
const MESSAGE_ROLES: Record<string, Role> = { system: 'system', user: 'user', assistant: 'assistant' };

function convertPromptCompletion(rec: Record<string, unknown>, src: SourceRef): RecordResult {
  const prompt = requireString(rec, 'prompt');
  if (typeof prompt !== 'string') return bad(prompt.reason);
  const completion = requireString(rec, 'completion');
  if (typeof completion !== 'string') return bad(completion.reason);
  return good(
    [
      { role: 'user', content: prompt },
      { role: 'assistant', content: completion },
    ],
    src,
  );
}

function convertText(rec: Record<string, unknown>, src: SourceRef): RecordResult {
  const text = requireString(rec, 'text');
  if (typeof text !== 'string') return bad(text.reason);
  return good([], src, text);
}

/** Converts one record of a per-record format (every format except oasst1). */
export function recordToConversation(format: Exclude<DatasetFormat, 'oasst1'>, rec: Record<string, unknown>, src: SourceRef): RecordResult {
  switch (format) {
    case 'dolly':
      return convertDolly(rec, src);
    case 'sharegpt':
      return convertTurnList(rec, src, 'conversations', 'from', 'value', SHAREGPT_ROLES);
    case 'messages':
      return convertTurnList(rec, src, 'messages', 'role', 'content', MESSAGE_ROLES);
    case 'prompt_completion':
      return convertPromptCompletion(rec, src);
    case 'text':
      return convertText(rec, src);
  }
}

// ---------------------------------------------------------------------------------------------------------
// OpenAssistant oasst1: message rows → conversation paths.

export type OasstPaths = 'best' | 'all';

export interface OasstOptions {
  /** "best": one path per tree following the lowest rank; "all": every root-to-leaf path. */
  paths: OasstPaths;
  /** Keep only messages in these languages (comma-separated codes, e.g. "en" or "en,de"); others are dropped with their subtrees. */
  lang?: string;
}

interface OasstMessage {
  id: string;
  parentId: string | null;
  role: 'prompter' | 'assistant';
  text: string;
  rank: number | null;
  lang: string | null;
  dropped: boolean;
  order: number;
  src: SourceRef;
  children: OasstMessage[];
}

export interface OasstResult {
  conversations: Conversation[];
  /** Rows that do not fit the oasst1 schema. */
  bad: { src: SourceRef; reason: string }[];
  /** Trees or paths that yield no assistant turn. */
  skipped: number;
  /** Messages dropped as deleted, review_result false, other language, or below such a message. */
  droppedMessages: number;
  /** Messages whose parent is not in the file, or only as a bad line (their replies are not counted here). */
  orphans: number;
  /** Each of those messages, in file order: skipped with its replies, reported but not an error. */
  orphanRows: OasstOrphan[];
}

/**
 * A message whose parent_id names no usable message of the file; it is skipped with `replies` messages below
 * it. `parentBadLine`: the parent's row is in the file, at this line, but is a bad line (skipped or an error
 * by on_bad_line), so the reply is lost with it rather than pointing nowhere.
 */
export interface OasstOrphan {
  src: SourceRef;
  messageId: string;
  parentId: string;
  replies: number;
  parentBadLine?: number;
}

/** How an orphan is reported as a preview bad line's reason (training notes use data/dataset.ts orphansNote). */
export function orphanReason(o: OasstOrphan): string {
  const where = o.parentBadLine === undefined ? 'is not in the file' : `is the bad line ${o.parentBadLine}`;
  const replies = o.replies === 0 ? '' : ` and its ${o.replies} repl${o.replies === 1 ? 'y' : 'ies'}`;
  return `message_id "${o.messageId}": parent_id "${o.parentId}" ${where}; message${replies} skipped`;
}

/** Validates one oasst1 row; returns the message or a reason. */
function parseOasstRow(rec: Record<string, unknown>, src: SourceRef, order: number, langs: Set<string> | null): OasstMessage | string {
  const id = rec.message_id;
  if (typeof id !== 'string' || id === '') return id === undefined ? 'missing "message_id"' : `"message_id" must be a non-empty string, got ${typeName(id)}`;
  if (!('parent_id' in rec)) return 'missing "parent_id"';
  const parent = rec.parent_id;
  if (parent !== null && typeof parent !== 'string') return `"parent_id" must be a string or null, got ${typeName(parent)}`;
  const role = rec.role;
  if (role !== 'prompter' && role !== 'assistant') return role === undefined ? 'missing "role"' : `"role" must be "prompter" or "assistant", got ${JSON.stringify(role)}`;
  const text = rec.text;
  if (typeof text !== 'string') return text === undefined ? 'missing "text"' : `"text" must be a string, got ${typeName(text)}`;
  const rank = rec.rank;
  if (rank !== undefined && rank !== null && (typeof rank !== 'number' || !Number.isFinite(rank))) return `"rank" must be a number or null, got ${typeName(rank)}`;
  const deleted = rec.deleted;
  if (deleted !== undefined && deleted !== null && typeof deleted !== 'boolean') return `"deleted" must be true or false, got ${typeName(deleted)}`;
  const review = rec.review_result;
  if (review !== undefined && review !== null && typeof review !== 'boolean') return `"review_result" must be true, false or null, got ${typeName(review)}`;
  const lang = typeof rec.lang === 'string' ? rec.lang : null;
  const dropped = deleted === true || review === false || (langs !== null && (lang === null || !langs.has(lang)));
  return {
    id,
    parentId: parent === '' ? null : (parent as string | null),
    role,
    text,
    rank: typeof rank === 'number' ? rank : null,
    lang,
    dropped,
    order,
    src,
    children: [],
  };
}

/** Children in the order "best" follows: ranked ones by rank, then unranked ones; ties by file order. */
function byRank(a: OasstMessage, b: OasstMessage): number {
  if (a.rank !== null && b.rank !== null && a.rank !== b.rank) return a.rank - b.rank;
  if (a.rank !== null && b.rank === null) return -1;
  if (a.rank === null && b.rank !== null) return 1;
  return a.order - b.order;
}

/** Trims trailing prompter messages and turns a path into a conversation; null when no assistant remains. */
function pathToConversation(path: OasstMessage[]): Conversation | null {
  let end = path.length;
  while (end > 0 && path[end - 1]!.role === 'prompter') end--;
  if (end === 0) return null;
  const turns: Turn[] = path.slice(0, end).map((m) => ({ role: m.role === 'prompter' ? 'user' : 'assistant', content: m.text }));
  return { turns, source: path[0]!.src };
}

/**
 * Rebuilds oasst1 message trees and extracts conversations. Rows with `deleted: true` or
 * `review_result: false` (or another language when `lang` is set) are dropped with their subtrees.
 * "best": from each root follow the lowest-ranked child (unranked after ranked, ties by file order) to a
 * leaf; "all": every root-to-leaf path, de-duplicated after trimming. Trailing prompter messages are
 * dropped; a path left without an assistant turn is skipped and counted. A message whose parent_id is not
 * in the file is skipped with its replies and listed in `orphanRows` (file, line, message_id, parent_id).
 * Conversations come out in the file order of their roots (then depth-first by rank order).
 */
export function buildOasstConversations(rows: { value: Record<string, unknown>; src: SourceRef }[], opts: OasstOptions): OasstResult {
  const langs = opts.lang && opts.lang.trim() !== '' ? new Set(opts.lang.split(',').map((s) => s.trim()).filter(Boolean)) : null;
  const out: OasstResult = { conversations: [], bad: [], skipped: 0, droppedMessages: 0, orphans: 0, orphanRows: [] };
  const byId = new Map<string, OasstMessage>();
  // message_id → line of bad rows whose id is still readable (their replies are reported against that line).
  const badRowLine = new Map<string, number>();
  const all: OasstMessage[] = [];
  rows.forEach((r, i) => {
    const m = parseOasstRow(r.value, r.src, i, langs);
    if (typeof m === 'string') {
      out.bad.push({ src: r.src, reason: m });
      const id = r.value.message_id;
      if (typeof id === 'string' && !badRowLine.has(id)) badRowLine.set(id, r.src.line);
      return;
    }
    if (byId.has(m.id)) {
      out.bad.push({ src: r.src, reason: `duplicate message_id "${m.id}" (first at line ${byId.get(m.id)!.src.line})` });
      return;
    }
    byId.set(m.id, m);
    all.push(m);
  });
  const roots: OasstMessage[] = [];
  const orphans: OasstMessage[] = [];
  for (const m of all) {
    if (m.parentId === null) roots.push(m);
    else {
      const p = byId.get(m.parentId);
      if (p) p.children.push(m);
      else orphans.push(m);
    }
  }
  // Count dropped messages (a dropped message takes its whole subtree with it).
  const countSubtree = (m: OasstMessage): number => 1 + m.children.reduce((s, c) => s + countSubtree(c), 0);
  out.orphans = orphans.length;
  for (const o of orphans) {
    const row: OasstOrphan = { src: o.src, messageId: o.id, parentId: o.parentId!, replies: countSubtree(o) - 1 };
    const parentBadLine = badRowLine.get(o.parentId!);
    if (parentBadLine !== undefined) row.parentBadLine = parentBadLine;
    out.orphanRows.push(row);
  }
  const live = (m: OasstMessage) => m.children.filter((c) => !c.dropped).sort(byRank);
  const countDropped = (m: OasstMessage): void => {
    for (const c of m.children) {
      if (c.dropped) out.droppedMessages += countSubtree(c);
      else countDropped(c);
    }
  };
  for (const root of roots) {
    if (root.dropped) {
      out.droppedMessages += countSubtree(root);
      continue;
    }
    countDropped(root);
    if (opts.paths === 'best') {
      const path = [root];
      for (let kids = live(root); kids.length > 0; kids = live(path[path.length - 1]!)) path.push(kids[0]!);
      const conv = pathToConversation(path);
      if (conv) out.conversations.push(conv);
      else out.skipped++;
    } else {
      const seen = new Set<string>();
      const walk = (path: OasstMessage[]) => {
        const kids = live(path[path.length - 1]!);
        if (kids.length === 0) {
          const conv = pathToConversation(path);
          if (!conv) {
            out.skipped++;
            return;
          }
          // Two prompter leaves under one assistant trim to the same conversation: keep it once.
          let last = path.length;
          while (path[last - 1]!.role === 'prompter') last--;
          const key = path[last - 1]!.id;
          if (!seen.has(key)) {
            seen.add(key);
            out.conversations.push(conv);
          }
          return;
        }
        for (const k of kids) walk([...path, k]);
      };
      walk([root]);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// OpenAssistant's nested trees (the release's *.trees.jsonl): one tree a line → the flat rows above.

/** One oasst1 row and where it came from: a flat row's own line, or for a nested tree the tree's line. */
export interface OasstRow {
  value: Record<string, unknown>;
  src: SourceRef;
}

/** An oasst1 file holds flat message rows (the Hugging Face dataset) or nested trees (trees.jsonl), never both. */
export type OasstLayout = 'rows' | 'trees';

/** The only tree_state in the Hugging Face flat dataset; nested trees in other states are skipped (and counted). */
export const OASST_READY_STATE = 'ready_for_export';

/** A nested tree as auto-detection sees it: a `prompt` message with a message_id and replies (or the tree's id beside it). */
export function isOasstTree(rec: Record<string, unknown>): boolean {
  const p = rec.prompt;
  return isPlainObject(p) && 'message_id' in p && ('replies' in p || 'message_tree_id' in rec);
}

/**
 * The layout one oasst1 record shows; undefined when it shows neither (it is then read as its file's layout,
 * so that `{}` in a file of trees is a tree without a prompt). Flat rows carry message_tree_id too, so only a
 * `prompt`, or a message_tree_id without a message_id, marks a tree.
 */
export function oasstLayoutOf(rec: Record<string, unknown>): OasstLayout | undefined {
  if ('prompt' in rec) return 'trees';
  if ('message_id' in rec) return 'rows';
  if ('message_tree_id' in rec) return 'trees';
  return undefined;
}

/** One tree line expanded: its messages as flat rows, the reason it is bad, or the tree_state it was skipped for. */
export type OasstTreeResult = { kind: 'rows'; rows: OasstRow[] } | { kind: 'bad'; reason: string } | { kind: 'state'; state: string };

/**
 * Expands one nested tree into flat rows in depth-first order, replies in their order (so "best" breaks
 * rank ties as the flat dataset's row order does). Each row gets parent_id from the nesting (null for the
 * prompt) and the tree's line as its source; a parent_id the message already has must agree. Each message
 * passes the flat rows' validation (parseOasstRow); the first message that does not makes the whole line
 * bad, as does a message_id already in `seen` (message_id → line of earlier trees). A good tree's ids are
 * added to `seen`. A tree whose tree_state is set and not ready_for_export is skipped unread.
 */
export function expandOasstTree(rec: Record<string, unknown>, src: SourceRef, seen: Map<string, number>): OasstTreeResult {
  const fail = (reason: string): OasstTreeResult => ({ kind: 'bad', reason });
  const state = rec.tree_state;
  if (state !== undefined && state !== null) {
    if (typeof state !== 'string') return fail(`"tree_state" must be a string, got ${typeName(state)}`);
    if (state !== OASST_READY_STATE) return { kind: 'state', state };
  }
  if (!('prompt' in rec) || rec.prompt === undefined) return fail('missing "prompt" (the nested tree\'s first message)');
  if (!isPlainObject(rec.prompt)) return fail(`"prompt" must be an object (the nested tree's first message), got ${typeName(rec.prompt)}`);
  const rows: OasstRow[] = [];
  const ids = new Set<string>();
  const stack: { msg: unknown; at: string; parentId: string | null }[] = [{ msg: rec.prompt, at: 'prompt', parentId: null }];
  while (stack.length > 0) {
    const { msg, at, parentId } = stack.pop()!;
    if (!isPlainObject(msg)) return fail(`${at} must be an object, got ${typeName(msg)}`);
    const where = typeof msg.message_id === 'string' && msg.message_id !== '' ? `${at} (message_id "${msg.message_id}")` : at;
    // Leaves may leave replies out (or null); anything else must be a list of messages.
    const replies = msg.replies ?? [];
    if (!Array.isArray(replies)) return fail(`${where}: "replies" must be an array, got ${typeName(replies)}`);
    // parseOasstRow reads "" as no parent, so the prompt's "" agrees with null.
    const given = msg.parent_id === '' ? null : msg.parent_id;
    if (given !== undefined && given !== parentId) {
      const place = parentId === null ? "the tree's prompt (parent null)" : `a reply to "${parentId}"`;
      return fail(`${where}: "parent_id" is ${JSON.stringify(given)} but the message is ${place}`);
    }
    const row: Record<string, unknown> = { ...msg, parent_id: parentId };
    delete row.replies;
    const m = parseOasstRow(row, src, 0, null);
    if (typeof m === 'string') return fail(`${where}: ${m}`);
    if (ids.has(m.id)) return fail(`${where}: duplicate message_id (twice in this tree)`);
    const first = seen.get(m.id);
    if (first !== undefined) return fail(`${where}: duplicate message_id (first at line ${first})`);
    ids.add(m.id);
    rows.push({ value: row, src });
    for (let i = replies.length - 1; i >= 0; i--) stack.push({ msg: replies[i], at: `${at}.replies[${i}]`, parentId: m.id });
  }
  for (const id of ids) seen.set(id, src.line);
  return { kind: 'rows', rows };
}

/** An oasst1 file's records as flat rows for buildOasstConversations. */
export interface OasstFileRows {
  layout: OasstLayout;
  rows: OasstRow[];
  /** Tree lines that are bad (flat rows are checked by buildOasstConversations). */
  bad: { src: SourceRef; reason: string }[];
  /** Trees skipped for a tree_state other than ready_for_export, counted by state (in file order of first use). */
  skippedTrees: Record<string, number>;
}

/** A file that mixes the layouts: the first record of the other layout, and the line that set the file's. */
export interface OasstMixedLayouts {
  mixed: { src: SourceRef; reason: string };
}

/**
 * Decides an oasst1 file's layout (the first record that shows one; flat rows when none does) and turns
 * nested trees into flat rows; flat rows pass through as they are. A record of the other layout is no
 * bad line to skip but a wrong file (a concatenation, or the wrong export), reported at its line.
 */
export function oasstFileRows(records: readonly OasstRow[]): OasstFileRows | OasstMixedLayouts {
  let fileLayout: { layout: OasstLayout; line: number } | undefined;
  for (const r of records) {
    const layout = oasstLayoutOf(r.value);
    if (layout === undefined) continue;
    if (fileLayout === undefined) fileLayout = { layout, line: r.src.line };
    else if (layout !== fileLayout.layout) {
      const what = (l: OasstLayout) => (l === 'trees' ? 'a nested tree (trees.jsonl)' : 'a flat message row');
      const reason = `${what(layout)} in an oasst1 file whose line ${fileLayout.line} is ${what(fileLayout.layout)}; a file holds one layout, not both`;
      return { mixed: { src: r.src, reason } };
    }
  }
  const out: OasstFileRows = { layout: fileLayout?.layout ?? 'rows', rows: [], bad: [], skippedTrees: {} };
  if (out.layout === 'rows') {
    out.rows = records.slice();
    return out;
  }
  const seen = new Map<string, number>();
  for (const r of records) {
    const t = expandOasstTree(r.value, r.src, seen);
    if (t.kind === 'rows') for (const row of t.rows) out.rows.push(row);
    else if (t.kind === 'bad') out.bad.push({ src: r.src, reason: t.reason });
    else out.skippedTrees[t.state] = (out.skippedTrees[t.state] ?? 0) + 1;
  }
  return out;
}
