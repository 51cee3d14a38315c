// The in-graph sampler (infer/samplingGraph.ts) against the host sampler (sampling.ts chooseToken), one token at
// a time on small vocabularies: thousands of random logits / settings / uniforms, plus the boundary cases that
// a float32 or off-by-one implementation gets wrong (ties at the k-th value, top-p mass exactly at the bound,
// −∞ logits, negative logits under the repetition penalty, top_p 0, top_k ≥ V, a uniform next to 1).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { Graph } from '../../native-runner/engine/graph/graph';
import { chooseTokenInGraph, samplingFeeds, samplingInputs } from '../../native-runner/infer/samplingGraph';
import { chooseToken, type SamplingOptions } from '../../native-runner/infer/sampling';
import type { Rng } from '../../native-runner/util/rng';

const V = 16;

/** A session choosing one token: logits [V], presence [V], u and the sampling scalars → token. */
function buildChooser(): Promise<ort.InferenceSession> {
  const g = new Graph('choose');
  const logits = g.input('logits', 'float', [V]);
  const presence = g.input('presence', 'bool', [V]);
  const u = g.input('u', 'double', []);
  g.output(chooseTokenInGraph(g, logits, presence, u, samplingInputs(g), V), 'token');
  return ort.InferenceSession.create(g.toModelBytes(), { executionProviders: ['cpu'] });
}

let chooserP: Promise<ort.InferenceSession> | null = null;
const chooser = () => (chooserP ??= buildChooser());

async function graphChoice(logits: Float32Array, seen: number[], o: SamplingOptions, u: number): Promise<number> {
  const presence = new Uint8Array(V);
  for (const id of seen) presence[id] = 1;
  const r = await (await chooser()).run({
    logits: new ort.Tensor('float32', logits, [V]),
    presence: new ort.Tensor('bool', presence, [V]),
    u: new ort.Tensor('float64', Float64Array.of(u), []),
    ...samplingFeeds(o),
  });
  return Number((r.token!.data as BigInt64Array)[0]);
}

function hostChoice(logits: Float32Array, seen: number[], o: SamplingOptions, u: number): number {
  return chooseToken(logits, seen, o, { nextFloat: () => u } as unknown as Rng);
}

async function assertSame(logits: Float32Array, seen: number[], o: SamplingOptions, u: number, what: string): Promise<number> {
  const want = hostChoice(logits, seen, o, u);
  const got = await graphChoice(logits, seen, o, u);
  assert.equal(got, want, `${what}: graph chose ${got}, host ${want} (logits [${Array.from(logits).join(', ')}], seen [${seen}], ${JSON.stringify(o)}, u ${u})`);
  return got;
}

const sample = (o: Partial<SamplingOptions>): SamplingOptions => ({ doSample: true, temperature: 1, topP: 1, topK: 0, repetitionPenalty: 1, ...o });

test('in-graph choice equals the host sampler on 3,000 random cases (greedy and sampled, every warper)', async () => {
  let s = 12345;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const picks = new Set<number>();
  for (let trial = 0; trial < 3000; trial++) {
    const logits = new Float32Array(V);
    const scale = [0.5, 3, 12][trial % 3]!;
    for (let i = 0; i < V; i++) logits[i] = (rnd() - 0.5) * 2 * scale;
    // coarse values make ties; some −∞
    if (trial % 5 === 0) for (let i = 0; i < V; i++) logits[i] = Math.round(logits[i]!);
    if (trial % 7 === 0) logits[Math.floor(rnd() * V)] = -Infinity;
    const seen = Array.from({ length: Math.floor(rnd() * 6) }, () => Math.floor(rnd() * V));
    const o: SamplingOptions = {
      doSample: trial % 4 !== 0,
      temperature: [0.3, 0.7, 1, 1.7][Math.floor(rnd() * 4)]!,
      topK: [0, 1, 3, 5, V - 1, V, V + 4][Math.floor(rnd() * 7)]!,
      topP: [1, 0.9, 0.5, 0.2, 0][Math.floor(rnd() * 5)]!,
      repetitionPenalty: [1, 1.3, 0.8][Math.floor(rnd() * 3)]!,
    };
    picks.add(await assertSame(logits, seen, o, rnd(), `trial ${trial}`));
  }
  assert.ok(picks.size === V, `every id was chosen at least once (${picks.size})`);
});

test('boundary cases: ties at the k-th value, top-p mass exactly at the bound, top_p 0, uniforms at the edges', async () => {
  const ln = Math.log;
  // probabilities 0.5, 0.25, 0.125, 0.125 (+ 12 tokens at −∞): top_p 0.75 keeps 2 (mass above the 3rd is 0.75, not < 0.75)
  const exact = new Float32Array(V).fill(-Infinity);
  exact.set([ln(0.5), ln(0.25), ln(0.125), ln(0.125)].map(Math.fround), 0);
  for (const u of [0, 0.49, 0.5, 0.6666, 0.6667, 0.999999, 1 - 2 ** -53]) {
    const got = await assertSame(exact, [], sample({ topP: 0.75 }), u, `top_p 0.75 u ${u}`);
    assert.ok(got <= 1, 'only the two most likely tokens survive top_p 0.75');
    await assertSame(exact, [], sample({ topP: 0.7500001 }), u, `top_p just above 0.75, u ${u}`);
    await assertSame(exact, [], sample({ topP: 0 }), u, `top_p 0, u ${u}`);
    await assertSame(exact, [], sample({}), u, `no warper, u ${u}`);
  }
  // ties at the k-th largest value are all kept (5 tokens tie for 2nd place with k = 2)
  const ties = new Float32Array(V).fill(-3);
  ties.set([2, 1, 1, 1, 1, 1], 0);
  const chosen = new Set<number>();
  for (let i = 0; i < 40; i++) chosen.add(await assertSame(ties, [], sample({ topK: 2 }), i / 40, `tie k=2 #${i}`));
  assert.ok(chosen.size === 6, `top_k 2 with ties keeps 6 tokens (${[...chosen]})`);
  // equal logits: the descending order puts the lower index first (top_p cuts by index among equals)
  const flat = new Float32Array(V).fill(0.5);
  for (const u of [0, 0.3, 0.9]) await assertSame(flat, [], sample({ topP: 0.2 }), u, `flat top_p 0.2 u ${u}`);
  // repetition penalty, greedy: positive logits are divided (0.9/2 = 0.45 < 0.5), negative ones multiplied
  const pen = new Float32Array(V).fill(-5);
  pen.set([0.9, 0.5, 0.05], 0);
  assert.equal(await assertSame(pen, [0], { doSample: false, temperature: 1, topP: 1, topK: 0, repetitionPenalty: 2 }, 0, 'penalised greedy'), 1);
  assert.equal(await assertSame(pen, [0, 1], { doSample: false, temperature: 1, topP: 1, topK: 0, repetitionPenalty: 20 }, 0, 'penalised greedy 2'), 2);
  const neg = new Float32Array(V).fill(-5);
  neg.set([-0.1, -0.3], 0);
  assert.equal(await assertSame(neg, [0], { doSample: false, temperature: 1, topP: 1, topK: 0, repetitionPenalty: 5 }, 0, 'penalised negative'), 1);
  // a leading token at −∞ and u = 0: the first kept token, not index 0
  const lead = new Float32Array(V).fill(0);
  lead[0] = -Infinity;
  assert.equal(await assertSame(lead, [], sample({}), 0, 'u 0 after a removed token'), 1);
  // temperature in double: 3.9594786 and its float32 neighbour below both round to the same value after / 0.7
  // (in float32 arithmetic with 0.7 rounded to float they do not), so top_k 1 keeps both and u 0.9 picks the second
  const close = new Float32Array(V).fill(-Infinity);
  close.set([3.9594786167144775, 3.9594783782958984], 0);
  assert.equal(await assertSame(close, [], sample({ temperature: 0.7, topK: 1 }), 0.9, 'temperature rounding tie'), 1);
  // greedy takes the first of equal maxima
  const twoMax = new Float32Array(V).fill(0);
  twoMax[3] = 7;
  twoMax[9] = 7;
  assert.equal(await assertSame(twoMax, [], { doSample: false, temperature: 1, topP: 1, topK: 0, repetitionPenalty: 1 }, 0.99, 'first maximum'), 3);
});

test('non-finite scores (NaN logits of a diverged model, s / t overflowing float, all −∞): a valid id, the same as the host', async () => {
  const nan = new Float32Array(V).fill(NaN);
  const allNegInf = new Float32Array(V).fill(-Infinity);
  // logits / 1e-40 overflow float32: the positive ones become +∞ (first at index 2)
  const overflow = new Float32Array(V).fill(-1);
  overflow.set([5, 7], 2);
  const cases: [string, Float32Array, Partial<SamplingOptions>][] = [
    ['NaN logits', nan, {}],
    ['NaN logits, top_k 3', nan, { topK: 3 }],
    ['NaN logits, top_p 0.5, penalty 1.3', nan, { topP: 0.5, repetitionPenalty: 1.3 }],
    ['all −∞', allNegInf, {}],
    ['temperature 1e-40', overflow, { temperature: 1e-40 }],
    ['temperature 1e-40, top_k 2, top_p 0.5', overflow, { temperature: 1e-40, topK: 2, topP: 0.5 }],
  ];
  for (const [what, logits, o] of cases) {
    for (const u of [0, 0.5, 0.99]) {
      const got = await assertSame(logits, [1], sample(o), u, `${what}, u ${u}`);
      // before: the draw gave −1 (nothing "kept") or an arbitrary last index
      assert.ok(got >= 0 && got < V, `${what}: id ${got}`);
    }
  }
  assert.equal(await graphChoice(overflow, [], sample({ temperature: 1e-40 }), 0.7), 2, 'the first +∞ score');
  assert.equal(await graphChoice(nan, [], sample({}), 0.7), 0, 'NaN everywhere: the first id, as argmax');
});

test('some NaN logits: the first NaN id in the graph and on the host, greedy and sampled, whatever the warpers', async () => {
  const logits = new Float32Array(V).map((_, i) => i * 0.1); // the maximum is the last id
  logits[3] = NaN;
  logits[9] = NaN;
  const modes: SamplingOptions[] = [
    { doSample: false, temperature: 1, topP: 1, topK: 0, repetitionPenalty: 1 },
    { doSample: false, temperature: 1, topP: 1, topK: 0, repetitionPenalty: 1.3 },
    sample({}),
    sample({ topK: 3 }),
    sample({ topP: 0.5 }),
    sample({ temperature: 0.7, topP: 0.9, repetitionPenalty: 1.3 }),
  ];
  for (const o of modes) {
    for (const u of [0, 0.5, 0.99]) {
      // before: the graph took the NaN for greedy (ArgMax) but drew arbitrary ids when sampling; the host skipped NaN
      assert.equal(await assertSame(logits, [3, 15], o, u, `${JSON.stringify(o)}, u ${u}`), 3);
    }
  }
  // The host still consumes one uniform per sampled token (the next draw is unaffected).
  let draws = 0;
  const rng = { nextFloat: () => (draws++, 0.5) } as unknown as Rng;
  assert.equal(chooseToken(logits, [], sample({}), rng), 3);
  assert.equal(draws, 1);
  assert.equal(chooseToken(logits, [], { doSample: false, temperature: 1, topP: 1, topK: 0, repetitionPenalty: 1 }, rng), 3);
  assert.equal(draws, 1, 'greedy draws nothing');
});
