/**
 * Training feedback outside the panels: a status-bar item (step/total, loss, ETA; click opens the
 * dashboard) and a VS Code progress notification that follows the run until it finishes or fails.
 */
import * as vscode from 'vscode';
import type { RunnerService } from './runnerService';
import { finishedText, formatEta, statusBarText } from './statusText';

export class TrainingStatus implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Left, 50);
  private readonly subs: vscode.Disposable[] = [this.item];
  private notification: { report(v: { message?: string; increment?: number }): void; done(): void; lastPct: number } | undefined;

  constructor(private readonly runner: RunnerService) {
    this.item.command = 'sft.openDashboard';
    this.item.name = 'SFT Training';
    this.subs.push(
      runner.onProgress(() => this.update()),
      runner.onState(() => this.update()),
    );
    this.update();
  }

  private update(): void {
    const live = this.runner.live;
    const p = live.progress;
    if (this.runner.isTraining) {
      this.item.text = statusBarText(live.status, p);
      this.item.tooltip = `SFT Studio: ${live.runDir ?? ''}\nClick to open the dashboard`;
      this.item.show();
      this.ensureNotification();
      if (p && this.notification) {
        const pct = p.total > 0 ? (100 * p.step) / p.total : 0;
        this.notification.report({
          message: `step ${p.step}/${p.total}${p.loss !== null ? ` · loss ${p.loss.toFixed(4)}` : ''}${p.eta_s !== null && p.eta_s >= 0 ? ` · ETA ${formatEta(p.eta_s)}` : ''}`,
          increment: Math.max(0, pct - this.notification.lastPct),
        });
        this.notification.lastPct = Math.max(pct, this.notification.lastPct);
      }
    } else {
      if (live.status === 'finished' || live.status === 'failed') {
        this.item.text = finishedText(live.status, live.message);
        this.item.tooltip = live.message ?? undefined;
        this.item.show();
      } else this.item.hide();
      this.notification?.done();
      this.notification = undefined;
    }
  }

  private ensureNotification(): void {
    if (this.notification) return;
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    const n = { report: (_v: { message?: string; increment?: number }) => {}, done, lastPct: 0 };
    this.notification = n;
    void vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: 'SFT training', cancellable: true }, (progress, token) => {
      n.report = (v) => progress.report(v);
      token.onCancellationRequested(() => void vscode.commands.executeCommand('sft.stopTraining'));
      return finished;
    });
  }

  dispose(): void {
    this.notification?.done();
    for (const s of this.subs) s.dispose();
  }
}
