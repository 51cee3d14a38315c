/**
 * Checkpoints: `output_dir/checkpoint-<step>/` =
 *   the HF model folder (config.json, model.safetensors, tokenizer files — written by the caller's
 *   `writeModel`), optimizer.safetensors (AdamW moments `exp_avg.<param>` / `exp_avg_sq.<param>`, step in the
 *   metadata), trainer_state.json (step, epoch, data cursor, RNG state, schedule, best eval, log history,
 *   the pending logging window) and `COMPLETE`, written last: {"step", "files": {name: bytes}}.
 * The folder is built as a temp folder, every file fsynced, then renamed into place (util/atomic), so a
 * crash leaves either no checkpoint-<step> or a complete one; the marker additionally lets readers reject
 * a folder whose files do not match (copied half-way, truncated).
 * Rotation (save_total_limit) runs only after a save completed and never deletes the newest complete
 * checkpoint; a deleted checkpoint is first renamed aside so a crash mid-delete cannot leave a
 * half-deleted folder that still looks like a checkpoint.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { MetricsRecord } from '../../protocol/runner';
import type { OptimizerState } from '../engine/trainingEngine';
import type { ParamSet } from '../model/types';
import { readSafetensors, writeSafetensorsSynced } from '../model/safetensors';
import { fsyncDir, writeDirAtomic, writeFileSynced } from '../util/atomic';
import { SftError } from '../util/errors';
import type { RngState } from '../util/rng';

export const COMPLETE_MARKER = 'COMPLETE';
export const TRAINER_STATE_FILE = 'trainer_state.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
const STATE_FORMAT = 'sft-studio/trainer_state';

/** AdamW moments by parameter name and the step count (the engine's type). */
export type { OptimizerState };

/** Sum of per-step losses, trained tokens, steps still open at the checkpoint (logged at the next logging step). */
export interface PendingLog {
  loss_sum: number;
  tokens: number;
  steps: number;
  grad_norm_last: number;
  seconds: number;
}

export interface TrainerState {
  format: typeof STATE_FORMAT;
  version: 1;
  /** Optimizer steps done. */
  global_step: number;
  /** transformers' float epoch (global_step / steps_per_epoch). */
  epoch: number;
  /** The next micro-batch to feed: epoch and index into that epoch's micro-batches. */
  data_cursor: { epoch: number; micro_batch: number };
  rng: RngState;
  schedule: {
    total_steps: number;
    warmup_steps: number;
    steps_per_epoch: number;
    micro_batches_per_epoch: number;
    lr_scheduler_type: string;
    learning_rate: number;
  };
  best_eval: { step: number; eval_loss: number } | null;
  log_history: MetricsRecord[];
  pending_log: PendingLog;
  /** Wall seconds of training before this checkpoint (elapsed_s continues from it). */
  elapsed_s: number;
  /** Trained tokens so far. */
  tokens_seen: number;
}

export interface SaveCheckpointOptions {
  step: number;
  /** Writes the HF model folder files into `dir` (use writeFileSynced / writeSafetensorsSynced, no renames of `dir`). */
  writeModel: (dir: string) => Promise<void> | void;
  optimizer: OptimizerState;
  state: TrainerState;
  /** null = keep all. */
  saveTotalLimit: number | null;
  log?: (message: string) => void;
}

export function checkpointDir(outputDir: string, step: number): string {
  return path.join(outputDir, `checkpoint-${step}`);
}

export function optimizerTensors(o: OptimizerState): ParamSet {
  const out: ParamSet = new Map();
  for (const [name, t] of o.m) out.set(`exp_avg.${name}`, t);
  for (const [name, t] of o.v) out.set(`exp_avg_sq.${name}`, t);
  return out;
}

/** Writes checkpoint-<step> atomically, then rotates old checkpoints. Returns the folder. */
export async function saveCheckpoint(outputDir: string, o: SaveCheckpointOptions): Promise<string> {
  const dir = checkpointDir(outputDir, o.step);
  await writeDirAtomic(dir, async (tmp) => {
    await o.writeModel(tmp);
    writeSafetensorsSynced(path.join(tmp, OPTIMIZER_FILE), optimizerTensors(o.optimizer), { format: 'pt', step: String(o.optimizer.step) });
    writeFileSynced(path.join(tmp, TRAINER_STATE_FILE), `${JSON.stringify(o.state, null, 1)}\n`);
    const files: Record<string, number> = {};
    for (const f of fs.readdirSync(tmp).sort()) {
      const st = fs.statSync(path.join(tmp, f));
      if (st.isFile()) files[f] = st.size;
    }
    writeFileSynced(path.join(tmp, COMPLETE_MARKER), `${JSON.stringify({ step: o.step, files })}\n`);
  });
  rotateCheckpoints(outputDir, o.saveTotalLimit, o.log);
  return dir;
}

export interface CheckpointInfo {
  dir: string;
  step: number;
}

/** Why `dir` is not a complete checkpoint, or null when it is. */
export function checkpointProblem(dir: string): string | null {
  const marker = path.join(dir, COMPLETE_MARKER);
  if (!fs.existsSync(marker)) return 'no completion marker (the save was interrupted)';
  let info: { step?: unknown; files?: Record<string, unknown> };
  try {
    info = JSON.parse(fs.readFileSync(marker, 'utf8'));
  } catch {
    return 'unreadable completion marker';
  }
  if (!info.files || typeof info.files !== 'object') return 'completion marker without a file list';
  for (const [f, size] of Object.entries(info.files)) {
    const p = path.join(dir, f);
    if (!fs.existsSync(p)) return `${f} is missing`;
    if (fs.statSync(p).size !== size) return `${f} has ${fs.statSync(p).size} bytes, the marker says ${size}`;
  }
  for (const f of [TRAINER_STATE_FILE, OPTIMIZER_FILE, 'config.json']) if (!(f in info.files)) return `${f} is not part of it`;
  return null;
}

/** All checkpoint-<step> folders of outputDir (complete or not), newest first. */
export function listCheckpointDirs(outputDir: string): CheckpointInfo[] {
  if (!fs.existsSync(outputDir)) return [];
  const out: CheckpointInfo[] = [];
  for (const name of fs.readdirSync(outputDir)) {
    const m = /^checkpoint-(\d+)$/.exec(name);
    if (m && fs.statSync(path.join(outputDir, name)).isDirectory()) out.push({ dir: path.join(outputDir, name), step: Number(m[1]) });
  }
  return out.sort((a, b) => b.step - a.step);
}

/** The newest complete checkpoint of outputDir (incomplete ones are skipped with a message), or null. */
export function findLatestCheckpoint(outputDir: string, log: (message: string) => void = () => {}): CheckpointInfo | null {
  for (const c of listCheckpointDirs(outputDir)) {
    const problem = checkpointProblem(c.dir);
    if (!problem) return c;
    log(`ignoring ${path.basename(c.dir)}: ${problem}`);
  }
  return null;
}

/** Deletes the oldest complete checkpoints beyond `limit`; the newest complete one always stays. */
export function rotateCheckpoints(outputDir: string, limit: number | null, log: (message: string) => void = () => {}): string[] {
  if (limit === null) return [];
  const complete = listCheckpointDirs(outputDir).filter((c) => checkpointProblem(c.dir) === null);
  const keep = Math.max(1, limit);
  const removed: string[] = [];
  for (const c of complete.slice(keep)) {
    const aside = `${c.dir}.deleting`;
    fs.rmSync(aside, { recursive: true, force: true });
    fs.renameSync(c.dir, aside);
    fsyncDir(outputDir);
    fs.rmSync(aside, { recursive: true, force: true });
    removed.push(c.dir);
    log(`deleted ${path.basename(c.dir)} (save_total_limit ${limit})`);
  }
  return removed;
}

/** Removes leftovers of interrupted saves/deletes (`*.tmp-*`, `*.deleting`, saveModel's `.save-*` staging) in outputDir. */
export function removeStaleTemp(outputDir: string, log: (message: string) => void = () => {}): void {
  if (!fs.existsSync(outputDir)) return;
  for (const name of fs.readdirSync(outputDir)) {
    if (/\.tmp-\d+-\d+(\.old)?$/.test(name) || name.endsWith('.deleting') || /^\.save-\d+-\d+$/.test(name)) {
      fs.rmSync(path.join(outputDir, name), { recursive: true, force: true });
      log(`removed ${name} (left by an interrupted save)`);
    }
  }
}

export function readTrainerState(dir: string): TrainerState {
  const file = path.join(dir, TRAINER_STATE_FILE);
  let s: TrainerState;
  try {
    s = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new SftError(`cannot read (${(e as Error).message.split('\n')[0]})`, file);
  }
  if (s?.format !== STATE_FORMAT || s.version !== 1) throw new SftError(`not a ${STATE_FORMAT} v1 file`, file);
  for (const k of ['global_step', 'epoch', 'elapsed_s', 'tokens_seen'] as const) {
    if (typeof s[k] !== 'number' || !Number.isFinite(s[k])) throw new SftError(`${k} must be a number`, file);
  }
  if (!s.data_cursor || !s.rng || !s.schedule || !Array.isArray(s.log_history) || !s.pending_log) throw new SftError('missing data_cursor/rng/schedule/log_history/pending_log', file);
  return s;
}

/** Reads optimizer.safetensors back into m/v sets keyed by parameter name. */
export function readOptimizerState(dir: string): OptimizerState {
  const file = path.join(dir, OPTIMIZER_FILE);
  const tensors = readSafetensors(file);
  const m: ParamSet = new Map();
  const v: ParamSet = new Map();
  for (const [name, t] of tensors) {
    if (name.startsWith('exp_avg.')) m.set(name.slice(8), t);
    else if (name.startsWith('exp_avg_sq.')) v.set(name.slice(11), t);
    else throw new SftError(`unexpected tensor ${name}`, file);
  }
  for (const name of m.keys()) if (!v.has(name)) throw new SftError(`exp_avg_sq.${name} missing`, file);
  if (m.size !== v.size) throw new SftError('exp_avg and exp_avg_sq hold different parameters', file);
  const state = readTrainerState(dir);
  return { m, v, step: state.global_step };
}

export function newTrainerState(init: Omit<TrainerState, 'format' | 'version'>): TrainerState {
  return { format: STATE_FORMAT, version: 1, ...init };
}
