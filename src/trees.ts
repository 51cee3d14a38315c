/**
 * The sidebar's tree views (Runs, Checkpoints, Datasets): vscode.TreeDataProviders over the plain nodes
 * built by treeModel.ts from WorkspaceRuns. Refreshed when the workspace's run files or the runner change.
 */
import * as vscode from 'vscode';
import { checkpointTree, datasetNodes, runNode, type TreeNode } from './treeModel';
import type { WorkspaceRuns } from './workspaceRuns';
import { resolveInWorkspace } from './workspacePath';

abstract class NodeTree implements vscode.TreeDataProvider<TreeNode>, vscode.Disposable {
  private readonly _onDidChange = new vscode.EventEmitter<void>();
  readonly onDidChangeTreeData = this._onDidChange.event;
  private readonly sub: vscode.Disposable;

  constructor(protected readonly runs: WorkspaceRuns) {
    this.sub = runs.onDidChange(() => this._onDidChange.fire());
  }
  refresh(): void {
    this._onDidChange.fire();
  }
  protected abstract roots(): Promise<TreeNode[]>;

  async getChildren(node?: TreeNode): Promise<TreeNode[]> {
    return node ? (node.children ?? []) : this.roots();
  }

  getTreeItem(n: TreeNode): vscode.TreeItem {
    const item = new vscode.TreeItem(
      n.label,
      n.children ? (n.children.length ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None) : vscode.TreeItemCollapsibleState.None,
    );
    item.id = n.id;
    item.description = n.description;
    item.tooltip = n.tooltip;
    item.contextValue = n.contextValue;
    item.iconPath = new vscode.ThemeIcon(n.icon); // e.g. "sync~spin": the ~modifier is part of the icon id
    if (n.path && !n.children) item.resourceUri = vscode.Uri.file(n.path);
    if (n.command) item.command = { command: n.command, title: n.label, arguments: [n] };
    return item;
  }

  dispose(): void {
    this.sub.dispose();
    this._onDidChange.dispose();
  }
}

export class RunsTree extends NodeTree {
  protected async roots(): Promise<TreeNode[]> {
    const runs = await this.runs.getRuns();
    return runs.map((r) => runNode(r, this.runs.workspaceRoot));
  }
}

export class CheckpointsTree extends NodeTree {
  protected async roots(): Promise<TreeNode[]> {
    return checkpointTree(await this.runs.getRuns(), this.runs.workspaceRoot);
  }
}

export class DatasetsTree extends NodeTree {
  protected async roots(): Promise<TreeNode[]> {
    const cfg = vscode.workspace.getConfiguration('sft');
    const root = this.runs.workspaceRoot;
    const configured = [cfg.get<string>('defaultDataset') ?? '', ...(cfg.get<string[]>('datasets') ?? [])]
      .filter(Boolean)
      .map((p) => resolveInWorkspace(p, root));
    return datasetNodes(await this.runs.getDatasets(), configured, root);
  }
}
