/**
 * The extension's one runner process, wired to VS Code: spawns `node <ext>/dist/runner.js serve` with the
 * Node from setting `sft.nodePath` (default: the extension host's own executable with
 * ELECTRON_RUN_AS_NODE=1), writes its log and stderr to the "SFT Studio" output channel, shows a crash
 * with the last stderr lines, and keeps the live training state (status, run folder, last progress) that
 * the status bar, trees and dashboard read. Killed on deactivate (dispose).
 */
import * as vscode from 'vscode';
import { join } from 'node:path';
import { RunnerClient, RunnerError, describeExit, type RunnerExit } from './runnerClient';
import type { RequestParams, RequestResult, RunnerEvents, RunnerMethod, RunStatus } from '../protocol/runner';

export interface LiveTraining {
  status: RunStatus;
  runDir: string | null;
  progress: RunnerEvents['progress'] | null;
  /** The runner's message with the last state change ("stopped at step 6 of 30", a failure reason). */
  message: string | null;
}

export class RunnerService implements vscode.Disposable {
  private client: RunnerClient | undefined;
  readonly output: vscode.OutputChannel;
  private readonly disposables: vscode.Disposable[] = [];
  readonly live: LiveTraining = { status: 'idle', runDir: null, progress: null, message: null };

  private readonly _onMetrics = new vscode.EventEmitter<{ runDir: string | null; record: RunnerEvents['metrics'] }>();
  readonly onMetrics = this._onMetrics.event;
  private readonly _onProgress = new vscode.EventEmitter<RunnerEvents['progress']>();
  readonly onProgress = this._onProgress.event;
  private readonly _onState = new vscode.EventEmitter<LiveTraining>();
  readonly onState = this._onState.event;

  constructor(private readonly extensionPath: string) {
    this.output = vscode.window.createOutputChannel('SFT Studio');
    this.disposables.push(this.output, this._onMetrics, this._onProgress, this._onState);
  }

  /** The command line used to start the runner (exported for the log and tests). */
  spawnOptions(): { command: string; args: string[]; env: NodeJS.ProcessEnv } {
    const configured = vscode.workspace.getConfiguration('sft').get<string>('nodePath')?.trim();
    const command = configured || process.execPath;
    const env: NodeJS.ProcessEnv = { ...process.env };
    if (!configured) env.ELECTRON_RUN_AS_NODE = '1';
    return { command, args: [join(this.extensionPath, 'dist', 'runner.js'), 'serve'], env };
  }

  private ensureClient(): RunnerClient {
    if (this.client?.running) return this.client;
    const opts = this.spawnOptions();
    const cwd = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? this.extensionPath;
    const client = new RunnerClient({ ...opts, cwd });
    this.client = client;
    this.output.appendLine(`[runner] starting: ${opts.command} ${opts.args.join(' ')}`);
    client.on('log', (d) => this.output.appendLine(`[${d.level}] ${d.message}`));
    client.on('error', (d) => {
      this.output.appendLine(`[error] ${d.where ? `${d.where}: ` : ''}${d.message}`);
      if (d.stderrTail) this.output.appendLine(d.stderrTail);
      void vscode.window.showErrorMessage(`SFT runner: ${d.message}`, 'Show Log').then((a) => a && this.output.show());
    });
    client.on('metrics', (record) => this._onMetrics.fire({ runDir: this.live.runDir, record }));
    client.on('progress', (p) => {
      this.live.progress = p;
      this._onProgress.fire(p);
    });
    client.on('state', (s) => {
      this.live.status = s.status;
      this.live.message = s.message ?? null;
      if (s.run_dir) this.live.runDir = s.run_dir;
      if (s.message) this.output.appendLine(`[state] ${s.status}: ${s.message}`);
      if (s.status === 'failed') {
        void vscode.window.showErrorMessage(`Training failed${s.message ? `: ${s.message}` : ''}`, 'Show Log').then((a) => a && this.output.show());
      }
      this._onState.fire(this.live);
    });
    client.onStderr((line) => this.output.appendLine(`[runner stderr] ${line}`));
    client.onProtocolError((reason) => this.output.appendLine(`[protocol] rejected a runner message: ${reason}`));
    client.onExit((e) => this.onExit(client, e));
    client.start();
    return client;
  }

  private onExit(client: RunnerClient, e: RunnerExit): void {
    if (this.client !== client) return;
    const how = e.signal ? `killed by ${e.signal}` : `exited with code ${e.code}`;
    this.output.appendLine(`[runner] ${how}`);
    const wasTraining = this.live.status === 'training' || this.live.status === 'stopping';
    if (!e.expected) {
      const tail = e.stderrTail.split('\n').filter(Boolean).slice(-8).join('\n');
      this.output.appendLine(`[runner] crashed; last stderr lines:\n${tail}`);
      void vscode.window.showErrorMessage(describeExit(e, wasTraining), 'Show Log').then((a) => a && this.output.show());
      if (wasTraining) this.live.status = 'failed';
    } else if (wasTraining) this.live.status = 'idle';
    this._onState.fire(this.live);
  }

  request<M extends RunnerMethod>(
    method: M,
    params: RequestParams<M>,
    opts?: { timeoutMs?: number; onToken?: (t: string) => void; onId?: (id: number) => void },
  ): Promise<RequestResult<M>> {
    return this.ensureClient().request(method, params, opts);
  }

  /** Starts training; marks the live state so the UI follows the run. */
  async train(params: RequestParams<'train'>): Promise<RequestResult<'train'>> {
    const r = await this.request('train', params);
    this.live.status = 'training';
    this.live.message = null;
    this.live.runDir = r.run_dir;
    this.live.progress = { step: r.start_step, total: r.total_steps, loss: null, lr: 0, tokens_per_second: 0, eta_s: null, epoch: 0 };
    this._onState.fire(this.live);
    return r;
  }

  get isTraining(): boolean {
    return this.live.status === 'training' || this.live.status === 'stopping';
  }

  static describe(e: unknown): string {
    if (e instanceof RunnerError) return e.where && !e.message.startsWith(e.where) ? `${e.where}: ${e.message}` : e.message;
    return e instanceof Error ? e.message : String(e);
  }

  dispose(): void {
    // Deactivation must not leave a training process behind: kill it.
    this.client?.kill();
    this.client = undefined;
    for (const d of this.disposables) d.dispose();
  }
}
