/**
 * Paths from settings (sft.defaultModel, sft.datasets, …), command arguments and webview messages are
 * relative to the workspace root; this makes them absolute in one place. Plain Node; no `vscode`.
 */
import { isAbsolute, join } from 'node:path';

/** `p` when absolute or when there is no root (no folder open), else `p` under `root`. */
export function resolveInWorkspace(p: string, root: string | undefined): string {
  return root && !isAbsolute(p) ? join(root, p) : p;
}
