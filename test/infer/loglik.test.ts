// lm-eval log-likelihood requests: pair encoding, left truncation, loglik/is_greedy against direct sums.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadTokenizer } from '../../native-runner/model/tokenizer';
import { CausalLMScorer, encodePair, scoringRow } from '../../native-runner/infer/loglik';
import { logProbAndGreedy } from '../../native-runner/infer/causalLM';
import { ToyLM, byteTokenizer } from './toyModels';

const gpt2 = loadTokenizer('samples/tiny-gpt2-chat');

test('continuation ids = enc(context + continuation)[len(enc(context)):], trailing context spaces move over', () => {
  const p = encodePair(gpt2, 'The capital of France is', ' Paris');
  assert.deepEqual(p.contextIds, gpt2.encode('The capital of France is'));
  assert.deepEqual(p.continuationIds, gpt2.encode('The capital of France is Paris').slice(p.contextIds.length));
  assert.equal(gpt2.decode(p.continuationIds), ' Paris');
  // "is " + "Paris" is scored as "is" + " Paris" (lm-eval's _encode_pair)
  const q = encodePair(gpt2, 'The capital of France is ', 'Paris');
  assert.deepEqual(q, p);
  // empty context: [eos] then enc(continuation)
  const e = encodePair(gpt2, '', 'Hello world');
  assert.deepEqual(e.contextIds, [50256]);
  assert.deepEqual(e.continuationIds, gpt2.encode('Hello world'));
  // merges across the boundary stay with the continuation (token-level split of the whole string)
  const m = encodePair(gpt2, 'un', 'believable');
  assert.deepEqual(m.continuationIds, gpt2.encode('unbelievable').slice(gpt2.encode('un').length));
});

test('rows keep the last n_positions + 1 tokens', () => {
  assert.deepEqual(scoringRow({ contextIds: [1, 2, 3, 4, 5], continuationIds: [6, 7] }, 4), [3, 4, 5, 6, 7]);
  assert.deepEqual(scoringRow({ contextIds: [1], continuationIds: [6, 7] }, 4), [1, 6, 7]);
});

test('loglik and is_greedy equal direct sums over the continuation; batching and order do not matter', async () => {
  const tok = byteTokenizer();
  const lm = ToyLM.random(260, 12, 4, 0.03);
  const reqs = [
    { context: 'abc', continuation: 'de' },
    { context: 'hello there, general', continuation: ' kenobi' }, // 20+7 bytes > 12 + 1: left-truncated
    { context: '', continuation: 'xy' },
    { context: 'q ', continuation: 'r' },
  ];
  const direct = reqs.map((r) => {
    const p = encodePair(tok, r.context, r.continuation);
    const row = [...p.contextIds, ...p.continuationIds].slice(-(12 + 1));
    let ll = 0;
    let greedy = true;
    const n = p.continuationIds.length;
    for (let t = row.length - 1 - n; t < row.length - 1; t++) {
      const s = logProbAndGreedy(lm.logitsAt(row[t]!, t), row[t + 1]!);
      ll += s.logprob;
      greedy &&= s.greedy;
    }
    return { loglik: ll, isGreedy: greedy, nTokens: n };
  });
  for (const bs of [1, 3, 8]) {
    const got = await new CausalLMScorer(lm, tok, bs).loglikelihood(reqs);
    got.forEach((g, i) => {
      assert.ok(Math.abs(g.loglik - direct[i]!.loglik) < 1e-9, `request ${i}`);
      assert.equal(g.isGreedy, direct[i]!.isGreedy);
      assert.equal(g.nTokens, direct[i]!.nTokens);
    });
  }
  assert.equal(direct[3]!.nTokens, 2); // "q" + " r"
  // the long request was truncated to 13 tokens
  assert.ok(lm.calls.flat().every((row) => row.length <= 13));
  // a model that always predicts the next byte of the continuation is greedy
  const table = new Float32Array(260 * 260);
  const text = 'abcdefg';
  for (let i = 0; i + 1 < text.length; i++) table[text.charCodeAt(i) * 260 + text.charCodeAt(i + 1)] = 5;
  const [g] = await new CausalLMScorer(new ToyLM(260, 64, table), tok).loglikelihood([{ context: 'abc', continuation: 'defg' }]);
  assert.equal(g!.isGreedy, true);
  const [ng] = await new CausalLMScorer(new ToyLM(260, 64, table), tok).loglikelihood([{ context: 'abc', continuation: 'dexg' }]);
  assert.equal(ng!.isGreedy, false);
  await assert.rejects(new CausalLMScorer(lm, tok).loglikelihood([{ context: 'a', continuation: '' }]), /request 1: the continuation encodes to no tokens/);
});
