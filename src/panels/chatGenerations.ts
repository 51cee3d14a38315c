/**
 * The chat panel's generations, without `vscode` (so it is tested against a real runner server): each
 * webview `generate` becomes one runner `chat` request whose `token` events are relayed as `token` messages
 * and whose reply becomes `done` (stopped = the runner's finish_reason "cancelled") or `error`; `stop()` sends
 * a runner `cancel` for every chat still in flight. Exactly one `done` or `error` follows every `generate`,
 * so the webview always leaves its streaming state.
 */
import type { RequestParams, RequestResult } from '../../protocol/runner';
import type { ChatMsgFromWebview, ChatMsgToWebview } from '../../protocol/webview';
import { chatRequestParams } from '../chatRequest';

/** The part of RunnerService / RunnerClient the chat uses. */
export interface ChatRunner {
  request(method: 'chat', params: RequestParams<'chat'>, opts: { onToken?: (t: string) => void; onId?: (id: number) => void }): Promise<RequestResult<'chat'>>;
  request(method: 'cancel', params: RequestParams<'cancel'>): Promise<RequestResult<'cancel'>>;
}

export class ChatGenerations {
  /** Runner request ids of the chats in flight. */
  private readonly active = new Set<number>();

  constructor(
    private readonly runner: ChatRunner,
    private readonly post: (m: ChatMsgToWebview) => void,
    private readonly describe: (e: unknown) => string = (e) => (e instanceof Error ? e.message : String(e)),
  ) {}

  /** Chats in flight. */
  get inFlight(): number {
    return this.active.size;
  }

  /** Runs one `generate` to its end (resolves after `done` or `error` was posted). */
  async generate(m: Extract<ChatMsgFromWebview, { type: 'generate' }>, device: 'cpu' | 'cuda'): Promise<void> {
    let id = -1;
    try {
      const r = await this.runner.request('chat', chatRequestParams(m, device), {
        onId: (i) => {
          id = i;
          this.active.add(i);
        },
        onToken: (text) => this.post({ type: 'token', pane: m.pane, text }),
      });
      this.post({ type: 'done', pane: m.pane, text: r.text, stopped: r.finish_reason === 'cancelled' });
    } catch (e) {
      this.post({ type: 'error', pane: m.pane, message: this.describe(e) });
    } finally {
      this.active.delete(id);
    }
  }

  /** Stop: cancels every chat in flight (each still ends with its `done`, marked stopped). */
  stop(): void {
    for (const id of this.active) void this.runner.request('cancel', { requestId: id }).catch(() => undefined);
  }
}
