/**
 * The models a user can chat with or evaluate: the configured default model, each run's base model, final
 * models and complete checkpoints (newest first), plus "Browse…" for any model folder.
 */
import * as vscode from 'vscode';
import { basename } from 'node:path';
import { existsSync } from 'node:fs';
import type { ModelChoice } from '../protocol/webview';
import { formatLoss } from './treeModel';
import type { WorkspaceRuns } from './workspaceRuns';
import { resolveInWorkspace } from './workspacePath';

export async function listModelChoices(runs: WorkspaceRuns): Promise<ModelChoice[]> {
  const out: ModelChoice[] = [];
  const seen = new Set<string>();
  const add = (path: string, label: string, detail: string) => {
    if (seen.has(path)) return;
    seen.add(path);
    out.push({ path, label, detail });
  };
  const all = await runs.getRuns();
  for (const r of all) {
    if (r.hasFinalModel) add(r.dir, `${r.name} (final)`, `step ${r.step}${r.bestEval ? ` · best eval ${formatLoss(r.bestEval.loss)}` : ''}`);
    for (const c of r.checkpoints) if (c.complete) add(c.dir, `${r.name}/checkpoint-${c.step}`, `step ${c.step} · eval ${formatLoss(c.evalLoss)}`);
  }
  const root = runs.workspaceRoot;
  const def = vscode.workspace.getConfiguration('sft').get<string>('defaultModel');
  if (def) {
    const defPath = resolveInWorkspace(def, root);
    add(defPath, `${basename(def)} (base, default)`, defPath);
  }
  for (const r of all) if (r.baseModel && existsSync(r.baseModel)) add(r.baseModel, `${basename(r.baseModel)} (base)`, r.baseModel);
  return out;
}

/** Quick pick over listModelChoices + Browse…; undefined when cancelled. */
export async function pickModel(runs: WorkspaceRuns, title: string): Promise<ModelChoice | undefined> {
  const choices = await listModelChoices(runs);
  const items: (vscode.QuickPickItem & { model?: ModelChoice })[] = [
    ...choices.map((m) => ({ label: m.label, description: m.detail, detail: m.path, model: m })),
    { label: '$(folder-opened) Browse for a model folder…' },
  ];
  const pick = await vscode.window.showQuickPick(items, { title, matchOnDescription: true, matchOnDetail: true });
  if (!pick) return undefined;
  if (pick.model) return pick.model;
  const uri = await vscode.window.showOpenDialog({ canSelectFolders: true, canSelectFiles: false, openLabel: 'Use this model' });
  if (!uri?.[0]) return undefined;
  return { path: uri[0].fsPath, label: basename(uri[0].fsPath), detail: uri[0].fsPath };
}
