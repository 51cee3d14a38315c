// Downloads against a local HTTP server serving samples/tiny-gpt2-chat: redirects, optional 404s, resume
// of a partial file via Range, offline message, and `sft download` into a cache.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { downloadFile, downloadModel, HttpStatusError } from '../../native-runner/util/download';
import { SftError } from '../../native-runner/util/errors';
import { closedPort, fileIn, hubFiles, startStaticServer, type StaticServer } from '../helpers/staticServer';

const MODEL_DIR = path.join(__dirname, '../../samples/tiny-gpt2-chat');
let server: StaticServer;
let base = '';
let requests: StaticServer['requests'] = [];

before(async () => {
  // /cdn/<file> serves bytes; /tiny/model/resolve/<rev>/model.safetensors redirects to the CDN like the hub
  const repo = hubFiles('tiny/model', MODEL_DIR);
  server = await startStaticServer((url) => {
    if (/^\/tiny\/model\/resolve\/[^/]+\/model\.safetensors$/.test(url)) return { redirect: '/cdn/model.safetensors' };
    if (url.startsWith('/cdn/')) return fileIn(MODEL_DIR, url.slice('/cdn/'.length));
    return repo(url);
  });
  base = server.base;
  requests = server.requests;
});
after(() => server.close());

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'sft-dl-'));
}

test('a cut-off download leaves .part; the next call resumes with Range and the file is byte-identical', async () => {
  const dir = tmp();
  try {
    const dest = path.join(dir, 'model.safetensors');
    const original = fs.readFileSync(path.join(MODEL_DIR, 'model.safetensors'));
    server.cutOnce('/cdn/model.safetensors', 1_000_000);
    await assert.rejects(downloadFile(`${base}/tiny/model/resolve/main/model.safetensors`, dest), (e: unknown) => {
      assert.ok(e instanceof SftError);
      return true;
    });
    assert.equal(fs.existsSync(dest), false, 'no torn final file');
    const partSize = fs.statSync(`${dest}.part`).size;
    assert.ok(partSize >= 1_000_000 && partSize < original.length, `part ${partSize}`);
    requests.length = 0;
    const seen: number[] = [];
    const r = await downloadFile(`${base}/tiny/model/resolve/main/model.safetensors`, dest, { onProgress: (p) => seen.push(p.received) });
    assert.equal(r.resumedFrom, partSize);
    assert.equal(r.bytes, original.length);
    assert.ok(requests.some((q) => q.url === '/cdn/model.safetensors' && q.range === `bytes=${partSize}-`), JSON.stringify(requests));
    assert.ok(fs.readFileSync(dest).equals(original));
    assert.equal(fs.existsSync(`${dest}.part`), false);
    assert.equal(seen[seen.length - 1], original.length);
    assert.ok(seen[0]! > partSize);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a complete .part (416 with matching size) is renamed; 404 is an HttpStatusError naming the URL', async () => {
  const dir = tmp();
  try {
    const dest = path.join(dir, 'config.json');
    fs.copyFileSync(path.join(MODEL_DIR, 'config.json'), `${dest}.part`);
    const r = await downloadFile(`${base}/cdn/config.json`, dest);
    assert.equal(r.resumedFrom, r.bytes);
    assert.equal(fs.readFileSync(dest, 'utf8'), fs.readFileSync(path.join(MODEL_DIR, 'config.json'), 'utf8'));
    await assert.rejects(downloadFile(`${base}/cdn/nope.bin`, path.join(dir, 'nope.bin')), (e: unknown) => {
      assert.ok(e instanceof HttpStatusError);
      assert.equal(e.status, 404);
      assert.match(e.message, /\/cdn\/nope\.bin: HTTP 404/);
      return true;
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('an unreachable host gives a clear offline message', async () => {
  const port = await closedPort();
  const dir = tmp();
  try {
    await assert.rejects(downloadFile(`http://127.0.0.1:${port}/x`, path.join(dir, 'x')), /cannot reach 127\.0\.0\.1:\d+ \(ECONNREFUSED\): are you offline\?/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('downloadModel fetches config, weights (via redirect) and the tokenizer files that exist into $SFT_CACHE; a second call uses the cache', async () => {
  const cache = tmp();
  const saved = { HF_ENDPOINT: process.env.HF_ENDPOINT, SFT_CACHE: process.env.SFT_CACHE };
  process.env.HF_ENDPOINT = base;
  process.env.SFT_CACHE = cache;
  try {
    const outcomes: Record<string, string> = {};
    const dir = await downloadModel('tiny/model', { onFile: (f, o) => (outcomes[f] = o) });
    assert.equal(dir, path.join(cache, 'models', 'tiny', 'model'));
    assert.ok(fs.existsSync(path.join(dir, '.sft-download.json')));
    for (const f of fs.readdirSync(MODEL_DIR)) assert.ok(fs.readFileSync(path.join(dir, f)).equals(fs.readFileSync(path.join(MODEL_DIR, f))), f);
    assert.equal(outcomes['model.safetensors'], 'downloaded');
    assert.equal(outcomes['vocab.json'], 'absent');
    assert.equal(outcomes['merges.txt'], 'absent');
    requests.length = 0;
    const again: Record<string, string> = {};
    await downloadModel('tiny/model', { onFile: (f, o) => (again[f] = o) });
    assert.equal(again['model.safetensors'], 'cached');
    assert.equal(requests.length, 0, 'a completed download needs no network (works offline)');
    // a damaged file invalidates the marker: only what is missing is fetched again
    fs.rmSync(path.join(dir, 'tokenizer.json'));
    await downloadModel('tiny/model');
    assert.ok(requests.some((q) => q.url.endsWith('/tokenizer.json')));
    assert.ok(!requests.some((q) => q.url.includes('model.safetensors')));
    await assert.rejects(downloadModel('no/such-model', { to: path.join(cache, 'x') }), /no model "no\/such-model" at revision "main"/);
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    fs.rmSync(cache, { recursive: true, force: true });
  }
});

test('downloadModel: a sharded index that is not JSON or names a shard outside the folder is an SftError naming the index', async () => {
  const repo = tmp();
  const to = tmp();
  fs.copyFileSync(path.join(MODEL_DIR, 'config.json'), path.join(repo, 'config.json'));
  const srv = await startStaticServer(hubFiles('bad/index', repo));
  const saved = process.env.HF_ENDPOINT;
  process.env.HF_ENDPOINT = srv.base;
  try {
    const index = path.join(repo, 'model.safetensors.index.json');
    fs.writeFileSync(index, '{"weight_map": {"a": "model-1.safetensors",}');
    await assert.rejects(downloadModel('bad/index', { to }), (e: unknown) => e instanceof SftError && /model\.safetensors\.index\.json: invalid JSON/.test(e.message));
    fs.rmSync(path.join(to, 'model.safetensors.index.json'));
    fs.writeFileSync(index, JSON.stringify({ weight_map: { a: '../escape.safetensors' } }));
    await assert.rejects(downloadModel('bad/index', { to }), (e: unknown) => e instanceof SftError && /must name a file in the same folder/.test(e.message));
  } finally {
    if (saved === undefined) delete process.env.HF_ENDPOINT;
    else process.env.HF_ENDPOINT = saved;
    await srv.close();
    fs.rmSync(repo, { recursive: true, force: true });
    fs.rmSync(to, { recursive: true, force: true });
  }
});
