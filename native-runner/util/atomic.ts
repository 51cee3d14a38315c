/**
 * Crash-safe writes (POSIX rename semantics; a crash = the process dies, e.g. SIGKILL, or the machine loses
 * power after the fsyncs named below).
 *
 * Files: written to `<file>.tmp-<id>`, fsynced, renamed over the target, the parent fsynced.
 *
 * Folders (`writeDirAtomic`): a folder cannot be renamed over a non-empty one, so replacing `<dir>` takes steps:
 *   1. build `<dir>.tmp-<id>` (the staging folder; every file fsynced by the caller, then the folder),
 *   2. rename the existing `<dir>` to `<dir>.old-<id>` (the backup: same id as its staging folder),
 *   3. rename the staging folder to `<dir>`, fsync the parent,
 *   4. delete the backup.
 * A crash between 2 and 3 leaves no `<dir>`, but a staging folder whose backup has the same id is complete
 * (step 2 only runs after step 1 finished), so at every instant the old or the new complete folder exists
 * under a recognised name. `locateDir` (read-only) says where the complete content is; `recoverDir` (the
 * writer, at start-up) puts it back at `<dir>` and deletes the other leftovers. Callers that can check a
 * folder's completeness themselves (checkpoints: COMPLETE marker) pass `isComplete`, which also lets an
 * unpaired complete staging folder or a complete backup be used.
 * One writer per folder at a time: recovery deletes leftovers it cannot use (a second writer's staging folder
 * included), and nothing here locks a folder against a second writer.
 *
 * Windows: renames and deletes fail with EPERM/EACCES/EBUSY while another process (a virus scanner, the
 * search indexer) briefly holds a file, so renames are retried there for about a second (renameRetrying) and
 * deletes use rmSync's retries. Deleting the backup after a finished replacement, and leftovers at recovery,
 * is best-effort: what cannot be deleted now stays a recognised leftover and goes at the next start.
 *
 * `setFsStepHook` is the test seam for crash simulation: the hook runs after every filesystem step of this
 * module (and of callers that report theirs through `fsStep`), i.e. at every point where a crash can fall.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export type FsStepHook = (step: string, target: string) => void;
let stepHook: FsStepHook | null = null;

/** Installs (or clears, with null) the crash-simulation hook; returns the previous one. */
export function setFsStepHook(hook: FsStepHook | null): FsStepHook | null {
  const prev = stepHook;
  stepHook = hook;
  return prev;
}

/** Reports a finished filesystem step to the hook (see setFsStepHook). */
export function fsStep(step: string, target: string): void {
  stepHook?.(step, target);
}

/** Error codes of a rename/delete refused while another process holds a file (Windows only: elsewhere they are final). */
const WINDOWS_TRANSIENT = new Set(['EPERM', 'EACCES', 'EBUSY']);
/** Waits between rename attempts on Windows (ms; about 1.3 s in all). */
const RENAME_RETRY_MS = [10, 20, 40, 80, 160, 320, 640];

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * fs.renameSync, retried on Windows while it fails with EPERM/EACCES/EBUSY (a file briefly held by another
 * process); the last error is thrown. On other platforms a single attempt. `platform` is a test seam.
 */
export function renameRetrying(from: string, to: string, platform: string = process.platform): void {
  for (let attempt = 0; ; attempt++) {
    try {
      fs.renameSync(from, to);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (platform !== 'win32' || code === undefined || !WINDOWS_TRANSIENT.has(code) || attempt >= RENAME_RETRY_MS.length) throw e;
      sleepSync(RENAME_RETRY_MS[attempt]!);
    }
  }
}

/** Deletes a file or folder tree (absent is fine), with rmSync's own retries on Windows. */
export function removeTree(p: string): void {
  fs.rmSync(p, { recursive: true, force: true, maxRetries: process.platform === 'win32' ? 5 : 0 });
}

/** removeTree that reports a failure instead of throwing (for deletes whose failure leaves a harmless leftover). */
function tryRemoveTree(p: string): Error | null {
  try {
    removeTree(p);
    return null;
  } catch (e) {
    return e as Error;
  }
}

let counter = 0;
/** A fresh `<pid>-<n>` id such that neither `<target>.tmp-<id>` nor `<target>.old-<id>` exists. */
function freshId(target: string): string {
  for (;;) {
    const id = `${process.pid}-${++counter}`;
    if (!fs.existsSync(`${target}.tmp-${id}`) && !fs.existsSync(`${target}.old-${id}`)) return id;
  }
}

export function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // Some platforms (Windows) cannot fsync a directory; the rename is still atomic there.
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Writes `chunks` (in order) to `file` and fsyncs it; no rename. */
export function writeFileSynced(file: string, chunks: Uint8Array | string | (Uint8Array | string)[]): void {
  const fd = fs.openSync(file, 'w');
  try {
    fsStep('created', file);
    for (const c of Array.isArray(chunks) ? chunks : [chunks]) {
      const buf = typeof c === 'string' ? Buffer.from(c, 'utf8') : c;
      let off = 0;
      while (off < buf.byteLength) off += fs.writeSync(fd, buf, off, buf.byteLength - off);
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fsStep('wrote', file);
}

/** Atomically replaces `file` with the given content. */
export function writeFileAtomic(file: string, chunks: Uint8Array | string | (Uint8Array | string)[]): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${freshId(file)}`;
  try {
    writeFileSynced(tmp, chunks);
    renameRetrying(tmp, file);
    fsStep('renamed into place', file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDir(path.dirname(file));
  fsStep('fsynced parent', file);
}

/** A leftover of an interrupted writeDirAtomic/writeFileAtomic next to its target. */
export interface Leftover {
  path: string;
  /** The target's base name (`checkpoint-6` for `checkpoint-6.tmp-12-3`). */
  base: string;
  kind: 'staging' | 'backup';
  id: string;
  /** A staging folder whose backup (same id) exists: complete by construction. */
  paired: boolean;
}

// `<base>.tmp-<pid>-<n>` staging, `<base>.old-<pid>-<n>` backup, and `<base>.tmp-<pid>-<n>.old`, the backup
// name of earlier versions (not paired: usable only when a completeness check accepts it).
const LEFTOVER_RE = /^(.+)\.(tmp|old)-(\d+-\d+)$/;
const LEGACY_BACKUP_RE = /^(.+)\.tmp-(\d+-\d+)\.old$/;

/** What a file or folder name is as a leftover (`checkpoint-6.tmp-12-3` → base `checkpoint-6`), or null. */
export function parseLeftover(name: string): { base: string; kind: Leftover['kind']; id: string } | null {
  const legacy = LEGACY_BACKUP_RE.exec(name);
  if (legacy) return { base: legacy[1]!, kind: 'backup', id: `legacy-${legacy[2]}` };
  const m = LEFTOVER_RE.exec(name);
  if (!m) return null;
  return { base: m[1]!, kind: m[2] === 'tmp' ? 'staging' : 'backup', id: m[3]! };
}

/** Every leftover in folder `parent`, grouped by target base name. */
export function listLeftovers(parent: string): Map<string, Leftover[]> {
  const out = new Map<string, Leftover[]>();
  let names: string[];
  try {
    names = fs.readdirSync(parent);
  } catch {
    return out;
  }
  const parsed = names.map((n) => ({ n, p: parseLeftover(n) })).filter((x) => x.p !== null);
  const backups = new Set(parsed.filter((x) => x.p!.kind === 'backup').map((x) => `${x.p!.base}\0${x.p!.id}`));
  for (const { n, p } of parsed) {
    const l: Leftover = { path: path.join(parent, n), base: p!.base, kind: p!.kind, id: p!.id, paired: p!.kind === 'staging' && backups.has(`${p!.base}\0${p!.id}`) };
    const list = out.get(l.base) ?? [];
    list.push(l);
    out.set(l.base, list);
  }
  return out;
}

/** The leftovers belonging to target `dir`. */
export function leftoversOf(dir: string): Leftover[] {
  return listLeftovers(path.dirname(dir)).get(path.basename(dir)) ?? [];
}

function mtime(p: string): number {
  try {
    return fs.statSync(p).mtimeMs;
  } catch {
    return 0;
  }
}

/**
 * The leftovers that hold a complete copy of `dir`, best first: staging folders (the newer content; paired
 * ones, or any that `isComplete` accepts), then backups that `isComplete` accepts (never without it: a
 * backup without its staging folder may be half-deleted). Newest first within each kind.
 */
function usableLeftovers(dir: string, isComplete?: (p: string) => boolean): Leftover[] {
  const all = leftoversOf(dir).filter((l) => {
    try {
      return fs.statSync(l.path).isDirectory();
    } catch {
      return false;
    }
  });
  const ok = (l: Leftover) => (isComplete ? isComplete(l.path) : l.kind === 'staging' && l.paired);
  const byAge = (a: Leftover, b: Leftover) => mtime(b.path) - mtime(a.path) || (a.path < b.path ? -1 : 1);
  const staging = all.filter((l) => l.kind === 'staging' && ok(l)).sort(byAge);
  const backups = isComplete ? all.filter((l) => l.kind === 'backup' && ok(l)).sort(byAge) : [];
  return [...staging, ...backups];
}

/**
 * Read-only: where the content of `dir` is. `dir` itself when it exists (complete or not: the caller checks),
 * else the best complete leftover of an interrupted replacement (see usableLeftovers), else null.
 */
export function locateDir(dir: string, isComplete?: (p: string) => boolean): string | null {
  if (fs.existsSync(dir)) return dir;
  return usableLeftovers(dir, isComplete)[0]?.path ?? null;
}

/**
 * Writer side, after a crash: when `dir` is missing and a complete leftover exists (locateDir), renames it to
 * `dir`; then deletes `dir`'s other leftovers. Returns `dir` when it exists afterwards, else null. Itself
 * crash-safe: it renames before it deletes, and a rerun finishes the job.
 */
export function recoverDir(dir: string, opts: { isComplete?: (p: string) => boolean; log?: (message: string) => void } = {}): string | null {
  const log = opts.log ?? (() => {});
  const parent = path.dirname(dir);
  if (!fs.existsSync(dir)) {
    const best = usableLeftovers(dir, opts.isComplete)[0];
    if (best) {
      renameRetrying(best.path, dir);
      fsStep('recovered', dir);
      fsyncDir(parent);
      fsStep('fsynced parent', dir);
      log(`recovered ${path.basename(dir)} from ${path.basename(best.path)} (left by an interrupted save)`);
    }
  }
  // Backups last: while a staging folder of the pair is still there, the pair stays recognisable.
  const rest = leftoversOf(dir).sort((a, b) => (a.kind === b.kind ? 0 : a.kind === 'staging' ? -1 : 1));
  for (const l of rest) {
    const failed = tryRemoveTree(l.path);
    if (failed) {
      log(`could not remove ${path.basename(l.path)} (left by an interrupted save; tried again at the next start): ${failed.message}`);
      continue;
    }
    fsStep('removed leftover', l.path);
    log(`removed ${path.basename(l.path)} (left by an interrupted save)`);
  }
  return fs.existsSync(dir) ? dir : null;
}

/**
 * Builds a folder atomically: `fill(tmpDir)` writes its files (use writeFileSynced), then the folder is
 * renamed to `dir`. An existing `dir` is replaced by the steps in the header, so a crash at any point leaves
 * the old or the new complete folder findable (locateDir / recoverDir). Leftovers of an earlier interrupted
 * write of `dir` are recovered first (`opts.isComplete` as in recoverDir).
 */
export async function writeDirAtomic(
  dir: string,
  fill: (tmpDir: string) => Promise<void> | void,
  opts: { isComplete?: (p: string) => boolean } = {},
): Promise<void> {
  const parent = path.dirname(dir);
  fs.mkdirSync(parent, { recursive: true });
  recoverDir(dir, { isComplete: opts.isComplete });
  const id = freshId(dir);
  const tmp = `${dir}.tmp-${id}`;
  const backup = `${dir}.old-${id}`;
  fs.mkdirSync(tmp);
  fsStep('created staging', tmp);
  try {
    await fill(tmp);
    fsyncDir(tmp);
    fsStep('fsynced staging', tmp);
  } catch (e) {
    tryRemoveTree(tmp);
    throw e;
  }
  let movedAside = false;
  try {
    if (fs.existsSync(dir)) {
      renameRetrying(dir, backup);
      movedAside = true;
      fsStep('moved old aside', backup);
    }
    renameRetrying(tmp, dir);
    fsStep('renamed into place', dir);
  } catch (e) {
    // Not a crash but a failed rename: put the old folder back where it was, drop the new one.
    if (movedAside && !fs.existsSync(dir)) renameRetrying(backup, dir);
    tryRemoveTree(tmp);
    throw e;
  }
  fsyncDir(parent);
  fsStep('fsynced parent', dir);
  // The new folder is in place: a backup that cannot be deleted now (Windows: a file still held) is left as
  // a recognised leftover for the next start's recovery rather than failing a finished save.
  if (movedAside && tryRemoveTree(backup) === null) fsStep('removed old', backup);
}
