/**
 * Piece-by-piece tokenisation, as TRL does for prompt/completion pairs: every piece of a rendered
 * conversation (render.ts) is encoded on its own (special tokens recognised), the ids are concatenated,
 * and `trained[i]` is 1 for the ids of answer pieces (assistant_only_loss, the default) or for every id.
 * Truncation keeps the first maxLength ids; fullLength keeps the length before it. An example cut before
 * its answer has no trained id (the batcher then gives it weight 0 everywhere).
 */
import { SftError } from '../util/errors';
import { maxLengthProblem } from '../../protocol/trainingOptions';
import type { TextTokenizer } from '../model/types';
import { conversationPieces, DEFAULT_TEMPLATE, type ChatTemplate, type Piece } from './render';
import type { Conversation, SourceRef, TokenizedExample } from './types';

export interface TokenizeOptions {
  maxLength: number;
  /** Train only the answer pieces (default true); false trains every token. `text` examples train all. */
  assistantOnlyLoss?: boolean;
  template?: ChatTemplate;
}

/** The runner's max_length rule (protocol/trainingOptions.ts), as an SftError naming max_length. */
export function checkMaxLength(n: unknown, where = 'max_length'): asserts n is number {
  const problem = maxLengthProblem(n);
  if (problem) throw new SftError(problem, where);
}

/** Tokenises already-rendered pieces into one example. */
export function tokenizePieces(tokenizer: Pick<TextTokenizer, 'encode'>, pieces: readonly Piece[], source: SourceRef, opts: TokenizeOptions): TokenizedExample {
  checkMaxLength(opts.maxLength);
  const assistantOnly = opts.assistantOnlyLoss ?? true;
  const ids: number[] = [];
  const flags: number[] = [];
  let text = '';
  for (const p of pieces) {
    text += p.text;
    const pieceIds = tokenizer.encode(p.text);
    const flag = !assistantOnly || p.answer ? 1 : 0;
    for (const id of pieceIds) {
      ids.push(id);
      flags.push(flag);
    }
  }
  const fullLength = ids.length;
  const keep = Math.min(fullLength, opts.maxLength);
  const trained = new Uint8Array(keep);
  for (let i = 0; i < keep; i++) trained[i] = flags[i]!;
  return { text, inputIds: keep === fullLength ? ids : ids.slice(0, keep), trained, fullLength, source };
}

/**
 * Renders and tokenises one conversation. Returns null when it has no assistant turn (skipped). `text`
 * conversations (rawText) are trained in full whatever assistantOnlyLoss says.
 */
export function tokenizeConversation(tokenizer: Pick<TextTokenizer, 'encode'>, conv: Conversation, opts: TokenizeOptions): TokenizedExample | null {
  const template = opts.template ?? DEFAULT_TEMPLATE;
  const pieces = conversationPieces(conv, template);
  if (pieces === null) return null;
  return tokenizePieces(tokenizer, pieces, conv.source, conv.rawText !== undefined ? { ...opts, assistantOnlyLoss: false } : opts);
}

/** Number of trained ids of an example. */
export function trainedCount(ex: TokenizedExample): number {
  let n = 0;
  for (let i = 0; i < ex.trained.length; i++) n += ex.trained[i]!;
  return n;
}
