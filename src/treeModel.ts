/**
 * The data behind the sidebar tree views, as plain nodes (no `vscode` import): Runs (status, progress,
 * best eval), Checkpoints (per run, newest first, step + eval loss) and Datasets (workspace files +
 * configured ones). src/trees.ts turns these nodes into vscode.TreeItems; tests check them directly.
 */
import { basename, extname, relative, sep } from 'node:path';
import type { CheckpointInfo, RunSummary } from './runFolder';

export interface TreeNode {
  id: string;
  label: string;
  description?: string;
  tooltip?: string;
  /** contextValue: drives the context menus in package.json (`run`, `checkpoint`, `finalModel`, `dataset`). */
  contextValue: string;
  icon: string;
  /** Path the node stands for (a run folder, a checkpoint folder, a dataset file). */
  path?: string;
  runDir?: string;
  step?: number;
  children?: TreeNode[];
  /** Command run on click: `sft.<name>` with the node as argument. */
  command?: string;
}

const STATE_ICON: Record<RunSummary['state'], string> = {
  training: 'sync~spin',
  stopping: 'debug-pause',
  finished: 'pass',
  failed: 'error',
  stopped: 'debug-stop',
  empty: 'circle-outline',
};

export function formatLoss(x: number | null | undefined): string {
  return typeof x === 'number' && Number.isFinite(x) ? x.toFixed(4) : '—';
}

/** "step 120/446 (27%)" or "step 120" when the total is unknown. */
export function formatProgress(step: number, total: number | null): string {
  if (!total) return `step ${step}`;
  const pct = Math.floor((100 * Math.min(step, total)) / total);
  return `step ${step}/${total} (${pct}%)`;
}

export function runNode(run: RunSummary, workspaceRoot?: string): TreeNode {
  const parts = [run.state, formatProgress(run.step, run.totalSteps)];
  if (run.interruptedSave) parts.push('final save interrupted');
  if (run.bestEval) parts.push(`best eval ${formatLoss(run.bestEval.loss)} @${run.bestEval.step}`);
  const rel = workspaceRoot ? relative(workspaceRoot, run.dir) : run.dir;
  const tooltip = [
    rel,
    `status: ${run.state}`,
    formatProgress(run.step, run.totalSteps),
    `last train loss: ${formatLoss(run.lastLoss)}`,
    `best eval loss: ${run.bestEval ? `${formatLoss(run.bestEval.loss)} at step ${run.bestEval.step}` : '—'}`,
    `checkpoints: ${run.checkpoints.length}${run.hasFinalModel ? ' + final model' : ''}`,
    ...(run.badMetricLines ? [`metrics.jsonl: ${run.badMetricLines} unreadable line(s)`] : []),
    ...(run.interruptedSave ? ['the final model save did not finish: use the newest checkpoint, or train again to save it'] : []),
  ].join('\n');
  return {
    id: `run:${run.dir}`,
    label: rel && !rel.startsWith('..') && rel !== '' ? rel.split(sep).join('/') : run.name,
    description: parts.join(' · '),
    tooltip,
    contextValue: run.state === 'training' || run.state === 'stopping' ? 'run.active' : 'run',
    icon: STATE_ICON[run.state],
    path: run.dir,
    runDir: run.dir,
    command: 'sft.openDashboard',
  };
}

export function checkpointNode(runDir: string, c: CheckpointInfo): TreeNode {
  return {
    id: `ckpt:${c.dir}`,
    label: `checkpoint-${c.step}`,
    description: `step ${c.step} · eval ${formatLoss(c.evalLoss)}${c.complete ? '' : ' · incomplete'}`,
    tooltip: `${c.dir}\nstep ${c.step}\neval loss ${formatLoss(c.evalLoss)}${c.complete ? '' : '\nincomplete (no COMPLETE marker): not usable'}`,
    contextValue: c.complete ? 'checkpoint' : 'checkpoint.incomplete',
    icon: c.complete ? 'package' : 'warning',
    path: c.dir,
    runDir,
    step: c.step,
  };
}

/** Checkpoints view: one node per run (newest run first), its children the final model then checkpoints newest first. */
export function checkpointTree(runs: RunSummary[], workspaceRoot?: string): TreeNode[] {
  return runs
    .filter((r) => r.checkpoints.length > 0 || r.hasFinalModel)
    .map((r) => {
      const children: TreeNode[] = [];
      if (r.hasFinalModel) {
        children.push({
          id: `final:${r.dir}`,
          label: 'final model',
          description: `step ${r.step}${r.bestEval ? ` · best eval ${formatLoss(r.bestEval.loss)}` : ''}`,
          tooltip: r.dir,
          contextValue: 'checkpoint',
          icon: 'star-full',
          path: r.dir,
          runDir: r.dir,
          step: r.step,
        });
      }
      children.push(...r.checkpoints.map((c) => checkpointNode(r.dir, c)));
      const base = runNode(r, workspaceRoot);
      return { ...base, id: `ckrun:${r.dir}`, contextValue: 'checkpointRun', description: `${r.checkpoints.length} checkpoint(s)`, children, command: undefined };
    });
}

const DATASET_EXT = new Set(['.jsonl', '.json', '.parquet']);
/** JSON files that are never datasets (model, tokenizer, run and editor files). */
const NOT_DATASETS = new Set([
  'config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
  'vocab.json', 'added_tokens.json', 'trainer_state.json', 'run.json', 'metrics.jsonl', 'package.json',
  'package-lock.json', 'tsconfig.json', 'jsconfig.json', 'launch.json', 'tasks.json', 'settings.json',
  'extensions.json', 'model.safetensors.index.json', 'golden.json',
]);

/** True for a workspace-relative path that may be a training dataset (*.jsonl / *.json / *.parquet, not a model/config file). */
export function isDatasetCandidate(relPath: string): boolean {
  const p = relPath.split(sep).join('/');
  const name = basename(p).toLowerCase();
  if (!DATASET_EXT.has(extname(name))) return false;
  if (NOT_DATASETS.has(name) || name.startsWith('tokenizer') || name.includes('golden')) return false;
  if (/(^|\/)(node_modules|\.git|\.vscode|\.e2e|dist|out|\.tmp)\//.test(p)) return false;
  if (/(^|\/)checkpoint-\d+\//.test(p)) return false;
  return true;
}

/** Datasets view: configured datasets first (marked), then workspace files sorted by path; duplicates merged. */
export function datasetNodes(workspaceFiles: string[], configured: string[], workspaceRoot?: string): TreeNode[] {
  const seen = new Set<string>();
  const out: TreeNode[] = [];
  const add = (path: string, isConfigured: boolean) => {
    if (seen.has(path)) return;
    seen.add(path);
    const rel = workspaceRoot ? relative(workspaceRoot, path) : path;
    const inside = !!workspaceRoot && !rel.startsWith('..');
    out.push({
      id: `ds:${path}`,
      label: basename(path),
      description: [isConfigured ? 'configured' : '', inside ? rel.split(sep).slice(0, -1).join('/') : path].filter(Boolean).join(' · '),
      tooltip: path,
      contextValue: 'dataset',
      icon: extname(path) === '.parquet' ? 'database' : 'json',
      path,
      command: 'sft.previewDataset',
    });
  };
  for (const c of configured) if (c) add(c, true);
  for (const f of [...workspaceFiles].sort()) add(f, false);
  return out;
}
