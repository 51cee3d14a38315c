/**
 * Hub datasets by id, downloaded once into the cache and read from there afterwards (no network when
 * cached). Base URL: $HF_ENDPOINT (default https://huggingface.co); cache: <cacheRoot>/datasets/<owner>/<name>/
 * with cacheRoot = $SFT_CACHE or ~/.cache/sft-studio. Files come from
 * `{endpoint}/datasets/{id}/resolve/main/{file}` through util/download (HTTP Range resume of `.part`
 * files); a file whose name is not fixed is found with `{endpoint}/api/datasets/{id}/tree/main/{folder}`.
 * A `complete.json` marker written last records the file and format, so an interrupted download is
 * never mistaken for a complete one.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as http from 'node:http';
import * as https from 'node:https';
import { SftError } from '../util/errors';
import { writeFileAtomic } from '../util/atomic';
import { cacheRoot, downloadFile, hubEndpoint, type DownloadProgress } from '../util/download';
import type { DatasetFormat } from './formats';

export interface HubProgress {
  id: string;
  file: string;
  received: number;
  total: number | null;
}

interface HubDatasetSpec {
  format: DatasetFormat;
  /** A fixed file, or a folder to list and a pattern to pick the file from. */
  file?: string;
  folder?: string;
  pattern?: RegExp;
  /** The file to try when the listing cannot be had (a mirror without the API). */
  fallback?: string;
}

/** The datasets the recipe names, by id. */
export const HUB_DATASETS: Record<string, HubDatasetSpec> = {
  'databricks/databricks-dolly-15k': { format: 'dolly', file: 'databricks-dolly-15k.jsonl' },
  'OpenAssistant/oasst1': {
    format: 'oasst1',
    folder: 'data',
    pattern: /^data\/train-.*\.parquet$/,
    fallback: 'data/train-00000-of-00001-b42a775f407cee45.parquet',
  },
  'Open-Orca/SlimOrca': { format: 'sharegpt', file: 'oo-labeled_correct.gpt4.sharegpt.jsonl' },
};

function canonicalId(spec: string): string | undefined {
  const lower = spec.toLowerCase();
  return Object.keys(HUB_DATASETS).find((k) => k.toLowerCase() === lower);
}

export function isHubDatasetId(spec: string): boolean {
  return canonicalId(spec) !== undefined;
}

/** Looks like `owner/name` (not a path that exists): used to say which ids are known. */
export function looksLikeDatasetId(spec: string): boolean {
  return /^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/.test(spec) && !/\.(jsonl?|parquet)$/i.test(spec);
}

export function datasetCacheDir(id: string, root = cacheRoot()): string {
  return path.join(root, 'datasets', ...id.split('/'));
}

interface CompleteMarker {
  id: string;
  file: string;
  format: DatasetFormat;
  bytes: number;
}

function getJson(url: string, signal?: AbortSignal): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const lib = url.startsWith('https:') ? https : http;
    const headers: Record<string, string> = { 'user-agent': 'sft-studio' };
    if (process.env.HF_TOKEN) headers.authorization = `Bearer ${process.env.HF_TOKEN}`;
    const req = lib.get(url, { headers, signal }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        if ((res.statusCode ?? 0) !== 200) {
          reject(new SftError(`HTTP ${res.statusCode}`, url));
          return;
        }
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch {
          reject(new SftError('the hub answered with something that is not JSON', url));
        }
      });
      res.on('error', reject);
    });
    req.setTimeout(30_000, () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
    req.on('error', (e: NodeJS.ErrnoException) => {
      const host = new URL(url).host;
      reject(new SftError(`cannot reach ${host} (${e.code ?? e.message}): are you offline?`, url));
    });
  });
}

/** Finds the file to download for a spec with a folder + pattern, through the hub's tree listing. */
async function pickFile(id: string, spec: HubDatasetSpec, signal?: AbortSignal): Promise<string> {
  if (spec.file) return spec.file;
  const url = `${hubEndpoint()}/api/datasets/${id}/tree/main/${spec.folder ?? ''}`;
  let listing: unknown;
  try {
    listing = await getJson(url, signal);
  } catch (e) {
    if (spec.fallback) return spec.fallback;
    throw e;
  }
  const paths = Array.isArray(listing) ? listing.map((e) => (e && typeof e === 'object' ? (e as { path?: unknown }).path : undefined)).filter((p): p is string => typeof p === 'string') : [];
  const match = paths.filter((p) => spec.pattern!.test(p)).sort()[0];
  if (!match) throw new SftError(`no file matching ${spec.pattern} in the listing of ${id}`, url);
  if (match.includes('..')) throw new SftError(`unsafe file name "${match}"`, url);
  return match;
}

/**
 * Returns the local file of a known hub dataset, downloading it into the cache the first time (with
 * progress and resume). A cached dataset is used without touching the network.
 */
export async function resolveHubDataset(
  spec: string,
  opts: { cacheDir?: string; onProgress?: (p: HubProgress) => void; signal?: AbortSignal } = {},
): Promise<{ file: string; format: DatasetFormat }> {
  const id = canonicalId(spec);
  if (!id) throw new SftError(`unknown hub dataset "${spec}" (known: ${Object.keys(HUB_DATASETS).join(', ')}); or give a local file`, 'dataset');
  const hubSpec = HUB_DATASETS[id]!;
  const dir = datasetCacheDir(id, opts.cacheDir ?? cacheRoot());
  const markerPath = path.join(dir, 'complete.json');
  if (fs.existsSync(markerPath)) {
    try {
      const m = JSON.parse(fs.readFileSync(markerPath, 'utf8')) as CompleteMarker;
      const file = path.join(dir, m.file);
      if (fs.existsSync(file) && fs.statSync(file).size === m.bytes) return { file, format: m.format };
    } catch {
      // A damaged marker: download again.
    }
  }
  let rel: string;
  try {
    rel = await pickFile(id, hubSpec, opts.signal);
  } catch (e) {
    throw new SftError(`cannot download ${id}: ${(e as Error).message} (download it once while online, or pass a local file)`, 'dataset');
  }
  const url = `${hubEndpoint()}/datasets/${id}/resolve/main/${rel}`;
  const dest = path.join(dir, rel);
  const headers: Record<string, string> = process.env.HF_TOKEN ? { authorization: `Bearer ${process.env.HF_TOKEN}` } : {};
  let bytes: number;
  try {
    const r = await downloadFile(url, dest, {
      headers,
      signal: opts.signal,
      onProgress: (p: DownloadProgress) => opts.onProgress?.({ id, file: rel, received: p.received, total: p.total }),
    });
    bytes = r.bytes;
  } catch (e) {
    throw new SftError(`cannot download ${id}: ${(e as Error).message} (download it once while online, or pass a local file)`, 'dataset');
  }
  const marker: CompleteMarker = { id, file: rel, format: hubSpec.format, bytes };
  writeFileAtomic(markerPath, JSON.stringify(marker, null, 2) + '\n');
  return { file: dest, format: hubSpec.format };
}
