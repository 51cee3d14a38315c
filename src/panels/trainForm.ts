/**
 * The Start Training form: edits a run config (TRL SFTConfig keys, prefilled with the seed recipe's
 * defaults), shows the runner's pre-flight plan for it as the user types (steps per epoch and total,
 * warmup, lr curve, evals/saves and surviving checkpoints, tokens per step, padding/packing efficiency),
 * and on Start saves the config file and starts the run, then opens the dashboard.
 */
import * as vscode from 'vscode';
import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, isAbsolute, relative } from 'node:path';
import { TrainFormFromWebview, type TrainFormMsgFromWebview, type TrainFormMsgToWebview } from '../../protocol/webview';
import { RunnerService } from '../runnerService';
import { renderPlan } from '../planView';
import { resolveInWorkspace } from '../workspacePath';
import { openChannelPanel, type WebviewChannel } from './webviewChannel';

export class TrainFormPanel implements vscode.Disposable {
  static current: TrainFormPanel | undefined;
  private readonly panel: vscode.WebviewPanel;
  private readonly channel: WebviewChannel<TrainFormMsgFromWebview, TrainFormMsgToWebview>;
  private readonly subs: vscode.Disposable[] = [];
  private planSeq = 0;
  private disposed = false;

  static show(ctx: { extensionUri: vscode.Uri; runner: RunnerService; onStarted: (runDir: string) => void }, config: Record<string, unknown>, configPath: string): TrainFormPanel {
    TrainFormPanel.current?.dispose();
    TrainFormPanel.current = new TrainFormPanel(ctx, config, configPath);
    return TrainFormPanel.current;
  }

  private constructor(
    private readonly ctx: { extensionUri: vscode.Uri; runner: RunnerService; onStarted: (runDir: string) => void },
    private config: Record<string, unknown>,
    private configPath: string,
  ) {
    const opened = openChannelPanel<TrainFormMsgFromWebview, TrainFormMsgToWebview>(
      ctx,
      { viewType: 'sft.trainForm', tabTitle: `Start Training: ${basename(configPath)}`, panel: 'train', title: 'Start Training', parser: TrainFormFromWebview, retainContextWhenHidden: true },
      (m) => this.onMessage(m),
      () => this.dispose(),
    );
    this.panel = opened.panel;
    this.channel = opened.channel;
    this.subs.push(...opened.disposables);
  }

  private async onMessage(m: TrainFormMsgFromWebview): Promise<void> {
    switch (m.type) {
      case 'ready': {
        const device = vscode.workspace.getConfiguration('sft').get<'cpu' | 'cuda'>('device') ?? 'cpu';
        this.channel.postLatest({ type: 'init', config: this.config, configPath: this.configPath, device });
        return;
      }
      case 'plan': {
        const seq = ++this.planSeq;
        try {
          const plan = await this.ctx.runner.request('plan', { config: m.config, base_dir: dirname(this.configPath) });
          if (seq === this.planSeq) this.channel.postLatest({ type: 'plan', plan: renderPlan(plan) });
        } catch (e) {
          if (seq === this.planSeq) this.channel.postLatest({ type: 'planError', message: RunnerService.describe(e) });
        }
        return;
      }
      case 'browse': {
        const uris = await vscode.window.showOpenDialog({
          canSelectFiles: m.kind === 'file',
          canSelectFolders: m.kind === 'folder',
          defaultUri: vscode.Uri.file(dirname(this.configPath)),
          openLabel: 'Select',
        });
        if (uris?.[0]) {
          const rel = relative(dirname(this.configPath), uris[0].fsPath);
          this.channel.post({ type: 'browsed', field: m.field, path: rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : uris[0].fsPath });
        }
        return;
      }
      case 'start': {
        if (this.ctx.runner.isTraining) {
          this.channel.post({ type: 'startError', message: 'A run is already training. Stop it first (SFT: Stop Training).' });
          return;
        }
        const root = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
        const target = resolveInWorkspace(m.configPath, root ?? dirname(this.configPath));
        try {
          mkdirSync(dirname(target), { recursive: true });
          writeFileSync(target, `${JSON.stringify(m.config, null, 2)}\n`);
          this.config = m.config;
          this.configPath = target;
          const r = await this.ctx.runner.train({ config: target });
          this.channel.post({ type: 'started', runDir: r.run_dir });
          this.ctx.onStarted(r.run_dir);
        } catch (e) {
          this.channel.post({ type: 'startError', message: RunnerService.describe(e) });
        }
        return;
      }
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    if (TrainFormPanel.current === this) TrainFormPanel.current = undefined;
    for (const s of this.subs) s.dispose();
    this.panel.dispose();
  }
}
