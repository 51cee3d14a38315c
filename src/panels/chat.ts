/**
 * The chat panel: talk to a checkpoint, a run's final model or the base model — system prompt, sampling
 * parameters, streamed answers (runner `token` events), multi-turn history (kept by the webview in its
 * state), a stop button (runner `cancel`), and side-by-side mode (two panes, same seed) for comparing base
 * vs SFT or two checkpoints. The host only relays validated requests; the webview renders text as text.
 */
import * as vscode from 'vscode';
import { ChatFromWebview, type ChatMsgFromWebview, type ChatMsgToWebview, type ModelChoice } from '../../protocol/webview';
import { chatRequestParams, DEFAULT_SAMPLING } from '../chatRequest';
import { RunnerService } from '../runnerService';
import type { WorkspaceRuns } from '../workspaceRuns';
import { openChannelPanel, type WebviewChannel } from './webviewChannel';
import { listModelChoices, pickModel } from '../modelChoices';


export class ChatPanel implements vscode.Disposable {
  static current: ChatPanel | undefined;
  private readonly panel: vscode.WebviewPanel;
  private readonly channel: WebviewChannel<ChatMsgFromWebview, ChatMsgToWebview>;
  private readonly subs: vscode.Disposable[] = [];
  /** Runner request ids of generations in progress (for stop). */
  private readonly active = new Set<number>();
  private selection: [string | null, string | null];
  private sideBySide: boolean;
  private disposed = false;

  static show(ctx: { extensionUri: vscode.Uri; runner: RunnerService; runs: WorkspaceRuns }, models: [string | null, string | null], sideBySide: boolean): ChatPanel {
    if (ChatPanel.current) {
      const cur = ChatPanel.current;
      cur.selection = models;
      cur.sideBySide = sideBySide;
      cur.panel.reveal(vscode.ViewColumn.Active);
      void cur.sendInit();
      return cur;
    }
    ChatPanel.current = new ChatPanel(ctx, models, sideBySide);
    return ChatPanel.current;
  }

  private constructor(
    private readonly ctx: { extensionUri: vscode.Uri; runner: RunnerService; runs: WorkspaceRuns },
    models: [string | null, string | null],
    sideBySide: boolean,
  ) {
    this.selection = models;
    this.sideBySide = sideBySide;
    const opened = openChannelPanel<ChatMsgFromWebview, ChatMsgToWebview>(
      ctx,
      { viewType: 'sft.chat', tabTitle: sideBySide ? 'SFT Compare' : 'SFT Chat', panel: 'chat', title: 'SFT Chat', parser: ChatFromWebview, retainContextWhenHidden: false },
      (m) => this.onMessage(m),
      () => this.dispose(),
    );
    this.panel = opened.panel;
    this.channel = opened.channel;
    this.subs.push(...opened.disposables);
  }

  private async sendInit(): Promise<void> {
    const models = await listModelChoices(this.ctx.runs);
    for (const sel of this.selection) {
      if (sel && !models.some((m) => m.path === sel)) models.unshift({ path: sel, label: sel.split(/[\\/]/).slice(-2).join('/'), detail: sel });
    }
    this.panel.title = this.sideBySide ? 'SFT Compare' : 'SFT Chat';
    this.channel.postLatest({ type: 'init', models, selected: [...this.selection], sideBySide: this.sideBySide, params: DEFAULT_SAMPLING });
  }

  private async onMessage(m: ChatMsgFromWebview): Promise<void> {
    switch (m.type) {
      case 'ready':
        await this.sendInit();
        return;
      case 'pickModel': {
        const picked: ModelChoice | undefined = await pickModel(this.ctx.runs, `Model for ${m.pane === 0 ? 'the left' : 'the right'} pane`);
        if (picked) {
          this.selection[m.pane] = picked.path;
          this.channel.post({ type: 'modelPicked', pane: m.pane, model: picked });
        }
        return;
      }
      case 'stop':
        for (const id of this.active) void this.ctx.runner.request('cancel', { requestId: id }).catch(() => undefined);
        return;
      case 'generate': {
        let id = -1;
        try {
          const r = await this.ctx.runner.request(
            'chat',
            chatRequestParams(m, vscode.workspace.getConfiguration('sft').get<'cpu' | 'cuda'>('device') ?? 'cpu'),
            {
              onId: (i) => {
                id = i;
                this.active.add(i);
              },
              onToken: (text) => this.channel.post({ type: 'token', pane: m.pane, text }),
            },
          );
          this.channel.post({ type: 'done', pane: m.pane, text: r.text, stopped: r.finish_reason === 'cancelled' });
        } catch (e) {
          this.channel.post({ type: 'error', pane: m.pane, message: RunnerService.describe(e) });
        } finally {
          this.active.delete(id);
        }
        return;
      }
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const id of this.active) void this.ctx.runner.request('cancel', { requestId: id }).catch(() => undefined);
    if (ChatPanel.current === this) ChatPanel.current = undefined;
    for (const s of this.subs) s.dispose();
    this.panel.dispose();
  }
}
