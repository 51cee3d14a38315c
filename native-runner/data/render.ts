/**
 * The chat template: turns → rendered text, cut into the pieces that are tokenised one by one.
 *
 * Default (the recipe's template, GPT-2 with three added role tokens):
 *   system    `<|system|>\n{c}\n`      (left out when blank)
 *   user      `<|user|>\n{c}\n`
 *   assistant `<|assistant|>\n{c}<|endoftext|>`
 * concatenated with nothing between turns. Pieces alternate: a prompt piece holds everything since the
 * previous answer up to and including the assistant prefix (`<|assistant|>\n`, the generation prompt); an
 * answer piece is `{content}<|endoftext|>`. Turns after the last assistant turn are dropped; a conversation
 * with no assistant turn renders to null (the caller skips and counts it). The `text` format has no
 * template: one trained piece, the text with the eos appended unless it already ends with it.
 */
import { SftError } from '../util/errors';
import type { Conversation, Role, Turn } from './types';

export interface RoleMarkers {
  prefix: string;
  suffix: string;
}

export interface ChatTemplate {
  system: RoleMarkers;
  user: RoleMarkers;
  /** The prefix ends the prompt piece; the suffix (normally the eos token) ends the answer piece. */
  assistant: RoleMarkers;
  /** The end-of-sequence text appended to `text`-format examples. */
  eos: string;
}

export const DEFAULT_TEMPLATE: ChatTemplate = {
  system: { prefix: '<|system|>\n', suffix: '\n' },
  user: { prefix: '<|user|>\n', suffix: '\n' },
  assistant: { prefix: '<|assistant|>\n', suffix: '<|endoftext|>' },
  eos: '<|endoftext|>',
};

/** One piece of a rendered conversation; `answer` pieces are the ones trained with assistant_only_loss. */
export interface Piece {
  text: string;
  answer: boolean;
}

/**
 * Cuts a conversation into prompt/answer pieces. Returns null when there is no assistant turn.
 * Consecutive non-assistant turns join one prompt piece; each assistant turn gets its own prompt piece
 * (possibly just the assistant prefix) and answer piece.
 */
export function renderPieces(turns: readonly Turn[], template: ChatTemplate = DEFAULT_TEMPLATE): Piece[] | null {
  let last = -1;
  for (let i = turns.length - 1; i >= 0; i--) {
    if (turns[i]!.role === 'assistant') {
      last = i;
      break;
    }
  }
  if (last < 0) return null;
  const pieces: Piece[] = [];
  let prompt = '';
  for (let i = 0; i <= last; i++) {
    const t = turns[i]!;
    if (t.role === 'assistant') {
      pieces.push({ text: prompt + template.assistant.prefix, answer: false });
      pieces.push({ text: t.content + template.assistant.suffix, answer: true });
      prompt = '';
    } else if (t.role === 'system' && t.content.trim() === '') {
      continue;
    } else {
      const m = template[t.role];
      prompt += m.prefix + t.content + m.suffix;
    }
  }
  return pieces;
}

/** The pieces of a `text`-format example: the text plus eos (unless already there), all trained. */
export function textPieces(text: string, template: ChatTemplate = DEFAULT_TEMPLATE): Piece[] {
  return [{ text: text.endsWith(template.eos) ? text : text + template.eos, answer: true }];
}

/** Pieces of any conversation (raw text or turns); null when it has no assistant turn. */
export function conversationPieces(conv: Conversation, template: ChatTemplate = DEFAULT_TEMPLATE): Piece[] | null {
  return conv.rawText !== undefined ? textPieces(conv.rawText, template) : renderPieces(conv.turns, template);
}

/** The rendered text of a conversation (the pieces concatenated), or null when it has no assistant turn. */
export function renderConversation(turns: readonly Turn[], template: ChatTemplate = DEFAULT_TEMPLATE): string | null {
  const pieces = renderPieces(turns, template);
  return pieces === null ? null : pieces.map((p) => p.text).join('');
}

/** The generation prompt for chat: the turns rendered, then the assistant prefix. */
export function renderPrompt(turns: readonly Turn[], template: ChatTemplate = DEFAULT_TEMPLATE): string {
  let s = '';
  for (const t of turns) {
    if (t.role === 'system' && t.content.trim() === '') continue;
    const m = template[t.role];
    s += m.prefix + t.content + m.suffix;
  }
  return s + template.assistant.prefix;
}

const TEMPLATE_KEYS = ['system_prefix', 'system_suffix', 'user_prefix', 'user_suffix', 'assistant_prefix', 'assistant_suffix', 'eos'] as const;

/**
 * A custom template from config: an object with any of system_prefix, system_suffix, user_prefix,
 * user_suffix, assistant_prefix, assistant_suffix, eos (strings); missing keys keep the default. When
 * only `eos` is given, the assistant suffix becomes that eos too. `where` names the config key in errors.
 */
export function parseTemplate(value: unknown, where = 'chat_template'): ChatTemplate {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new SftError(`must be an object with keys ${TEMPLATE_KEYS.join(', ')}`, where);
  }
  const obj = value as Record<string, unknown>;
  for (const k of Object.keys(obj)) {
    if (!(TEMPLATE_KEYS as readonly string[]).includes(k)) throw new SftError(`unknown key "${k}" (expected ${TEMPLATE_KEYS.join(', ')})`, where);
    if (typeof obj[k] !== 'string') throw new SftError(`${k} must be a string`, where);
  }
  const get = (k: (typeof TEMPLATE_KEYS)[number], d: string) => (obj[k] as string | undefined) ?? d;
  const eos = get('eos', DEFAULT_TEMPLATE.eos);
  const t: ChatTemplate = {
    system: { prefix: get('system_prefix', DEFAULT_TEMPLATE.system.prefix), suffix: get('system_suffix', DEFAULT_TEMPLATE.system.suffix) },
    user: { prefix: get('user_prefix', DEFAULT_TEMPLATE.user.prefix), suffix: get('user_suffix', DEFAULT_TEMPLATE.user.suffix) },
    assistant: { prefix: get('assistant_prefix', DEFAULT_TEMPLATE.assistant.prefix), suffix: get('assistant_suffix', eos) },
    eos,
  };
  if (t.assistant.prefix === '') throw new SftError('assistant_prefix must not be empty (it ends the prompt piece)', where);
  return t;
}

/** The role markers a template uses, for checking that a tokenizer knows them as single tokens. */
export function templateMarkers(t: ChatTemplate): string[] {
  const roles: Role[] = ['system', 'user', 'assistant'];
  return roles.map((r) => t[r].prefix.trim()).filter((s) => s !== '');
}
