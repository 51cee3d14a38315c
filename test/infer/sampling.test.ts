// Logits processors and token choice with transformers' semantics (hand-computed expectations).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../native-runner/util/rng';
import {
  applyRepetitionPenalty,
  applyTopK,
  applyTopP,
  argmax,
  chooseToken,
  processLogits,
  sampleFromScores,
  samplingFrom,
} from '../../native-runner/infer/sampling';

const NEG = -Infinity;

test('repetition penalty divides positive and multiplies negative logits of seen ids, once each', () => {
  const s = new Float32Array([2, -2, 3, 0.5, -1]);
  applyRepetitionPenalty(s, [0, 1, 1, 0, 4], 2);
  assert.deepEqual(Array.from(s), [1, -4, 3, 0.5, -2]);
});

test('top-k keeps the k largest and ties with the k-th', () => {
  const s = new Float32Array([1, 5, 3, 3, 0, 4]);
  applyTopK(s, 3);
  assert.deepEqual(Array.from(s), [NEG, 5, 3, 3, NEG, 4]);
  const t = new Float32Array([1, 5, 3, 2]);
  applyTopK(t, 2);
  assert.deepEqual(Array.from(t), [NEG, 5, 3, NEG]);
});

test('top-p keeps the smallest top set reaching top_p (HF TopPLogitsWarper)', () => {
  // probabilities 0.5, 0.3, 0.15, 0.05
  const logits = () => new Float32Array([Math.log(0.15), Math.log(0.5), Math.log(0.05), Math.log(0.3)]);
  let s = logits();
  applyTopP(s, 0.75); // drop ascending cumsum ≤ 0.25: 0.05 (0.05), 0.15 (0.20)
  assert.deepEqual(Array.from(s).map((x) => x > NEG), [false, true, false, true]);
  s = logits();
  applyTopP(s, 0.85); // drop cumsum ≤ 0.15: only 0.05
  assert.deepEqual(Array.from(s).map((x) => x > NEG), [true, true, false, true]);
  s = logits();
  applyTopP(s, 0.3); // the top token alone carries 0.5 ≥ 0.3
  assert.deepEqual(Array.from(s).map((x) => x > NEG), [false, true, false, false]);
  s = logits();
  applyTopP(s, 0); // HF allows 0: only the most likely token remains
  assert.deepEqual(Array.from(s).map((x) => x > NEG), [false, true, false, false]);
  s = logits();
  applyTopP(s, 1);
  assert.ok(Array.from(s).every((x) => x > NEG));
});

test('top-p over a large vocabulary matches a full sort', () => {
  const rng = new Rng(7);
  const V = 5000;
  const s = new Float32Array(V);
  for (let i = 0; i < V; i++) s[i] = (rng.nextFloat() - 0.5) * 12;
  for (const p of [0.1, 0.5, 0.9, 0.99]) {
    const got = Float32Array.from(s);
    applyTopP(got, p);
    // reference: descending sort, keep while the mass before the token < p
    const max = Math.max(...s);
    const z = s.reduce((a, x) => a + Math.exp(x - max), 0);
    const order = Array.from(s.keys()).sort((a, b) => s[b]! - s[a]!);
    const keep = new Set<number>();
    let above = 0;
    for (const i of order) {
      if (above >= p) break;
      keep.add(i);
      above += Math.exp(s[i]! - max) / z;
    }
    const kept = Array.from(got.keys()).filter((i) => got[i]! > NEG);
    assert.equal(kept.length, keep.size, `top_p ${p}`);
    assert.ok(kept.every((i) => keep.has(i)));
  }
});

test('processing order: penalty → temperature → top-k → top-p; greedy uses only the penalty', () => {
  const logits = new Float32Array([4, 2, 1, -1]);
  const o = samplingFrom({ temperature: 0.5, topK: 2, topP: 1, repetitionPenalty: 2 });
  const got = processLogits(logits, [0], o);
  // penalty: [2,2,1,-1]; temperature 0.5: [4,4,2,-2]; top-2 keeps the tied 4s
  assert.deepEqual(Array.from(got), [4, 4, NEG, NEG]);
  const g = samplingFrom({ temperature: 0, repetitionPenalty: 3 });
  assert.equal(g.doSample, false);
  assert.deepEqual(Array.from(processLogits(logits, [0], g)), [Math.fround(4 / 3), 2, 1, -1]);
  assert.equal(chooseToken(logits, [0], g, new Rng(1)), 1);
  assert.equal(chooseToken(logits, [], g, new Rng(1)), 0);
});

test('argmax returns the first maximum', () => {
  assert.equal(argmax([1, 3, 3, 2]), 1);
});

test('seeded sampling is reproducible and follows the distribution', () => {
  const probs = [0.1, 0.6, 0.3, 0];
  const scores = new Float32Array(probs.map((p) => (p ? Math.log(p) : NEG)));
  const draw = (seed: number, n: number) => {
    const rng = new Rng(seed);
    return Array.from({ length: n }, () => sampleFromScores(scores, rng));
  };
  assert.deepEqual(draw(5, 50), draw(5, 50));
  assert.notDeepEqual(draw(5, 50), draw(6, 50));
  const n = 20000;
  const counts = [0, 0, 0, 0];
  for (const i of draw(11, n)) counts[i]!++;
  assert.equal(counts[3], 0);
  probs.forEach((p, i) => assert.ok(Math.abs(counts[i]! / n - p) < 0.015, `token ${i}: ${counts[i]! / n} vs ${p}`));
});

test('invalid sampling values are rejected with the option name', () => {
  assert.throws(() => samplingFrom({ temperature: 0.7, topP: -0.1 }), /--top_p/);
  assert.throws(() => samplingFrom({ temperature: 0.7, topP: 1.5 }), /--top_p/);
  assert.throws(() => samplingFrom({ temperature: 0.7, topK: -1 }), /--top_k/);
  assert.throws(() => samplingFrom({ temperature: -1 }), /--temperature/);
  assert.throws(() => samplingFrom({ temperature: 1, repetitionPenalty: 0 }), /--repetition_penalty/);
  assert.equal(samplingFrom({ temperature: 0.7 }).topK, 50); // HF generate default
});
