// The request-level API used by `sft serve`: model cache and reload, streamed chat, cancellation, eval loss.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chat, closeInferenceModels, evalLossOfExamples, openInferenceModel } from '../../native-runner/infer/service';

const MODEL = 'samples/tiny-gpt2-chat';
const golden = JSON.parse(readFileSync('test/fixtures/golden/tiny-golden.json', 'utf8'));

test('models are cached per folder and reloaded when the weights file changes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sft-infer-'));
  try {
    cpSync(MODEL, dir, { recursive: true });
    const a = await openInferenceModel(dir);
    const b = await openInferenceModel(dir);
    assert.equal(a, b);
    const later = new Date(Date.now() + 5000);
    utimesSync(join(dir, 'model.safetensors'), later, later);
    const c = await openInferenceModel(dir);
    assert.notEqual(c, a);
    assert.equal(c.defaultMode, 'chat');
    // only the most recently used models stay loaded; an evicted one is closed
    const { setInferenceCacheSize } = await import('../../native-runner/infer/service');
    setInferenceCacheSize(1);
    const d = await openInferenceModel(MODEL);
    await new Promise((r) => setTimeout(r, 10));
    await assert.rejects(c.lm.scoreRows([[1, 2]]), /the model was closed/);
    assert.equal(await openInferenceModel(MODEL), d);
    setInferenceCacheSize(2);
  } finally {
    await closeInferenceModels();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('chat streams the answer (leading whitespace held back) and returns it stripped', async () => {
  const pieces: string[] = [];
  const r = await chat({ model: MODEL, messages: [{ role: 'user', content: 'Hi' }], temperature: 0, max_new_tokens: 12, onToken: (t) => pieces.push(t) });
  // greedy from the golden prompt: six "\n" then six copies of token 11924 (no stop token in between)
  assert.equal(r.promptTokens, 6);
  assert.equal(r.newTokens, 12);
  assert.equal(r.finishReason, 'length');
  assert.equal(pieces.join('').trimEnd(), r.text);
  assert.ok(!pieces[0]!.startsWith('\n'));
  assert.equal(r.raw.slice(0, 6), '\n'.repeat(6));
  // the recipe's 150 new tokens exceed the tiny model's 128 positions: the prompt is kept, the answer stops at the end
  const long = await chat({ model: MODEL, messages: [{ role: 'user', content: 'Hi' }], temperature: 0, onToken: () => {} });
  assert.equal(long.promptTokens, 6);
  assert.ok(long.finishReason === 'eos' || long.newTokens === 128 - 6 + 1, `${long.newTokens} tokens, ${long.finishReason}`);
  const { loadTokenizer } = await import('../../native-runner/model/tokenizer');
  assert.equal(r.text, loadTokenizer(MODEL).decode(new Array(6).fill(11924)).trim());
});

test('chat cancellation returns the partial answer with finish reason cancelled', async () => {
  const ac = new AbortController();
  let n = 0;
  const r = await chat({
    model: MODEL,
    messages: [{ role: 'user', content: 'Tell me a long story' }],
    seed: 5,
    max_new_tokens: 50,
    signal: ac.signal,
    onToken: () => {
      if (++n === 3) ac.abort();
    },
  });
  assert.equal(r.finishReason, 'cancelled');
  assert.ok(r.newTokens >= 3 && r.newTokens < 50, `${r.newTokens} tokens`);
});

test('eval loss over tokenised examples equals the golden mean NLL over label positions', async () => {
  const m = await openInferenceModel(MODEL);
  const examples = (golden.forward.input_ids as number[][]).map((ids, b) => {
    const real = (golden.forward.attention_mask[b] as number[]).reduce((x, y) => x + y, 0);
    const labels = (golden.forward.labels[b] as number[]).slice(0, real);
    return { text: '', inputIds: ids.slice(0, real), trained: Uint8Array.from(labels.map((l) => (l === -100 ? 0 : 1))), fullLength: real, source: { file: 'golden', line: b + 1 } };
  });
  const r = await evalLossOfExamples(m, examples, { batchSize: 1 });
  const expectedTokens = (golden.forward.labels as number[][]).flat().filter((l) => l !== -100).length;
  assert.equal(r.tokens, expectedTokens);
  assert.ok(Math.abs(r.loss - golden.forward.loss) < 1e-5 * golden.forward.loss, `${r.loss} vs ${golden.forward.loss}`);
  await closeInferenceModels();
});

test('perplexityOfFile reads the file and names it when missing', async () => {
  const { perplexityOfFile, perplexityOfText } = await import('../../native-runner/infer/service');
  const r = await perplexityOfFile(MODEL, 'test/fixtures/infer/ppl.txt', { window: 64, stride: 16 });
  const m = await openInferenceModel(MODEL);
  const t = await perplexityOfText(m, readFileSync('test/fixtures/infer/ppl.txt', 'utf8'), { window: 64, stride: 16 });
  assert.equal(r.nllSum, t.nllSum);
  await assert.rejects(perplexityOfFile(MODEL, 'no-such.txt'), /no-such\.txt: cannot read: ENOENT/);
  await closeInferenceModels();
});
