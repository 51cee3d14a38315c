/**
 * One trainer per output_dir: `<output_dir>/.sft-lock`, created exclusively (O_EXCL, `wx`) by
 * Trainer.prepare before any start-up cleanup and removed when the run ends (run() / discard(), and at
 * process exit for a run cut short by process.exit). It holds JSON: pid, hostname, started (ISO time),
 * a random token (whose lock it is) and, on Linux, the holder's process start time (/proc/<pid>/stat field
 * 22) so a reused pid is not mistaken for the holder.
 *
 * A second trainer gets an SftError naming output_dir and the holder. A lock is stale, and is taken over
 * with a log line, when its holder ran on this host and that pid is not alive (or is alive but started at
 * another time: a reused pid). A lock of another host is never taken over (its pid cannot be checked here);
 * the message says which file to delete when no trainer runs there. A lock file that cannot be parsed is
 * stale once older than a few seconds (a holder killed between creating and writing it); younger, it is
 * a trainer starting right now.
 *
 * Take-over is safe against two trainers starting at once: the stale file is renamed to a private name
 * (only one renamer gets it) and checked to be the file judged stale before it is deleted; the new lock is
 * then created with O_EXCL again.
 *
 * The name starts with a dot so Hugging Face loaders, the extension's run listing (src/runFolder.ts) and
 * checkpoint rotation (checkpoint-<step> names only) never see it.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SftError } from '../util/errors';
import { LOCK_FILE } from '../../protocol/runFiles';

export { LOCK_FILE };
/** An unparsable lock file younger than this is a trainer writing it right now. */
const UNREADABLE_GRACE_MS = 5000;

export interface LockHolder {
  pid: number;
  hostname: string;
  started: string;
  token: string;
  /** Linux: /proc/<pid>/stat starttime (clock ticks since boot); null elsewhere. */
  proc_start: string | null;
}

export interface OutputDirLock {
  readonly file: string;
  readonly holder: LockHolder;
  /** Removes the lock file when it is still this lock's (idempotent; never throws). */
  release(): void;
}

/** The start time of process `pid` (Linux /proc), or null when unknown. */
export function processStartTime(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may hold spaces and parentheses: count fields after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null; // field 22 overall = index 19 after pid, comm
  } catch {
    return null;
  }
}

/** Whether process `pid` exists on this host (EPERM: it exists but belongs to someone else). */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function parseHolder(text: string): LockHolder | null {
  try {
    const h = JSON.parse(text) as Partial<LockHolder>;
    if (typeof h.pid !== 'number' || typeof h.hostname !== 'string' || typeof h.started !== 'string' || typeof h.token !== 'string') return null;
    return { pid: h.pid, hostname: h.hostname, started: h.started, token: h.token, proc_start: typeof h.proc_start === 'string' ? h.proc_start : null };
  } catch {
    return null;
  }
}

/** Why the lock of `h` is stale (its holder is gone), or null when it may still be held. */
export function staleReason(h: LockHolder): string | null {
  if (h.hostname !== os.hostname()) return null;
  if (!pidAlive(h.pid)) return `pid ${h.pid} is not running`;
  if (h.proc_start !== null) {
    const now = processStartTime(h.pid);
    if (now !== null && now !== h.proc_start) return `pid ${h.pid} is now another process`;
  }
  return null;
}

/** Locks held by this process, removed at exit (process.exit after a second Ctrl-C, a fatal error). */
const held = new Set<OutputDirLock>();
let exitHook = false;

function readText(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

function inUse(outputDir: string, file: string, h: LockHolder): SftError {
  const other = h.hostname !== os.hostname();
  return new SftError(
    `output_dir ${outputDir} is in use by pid ${h.pid} on host ${h.hostname} since ${h.started}: wait for it, stop it, or choose another output_dir` +
      (other ? ` (if no trainer runs there any more, delete ${file})` : ''),
    `output_dir ${outputDir}`,
  );
}

/**
 * Takes the lock of `outputDir` (which must exist) or throws an SftError naming the holder. A stale lock is
 * taken over and logged through `log`.
 */
export function acquireOutputDirLock(outputDir: string, log: (message: string) => void = () => {}): OutputDirLock {
  const file = path.join(outputDir, LOCK_FILE);
  const holder: LockHolder = {
    pid: process.pid,
    hostname: os.hostname(),
    started: new Date().toISOString(),
    token: crypto.randomBytes(8).toString('hex'),
    proc_start: processStartTime(process.pid),
  };
  const content = `${JSON.stringify(holder, null, 2)}\n`;
  for (let attempt = 0; attempt < 8; attempt++) {
    let fd: number | undefined;
    try {
      fd = fs.openSync(file, 'wx');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new SftError(`cannot create the lock file (${(e as Error).message})`, file);
    }
    if (fd !== undefined) {
      try {
        fs.writeSync(fd, content);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      return register(file, holder);
    }
    // Someone's lock is there: held, or stale.
    const text = readText(file);
    if (text === null) continue; // released meanwhile
    const other = parseHolder(text);
    let reason: string | null;
    if (other) {
      reason = staleReason(other);
      if (!reason) throw inUse(outputDir, file, other);
    } else {
      let age = 0;
      try {
        age = Date.now() - fs.statSync(file).mtimeMs;
      } catch {
        continue;
      }
      if (age < UNREADABLE_GRACE_MS) throw new SftError(`output_dir ${outputDir} is being taken by another trainer starting now (${LOCK_FILE} is being written): wait for it or choose another output_dir`, `output_dir ${outputDir}`);
      reason = `the lock file is unreadable and ${Math.round(age / 1000)} s old`;
    }
    // Move the stale file out of the way under a private name; only one of several trainers gets it.
    const aside = `${file}.stale-${process.pid}-${holder.token}-${attempt}`;
    try {
      fs.renameSync(file, aside);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw new SftError(`cannot take over the stale lock (${(e as Error).message})`, file);
    }
    const moved = readText(aside);
    if (moved !== text) {
      // Not the file judged stale: a trainer's fresh lock, taken between our read and the rename. Put it back.
      try {
        fs.linkSync(aside, file);
      } catch {
        // another lock is in place already: that trainer holds output_dir
      }
      fs.rmSync(aside, { force: true });
      continue;
    }
    fs.rmSync(aside, { force: true });
    log(
      other
        ? `took over the stale lock of output_dir (${reason}; it was taken on host ${other.hostname} at ${other.started})`
        : `took over the stale lock of output_dir (${reason})`,
    );
  }
  throw new SftError('could not take the output_dir lock (other trainers keep taking it)', `output_dir ${outputDir}`);
}

function register(file: string, holder: LockHolder): OutputDirLock {
  let released = false;
  const lock: OutputDirLock = {
    file,
    holder,
    release() {
      if (released) return;
      released = true;
      held.delete(lock);
      try {
        const now = parseHolder(fs.readFileSync(file, 'utf8'));
        if (now?.token === holder.token) fs.rmSync(file, { force: true });
      } catch {
        // gone already, or unreadable: not ours to delete
      }
    },
  };
  held.add(lock);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const l of [...held]) l.release();
    });
  }
  return lock;
}

/** Reads the holder recorded in `<outputDir>/.sft-lock`, or null when there is none (for messages and tests). */
export function readLockHolder(outputDir: string): LockHolder | null {
  const text = readText(path.join(outputDir, LOCK_FILE));
  return text === null ? null : parseHolder(text);
}
