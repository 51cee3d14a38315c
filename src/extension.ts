/**
 * SFT Studio's extension host entry: registers the commands, the sidebar (Runs, Checkpoints, Datasets
 * trees + the Dataset Preview view), the status bar, and the panels (Start Training form, dashboard,
 * chat). Every heavy operation goes to the runner process (RunnerService); this side never loads ONNX
 * Runtime. Everything disposable is pushed to context.subscriptions; deactivate kills the runner.
 */
import * as vscode from 'vscode';
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { RunnerService } from './runnerService';
import { WorkspaceRuns } from './workspaceRuns';
import { CheckpointsTree, DatasetsTree, RunsTree } from './trees';
import { TrainingStatus } from './statusBar';
import { DashboardPanel } from './panels/dashboard';
import { ChatPanel } from './panels/chat';
import { PreviewViewProvider } from './panels/preview';
import { TrainFormPanel } from './panels/trainForm';
import { pickModel } from './modelChoices';
import { readRun } from './runFolder';
import { formConfig, isRunConfig, newConfigPath } from './runConfigs';
import { resolveInWorkspace } from './workspacePath';
import type { TreeNode } from './treeModel';
import { BENCHMARK_TASKS, type RequestParams } from '../protocol/runner';
import { evaluationText, parseDocLimit } from './evaluateText';

let runnerService: RunnerService | undefined;

/** A command argument: a tree node, a Uri (explorer context menu) or a path string. */
function argPath(arg: unknown): string | undefined {
  if (typeof arg === 'string') return arg;
  if (arg instanceof vscode.Uri) return arg.fsPath;
  if (arg && typeof arg === 'object' && typeof (arg as TreeNode).path === 'string') return (arg as TreeNode).path;
  return undefined;
}

function workspaceRoot(): string | undefined {
  return vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
}

export function activate(context: vscode.ExtensionContext): void {
  const runner = new RunnerService(context.extensionPath);
  runnerService = runner;
  const runs = new WorkspaceRuns(runner);
  const status = new TrainingStatus(runner);
  const preview = new PreviewViewProvider(context.extensionUri, runner);
  const runsTree = new RunsTree(runs);
  const checkpointsTree = new CheckpointsTree(runs);
  const datasetsTree = new DatasetsTree(runs);
  context.subscriptions.push(runner, runs, status, preview, runsTree, checkpointsTree, datasetsTree);
  context.subscriptions.push(
    vscode.window.registerTreeDataProvider('sft.runs', runsTree),
    vscode.window.registerTreeDataProvider('sft.checkpoints', checkpointsTree),
    vscode.window.registerTreeDataProvider('sft.datasets', datasetsTree),
    vscode.window.registerWebviewViewProvider(PreviewViewProvider.viewId, preview),
    vscode.workspace.onDidChangeConfiguration((e) => e.affectsConfiguration('sft') && datasetsTree.refresh()),
  );

  const panelCtx = { extensionUri: context.extensionUri, runner, runs };
  const openChat = (model: string) => ChatPanel.show(panelCtx, [model, null], false);
  const openDashboard = (dirs: string[]) => DashboardPanel.show({ ...panelCtx, openChat }, dirs);

  const cmd = (id: string, fn: (...args: unknown[]) => unknown) =>
    context.subscriptions.push(
      vscode.commands.registerCommand(id, async (...args: unknown[]) => {
        try {
          await fn(...args);
        } catch (e) {
          runner.output.appendLine(`[${id}] ${RunnerService.describe(e)}`);
          void vscode.window.showErrorMessage(RunnerService.describe(e));
        }
      }),
    );

  cmd('sft.startTraining', async (arg) => {
    let configPath = argPath(arg);
    if (!configPath) {
      const found = await vscode.workspace.findFiles('**/*.json', '{**/node_modules/**,**/.git/**,**/.e2e/**,**/checkpoint-*/**}', 500);
      const configs = found.map((u) => u.fsPath).filter((p) => isRunConfig(p) && !existsSync(join(dirname(p), 'metrics.jsonl')));
      const items: (vscode.QuickPickItem & { path?: string })[] = [
        ...configs.sort().map((p) => ({ label: basename(p), description: vscode.workspace.asRelativePath(p), path: p })),
        { label: '$(add) New run config…', description: 'with the seed recipe defaults' },
      ];
      const pick = await vscode.window.showQuickPick(items, { title: 'SFT: Start Training — pick a run config', matchOnDescription: true });
      if (!pick) return;
      configPath = pick.path ?? newConfigPath(workspaceRoot() ?? context.globalStorageUri.fsPath);
    }
    let fileConfig: Record<string, unknown> = {};
    if (existsSync(configPath)) {
      try {
        fileConfig = JSON.parse(readFileSync(configPath, 'utf8').replace(/^\uFEFF/, '')) as Record<string, unknown>;
      } catch (e) {
        throw new Error(`${configPath}: invalid JSON (${(e as Error).message})`);
      }
    }
    const cfg = vscode.workspace.getConfiguration('sft');
    TrainFormPanel.show(
      { ...panelCtx, onStarted: (runDir) => { runs.addRun(runDir); openDashboard([runDir]); } },
      formConfig(fileConfig, { model: cfg.get<string>('defaultModel') ?? '', dataset: cfg.get<string>('defaultDataset') ?? '', device: cfg.get<'cpu' | 'cuda'>('device') ?? 'cpu' }),
      configPath,
    );
  });

  cmd('sft.stopTraining', async () => {
    if (!runner.isTraining) {
      void vscode.window.showInformationMessage('No training run is in progress.');
      return;
    }
    const r = await runner.request('stop', { save: true });
    void vscode.window.showInformationMessage(r.stopping ? 'Stopping at the next step boundary (a checkpoint is saved there).' : `Runner is ${r.status}.`);
  });

  cmd('sft.resumeTraining', async (arg) => {
    let runDir = argPath(arg);
    if (!runDir) {
      const candidates = (await runs.getRuns()).filter((r) => r.state !== 'training' && r.checkpoints.some((c) => c.complete));
      if (!candidates.length) {
        void vscode.window.showInformationMessage('No stopped run with a complete checkpoint in this workspace.');
        return;
      }
      const pick = await vscode.window.showQuickPick(
        candidates.map((r) => ({ label: r.name, description: `${r.state} · step ${r.step}${r.totalSteps ? `/${r.totalSteps}` : ''}`, detail: r.dir, dir: r.dir })),
        { title: 'SFT: Resume Training — pick a run' },
      );
      if (!pick) return;
      runDir = pick.dir;
    }
    const config = join(runDir, 'run.json');
    if (!existsSync(config)) throw new Error(`${runDir}: no run.json (the resolved config) to resume from`);
    const r = await runner.train({ config, resume: true });
    void vscode.window.showInformationMessage(`Resumed ${basename(r.run_dir)} from ${r.resumed_from ?? 'the start'} (step ${r.start_step}/${r.total_steps}).`);
    runs.addRun(r.run_dir);
    openDashboard([r.run_dir]);
  });

  cmd('sft.openDashboard', async (arg) => {
    const dir = argPath(arg);
    if (dir) return openDashboard([dir]);
    if (runner.live.runDir) return openDashboard([runner.live.runDir]);
    const all = await runs.getRuns();
    if (all.length <= 1) return openDashboard(all.map((r) => r.dir));
    const picks = await vscode.window.showQuickPick(all.map((r) => ({ label: r.name, description: r.state, detail: r.dir, dir: r.dir })), { canPickMany: true, title: 'Runs to show' });
    if (picks?.length) openDashboard(picks.map((p) => p.dir));
  });

  cmd('sft.chat', async (arg) => {
    const model = argPath(arg) ?? (await pickModel(runs, 'SFT: Chat with Checkpoint — pick a model'))?.path;
    if (model) openChat(model);
  });

  cmd('sft.compare', async (arg) => {
    const node = arg as TreeNode | undefined;
    let sft = argPath(arg);
    if (!sft) sft = (await pickModel(runs, 'Compare: the fine-tuned model (right)'))?.path;
    if (!sft) return;
    let base: string | null = null;
    const runDir = node?.runDir ?? (existsSync(join(sft, 'run.json')) ? sft : existsSync(join(dirname(sft), 'run.json')) ? dirname(sft) : undefined);
    if (runDir) base = readRun(runDir).baseModel;
    if (!base || !existsSync(base)) base = (await pickModel(runs, 'Compare: the base model (left)'))?.path ?? null;
    if (!base) return;
    ChatPanel.show(panelCtx, [base, sft], true);
  });

  /** A file step (Evaluate Checkpoint, Preview Dataset): workspace files in a quick pick, plus "Browse…" for the file dialog. */
  const pickFile = async (files: string[], title: string, dialog: vscode.OpenDialogOptions): Promise<string | undefined> => {
    const pick = await vscode.window.showQuickPick(
      [...files.map((p) => ({ label: basename(p), description: vscode.workspace.asRelativePath(p), path: p })), { label: '$(folder-opened) Browse…', path: '' }],
      { title, matchOnDescription: true },
    );
    if (!pick) return undefined;
    return pick.path || (await vscode.window.showOpenDialog({ canSelectMany: false, title, ...dialog }))?.[0]?.fsPath;
  };

  cmd('sft.evaluate', async (arg) => {
    const model = argPath(arg) ?? (await pickModel(runs, 'SFT: Evaluate Checkpoint — pick a model'))?.path;
    if (!model) return;
    const kind = await vscode.window.showQuickPick(
      [
        { label: 'Eval loss on a dataset', evalKind: 'eval_loss' as const },
        { label: 'Perplexity on a text file', evalKind: 'perplexity' as const },
        { label: 'Benchmark task…', description: BENCHMARK_TASKS.join(', '), evalKind: 'task' as const },
      ],
      { title: 'Evaluate' },
    );
    if (!kind) return;
    let params: RequestParams<'evaluate'>;
    if (kind.evalKind === 'eval_loss') {
      const dataset = await pickFile(await runs.getDatasets(), 'Dataset to evaluate on', { filters: { Datasets: ['jsonl', 'json', 'parquet'] } });
      if (!dataset) return;
      params = { model, kind: 'eval_loss', dataset, dataset_format: 'auto' };
    } else if (kind.evalKind === 'task') {
      const task = await vscode.window.showQuickPick(
        BENCHMARK_TASKS.map((t) => ({ label: t, task: t })),
        { title: 'Benchmark task (zero-shot, lm-evaluation-harness scoring)' },
      );
      if (!task) return;
      const data = await pickFile(await runs.getDatasets(), `${task.task} rows (the Hugging Face dataset split as JSONL, JSON or Parquet)`, {
        openLabel: `Run ${task.task} on this file`,
        filters: { 'Benchmark rows': ['jsonl', 'json', 'parquet'] },
      });
      if (!data) return;
      const limitText = await vscode.window.showInputBox({
        title: `${task.task}: how many documents?`,
        prompt: 'The first N documents of the file; leave empty for all of them',
        placeHolder: 'all',
        validateInput: (v) => {
          const r = parseDocLimit(v);
          return r.ok ? undefined : r.message;
        },
      });
      if (limitText === undefined) return;
      const limit = parseDocLimit(limitText);
      params = { model, kind: 'task', task: task.task, data, ...(limit.ok && limit.limit !== undefined ? { limit: limit.limit } : {}) };
    } else {
      const texts = await vscode.workspace.findFiles('**/*.{txt,md}', '{**/node_modules/**,**/.git/**,**/.e2e/**,**/dist/**}', 500);
      const file = await pickFile(texts.map((u) => u.fsPath).sort(), 'Text file for perplexity', { openLabel: 'Perplexity on this text' });
      if (!file) return;
      params = { model, kind: 'perplexity', file };
    }
    const r = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Evaluating ${basename(model)}…` }, () =>
      runner.request('evaluate', params),
    );
    const text = evaluationText(r);
    runner.output.appendLine(`[evaluate] ${model}: ${text}`);
    void vscode.window.showInformationMessage(`${basename(model)}: ${text}`);
  });

  cmd('sft.previewDataset', async (arg) => {
    const dataset = argPath(arg) || (await pickFile(await runs.getDatasets(), 'SFT: Preview Dataset', { filters: { Datasets: ['jsonl', 'json', 'parquet'] } }));
    if (!dataset) return;
    await preview.show(resolveInWorkspace(dataset, workspaceRoot()));
  });

  cmd('sft.revealCheckpoint', async (arg) => {
    const p = argPath(arg);
    if (p) await vscode.commands.executeCommand('revealInExplorer', vscode.Uri.file(p));
  });
  cmd('sft.refresh', () => runs.refreshSoon(0));
  cmd('sft.showLog', () => runner.output.show());

  void runs.scan();
}

export function deactivate(): void {
  runnerService?.dispose();
  runnerService = undefined;
}
