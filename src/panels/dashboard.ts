/**
 * The dashboard panel: charts of train loss, eval loss, learning rate, grad norm and tokens/s for one or
 * more runs (overlaid), with live progress and ETA. Rebuilt from each run's metrics.jsonl whenever the
 * panel is (re)opened or its webview reloads; live records arrive from the runner's metrics events.
 * A click on an eval point asks the host to open a chat with the checkpoint nearest to that step.
 */
import * as vscode from 'vscode';
import { basename } from 'node:path';
import { DashboardFromWebview, type DashboardMsgFromWebview, type DashboardMsgToWebview, type MetricRecord } from '../../protocol/webview';
import { listCheckpoints, nearestCheckpoint, readDashboardRun } from '../runFolder';
import type { RunnerService } from '../runnerService';
import type { WorkspaceRuns } from '../workspaceRuns';
import { openChannelPanel, type WebviewChannel } from './webviewChannel';

export class DashboardPanel implements vscode.Disposable {
  static current: DashboardPanel | undefined;
  private readonly panel: vscode.WebviewPanel;
  private readonly channel: WebviewChannel<DashboardMsgFromWebview, DashboardMsgToWebview>;
  private readonly subs: vscode.Disposable[] = [];
  private runDirs: string[];

  static show(ctx: { extensionUri: vscode.Uri; runner: RunnerService; runs: WorkspaceRuns; openChat: (model: string) => void }, runDirs: string[]): DashboardPanel {
    if (DashboardPanel.current) {
      const cur = DashboardPanel.current;
      if (runDirs.length) cur.runDirs = [...new Set(runDirs)];
      cur.panel.reveal(vscode.ViewColumn.Active);
      cur.sendRuns();
      return cur;
    }
    DashboardPanel.current = new DashboardPanel(ctx, runDirs);
    return DashboardPanel.current;
  }

  private constructor(
    private readonly ctx: { extensionUri: vscode.Uri; runner: RunnerService; runs: WorkspaceRuns; openChat: (model: string) => void },
    runDirs: string[],
  ) {
    this.runDirs = [...new Set(runDirs)];
    const opened = openChannelPanel<DashboardMsgFromWebview, DashboardMsgToWebview>(
      ctx,
      { viewType: 'sft.dashboard', tabTitle: 'SFT Dashboard', panel: 'dashboard', title: 'SFT Dashboard', parser: DashboardFromWebview, retainContextWhenHidden: false },
      (m) => this.onMessage(m),
      () => this.dispose(),
    );
    this.panel = opened.panel;
    this.channel = opened.channel;
    this.subs.push(
      ...opened.disposables,
      ctx.runner.onMetrics(({ runDir, record }) => {
        if (!runDir) return;
        if (!this.runDirs.includes(runDir)) {
          // A newly started run joins the dashboard.
          this.runDirs.push(runDir);
          this.sendRuns();
          return;
        }
        this.channel.post({ type: 'append', runDir, records: [record as MetricRecord] });
      }),
      // Status changes (finished, failed, stopped) re-read the run folders: the final records and checkpoints are on disk.
      ctx.runner.onState((live) => {
        if (live.runDir && this.runDirs.includes(live.runDir) && !ctx.runner.isTraining) this.sendRuns();
      }),
      ctx.runner.onProgress((p) => {
        const runDir = ctx.runner.live.runDir;
        if (runDir && this.runDirs.includes(runDir)) {
          this.channel.postLatest({
            type: 'progress',
            runDir,
            progress: { step: p.step, total: p.total, loss: p.loss, lr: p.lr, tokens_per_second: p.tokens_per_second, eta_s: p.eta_s, epoch: p.epoch },
          });
        }
      }),
    );
  }

  private sendRuns(): void {
    const live = this.ctx.runner.live;
    // One read of each run's metrics.jsonl gives both the summary (status, total steps) and the records.
    const runs = this.runDirs.map((dir) => {
      const isLive = live.runDir === dir && this.ctx.runner.isTraining;
      return readDashboardRun(dir, isLive ? { status: live.status as 'training', step: live.progress?.step, total: live.progress?.total } : undefined);
    });
    this.channel.postLatest({ type: 'runs', runs });
  }

  private async onMessage(m: DashboardMsgFromWebview): Promise<void> {
    switch (m.type) {
      case 'ready':
        this.sendRuns();
        return;
      case 'openChatAt': {
        if (!this.runDirs.includes(m.runDir)) return;
        const c = nearestCheckpoint(listCheckpoints(m.runDir), m.step);
        if (!c) {
          void vscode.window.showInformationMessage(`No complete checkpoint in ${basename(m.runDir)} yet.`);
          return;
        }
        this.ctx.openChat(c.dir);
        return;
      }
      case 'chooseRuns': {
        const all = await this.ctx.runs.getRuns();
        const picks = await vscode.window.showQuickPick(
          all.map((r) => ({ label: r.name, description: r.dir, picked: this.runDirs.includes(r.dir), dir: r.dir })),
          { canPickMany: true, title: 'Runs to overlay on the dashboard' },
        );
        if (picks) {
          this.runDirs = picks.map((p) => p.dir);
          this.sendRuns();
        }
        return;
      }
    }
  }

  private disposed = false;
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    if (DashboardPanel.current === this) DashboardPanel.current = undefined;
    for (const s of this.subs) s.dispose();
    this.panel.dispose();
  }
}
