// Perplexity and log-likelihoods on the tiny model equal a reference made of full forward passes: for every
// predicted token, the generate graph run without a cache over exactly the context the rule prescribes,
// then log-softmax on the host. (A different graph and a different reduction than the score graph.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { openInferenceModel, perplexityOfText, closeInferenceModels } from '../../native-runner/infer/service';
import { logProbAndGreedy } from '../../native-runner/infer/causalLM';
import { CausalLMScorer, encodePair } from '../../native-runner/infer/loglik';
import { perplexityOfIds } from '../../native-runner/infer/perplexity';

const text = readFileSync('test/fixtures/infer/ppl.txt', 'utf8');

test('sliding-window perplexity equals per-token full forward passes with each window’s context', async () => {
  const m = await openInferenceModel('samples/tiny-gpt2-chat');
  const ids = m.model.tokenizer.encode(text);
  assert.ok(ids.length > 150, `text has ${ids.length} tokens`);
  const window = 64;
  const stride = 24;
  // reference: token i is predicted in the first window [k·S, k·S + W) with k·S < i, from that window's tokens
  let ref = 0;
  for (let i = 1; i < ids.length; i++) {
    const start = Math.max(0, Math.ceil((i - window + 1) / stride)) * stride;
    const logits = await m.lm.logitsWithoutCache(ids.slice(start, i));
    ref -= logProbAndGreedy(logits, ids[i]!).logprob;
  }
  const r = await perplexityOfText(m, text, { window, stride });
  assert.equal(r.predicted, ids.length - 1);
  assert.ok(Math.abs(r.nllSum - ref) / ref < 1e-5, `nll ${r.nllSum} vs reference ${ref}`);
  // window = whole context, several strides: the same where one window covers the text
  const short = ids.slice(0, 100);
  const full = await m.lm.scoreRows([short]);
  const fullNll = -full[0]!.logprobs.reduce((a, b) => a + b, 0);
  for (const s of [10, 50, 100]) {
    const p = await perplexityOfIds(m.lm, short, { window: 100, stride: s });
    assert.ok(Math.abs(p.nllSum - fullNll) < 1e-9 * fullNll);
  }
  // default window (n_positions 128) with stride 64 vs stride 32: both close to each other but not identical
  const a = await perplexityOfText(m, text);
  const b = await perplexityOfText(m, text, { stride: 32 });
  assert.equal(a.predicted, b.predicted);
  assert.ok(Math.abs(Math.log(a.ppl) - Math.log(b.ppl)) < 0.05);
});

test('log-likelihoods equal per-token full forward passes; is_greedy matches the host argmax', async () => {
  const m = await openInferenceModel('samples/tiny-gpt2-chat');
  const tok = m.model.tokenizer;
  const reqs = readFileSync('test/fixtures/infer/requests.jsonl', 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { context: string; continuation: string });
  // a context longer than n_positions (128) is truncated from the left
  reqs.push({ context: text, continuation: ' The end.' });
  const got = await new CausalLMScorer(m.lm, tok, 3).loglikelihood(reqs);
  for (const [i, r] of reqs.entries()) {
    const p = encodePair(tok, r.context, r.continuation);
    const all = [...p.contextIds, ...p.continuationIds].slice(-(m.lm.nPositions + 1));
    let ll = 0;
    let greedy = true;
    for (let j = all.length - p.continuationIds.length; j < all.length; j++) {
      const s = logProbAndGreedy(await m.lm.logitsWithoutCache(all.slice(0, j)), all[j]!);
      ll += s.logprob;
      greedy &&= s.greedy;
    }
    assert.ok(Math.abs(got[i]!.loglik - ll) < 1e-4 + 1e-5 * Math.abs(ll), `request ${i}: ${got[i]!.loglik} vs ${ll}`);
    assert.equal(got[i]!.isGreedy, greedy);
    assert.equal(got[i]!.nTokens, p.continuationIds.length);
  }
  await closeInferenceModels();
});

test('perplexity and log-likelihoods equal the training engine’s own forward pass (createForward)', async () => {
  const { createForward } = await import('../../native-runner/engine/trainingEngine');
  const m = await openInferenceModel('samples/tiny-gpt2-chat');
  const ids = m.model.tokenizer.encode(text).slice(0, 128);
  const fwd = await createForward(m.model.config, m.model.params, 'cpu', { output: 'logprobs' });
  const V = m.model.config.vocab_size;
  const T = ids.length;
  const lp = await fwd.run({ B: 1, T, inputIds: Int32Array.from(ids) });
  let engineNll = 0;
  for (let t = 0; t + 1 < T; t++) engineNll -= lp[t * V + ids[t + 1]!]!;
  await fwd.dispose();
  for (const stride of [16, 64, 128]) {
    const r = await perplexityOfIds(m.lm, ids, { window: 128, stride });
    assert.ok(Math.abs(r.nllSum - engineNll) / engineNll < 1e-6, `stride ${stride}: ${r.nllSum} vs engine ${engineNll}`);
  }
  // a log-likelihood request whose context fills the model: continuation log-probs from the same pass
  const ctx = m.model.tokenizer.decode(ids.slice(0, 100));
  const [res] = await new CausalLMScorer(m.lm, m.model.tokenizer).loglikelihood([{ context: ctx, continuation: m.model.tokenizer.decode(ids.slice(100, 110)) }]);
  const p = encodePair(m.model.tokenizer, ctx, m.model.tokenizer.decode(ids.slice(100, 110)));
  assert.deepEqual([...p.contextIds, ...p.continuationIds], ids.slice(0, 110)); // the text round-trips to the same ids
  let ll = 0;
  for (let t = 99; t < 109; t++) ll += lp[t * V + ids[t + 1]!]!;
  assert.ok(Math.abs(res!.loglik - ll) < 1e-4, `${res!.loglik} vs ${ll}`);
  await closeInferenceModels();
});
