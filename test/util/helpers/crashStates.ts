// Crash simulation for util/atomic users. All filesystem steps are synchronous, so the folder's state when the
// fs-step hook runs is exactly what a process crash (SIGKILL) right after that step leaves on disk:
// `captureCrashStates` copies the watched folder at every step (plus once before the first), runs the action
// to its end, and returns the copies in order. `treeSignature` describes a folder (paths, sizes) with the
// pid-based leftover ids normalised, to compare a copy with the state a real SIGKILL left.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setFsStepHook } from '../../../native-runner/util/atomic';

export interface CrashState {
  /** 0 = before the first step; n = after step n. */
  index: number;
  /** The step's label and target base name ("before" for index 0). */
  label: string;
  dir: string;
}

export async function captureCrashStates(watched: string, into: string, action: () => Promise<unknown> | unknown): Promise<CrashState[]> {
  const states: CrashState[] = [];
  const snap = (label: string) => {
    const dir = path.join(into, String(states.length).padStart(3, '0'));
    fs.cpSync(watched, dir, { recursive: true, preserveTimestamps: true });
    states.push({ index: states.length, label, dir });
  };
  snap('before');
  const prev = setFsStepHook((step, target) => snap(`${step} ${path.basename(target)}`));
  try {
    await action();
  } finally {
    setFsStepHook(prev);
  }
  return states;
}

/** Sorted `relative/path size` lines (folders end in /), with `.tmp-<pid>-<n>` / `.old-<pid>-<n>` ids as ID. */
export function treeSignature(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, rel: string) => {
    for (const name of fs.readdirSync(dir)) {
      const p = path.join(dir, name);
      const r = (rel ? `${rel}/` : '') + name.replace(/\.(tmp|old)-\d+-\d+/g, '.$1-ID');
      const st = fs.statSync(p);
      if (st.isDirectory()) {
        out.push(`${r}/`);
        walk(p, r);
      } else out.push(`${r} ${st.size}`);
    }
  };
  walk(root, '');
  return out.sort();
}

/** Reads every file of a folder (relative name → content). */
export function readTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of fs.readdirSync(dir).sort()) out[name] = fs.readFileSync(path.join(dir, name), 'utf8');
  return out;
}
