// Sliding-window perplexity: window plan invariants and values against a direct per-token reference.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planWindows, perplexityOfIds } from '../../native-runner/infer/perplexity';
import { logProbAndGreedy } from '../../native-runner/infer/causalLM';
import { ToyLM } from './toyModels';

test('each token after the first is predicted exactly once, in the first window holding it past its start', () => {
  for (const [n, w, s] of [
    [10, 4, 2],
    [10, 4, 1],
    [10, 4, 3],
    [9, 9, 4],
    [100, 16, 8],
    [17, 16, 8],
    [3, 16, 8],
    [2, 2, 1],
  ] as const) {
    const plan = planWindows(n, w, s);
    const count = new Array(n).fill(0);
    for (const win of plan) {
      assert.ok(win.end - win.start <= w && win.start % s === 0);
      assert.ok(win.predictFrom > win.start);
      for (let i = win.predictFrom; i < win.end; i++) count[i]++;
    }
    assert.deepEqual(count, [0, ...new Array(n - 1).fill(1)], `n=${n} w=${w} s=${s}`);
    // first window containing each token at a position > 0
    for (let i = 1; i < n; i++) {
      const owner = plan.find((win) => i >= win.predictFrom && i < win.end)!;
      const first = Math.max(0, Math.ceil((i - w + 1) / s)) * s;
      assert.equal(owner.start, first, `token ${i}`);
    }
  }
  assert.deepEqual(planWindows(10, 4, 2), [
    { start: 0, end: 4, predictFrom: 1 },
    { start: 2, end: 6, predictFrom: 4 },
    { start: 4, end: 8, predictFrom: 6 },
    { start: 6, end: 10, predictFrom: 8 },
  ]);
  assert.throws(() => planWindows(10, 4, 5), /--stride/);
  assert.throws(() => planWindows(10, 1, 1), /--window/);
});

/** NLL of token i computed directly from the toy's logits with the context of the window starting at `start`. */
function directNll(lm: ToyLM, ids: number[], i: number, start: number): number {
  return -logProbAndGreedy(lm.logitsAt(ids[i - 1]!, i - 1 - start), ids[i]!).logprob;
}

test('windowed perplexity equals the per-token reference with each window’s context', async () => {
  const lm = ToyLM.random(30, 64, 5, 0.08); // logits depend on position: the window start matters
  const ids = Array.from({ length: 150 }, (_, i) => (i * 7 + (i >> 2)) % 30);
  for (const [w, s] of [
    [64, 32],
    [16, 5],
    [10, 1],
  ] as const) {
    const r = await perplexityOfIds(lm, ids, { window: w, stride: s, batchSize: 3 });
    let ref = 0;
    for (let i = 1; i < ids.length; i++) {
      const start = Math.max(0, Math.ceil((i - w + 1) / s)) * s;
      ref += directNll(lm, ids, i, start);
    }
    assert.equal(r.predicted, ids.length - 1);
    assert.equal(r.tokens, ids.length);
    assert.ok(Math.abs(r.nllSum - ref) < 1e-9 * ref, `w=${w} s=${s}: ${r.nllSum} vs ${ref}`);
    assert.ok(Math.abs(r.ppl - Math.exp(ref / (ids.length - 1))) < 1e-9 * r.ppl);
  }
});

test('window = length is one full forward pass; batch size does not change the result', async () => {
  const lm = ToyLM.random(30, 64, 6, 0.05);
  const ids = Array.from({ length: 40 }, (_, i) => (i * 11) % 30);
  const [full] = await lm.scoreRows([ids]);
  const ref = -full!.logprobs.reduce((a, b) => a + b, 0);
  for (const stride of [1, 7, 20, 40]) {
    const r = await perplexityOfIds(lm, ids, { window: 40, stride });
    assert.equal(r.windows, 1);
    assert.ok(Math.abs(r.nllSum - ref) < 1e-12 * ref);
  }
  const a = await perplexityOfIds(lm, ids, { window: 8, stride: 3, batchSize: 1 });
  const b = await perplexityOfIds(lm, ids, { window: 8, stride: 3, batchSize: 16 });
  assert.equal(a.nllSum, b.nllSum);
  // a context-free (bigram) model gives the same perplexity for every window/stride
  const bigram = ToyLM.random(30, 64, 6, 0);
  const base = await perplexityOfIds(bigram, ids, { window: 40 });
  for (const [w, s] of [
    [8, 4],
    [5, 1],
    [20, 10],
  ] as const) {
    const r = await perplexityOfIds(bigram, ids, { window: w, stride: s });
    assert.ok(Math.abs(r.ppl - base.ppl) < 1e-9 * base.ppl);
  }
  // ... while the position-dependent model does not (the test above is not vacuous)
  assert.notEqual((await perplexityOfIds(lm, ids, { window: 8, stride: 4 })).nllSum, ref);
  // the default window is the model's context, the default stride half of it
  const d = await perplexityOfIds(lm, Array.from({ length: 100 }, (_, i) => i % 30));
  assert.equal(d.windows, 3); // [0,64) [32,96) [64,100)
  await assert.rejects(perplexityOfIds(lm, ids, { window: 65 }), /n_positions 64/);
});
