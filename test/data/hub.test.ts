// Hub datasets by id against a local HTTP server (127.0.0.1, files of our own): download once into the
// cache, resume an interrupted download with a Range request, no network once cached, clear offline error.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { resolveHubDataset, datasetCacheDir } from '../../native-runner/data/hub';
import { loadTrainingData } from '../../native-runner/data/dataset';
import { loadTokenizer } from '../../native-runner/model/tokenizer';
import { OASST_COLUMNS, writeParquet } from '../helpers/parquet';
import { closedPort, startStaticServer, type Served } from '../helpers/staticServer';

const FIX = path.join(__dirname, '../fixtures/data');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-data-hub-'));
const tok = loadTokenizer(path.join(__dirname, '../../samples/tiny-gpt2-chat'));

const dolly = Buffer.concat(Array.from({ length: 40 }, () => fs.readFileSync(path.join(FIX, 'dolly-malformed.jsonl'), 'utf8').split('\n').filter((l, i) => i !== 6 && i !== 14 && l).join('\n') + '\n').map((s) => Buffer.from(s)));
const pqFile = path.join(tmp, 'src.parquet');
writeParquet(pqFile, OASST_COLUMNS, fs.readFileSync(path.join(FIX, 'oasst1.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>));
const parquet = fs.readFileSync(pqFile);

const DOLLY_URL = '/datasets/databricks/databricks-dolly-15k/resolve/main/databricks-dolly-15k.jsonl';
const served: Record<string, Served> = {
  [DOLLY_URL]: dolly,
  '/datasets/OpenAssistant/oasst1/resolve/main/data/train-00000-of-00001-abc.parquet': parquet,
  '/api/datasets/OpenAssistant/oasst1/tree/main/data': {
    json: [
      { type: 'file', path: 'data/validation-00000-of-00001-def.parquet', size: 10 },
      { type: 'file', path: 'data/train-00000-of-00001-abc.parquet', size: parquet.length },
    ],
  },
};
const serverReady = startStaticServer((url) => served[url]);
after(async () => {
  await (await serverReady).close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('dolly by id: an interrupted download resumes with Range, then the cache is used without network', async () => {
  const server = await serverReady;
  const requests = server.requests;
  process.env.HF_ENDPOINT = server.base;
  const cache = path.join(tmp, 'cache1');
  server.cutOnce(DOLLY_URL, 1000);
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
  const server = await serverReady;
  const requests = server.requests;
  process.env.HF_ENDPOINT = server.base;
  const cache = path.join(tmp, 'cache2');
  const data = await loadTrainingData({ dataset: 'OpenAssistant/oasst1', cacheDir: cache, max_length: 64, tokenizer: tok, test_size: 0 });
  assert.equal(data.formatUsed, 'oasst1');
  assert.equal(data.train.length, 2);
  assert.ok(requests.some((r) => r.url === '/datasets/OpenAssistant/oasst1/resolve/main/data/train-00000-of-00001-abc.parquet'));
  assert.ok(data.datasetPath.endsWith(path.join('OpenAssistant', 'oasst1', 'data', 'train-00000-of-00001-abc.parquet')));
});

test('offline with an empty cache: a clear message naming the dataset', async () => {
  // A port that was just free: nothing listens there.
  process.env.HF_ENDPOINT = `http://127.0.0.1:${await closedPort()}`;
  await assert.rejects(resolveHubDataset('Open-Orca/SlimOrca', { cacheDir: path.join(tmp, 'cache3') }), (e: unknown) => {
    const msg = (e as Error).message;
    assert.match(msg, /^dataset: cannot download Open-Orca\/SlimOrca: /);
    assert.match(msg, /ECONNREFUSED/);
    assert.match(msg, /offline/);
    return true;
  });
});
