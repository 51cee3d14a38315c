// Hub datasets by id against a local HTTP server (127.0.0.1, files of our own): download once into the
// cache, resume an interrupted download with a Range request, no network once cached, clear offline error.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import type { AddressInfo } from 'node:net';
import { resolveHubDataset, datasetCacheDir } from '../../native-runner/data/hub';
import { loadTrainingData } from '../../native-runner/data/dataset';
import { loadTokenizer } from '../../native-runner/model/tokenizer';
import { OASST_COLUMNS, writeParquet } from '../helpers/parquet';

const FIX = path.join(__dirname, '../fixtures/data');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-data-hub-'));
const tok = loadTokenizer(path.join(__dirname, '../../samples/tiny-gpt2-chat'));

const dolly = Buffer.concat(Array.from({ length: 40 }, () => fs.readFileSync(path.join(FIX, 'dolly-malformed.jsonl'), 'utf8').split('\n').filter((l, i) => i !== 6 && i !== 14 && l).join('\n') + '\n').map((s) => Buffer.from(s)));
const pqFile = path.join(tmp, 'src.parquet');
writeParquet(pqFile, OASST_COLUMNS, fs.readFileSync(path.join(FIX, 'oasst1.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>));
const parquet = fs.readFileSync(pqFile);

const requests: { url: string; range?: string }[] = [];
let cutNextDolly = false;
const server = http.createServer((req, res) => {
  requests.push({ url: req.url!, range: req.headers.range });
  const files: Record<string, Buffer> = {
    '/datasets/databricks/databricks-dolly-15k/resolve/main/databricks-dolly-15k.jsonl': dolly,
    '/datasets/OpenAssistant/oasst1/resolve/main/data/train-00000-of-00001-abc.parquet': parquet,
  };
  if (req.url === '/api/datasets/OpenAssistant/oasst1/tree/main/data') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify([
      { type: 'file', path: 'data/validation-00000-of-00001-def.parquet', size: 10 },
      { type: 'file', path: 'data/train-00000-of-00001-abc.parquet', size: parquet.length },
    ]));
    return;
  }
  const body = files[req.url!];
  if (!body) {
    res.statusCode = 404;
    res.end('not found');
    return;
  }
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  if (m) {
    const start = Number(m[1]);
    res.writeHead(206, { 'content-length': body.length - start, 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` });
    res.end(body.subarray(start));
    return;
  }
  res.writeHead(200, { 'content-length': body.length });
  if (cutNextDolly && req.url!.includes('dolly')) {
    cutNextDolly = false;
    res.write(body.subarray(0, 1000), () => res.destroy());
    return;
  }
  res.end(body);
});

const ready = new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
after(() => {
  server.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('dolly by id: an interrupted download resumes with Range, then the cache is used without network', async () => {
  await ready;
  const port = (server.address() as AddressInfo).port;
  process.env.HF_ENDPOINT = `http://127.0.0.1:${port}`;
  const cache = path.join(tmp, 'cache1');
  cutNextDolly = true;
  await assert.rejects(resolveHubDataset('databricks/databricks-dolly-15k', { cacheDir: cache }), /cannot download databricks\/databricks-dolly-15k: .*\(download it once while online, or pass a local file\)/);
  const part = path.join(datasetCacheDir('databricks/databricks-dolly-15k', cache), 'databricks-dolly-15k.jsonl.part');
  assert.equal(fs.statSync(part).size, 1000);
  const progress: number[] = [];
  const r = await resolveHubDataset('databricks/databricks-dolly-15k', { cacheDir: cache, onProgress: (p) => progress.push(p.received) });
  assert.equal(requests[requests.length - 1]!.range, 'bytes=1000-');
  assert.equal(r.format, 'dolly');
  assert.deepEqual(fs.readFileSync(r.file), dolly);
  assert.equal(progress[progress.length - 1], dolly.length);
  const before = requests.length;
  const again = await resolveHubDataset('databricks/databricks-dolly-15k', { cacheDir: cache });
  assert.equal(again.file, r.file);
  assert.equal(requests.length, before, 'a cached dataset makes no request');
  // End to end through loadTrainingData (id spelled in another case).
  const data = await loadTrainingData({ dataset: 'Databricks/Databricks-Dolly-15k', cacheDir: cache, max_length: 64, tokenizer: tok, test_size: 0 });
  assert.equal(data.train.length, 18 * 40);
  assert.equal(data.formatUsed, 'dolly');
  assert.equal(requests.length, before);
});

test('oasst1 by id: the train Parquet file is found through the tree listing', async () => {
  await ready;
  const port = (server.address() as AddressInfo).port;
  process.env.HF_ENDPOINT = `http://127.0.0.1:${port}`;
  const cache = path.join(tmp, 'cache2');
  const data = await loadTrainingData({ dataset: 'OpenAssistant/oasst1', cacheDir: cache, max_length: 64, tokenizer: tok, test_size: 0 });
  assert.equal(data.formatUsed, 'oasst1');
  assert.equal(data.train.length, 2);
  assert.ok(requests.some((r) => r.url === '/datasets/OpenAssistant/oasst1/resolve/main/data/train-00000-of-00001-abc.parquet'));
  assert.ok(data.datasetPath.endsWith(path.join('OpenAssistant', 'oasst1', 'data', 'train-00000-of-00001-abc.parquet')));
});

test('offline with an empty cache: a clear message naming the dataset', async () => {
  // A port that was just free: nothing listens there.
  const probe = http.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  process.env.HF_ENDPOINT = `http://127.0.0.1:${port}`;
  await assert.rejects(resolveHubDataset('Open-Orca/SlimOrca', { cacheDir: path.join(tmp, 'cache3') }), (e: unknown) => {
    const msg = (e as Error).message;
    assert.match(msg, /^dataset: cannot download Open-Orca\/SlimOrca: /);
    assert.match(msg, /ECONNREFUSED/);
    assert.match(msg, /offline/);
    return true;
  });
});
