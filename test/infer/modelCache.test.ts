// The inference model cache under concurrent use (`sft serve`): a model in use is never closed by eviction,
// it is closed when released if the cache is still over its size.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chat, closeInferenceModels, holdInferenceModel, openInferenceModel, perplexityOfText, setInferenceCacheSize, type InferenceModel } from '../../native-runner/infer/service';

const MODEL = 'samples/tiny-gpt2-chat';

/** Copies of the tiny model in separate folders (the cache keys models by folder). */
function copies(n: number): { dirs: string[]; cleanup: () => void } {
  const root = mkdtempSync(join(tmpdir(), 'sft-cache-'));
  const dirs = Array.from({ length: n }, (_, i) => {
    const d = join(root, `m${i}`);
    cpSync(MODEL, d, { recursive: true });
    return d;
  });
  return { dirs, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

test('a generation completes while more models than the cache holds are opened meanwhile', async () => {
  const { dirs, cleanup } = copies(3);
  const [a, b, c] = dirs as [string, string, string];
  const previous = setInferenceCacheSize(2);
  try {
    const others: Promise<InferenceModel>[] = [];
    let tokens = 0;
    const req = { messages: [{ role: 'user' as const, content: 'Hi' }], temperature: 0, max_new_tokens: 60 };
    const r = await chat({
      ...req,
      model: a,
      onToken: () => {
        // mid-generation, like a side-by-side chat plus an evaluate: two more models, three in all
        if (++tokens === 2) others.push(openInferenceModel(b), openInferenceModel(c));
      },
    });
    assert.equal(others.length, 2, 'the other models were opened during the generation');
    await Promise.all(others);
    assert.equal(r.newTokens, 60);
    assert.equal(r.finishReason, 'length');
    // the same greedy answer as an undisturbed run on the same weights
    const again = await chat({ ...req, model: MODEL });
    assert.equal(r.raw, again.raw);
    // the last opened model was not closed either
    const cm = await openInferenceModel(c);
    assert.ok((await perplexityOfText(cm, 'Hello world, hello again.')).ppl > 1);
  } finally {
    setInferenceCacheSize(previous);
    await closeInferenceModels();
    cleanup();
  }
});

test('a held model survives eviction and is closed when released while the cache is over its size', async () => {
  const { dirs, cleanup } = copies(2);
  const [a, b] = dirs as [string, string];
  const previous = setInferenceCacheSize(1);
  try {
    const ma = await openInferenceModel(a);
    const release = holdInferenceModel(ma);
    const mb = await openInferenceModel(b); // over the size of 1: a is held, b was just opened
    await new Promise((r) => setTimeout(r, 10));
    assert.equal((await ma.lm.scoreRows([[1, 2, 3]]))[0]!.logprobs.length, 2);
    assert.equal((await mb.lm.scoreRows([[1, 2, 3]]))[0]!.logprobs.length, 2);
    assert.equal(await openInferenceModel(a), ma, 'a held model stays cached'); // and is now the most recently used
    release();
    release(); // a second call does nothing
    await new Promise((r) => setTimeout(r, 10));
    // over the size once a is released: the least recently used (b) is closed, a stays
    await assert.rejects(mb.lm.scoreRows([[1, 2]]), /the model was closed/);
    assert.throws(() => holdInferenceModel(mb), /the model was closed/);
    assert.equal(await openInferenceModel(a), ma);
    // held and least recently used when released: a itself is closed then
    const releaseA = holdInferenceModel(ma);
    const mb2 = await openInferenceModel(b);
    assert.notEqual(mb2, mb);
    assert.equal((await ma.lm.scoreRows([[1, 2]]))[0]!.logprobs.length, 1);
    releaseA();
    await new Promise((r) => setTimeout(r, 10));
    await assert.rejects(ma.lm.scoreRows([[1, 2]]), /the model was closed/);
    assert.equal((await mb2.lm.scoreRows([[1, 2]]))[0]!.logprobs.length, 1);
  } finally {
    setInferenceCacheSize(previous);
    await closeInferenceModels();
    cleanup();
  }
});

test('weights replaced during a generation: the old model finishes, then is closed', async () => {
  const { dirs, cleanup } = copies(1);
  const [a] = dirs as [string];
  const { utimesSync } = await import('node:fs');
  try {
    const old = await openInferenceModel(a);
    let reopened: Promise<InferenceModel> | undefined;
    const r = await chat({
      model: a,
      messages: [{ role: 'user', content: 'Hi' }],
      temperature: 0,
      max_new_tokens: 30,
      onToken: () => {
        if (reopened) return;
        const later = new Date(Date.now() + 5000);
        utimesSync(join(a, 'model.safetensors'), later, later);
        reopened = openInferenceModel(a);
      },
    });
    assert.equal(r.newTokens, 30);
    const fresh = await reopened!;
    assert.notEqual(fresh, old);
    await new Promise((res) => setTimeout(res, 10));
    await assert.rejects(old.lm.scoreRows([[1, 2]]), /the model was closed/);
    assert.equal((await fresh.lm.scoreRows([[1, 2]]))[0]!.logprobs.length, 1);
  } finally {
    await closeInferenceModels();
    cleanup();
  }
});
