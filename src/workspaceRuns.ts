/**
 * The runs and datasets of the open workspace: finds run folders (those with metrics.jsonl, plus the one
 * the runner is training), reads them with runFolder.ts, and fires `onDidChange` when their files change
 * (a file watcher on metrics.jsonl / checkpoint markers, debounced) or the runner's state changes.
 * Changes re-read the known folders; only created/deleted data files trigger a new workspace search.
 */
import * as vscode from 'vscode';
import { dirname } from 'node:path';
import { existsSync } from 'node:fs';
import { readRun, type RunSummary } from './runFolder';
import { isDatasetCandidate } from './treeModel';
import { isRunConfig } from './runConfigs';
import type { RunnerService } from './runnerService';

export class WorkspaceRuns implements vscode.Disposable {
  private readonly _onDidChange = new vscode.EventEmitter<void>();
  readonly onDidChange = this._onDidChange.event;
  private readonly subs: vscode.Disposable[] = [this._onDidChange];
  private timer: NodeJS.Timeout | undefined;
  private rescanTimer: NodeJS.Timeout | undefined;
  private runDirs = new Set<string>();
  private runs: RunSummary[] = [];
  private datasetFiles: string[] = [];
  private scanned: Promise<void> | undefined;

  constructor(private readonly runner: RunnerService) {
    const w = vscode.workspace.createFileSystemWatcher('**/{metrics.jsonl,COMPLETE,run.json,model.safetensors}');
    const d = vscode.workspace.createFileSystemWatcher('**/*.{jsonl,json,parquet}', false, true, false);
    const reread = () => this.refreshSoon();
    this.subs.push(w, d, w.onDidChange(reread), w.onDidCreate(reread), w.onDidDelete(reread), d.onDidCreate(() => this.rescanSoon()), d.onDidDelete(() => this.rescanSoon()));
    this.subs.push(runner.onState(() => this.refreshSoon()), runner.onMetrics(() => this.refreshSoon(1500)));
    this.subs.push(vscode.workspace.onDidChangeWorkspaceFolders(() => this.rescanSoon()));
  }

  get workspaceRoot(): string | undefined {
    return vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  }

  /** Finds run folders and dataset files (once; again on rescan). */
  scan(): Promise<void> {
    if (!this.scanned) {
      this.scanned = (async () => {
        const exclude = '{**/node_modules/**,**/.git/**,**/.e2e/**,**/dist/**}';
        const metrics = await vscode.workspace.findFiles('**/metrics.jsonl', exclude, 500);
        for (const m of metrics) this.runDirs.add(dirname(m.fsPath));
        const root = this.workspaceRoot;
        const data = await vscode.workspace.findFiles('**/*.{jsonl,json,parquet}', exclude, 2000);
        this.datasetFiles = data
          .map((u) => u.fsPath)
          .filter((p) => isDatasetCandidate(root ? vscode.workspace.asRelativePath(p, false) : p))
          .filter((p) => !this.runDirs.has(dirname(p)))
          .filter((p) => !(p.endsWith('.json') && isRunConfig(p)));
        this.reread();
      })();
    }
    return this.scanned;
  }

  /** Files were added or removed: find runs and datasets again (debounced). */
  private rescanSoon(): void {
    if (this.rescanTimer) return;
    this.rescanTimer = setTimeout(() => {
      this.rescanTimer = undefined;
      this.scanned = undefined;
      void this.scan().then(() => this._onDidChange.fire());
    }, 500);
  }

  /** Run files changed: re-read the known run folders (debounced; no workspace search). */
  refreshSoon(ms = 300): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.scan().then(() => {
        this.reread();
        this._onDidChange.fire();
      });
    }, ms);
  }

  private reread(): void {
    const live = this.runner.live;
    if (live.runDir) this.runDirs.add(live.runDir);
    const out: RunSummary[] = [];
    for (const dir of this.runDirs) {
      if (!existsSync(dir)) continue;
      const isLive = live.runDir === dir && (live.status === 'training' || live.status === 'stopping');
      out.push(readRun(dir, isLive ? { status: live.status as 'training' | 'stopping', step: live.progress?.step, total: live.progress?.total } : undefined));
    }
    // The run being trained first, then by folder path.
    this.runs = out.sort((a, b) => Number(b.state === 'training') - Number(a.state === 'training') || a.dir.localeCompare(b.dir));
  }

  async getRuns(): Promise<RunSummary[]> {
    await this.scan();
    return this.runs;
  }

  async getDatasets(): Promise<string[]> {
    await this.scan();
    return this.datasetFiles;
  }

  /** Adds a folder as a run (e.g. one picked by the user or started from elsewhere). */
  addRun(dir: string): void {
    this.runDirs.add(dir);
    this.refreshSoon(0);
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.rescanTimer) clearTimeout(this.rescanTimer);
    for (const s of this.subs) s.dispose();
  }
}
