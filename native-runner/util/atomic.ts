/**
 * Crash-safe writes. A file is written to `<path>.tmp-<pid>-<n>`, fsynced, renamed over the target and the
 * directory fsynced; a folder is built as `<dir>.tmp-…`, every file fsynced, then renamed into place. A
 * reader therefore sees either the old complete thing or the new complete thing, never a torn one.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

let counter = 0;
function tmpName(target: string): string {
  return `${target}.tmp-${process.pid}-${++counter}`;
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
    for (const c of Array.isArray(chunks) ? chunks : [chunks]) {
      const buf = typeof c === 'string' ? Buffer.from(c, 'utf8') : c;
      let off = 0;
      while (off < buf.byteLength) off += fs.writeSync(fd, buf, off, buf.byteLength - off);
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Atomically replaces `file` with the given content. */
export function writeFileAtomic(file: string, chunks: Uint8Array | string | (Uint8Array | string)[]): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = tmpName(file);
  try {
    writeFileSynced(tmp, chunks);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDir(path.dirname(file));
}

/**
 * Builds a folder atomically: `fill(tmpDir)` writes its files (use writeFileSynced), then the folder is
 * renamed to `dir`. An existing `dir` is replaced (moved aside, then removed).
 */
export async function writeDirAtomic(dir: string, fill: (tmpDir: string) => Promise<void> | void): Promise<void> {
  const parent = path.dirname(dir);
  fs.mkdirSync(parent, { recursive: true });
  const tmp = tmpName(dir);
  fs.mkdirSync(tmp);
  try {
    await fill(tmp);
    fsyncDir(tmp);
    if (fs.existsSync(dir)) {
      const old = tmpName(dir) + '.old';
      fs.renameSync(dir, old);
      fs.renameSync(tmp, dir);
      fs.rmSync(old, { recursive: true, force: true });
    } else {
      fs.renameSync(tmp, dir);
    }
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  fsyncDir(parent);
}
