/**
 * The chat panel: talk to a checkpoint, a run's final model or the base model — system prompt, sampling
 * parameters, streamed answers (runner `token` events), multi-turn history (kept by the webview in its
 * state), a stop button (runner `cancel`), and side-by-side mode (two panes, same seed) for comparing base
 * vs SFT or two checkpoints. The host only relays validated requests; the webview renders text as text.
 */
import * as vscode from 'vscode';
import { ChatFromWebview, type ChatMsgFromWebview, type ChatMsgToWebview, type ModelChoice } from '../../protocol/webview';
import { DEFAULT_SAMPLING } from '../chatRequest';
import { RunnerService } from '../runnerService';
import type { WorkspaceRuns } from '../workspaceRuns';
import { openChannelPanel, type WebviewChannel } from './webviewChannel';
import { listModelChoices, pickModel } from '../modelChoices';
import { ChatGenerations } from './chatGenerations';


export class ChatPanel implements vscode.Disposable {
  static current: ChatPanel | undefined;
  private readonly panel: vscode.WebviewPanel;
  private readonly channel: WebviewChannel<ChatMsgFromWebview, ChatMsgToWebview>;
  private readonly subs: vscode.Disposable[] = [];
  /** Generations in progress (runner chat requests; stop cancels them). */
  private readonly generations: ChatGenerations;
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
    this.generations = new ChatGenerations(ctx.runner, (m) => this.channel.post(m), (e) => RunnerService.describe(e));
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
        this.generations.stop();
        return;
      case 'generate':
        await this.generations.generate(m, vscode.workspace.getConfiguration('sft').get<'cpu' | 'cuda'>('device') ?? 'cpu');
        return;
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.generations.stop();
    if (ChatPanel.current === this) ChatPanel.current = undefined;
    for (const s of this.subs) s.dispose();
    this.panel.dispose();
  }
}
