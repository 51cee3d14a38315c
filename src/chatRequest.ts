/**
 * The runner `chat` request made from the chat panel's `generate` message. Pure (no `vscode`), so it is
 * unit-tested. Every sampling parameter is passed through: top_k in particular is always sent, because the
 * panel's 0 means "off" while a missing top_k means the runner's default (50, as transformers' generate).
 */
import type { RequestParams } from '../protocol/runner';
import type { ChatMsgFromWebview, SamplingParams } from '../protocol/webview';

/** The panel's initial sampling settings: the seed's test_sft.py (temperature 0.7, top_p 0.9, generate's top_k 50). */
export const DEFAULT_SAMPLING: SamplingParams = { temperature: 0.7, top_p: 0.9, top_k: 50, max_new_tokens: 150, seed: 42 };

export function chatRequestParams(m: Extract<ChatMsgFromWebview, { type: 'generate' }>, device: 'cpu' | 'cuda'): RequestParams<'chat'> {
  return {
    model: m.model,
    messages: m.messages,
    ...(m.system.trim() ? { system: m.system } : {}),
    temperature: m.params.temperature,
    top_p: m.params.top_p,
    top_k: m.params.top_k,
    max_new_tokens: m.params.max_new_tokens,
    seed: m.params.seed,
    device,
  };
}
