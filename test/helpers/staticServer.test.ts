// The download tests' shared static-file server (test/helpers/staticServer.ts) answers as the hub and its
// CDN do: 200 with content-length, 206/416 for `Range: bytes=N-`, 302 redirects, JSON listings, 404s, and
// a response cut after n bytes once; nothing listens on closedPort().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { closedPort, hubFiles, startStaticServer } from './staticServer';

test('static server: files, ranges, redirects, JSON, 404 and a one-time cut', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-static-'));
  fs.writeFileSync(path.join(dir, 'a.bin'), Buffer.from('0123456789'));
  const repo = hubFiles('org/m', dir);
  const srv = await startStaticServer((url) => (url === '/old' ? { redirect: '/org/m/resolve/main/a.bin' } : url === '/list' ? { json: [1, 2] } : repo(url)));
  try {
    const get = (p: string, headers: Record<string, string> = {}) => fetch(`${srv.base}${p}`, { headers, redirect: 'manual' });
    const full = await get('/org/m/resolve/main/a.bin');
    assert.equal(full.status, 200);
    assert.equal(full.headers.get('content-length'), '10');
    assert.equal(await full.text(), '0123456789');
    const part = await get('/org/m/resolve/v2/a.bin', { range: 'bytes=4-' });
    assert.equal(part.status, 206);
    assert.equal(part.headers.get('content-range'), 'bytes 4-9/10');
    assert.equal(await part.text(), '456789');
    const past = await get('/org/m/resolve/main/a.bin', { range: 'bytes=10-' });
    assert.equal(past.status, 416);
    assert.equal(past.headers.get('content-range'), 'bytes */10');
    const moved = await get('/old');
    assert.equal(moved.status, 302);
    assert.equal(moved.headers.get('location'), '/org/m/resolve/main/a.bin');
    const list = await get('/list');
    assert.equal(list.headers.get('content-type'), 'application/json');
    assert.deepEqual(await list.json(), [1, 2]);
    for (const p of ['/org/m/resolve/main/nope.bin', '/org/m/resolve/main/', '/other/a.bin']) assert.equal((await get(p)).status, 404, p);
    srv.cutOnce('/org/m/resolve/main/a.bin', 3);
    const cut = await get('/org/m/resolve/main/a.bin');
    await assert.rejects(cut.text());
    assert.equal(await (await get('/org/m/resolve/main/a.bin')).text(), '0123456789', 'the cut happens once');
    assert.deepEqual(srv.requests[1], { url: '/org/m/resolve/v2/a.bin', range: 'bytes=4-' });
    assert.equal(srv.requests.length, 10);
  } finally {
    await srv.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  await assert.rejects(fetch(`http://127.0.0.1:${await closedPort()}/`));
});
