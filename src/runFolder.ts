/**
 * Reads a run's output folder as the runner leaves it (HF Trainer layout): `run.json` (resolved config),
 * `metrics.jsonl` (train/eval/save records), `checkpoint-<step>/` folders (complete when `COMPLETE`
 * exists; `trainer_state.json` inside), and the final model (`config.json` + `model.safetensors`).
 * Plain Node, no `vscode`: the tree views, the dashboard and the chat model list are built on it.
 * Unreadable or malformed files never throw: a bad metrics line is counted and skipped.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { MetricRecord } from '../protocol/webview';
import { SAVE_MARKER_FILE } from '../protocol/runFiles';

export type RunState = 'training' | 'stopping' | 'finished' | 'failed' | 'stopped' | 'empty';

export interface CheckpointInfo {
  dir: string;
  step: number;
  complete: boolean;
  /** eval_loss logged at this step (metrics.jsonl, else trainer_state.json), if any. */
  evalLoss: number | null;
}

export interface RunSummary {
  dir: string;
  name: string;
  state: RunState;
  step: number;
  totalSteps: number | null;
  lastLoss: number | null;
  bestEval: { step: number; loss: number } | null;
  checkpoints: CheckpointInfo[]; // newest first
  hasFinalModel: boolean;
  /**
   * A final-model save was interrupted (its marker file is still there): the folder may mix old and new files,
   * so it is not offered as the final model (the runner refuses to load it; the newest checkpoint is intact).
   */
  interruptedSave: boolean;
  config: Record<string, unknown> | null;
  badMetricLines: number;
  /** Base model the run started from (config model_name_or_path), when known. */
  baseModel: string | null;
}

export interface ParsedMetrics {
  records: MetricRecord[];
  badLines: number[];
}

/** Parses metrics.jsonl text: one JSON object with `type` and integer `step` per line; others are counted as bad. */
export function parseMetrics(text: string): ParsedMetrics {
  const records: MetricRecord[] = [];
  const badLines: number[] = [];
  const lines = text.split('\n');
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (!line) return;
    try {
      const v = JSON.parse(line) as Record<string, unknown>;
      if (typeof v !== 'object' || v === null || typeof v.type !== 'string' || typeof v.step !== 'number' || !Number.isInteger(v.step)) {
        badLines.push(i + 1);
        return;
      }
      // Non-finite values arrive as null (JSON); drop those keys so consumers see only numbers.
      for (const [k, x] of Object.entries(v)) if (x === null) delete v[k];
      records.push(v as unknown as MetricRecord);
    } catch {
      // A torn last line (the runner is mid-write) is not an error worth reporting.
      if (i !== lines.length - 1) badLines.push(i + 1);
    }
  });
  return { records, badLines };
}

export function readMetrics(dir: string): ParsedMetrics {
  const f = join(dir, 'metrics.jsonl');
  if (!existsSync(f)) return { records: [], badLines: [] };
  try {
    return parseMetrics(readFileSync(f, 'utf8'));
  } catch {
    return { records: [], badLines: [] };
  }
}

function readJson(file: string): Record<string, unknown> | null {
  try {
    const v = JSON.parse(readFileSync(file, 'utf8')) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** Checkpoint folders of a run, newest (highest step) first, with the eval loss logged at their step. */
export function listCheckpoints(dir: string, records: MetricRecord[] = readMetrics(dir).records): CheckpointInfo[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const evalAt = new Map<number, number>();
  for (const r of records) if (r.type === 'eval' && typeof r.eval_loss === 'number') evalAt.set(r.step, r.eval_loss);
  const out: CheckpointInfo[] = [];
  for (const name of names) {
    const m = /^checkpoint-(\d+)$/.exec(name);
    if (!m) continue;
    const cdir = join(dir, name);
    try {
      if (!statSync(cdir).isDirectory()) continue;
    } catch {
      continue;
    }
    const step = Number(m[1]);
    let evalLoss = evalAt.get(step) ?? null;
    if (evalLoss === null) {
      const state = readJson(join(cdir, 'trainer_state.json'));
      const hist = Array.isArray(state?.log_history) ? (state!.log_history as Record<string, unknown>[]) : [];
      const e = hist.find((h) => h && h.step === step && typeof h.eval_loss === 'number');
      if (e) evalLoss = e.eval_loss as number;
    }
    out.push({ dir: cdir, step, complete: existsSync(join(cdir, 'COMPLETE')), evalLoss });
  }
  return out.sort((a, b) => b.step - a.step);
}

/** Total optimizer steps of a run, from what the runner recorded (a start record, a checkpoint's state, or max_steps). */
function totalStepsOf(records: MetricRecord[], config: Record<string, unknown> | null, checkpoints: CheckpointInfo[]): number | null {
  for (let i = records.length - 1; i >= 0; i--) {
    const t = records[i]!.total_steps;
    if (typeof t === 'number' && t > 0) return t;
  }
  for (const c of checkpoints) {
    const s = readJson(join(c.dir, 'trainer_state.json'));
    const sched = s?.schedule as Record<string, unknown> | undefined;
    for (const v of [sched?.total_steps, s?.max_steps, s?.total_steps]) if (typeof v === 'number' && v > 0) return v;
  }
  const ms = config?.max_steps;
  return typeof ms === 'number' && ms > 0 ? ms : null;
}

/** The runner's view of the run it is training (status + step/total from progress events). */
export interface LiveRunView {
  status: 'training' | 'stopping' | 'finished' | 'failed';
  step?: number;
  total?: number;
}

/**
 * Summarises a run folder. `live` is the runner's view when this run is the one it is training; otherwise
 * the state is inferred from the files. `metrics`: the folder's metrics.jsonl when the caller has already
 * read it (readMetrics), so it is not read twice.
 */
export function readRun(dir: string, live?: LiveRunView, metrics: ParsedMetrics = readMetrics(dir)): RunSummary {
  const config = readJson(join(dir, 'run.json'));
  const { records, badLines } = metrics;
  const checkpoints = listCheckpoints(dir, records);
  const interruptedSave = existsSync(join(dir, SAVE_MARKER_FILE));
  const hasFinalModel = !interruptedSave && existsSync(join(dir, 'config.json')) && existsSync(join(dir, 'model.safetensors'));
  let step = 0;
  let lastLoss: number | null = null;
  let bestEval: RunSummary['bestEval'] = null;
  let failed = false;
  for (const r of records) {
    step = Math.max(step, r.step);
    if (r.type === 'train' && typeof r.loss === 'number') lastLoss = r.loss;
    if (r.type === 'eval' && typeof r.eval_loss === 'number' && (!bestEval || r.eval_loss < bestEval.loss)) bestEval = { step: r.step, loss: r.eval_loss };
    if (r.type === 'error') failed = true;
  }
  if (checkpoints[0]) step = Math.max(step, checkpoints[0].step);
  let totalSteps = totalStepsOf(records, config, checkpoints);
  let state: RunState;
  if (live) {
    state = live.status;
    if (live.step !== undefined) step = Math.max(step, live.step);
    if (live.total) totalSteps = live.total;
  } else if (failed) state = 'failed';
  else if (hasFinalModel && records.length > 0) state = 'finished';
  else if (records.length > 0 || checkpoints.length > 0) state = 'stopped';
  else state = 'empty';
  if (state === 'finished' && totalSteps === null) totalSteps = step;
  const base = config?.model_name_or_path;
  return {
    dir,
    name: basename(dir),
    state,
    step,
    totalSteps,
    lastLoss,
    bestEval,
    checkpoints,
    hasFinalModel,
    interruptedSave,
    config,
    badMetricLines: badLines.length,
    baseModel: typeof base === 'string' ? base : null,
  };
}

/** One run as the dashboard shows it (an entry of protocol/webview's 'runs' message). */
export interface DashboardRunData {
  runDir: string;
  name: string;
  status: RunState;
  totalSteps: number | null;
  records: MetricRecord[];
}

/** The dashboard's data for one run folder: its summary and all its metric records, from one read of metrics.jsonl. */
export function readDashboardRun(dir: string, live?: LiveRunView): DashboardRunData {
  const metrics = readMetrics(dir);
  const s = readRun(dir, live, metrics);
  return { runDir: dir, name: basename(dir), status: s.state, totalSteps: s.totalSteps, records: metrics.records };
}

/** The complete checkpoint whose step is nearest to `step` (ties → the later one); undefined if none. */
export function nearestCheckpoint(checkpoints: CheckpointInfo[], step: number): CheckpointInfo | undefined {
  let best: CheckpointInfo | undefined;
  for (const c of checkpoints) {
    if (!c.complete) continue;
    if (!best || Math.abs(c.step - step) < Math.abs(best.step - step) || (Math.abs(c.step - step) === Math.abs(best.step - step) && c.step > best.step)) best = c;
  }
  return best;
}

/** True when the folder looks like a run output folder (has run.json or metrics.jsonl or checkpoints). */
export function isRunFolder(dir: string): boolean {
  if (existsSync(join(dir, 'metrics.jsonl'))) return true;
  if (!existsSync(join(dir, 'run.json'))) return false;
  try {
    return readdirSync(dir).some((n) => /^checkpoint-\d+$/.test(n)) || existsSync(join(dir, 'model.safetensors'));
  } catch {
    return false;
  }
}
