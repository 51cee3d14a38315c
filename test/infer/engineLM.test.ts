// The onnxruntime-backed CausalLM on the tiny fixture: golden greedy output, golden per-position logsumexp
// and loss, cached == uncached logits (1e-5), scoring independent of batching and padding.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadModel } from '../../native-runner/model/modelFolder';
import { EngineLM } from '../../native-runner/infer/engineLM';
import { generate } from '../../native-runner/infer/generate';

const golden = JSON.parse(readFileSync('test/fixtures/golden/tiny-golden.json', 'utf8'));
const modelP = loadModel('samples/tiny-gpt2-chat');
let lmP: Promise<EngineLM> | null = null;
const lm = () => (lmP ??= modelP.then((m) => new EngineLM(m.config, m.params, { device: 'cpu' })));

test('greedy generation equals transformers generate (tiny-golden generate.output)', async () => {
  const r = await generate(await lm(), golden.generate.prompt, { maxNewTokens: 12, stopIds: [] });
  assert.deepEqual([...r.promptIds, ...r.newIds], golden.generate.output);
});

test('cached decoding gives the same logits as full forward passes (1e-5)', async () => {
  const m = await lm();
  const seq = [...golden.forward.input_ids[1].slice(0, 20)] as number[];
  const s = await m.startGeneration(seq.slice(0, 5));
  let maxDiff = 0;
  for (let t = 5; t <= seq.length; t++) {
    const full = await m.logitsWithoutCache(seq.slice(0, t));
    const cached = s.logits;
    for (let i = 0; i < full.length; i++) maxDiff = Math.max(maxDiff, Math.abs(full[i]! - cached[i]!));
    if (t < seq.length) await s.push(seq[t]!);
  }
  s.dispose();
  assert.ok(maxDiff < 1e-5, `max |cached − uncached| = ${maxDiff}`);
});

test('scoring reproduces the golden loss, per-position logsumexp (1e-4) and argmax', async () => {
  const m = await lm();
  const ids: number[][] = golden.forward.input_ids;
  const labels: number[][] = golden.forward.labels;
  // loss = mean NLL over label positions (HF shift: position t predicts labels[t+1])
  const scores = await m.scoreRows(ids);
  let nll = 0;
  let n = 0;
  labels.forEach((row, b) => {
    for (let t = 0; t + 1 < row.length; t++) {
      if (row[t + 1] === -100) continue;
      nll -= scores[b]!.logprobs[t]!;
      n++;
    }
  });
  const loss = nll / n;
  assert.ok(Math.abs(loss - golden.forward.loss) < 1e-5 * golden.forward.loss, `loss ${loss} vs ${golden.forward.loss}`);
  // per-position logsumexp and argmax at every real position (padding positions differ by design: right
  // padding is never read back, HF's padded queries use a key mask we do not need)
  let maxLse = 0;
  ids.forEach((r, b) => {
    const real = (golden.forward.attention_mask[b] as number[]).reduce((x, y) => x + y, 0);
    for (let t = 0; t < real - 1; t++) {
      const want = golden.forward.lse[b][t] as number;
      maxLse = Math.max(maxLse, Math.abs(scores[b]!.lse[t]! - want) / Math.abs(want));
      assert.equal(scores[b]!.argmax[t], golden.forward.argmax[b][t], `argmax row ${b} position ${t}`);
      assert.equal(scores[b]!.greedy[t], scores[b]!.argmax[t] === r[t + 1] ? 1 : 0);
    }
  });
  assert.ok(maxLse < 1e-4, `lse relative error ${maxLse}`);
});

test('scores do not depend on batch composition or padding', async () => {
  const m = await lm();
  const a = golden.forward.input_ids[0].slice(0, 17) as number[];
  const b = golden.forward.input_ids[1].slice(0, 40) as number[];
  const [alone] = await m.scoreRows([a]);
  const [, padded] = await m.scoreRows([b, a]); // a padded to b's length
  let d = 0;
  for (let t = 0; t < alone!.logprobs.length; t++) d = Math.max(d, Math.abs(alone!.logprobs[t]! - padded!.logprobs[t]!));
  assert.ok(d < 1e-5, `batch/padding changed log-probs by ${d}`);
  assert.deepEqual(Array.from(alone!.greedy), Array.from(padded!.greedy));
});

test('out-of-vocabulary ids and over-long rows are SftErrors, not native crashes', async () => {
  const m = await lm();
  await assert.rejects(m.scoreRows([[1, 2, 50260]]), /token id 50260 is outside the vocabulary/);
  await assert.rejects(m.scoreRows([new Array(130).fill(1)]), /row 1 has 130 tokens; scoring needs 2\.\.129/);
  await assert.rejects(m.startGeneration(new Array(129).fill(1)), /the model takes 1\.\.128/);
  const s = await m.startGeneration([1]);
  await assert.rejects(s.push(-1), /token id -1/);
  s.dispose();
  await m.dispose();
});
