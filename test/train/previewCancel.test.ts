// `sft serve`'s preview request honours cancel: the request's AbortSignal reaches the data layer, which stops
// reading / tokenising with a "cancelled" error and caches nothing; a later preview of the file is complete.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dataServices } from '../../native-runner/train/services';
import { clearPreviewCache } from '../../native-runner/data/preview';
import type { RequestContext } from '../../native-runner/train/server';

const MODEL = path.resolve('samples/tiny-gpt2-chat');
const N = 6000;

function context(signal: AbortSignal): RequestContext {
  return { id: 1, signal, token: () => undefined, log: () => undefined };
}

test('a cancelled preview stops with a cancelled error and leaves nothing half-cached', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-prevcancel-'));
  try {
    const lines = Array.from({ length: N }, (_, i) => JSON.stringify({ instruction: `Question number ${i}?`, context: '', response: `Answer number ${i}, with a few more words to tokenise.`, category: 'open_qa' }));
    fs.writeFileSync(path.join(dir, 'big.jsonl'), lines.join('\n') + '\n');
    const services = dataServices(dir);
    const params = { dataset: 'big.jsonl', dataset_format: 'auto', model: MODEL, offset: 0, limit: 2 };
    clearPreviewCache();

    // already cancelled: nothing is read
    const pre = new AbortController();
    pre.abort();
    await assert.rejects(services.preview(params, context(pre.signal)), /cancelled/);

    // cancelled while the file is being read / tokenised (the first event-loop turn after the start)
    const ac = new AbortController();
    const t0 = performance.now();
    const running = services.preview(params, context(ac.signal));
    setImmediate(() => ac.abort());
    await assert.rejects(running, /big\.jsonl: (reading|preview) cancelled/);
    const cancelledMs = performance.now() - t0;

    // not cached from the cancelled run: a full preview sees every example
    const t1 = performance.now();
    const full = await services.preview(params, context(new AbortController().signal));
    const fullMs = performance.now() - t1;
    assert.equal(full.total, N);
    assert.equal(full.examples.length, 2);
    assert.ok(cancelledMs < fullMs, `cancelled after ${cancelledMs.toFixed(0)} ms, a full preview takes ${fullMs.toFixed(0)} ms`);
  } finally {
    clearPreviewCache();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
