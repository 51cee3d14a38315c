/**
 * HTTP(S) file download with resume. `downloadFile(url, dest)` GETs the URL (following up to 10
 * redirects; an Authorization header is not forwarded to another host), streams the body into
 * `dest.part`, and — once the byte count matches Content-Length — fsyncs it and renames it to `dest`
 * atomically. An interrupted download leaves `dest.part`; the next call asks for the rest with
 * `Range: bytes=<size>-` (206 appends, 200 starts over, 416 with a matching total means it was complete).
 * Errors are SftErrors naming the URL: `HttpStatusError` (with `.status`, e.g. 404 for an optional file)
 * and a clear offline message when the host cannot be reached.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as path from 'node:path';
import { readShardIndex } from '../model/safetensors';
import { fsyncDir, writeFileAtomic } from './atomic';
import { SftError } from './errors';

export interface DownloadProgress {
  url: string;
  /** Bytes in dest.part so far (including a resumed prefix). */
  received: number;
  /** Total size when the server said, else null. */
  total: number | null;
}

export interface DownloadOptions {
  onProgress?: (p: DownloadProgress) => void;
  signal?: AbortSignal;
  headers?: Record<string, string>;
  /** Idle socket timeout in ms (default 30 s). */
  timeoutMs?: number;
}

export interface DownloadResult {
  path: string;
  bytes: number;
  /** Bytes that were already in dest.part and not fetched again. */
  resumedFrom: number;
}

export class HttpStatusError extends SftError {
  constructor(
    readonly status: number,
    readonly url: string,
  ) {
    super(`HTTP ${status}${status === 404 ? ' (not found)' : status === 401 || status === 403 ? ' (not authorised: gated or private? set HF_TOKEN)' : ''}`, url);
    this.name = 'HttpStatusError';
  }
}

const OFFLINE_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'ECONNREFUSED', 'ENETUNREACH', 'EHOSTUNREACH', 'ETIMEDOUT', 'ECONNRESET']);

function networkError(e: NodeJS.ErrnoException, url: string): SftError {
  const host = (() => {
    try {
      return new URL(url).host;
    } catch {
      return url;
    }
  })();
  if (e.code && OFFLINE_CODES.has(e.code)) {
    return new SftError(`cannot reach ${host} (${e.code}): are you offline? Download on a connected machine, or point HF_ENDPOINT at a mirror; a partial download resumes next time`, url);
  }
  return new SftError(`download failed: ${e.message}`, url);
}

interface Response {
  res: http.IncomingMessage;
  finalUrl: string;
}

function get(url: string, headers: Record<string, string>, opts: DownloadOptions, redirects = 0): Promise<Response> {
  return new Promise((resolve, reject) => {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      reject(new SftError('not a valid URL', url));
      return;
    }
    const lib = u.protocol === 'https:' ? https : u.protocol === 'http:' ? http : null;
    if (!lib) {
      reject(new SftError(`unsupported protocol ${u.protocol}`, url));
      return;
    }
    const req = lib.get(u, { headers: { 'user-agent': 'sft-studio', ...headers }, signal: opts.signal }, (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400 && res.headers.location) {
        res.resume();
        if (redirects >= 10) {
          reject(new SftError('too many redirects', url));
          return;
        }
        const next = new URL(res.headers.location, u).toString();
        const nextHeaders = { ...headers };
        if (new URL(next).host !== u.host) delete nextHeaders.authorization, delete nextHeaders.Authorization;
        get(next, nextHeaders, opts, redirects + 1).then(resolve, reject);
        return;
      }
      resolve({ res, finalUrl: url });
    });
    req.setTimeout(opts.timeoutMs ?? 30_000, () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (opts.signal?.aborted) reject(new SftError('download cancelled', url));
      else reject(networkError(e, url));
    });
  });
}

function totalFromContentRange(h: string | undefined): number | null {
  const m = h ? /\/(\d+)\s*$/.exec(h) : null;
  return m ? Number(m[1]) : null;
}

/** Downloads `url` to `dest` (atomic rename from `dest.part`, resuming a previous partial download). */
export async function downloadFile(url: string, dest: string, opts: DownloadOptions = {}): Promise<DownloadResult> {
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  const part = `${dest}.part`;
  const have = fs.existsSync(part) ? fs.statSync(part).size : 0;
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (have > 0) headers.range = `bytes=${have}-`;
  const { res, finalUrl } = await get(url, headers, opts);
  const status = res.statusCode ?? 0;

  if (status === 416 && have > 0) {
    res.resume();
    const total = totalFromContentRange(res.headers['content-range']);
    if (total === have) return finish(part, dest, have, have);
    fs.rmSync(part, { force: true });
    return downloadFile(url, dest, opts);
  }
  if (status !== 200 && status !== 206) {
    res.resume();
    throw new HttpStatusError(status, finalUrl);
  }
  const append = status === 206 && have > 0;
  if (status === 206 && !append) {
    res.resume();
    throw new SftError('server sent a partial response to a full request', finalUrl);
  }
  const start = append ? have : 0;
  const length = res.headers['content-length'] !== undefined ? Number(res.headers['content-length']) : null;
  const total = append ? (totalFromContentRange(res.headers['content-range']) ?? (length !== null ? have + length : null)) : length;

  const fd = fs.openSync(part, append ? 'a' : 'w');
  let received = start;
  try {
    await new Promise<void>((resolve, reject) => {
      res.on('data', (chunk: Buffer) => {
        let off = 0;
        while (off < chunk.length) off += fs.writeSync(fd, chunk, off, chunk.length - off);
        received += chunk.length;
        opts.onProgress?.({ url, received, total });
      });
      res.on('end', () => resolve());
      res.on('aborted', () => reject(Object.assign(new Error('connection closed early'), { code: 'ECONNRESET' })));
      res.on('error', reject);
    });
    fs.fsyncSync(fd);
  } catch (e) {
    if (opts.signal?.aborted) throw new SftError(`download cancelled (${received} bytes kept in ${path.basename(part)} for resume)`, url);
    throw networkError(e as NodeJS.ErrnoException, url);
  } finally {
    fs.closeSync(fd);
  }
  if (total !== null && received !== total) {
    throw new SftError(`incomplete download: ${received} of ${total} bytes (kept ${path.basename(part)}; run again to resume)`, url);
  }
  return finish(part, dest, received, start);
}

function finish(part: string, dest: string, bytes: number, resumedFrom: number): DownloadResult {
  fs.renameSync(part, dest);
  fsyncDir(path.dirname(dest));
  return { path: dest, bytes, resumedFrom };
}

// ---- Hugging Face hub model download --------------------------------------------------------------

export const HUB_MODEL_FILES_OPTIONAL = [
  'tokenizer.json',
  'tokenizer_config.json',
  'vocab.json',
  'merges.txt',
  'special_tokens_map.json',
  'added_tokens.json',
  'generation_config.json',
];

/** Written last into a downloaded model folder: {id, revision, files: {name: bytes}}. */
export const DOWNLOAD_MARKER = '.sft-download.json';

export function hubEndpoint(): string {
  return (process.env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, '');
}

/** Root of the runner's cache: $SFT_CACHE or ~/.cache/sft-studio. */
export function cacheRoot(): string {
  if (process.env.SFT_CACHE) return path.resolve(process.env.SFT_CACHE);
  const home = process.env.HOME || process.env.USERPROFILE || '.';
  return path.join(home, '.cache', 'sft-studio');
}

export function modelCacheDir(id: string): string {
  return path.join(cacheRoot(), 'models', ...id.split('/'));
}

export interface ModelDownloadOptions {
  revision?: string;
  /** Target folder (default: the cache folder of the id). */
  to?: string;
  onProgress?: (file: string, p: DownloadProgress) => void;
  onFile?: (file: string, outcome: 'downloaded' | 'cached' | 'absent', bytes: number) => void;
  signal?: AbortSignal;
}

/** A hub model or dataset id: `owner/name` or a legacy one-word id such as `gpt2`. */
export const HUB_ID = /^[A-Za-z0-9][\w.-]*(\/[A-Za-z0-9][\w.-]*)?$/;

/**
 * Fetches a GPT-2-class model from `$HF_ENDPOINT/{id}/resolve/{revision}/{file}`: config.json,
 * model.safetensors (or model.safetensors.index.json and its shards) and the tokenizer files that exist.
 * Files already present are kept (each file is renamed into place only when complete). Returns the folder.
 */
export async function downloadModel(id: string, opts: ModelDownloadOptions = {}): Promise<string> {
  if (!HUB_ID.test(id)) throw new SftError(`"${id}" is not a model id like openai-community/gpt2`, '--model');
  const revision = opts.revision ?? 'main';
  const dir = opts.to ? path.resolve(opts.to) : modelCacheDir(id);
  const base = `${hubEndpoint()}/${id}/resolve/${encodeURIComponent(revision)}/`;
  const marker = path.join(dir, DOWNLOAD_MARKER);
  if (fs.existsSync(marker)) {
    try {
      const m = JSON.parse(fs.readFileSync(marker, 'utf8')) as { id?: string; revision?: string; files?: Record<string, number> };
      const intact = m.id === id && m.revision === revision && Object.entries(m.files ?? {}).every(([f, n]) => fs.existsSync(path.join(dir, f)) && fs.statSync(path.join(dir, f)).size === n);
      if (intact) {
        for (const [f, n] of Object.entries(m.files ?? {})) opts.onFile?.(f, 'cached', n);
        return dir; // complete: no network needed (works offline)
      }
    } catch {
      // an unreadable marker: check the files again below
    }
  }
  const headers: Record<string, string> = process.env.HF_TOKEN ? { authorization: `Bearer ${process.env.HF_TOKEN}` } : {};
  const got: Record<string, number> = {};
  const fetchOne = async (file: string, optional: boolean): Promise<boolean> => {
    const dest = path.join(dir, file);
    if (fs.existsSync(dest)) {
      got[file] = fs.statSync(dest).size;
      opts.onFile?.(file, 'cached', got[file]);
      return true;
    }
    try {
      const r = await downloadFile(base + file, dest, { headers, signal: opts.signal, onProgress: (p) => opts.onProgress?.(file, p) });
      got[file] = r.bytes;
      opts.onFile?.(file, 'downloaded', r.bytes);
      return true;
    } catch (e) {
      if (optional && e instanceof HttpStatusError && e.status === 404) {
        opts.onFile?.(file, 'absent', 0);
        return false;
      }
      if (e instanceof HttpStatusError && e.status === 404 && file === 'config.json') {
        throw new SftError(`no model "${id}" at revision "${revision}" on ${hubEndpoint()} (config.json not found)`, base + file);
      }
      throw e;
    }
  };
  await fetchOne('config.json', false);
  if (!(await fetchOne('model.safetensors', true))) {
    if (!(await fetchOne('model.safetensors.index.json', true))) {
      throw new SftError(`"${id}" has neither model.safetensors nor model.safetensors.index.json (only safetensors checkpoints are supported)`, base);
    }
    // readShardIndex names the file on bad JSON and refuses shard names outside the folder.
    const index = readShardIndex(path.join(dir, 'model.safetensors.index.json'));
    for (const s of new Set(index.weightMap.values())) await fetchOne(s, false);
  }
  for (const f of HUB_MODEL_FILES_OPTIONAL) await fetchOne(f, true);
  if (!fs.existsSync(path.join(dir, 'tokenizer.json')) && !fs.existsSync(path.join(dir, 'vocab.json'))) {
    throw new SftError(`"${id}" has no tokenizer files (tokenizer.json or vocab.json + merges.txt)`, base);
  }
  writeFileAtomic(marker, `${JSON.stringify({ id, revision, files: got })}\n`);
  return dir;
}

/** True when `value` is not a local path and looks like a hub model id. */
export function looksLikeHubId(value: string): boolean {
  return !fs.existsSync(value) && !path.isAbsolute(value) && !value.startsWith('.') && HUB_ID.test(value);
}
