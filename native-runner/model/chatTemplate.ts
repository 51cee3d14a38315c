/**
 * The chat format of the recipe (step2-sft-recipe.md), as the single source for the runner and for the
 * `chat_template` saved in tokenizer_config.json:
 *   system     `<|system|>\n{content}\n`
 *   user       `<|user|>\n{content}\n`
 *   assistant  `<|assistant|>\n{content}<|endoftext|>`
 *   generation prompt `<|assistant|>\n`
 * CHAT_TEMPLATE_JINJA renders exactly these strings in transformers' apply_chat_template (checked with
 * Jinja2 3.1 when written); `renderChatText` is the same function in TypeScript.
 */
import type { Role, Turn } from '../data/types';

/** Role tokens in the order they are added (ids 50257, 50258, 50259 for GPT-2). */
export const ROLE_TOKENS = ['<|user|>', '<|assistant|>', '<|system|>'] as const;
export const USER_TOKEN = '<|user|>';
export const ASSISTANT_TOKEN = '<|assistant|>';
export const SYSTEM_TOKEN = '<|system|>';
export const EOS_TOKEN = '<|endoftext|>';

/** What surrounds a turn's content: prefix + content + suffix. */
export const TURN_FORMAT: Record<Role, { prefix: string; suffix: string }> = {
  system: { prefix: `${SYSTEM_TOKEN}\n`, suffix: '\n' },
  user: { prefix: `${USER_TOKEN}\n`, suffix: '\n' },
  assistant: { prefix: `${ASSISTANT_TOKEN}\n`, suffix: EOS_TOKEN },
};

/** The prompt that asks the model for an assistant turn. */
export const GENERATION_PROMPT = `${ASSISTANT_TOKEN}\n`;

/** transformers chat_template (Jinja) equivalent to TURN_FORMAT and GENERATION_PROMPT. */
export const CHAT_TEMPLATE_JINJA =
  "{% for message in messages %}" +
  "{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}" +
  "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}" +
  "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\\n' + message['content'] + '<|endoftext|>' }}" +
  "{% else %}{{ raise_exception('Unknown role: ' + message['role']) }}" +
  "{% endif %}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

/** Renders turns as text, optionally followed by the generation prompt (same output as the Jinja template). */
export function renderChatText(turns: readonly Turn[], addGenerationPrompt = false): string {
  let s = '';
  for (const t of turns) s += TURN_FORMAT[t.role].prefix + t.content + TURN_FORMAT[t.role].suffix;
  return addGenerationPrompt ? s + GENERATION_PROMPT : s;
}
