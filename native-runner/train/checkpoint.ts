/**
 * Checkpoints: `output_dir/checkpoint-<step>/` =
 *   the HF model folder (config.json, model.safetensors, tokenizer files — written by the caller's
 *   `writeModel`), optimizer.safetensors (AdamW moments `exp_avg.<param>` / `exp_avg_sq.<param>`, step in the
 *   metadata), trainer_state.json (step, epoch, data cursor, RNG state, schedule, best eval, log history,
 *   the pending logging window) and `COMPLETE`, written last: {"step", "files": {name: bytes}}.
 * The folder is built as a staging folder, every file fsynced, then renamed into place (util/atomic
 * writeDirAtomic); replacing an existing checkpoint-<step> (a resumed run saving the same step again) moves
 * the old folder aside to a backup name first. A crash therefore leaves, for every step, the old or the new
 * complete folder under checkpoint-<step> or a recognised leftover name (`checkpoint-<step>.tmp-<id>`,
 * `.old-<id>`): `findLatestCheckpoint` (read-only) also looks at complete leftovers of a missing
 * checkpoint-<step>, and `removeStaleTemp` (the trainer, before it resumes) renames such a leftover back to
 * checkpoint-<step> and deletes the rest. The marker lets readers reject a folder whose files do not match
 * (an interrupted save, copied half-way, truncated).
 * Rotation (save_total_limit) runs only after a save completed and never deletes the newest complete
 * checkpoint; a deleted checkpoint is first renamed aside (`.deleting`) so a crash mid-delete cannot leave a
 * half-deleted folder that still looks like a checkpoint. A delete that fails (Windows: a file held by another
 * process) is logged and does not fail the save: the checkpoint stays and the next rotation tries again.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { MetricsRecord } from '../../protocol/runner';
import type { OptimizerState } from '../engine/trainingEngine';
import type { ParamSet } from '../model/types';
import { readSafetensors, writeSafetensorsSynced } from '../model/safetensors';
import { fsStep, fsyncDir, listLeftovers, locateDir, parseLeftover, recoverDir, removeTree, renameRetrying, writeDirAtomic, writeFileSynced } from '../util/atomic';
import { SftError } from '../util/errors';
import type { RngState } from '../util/rng';

export const COMPLETE_MARKER = 'COMPLETE';
export const TRAINER_STATE_FILE = 'trainer_state.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
const STATE_FORMAT = 'sft-studio/trainer_state';
const CHECKPOINT_RE = /^checkpoint-(\d+)$/;

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
  }, { isComplete: isCompleteCheckpoint });
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
    const m = CHECKPOINT_RE.exec(name);
    if (m && fs.statSync(path.join(outputDir, name)).isDirectory()) out.push({ dir: path.join(outputDir, name), step: Number(m[1]) });
  }
  return out.sort((a, b) => b.step - a.step);
}

/** The marker check as a predicate (for util/atomic's leftover recovery). */
export function isCompleteCheckpoint(dir: string): boolean {
  return checkpointProblem(dir) === null;
}

/**
 * The newest complete checkpoint of outputDir, or null. Read-only. Incomplete checkpoint-<step> folders are
 * skipped with a message; a missing checkpoint-<step> whose replacement was interrupted is found at its
 * complete leftover (`dir` is then that leftover; removeStaleTemp puts it back under its name).
 */
export function findLatestCheckpoint(outputDir: string, log: (message: string) => void = () => {}): CheckpointInfo | null {
  const steps = new Set(listCheckpointDirs(outputDir).map((c) => c.step));
  for (const base of listLeftovers(outputDir).keys()) {
    const m = CHECKPOINT_RE.exec(base);
    if (m) steps.add(Number(m[1]));
  }
  for (const step of [...steps].sort((a, b) => b - a)) {
    const name = checkpointDir(outputDir, step);
    const at = locateDir(name, isCompleteCheckpoint);
    if (at === null) continue; // only leftovers of a save that never completed
    if (at !== name) {
      log(`checkpoint-${step} is missing; using ${path.basename(at)}, left complete by an interrupted save`);
      return { dir: at, step };
    }
    const problem = checkpointProblem(at);
    if (!problem) return { dir: at, step };
    log(`ignoring ${path.basename(at)}: ${problem}`);
  }
  return null;
}

/**
 * Read-only: where the checkpoint folder `dir` (a path the user named) is: `dir` itself when it exists, else
 * the complete leftover of its interrupted replacement (logged), else `dir` (the caller reports it missing).
 * A missing `dir` that is itself a leftover name (`checkpoint-6.tmp-<id>`, `.old-<id>`: the start-up cleanup,
 * removeStaleTemp, has just put it back under its name or deleted it) is located as the folder it belongs to.
 */
export function locateCheckpoint(dir: string, log: (message: string) => void = () => {}): string {
  const leftover = fs.existsSync(dir) ? null : parseLeftover(path.basename(dir));
  if (leftover) {
    const target = path.join(path.dirname(dir), leftover.base);
    const at = locateDir(target, isCompleteCheckpoint);
    if (at === null) return dir;
    log(`${path.basename(dir)} is gone (a leftover of an interrupted save, cleaned up at start); using ${path.basename(at)}`);
    return at;
  }
  const at = locateDir(dir, isCompleteCheckpoint);
  if (at === null || at === dir) return dir;
  log(`${path.basename(dir)} is missing; using ${path.basename(at)}, left complete by an interrupted save`);
  return at;
}

/**
 * Deletes a checkpoint folder so that a crash part-way never leaves a half-deleted folder under a checkpoint
 * name: renamed to `<dir>.deleting` (removed by removeStaleTemp if the crash comes first), then removed.
 */
export function deleteCheckpointDir(dir: string): void {
  const aside = `${dir}.deleting`;
  removeTree(aside);
  renameRetrying(dir, aside);
  fsStep('moved aside for deletion', aside);
  fsyncDir(path.dirname(dir));
  fsStep('fsynced parent', dir);
  // No longer a checkpoint by name: if it cannot be deleted now (Windows: a file still held), removeStaleTemp
  // deletes it at the next start; a finished save is not failed for it.
  try {
    removeTree(aside);
  } catch {
    return;
  }
  fsStep('deleted', aside);
}

/** Deletes the oldest complete checkpoints beyond `limit`; the newest complete one always stays. */
export function rotateCheckpoints(outputDir: string, limit: number | null, log: (message: string) => void = () => {}): string[] {
  if (limit === null) return [];
  const complete = listCheckpointDirs(outputDir).filter((c) => checkpointProblem(c.dir) === null);
  const keep = Math.max(1, limit);
  const removed: string[] = [];
  for (const c of complete.slice(keep)) {
    try {
      deleteCheckpointDir(c.dir);
    } catch (e) {
      // The new checkpoint is saved; an old one that cannot be moved now (Windows: a file held by another
      // process) stays a complete checkpoint and is rotated at the next save.
      log(`could not delete ${path.basename(c.dir)} (save_total_limit ${limit}), kept for now: ${(e as Error).message}`);
      continue;
    }
    removed.push(c.dir);
    log(`deleted ${path.basename(c.dir)} (save_total_limit ${limit})`);
  }
  return removed;
}

/**
 * Cleans outputDir after a crash (call before resuming or saving; one writer per output_dir): a checkpoint
 * (or other folder) whose replacement was interrupted is put back from its complete leftover (util/atomic
 * recoverDir, checkpoints checked by their marker), then every other leftover of interrupted saves/deletes
 * (`*.tmp-*`, `*.old-*`, `*.deleting`, saveModel's `.save-*` staging) is removed.
 */
export function removeStaleTemp(outputDir: string, log: (message: string) => void = () => {}): void {
  if (!fs.existsSync(outputDir)) return;
  for (const base of listLeftovers(outputDir).keys()) {
    recoverDir(path.join(outputDir, base), { isComplete: CHECKPOINT_RE.test(base) ? isCompleteCheckpoint : undefined, log });
  }
  for (const name of fs.readdirSync(outputDir)) {
    if (name.endsWith('.deleting') || /^\.save-\d+-\d+$/.test(name)) {
      try {
        removeTree(path.join(outputDir, name));
      } catch (e) {
        // Not a checkpoint by name: harmless until the next start removes it (Windows: a file still held).
        log(`could not remove ${name} (left by an interrupted save; tried again at the next start): ${(e as Error).message}`);
        continue;
      }
      fsStep('removed leftover', path.join(outputDir, name));
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
