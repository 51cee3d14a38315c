/**
 * The Dataset Preview sidebar view: pages through a dataset's records as the runner renders them (runner
 * `preview`), each example's tokens with the trained ones highlighted and the max_length cut marked, the
 * whole file's statistics, and the bad lines with links that open the file at that line.
 */
import * as vscode from 'vscode';
import { PreviewFromWebview, type PreviewMsgFromWebview, type PreviewMsgToWebview } from '../../protocol/webview';
import { RunnerService } from '../runnerService';
import { previewToView } from '../previewModel';
import { resolveInWorkspace } from '../workspacePath';
import { WebviewChannel } from './webviewChannel';

export const PAGE_SIZE = 5;

export class PreviewViewProvider implements vscode.WebviewViewProvider, vscode.Disposable {
  static readonly viewId = 'sft.preview';
  private channel: WebviewChannel<PreviewMsgFromWebview, PreviewMsgToWebview> | undefined;
  private readonly subs: vscode.Disposable[] = [];
  private dataset: string | undefined;
  private offset = 0;
  private maxLength = 512;
  private assistantOnlyLoss = true;
  private format = 'auto';
  /** The runner request of the latest load, cancelled when a newer load starts; only the latest load's reply is shown. */
  private pendingId: number | undefined;
  private loadSeq = 0;

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly runner: RunnerService,
  ) {}

  /** Called again whenever VS Code recreates the view: the previous view's channel and listeners are released. */
  resolveWebviewView(view: vscode.WebviewView): void {
    for (const s of this.subs.splice(0)) s.dispose();
    this.channel?.dispose();
    const channel = new WebviewChannel<PreviewMsgFromWebview, PreviewMsgToWebview>(view.webview, this.extensionUri, 'preview', 'Dataset Preview', PreviewFromWebview, (l) => this.runner.output.appendLine(l), (m) => this.onMessage(m));
    this.channel = channel;
    this.subs.push(
      view.onDidChangeVisibility(() => {
        if (!view.visible) channel.reset();
      }),
      view.onDidDispose(() => {
        if (this.channel !== channel) return;
        channel.dispose();
        this.channel = undefined; // posting to a disposed webview throws; the next resolve brings a new channel
      }),
    );
  }

  /** Shows a dataset (from the command or the Datasets tree); reveals the view. */
  async show(dataset: string, opts: { format?: string; maxLength?: number; assistantOnlyLoss?: boolean } = {}): Promise<void> {
    this.dataset = dataset;
    this.offset = 0;
    if (opts.format) this.format = opts.format;
    if (opts.maxLength) this.maxLength = opts.maxLength;
    if (opts.assistantOnlyLoss !== undefined) this.assistantOnlyLoss = opts.assistantOnlyLoss;
    await vscode.commands.executeCommand(`${PreviewViewProvider.viewId}.focus`);
    await this.load();
  }

  private modelPath(): string | undefined {
    const m = vscode.workspace.getConfiguration('sft').get<string>('defaultModel')?.trim();
    if (!m) return undefined;
    return resolveInWorkspace(m, vscode.workspace.workspaceFolders?.[0]?.uri.fsPath);
  }

  private async load(): Promise<void> {
    const ch = this.channel;
    if (!ch) return;
    if (!this.dataset) {
      ch.postLatest({ type: 'empty', message: 'Pick a dataset: the Datasets view, or the command "SFT: Preview Dataset".' });
      return;
    }
    const dataset = this.dataset;
    const seq = ++this.loadSeq;
    ch.postLatest({ type: 'loading', dataset });
    if (this.pendingId !== undefined) void this.runner.request('cancel', { requestId: this.pendingId }).catch(() => undefined);
    const model = this.modelPath();
    try {
      const r = await this.runner.request(
        'preview',
        {
          dataset,
          dataset_format: this.format,
          ...(model ? { model } : {}),
          max_length: this.maxLength,
          assistant_only_loss: this.assistantOnlyLoss,
          offset: this.offset,
          limit: PAGE_SIZE,
        },
        { onId: (id) => (this.pendingId = id) },
      );
      if (seq !== this.loadSeq) return;
      ch.postLatest(previewToView(r, { dataset, model: model ?? '(GPT-2 tokenizer)', maxLength: this.maxLength, assistantOnlyLoss: this.assistantOnlyLoss, limit: PAGE_SIZE }));
    } catch (e) {
      if (seq === this.loadSeq) ch.postLatest({ type: 'error', message: RunnerService.describe(e) });
    } finally {
      if (seq === this.loadSeq) this.pendingId = undefined;
    }
  }

  private async onMessage(m: PreviewMsgFromWebview): Promise<void> {
    switch (m.type) {
      case 'ready':
        await this.load();
        return;
      case 'page':
        this.offset = m.offset;
        await this.load();
        return;
      case 'setOptions':
        this.maxLength = m.max_length;
        this.assistantOnlyLoss = m.assistant_only_loss;
        this.offset = 0;
        await this.load();
        return;
      case 'pickDataset':
        await vscode.commands.executeCommand('sft.previewDataset');
        return;
      case 'openLine': {
        // Only files this view is showing may be opened from it.
        if (m.file !== this.dataset) {
          this.runner.output.appendLine(`[webview preview] refused to open ${m.file}: not the previewed dataset`);
          return;
        }
        const doc = await vscode.workspace.openTextDocument(vscode.Uri.file(m.file));
        const line = Math.min(Math.max(0, m.line - 1), Math.max(0, doc.lineCount - 1));
        await vscode.window.showTextDocument(doc, { selection: new vscode.Range(line, 0, line, 0), preview: true });
        return;
      }
    }
  }

  dispose(): void {
    this.channel?.dispose();
    for (const s of this.subs) s.dispose();
  }
}
