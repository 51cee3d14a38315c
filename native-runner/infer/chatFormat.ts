/**
 * Chat prompts for generation, rendered with the training template (seed recipe, data/render):
 *   `<|system|>\n{system}\n` (when given and not blank) then per earlier turn `<|user|>\n{q}\n<|assistant|>\n{a}<|endoftext|>`
 *   and finally `<|user|>\n{q}\n<|assistant|>\n`; the model's answer is its text up to `<|endoftext|>`, stripped.
 * Tokenised piece by piece like training (prompt pieces end at `<|assistant|>\n`, answer pieces are
 * `{a}<|endoftext|>`), so a prompt's ids equal the training ids of the same conversation prefix.
 * Base models (no role tokens in the tokenizer) get the latest user message as raw text, as the seed's
 * compare_models.py does. When the prompt is too long, the oldest turns go first, then tokens from the left.
 */
import type { TextTokenizer } from '../model/types';
import type { Role } from '../data/types';
import { renderPieces, DEFAULT_TEMPLATE } from '../data/render';
import { USER_TOKEN, ASSISTANT_TOKEN, SYSTEM_TOKEN, EOS_TOKEN as EOS_TEXT } from '../model/chatTemplate';
import { SftError } from '../util/errors';

export interface ChatMessage {
  role: Role;
  content: string;
}

export type PromptMode = 'chat' | 'raw';

/** A tokenizer knows the chat template when it has the user and assistant role tokens. */
export function hasChatTokens(tokenizer: Pick<TextTokenizer, 'tokenToId'>): boolean {
  return tokenizer.tokenToId(USER_TOKEN) !== undefined && tokenizer.tokenToId(ASSISTANT_TOKEN) !== undefined;
}

/** Checks the message list: roles known, contents strings, ends with a user message; system only first. */
export function validateMessages(messages: ChatMessage[], where = 'messages'): void {
  if (!Array.isArray(messages) || messages.length === 0) throw new SftError('needs at least one user message', where);
  messages.forEach((m, i) => {
    if (!m || !['system', 'user', 'assistant'].includes(m.role)) throw new SftError(`message ${i + 1}: role must be system, user or assistant`, where);
    if (typeof m.content !== 'string') throw new SftError(`message ${i + 1}: content must be a string`, where);
    if (m.role === 'system' && i !== 0) throw new SftError(`message ${i + 1}: a system message may only come first`, where);
  });
  if (messages[messages.length - 1]!.role !== 'user') throw new SftError('the last message must be from the user', where);
}

/**
 * The prompt as pieces of text (each tokenised on its own): [system + first user prompt], [answer],
 * [next user prompt], … ending with a prompt piece that closes with `<|assistant|>\n`.
 */
export function renderChatPieces(messages: ChatMessage[], system?: string): string[] {
  validateMessages(messages);
  const sys = system ?? (messages[0]!.role === 'system' ? messages[0]!.content : undefined);
  const turns = messages.filter((m) => m.role !== 'system');
  if (sys !== undefined) turns.unshift({ role: 'system', content: sys });
  // The training renderer (data/render) cuts prompt/answer pieces; an empty final answer marks the prompt's end.
  const pieces = renderPieces([...turns, { role: 'assistant', content: '' }], DEFAULT_TEMPLATE)!;
  return pieces.slice(0, -1).map((p) => p.text);
}

/** The whole chat prompt as one string. */
export function renderChatPrompt(messages: ChatMessage[], system?: string): string {
  return renderChatPieces(messages, system).join('');
}

export interface ChatPrompt {
  ids: number[];
  mode: PromptMode;
  /** Earlier turns (user+assistant pairs) left out to fit. */
  droppedTurns: number;
  /** Tokens cut from the left after dropping turns (0 normally). */
  truncatedTokens: number;
}

/**
 * Token ids of the prompt, at most `maxPromptTokens` long. `mode` 'auto' picks chat when the tokenizer
 * has role tokens, else raw.
 */
export function buildPrompt(tokenizer: Pick<TextTokenizer, 'encode' | 'tokenToId'>, messages: ChatMessage[], opts: { system?: string; mode?: PromptMode | 'auto'; maxPromptTokens: number }): ChatPrompt {
  validateMessages(messages);
  const mode: PromptMode = !opts.mode || opts.mode === 'auto' ? (hasChatTokens(tokenizer) ? 'chat' : 'raw') : opts.mode;
  const max = Math.max(1, opts.maxPromptTokens);
  const cut = (ids: number[], droppedTurns: number): ChatPrompt => {
    const over = Math.max(0, ids.length - max);
    return { ids: over ? ids.slice(over) : ids, mode, droppedTurns, truncatedTokens: over };
  };
  if (mode === 'raw') {
    const ids = tokenizer.encode(messages[messages.length - 1]!.content);
    if (ids.length === 0) throw new SftError('the prompt encodes to no tokens');
    return cut(ids, 0);
  }
  if (!hasChatTokens(tokenizer)) throw new SftError(`the tokenizer has no ${USER_TOKEN}/${ASSISTANT_TOKEN} tokens; this looks like a base model (use the raw prompt mode)`);
  const sys = messages[0]!.role === 'system' ? messages[0]!.content : undefined;
  let rest = messages.filter((m) => m.role !== 'system');
  let dropped = 0;
  for (;;) {
    const ids = renderChatPieces(rest, opts.system ?? sys).flatMap((p) => tokenizer.encode(p));
    // Drop the oldest exchange (everything up to and including the first assistant answer) while too long.
    const firstAnswer = rest.findIndex((m) => m.role === 'assistant');
    if (ids.length <= max || firstAnswer < 0) return cut(ids, dropped);
    rest = rest.slice(firstAnswer + 1);
    dropped++;
  }
}

/** The answer in generated text: everything before `<|endoftext|>` (or another role marker), stripped. */
export function extractAnswer(text: string): string {
  let end = text.length;
  for (const marker of [EOS_TEXT, USER_TOKEN, SYSTEM_TOKEN, ASSISTANT_TOKEN]) {
    const i = text.indexOf(marker);
    if (i >= 0 && i < end) end = i;
  }
  return text.slice(0, end).trim();
}

/** Ids that end a chat answer: eos and, for chat models, the role tokens (a new turn starting). */
export function chatStopIds(tokenizer: Pick<TextTokenizer, 'eosId' | 'tokenToId'>, mode: PromptMode): number[] {
  const ids = [tokenizer.eosId];
  if (mode === 'chat') {
    for (const t of [USER_TOKEN, ASSISTANT_TOKEN, SYSTEM_TOKEN]) {
      const id = tokenizer.tokenToId(t);
      if (id !== undefined) ids.push(id);
    }
  }
  return ids;
}
