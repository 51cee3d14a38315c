// The bf16Logits variant (ModelVariants.bf16Logits, SFT_BF16_LOGITS=1; engine/crossEntropy.ts nllFromBf16Softmax and
// lmHeadNll): the vocabulary softmax in bfloat16, p kept in bf16, nll / lse = (x_j − x_t) − log p[j] at an index j
// found from group sums of p.
// - nll / lse in 'emulate' on bf16-valued logits, against float64 of the same logits, at V = 50257 (groups 1733 × 29),
//   V = 50260 (359 × 140) and V = 509 (prime: one stage), on rows built to break it: a target 200 below the max
//   (p[target] is 0 in bf16: −log p[target] would be +inf), ties at the max, all-equal logits, a confident target,
//   |x| ≈ 1000, a group heavier than the one holding the max, a target ~90 below the max: every value within the
//   header's bound −log(1 − u) + 2e-5 + 2^-22·(|lse| + |x|), u = 2^-8 — and the graph's values equal a JS model of
//   the documented selection and formula on the graph's own p to within 2 fp32 ulps;
// - gradients through lmHeadNll (h = identity, W = logitsᵀ, so dW is the logits gradient): bit-identical to the
//   default bf16 'emulate' graph (the backward Gemms read the same round(p)), within u of float64;
// - real bf16 graphs: no float [N, V] tensor and no Cast of one, p read by both backward Gemms as Softmax wrote it,
//   every node with a CUDA kernel (cudaKernels.ts) alone and with the other bf16 variants; the flag off (and fp32,
//   and the unfused head) → byte-identical graphs;
// - the tiny model: golden-batch gradients bit-identical to the default 'emulate' graph's with the loss moved by
//   less than the bound; golden batch and 20 AdamW steps within the bf16 bounds of fp32 (bf16VariantChecks.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { Graph } from '../../native-runner/engine/graph/graph';
import { nllFromBf16Softmax, vocabGroups } from '../../native-runner/engine/crossEntropy';
import { cudaUnsupportedNodes } from '../../native-runner/engine/cudaKernels';
import { dropoutRates, type Bf16Mode, type ModelVariants } from '../../native-runner/engine/gpt2Graph';
import { buildGradsGraph, buildTrainGraph, type OptimizerHyper } from '../../native-runner/engine/trainGraph';
import { TrainingEngine } from '../../native-runner/engine/trainingEngine';
import { BF16_UNIT_ROUNDOFF } from '../../native-runner/engine/bf16Tolerance';
import { makeConfig } from '../../native-runner/model/config';
import { Rng } from '../../native-runner/util/rng';
import { bf16, lmHeadGradients, relL2, tinyGoldenSetup, withEnv } from './helpers';
import { registerStackedVariantAccuracyTest } from './bf16VariantChecks';

const u = BF16_UNIT_ROUNDOFF;
const fr = Math.fround;
/** One fp32 ulp at |v|. */
const ulp32 = (v: number) => (v === 0 ? 2 ** -149 : 2 ** (Math.floor(Math.log2(Math.abs(fr(v)))) - 23));

// --- rows of bf16-valued logits -------------------------------------------------------------------------------

interface Rows {
  N: number;
  V: number;
  logits: Float32Array; // [N,V], every value a bf16 number
  targets: Int32Array; // [N]
  labels: string[];
}

function buildRows(V: number): Rows {
  const rng = new Rng(4242 + V);
  const rows: { x: Float32Array; t: number; label: string }[] = [];
  const rand = (lo: number, hi: number) => Float32Array.from({ length: V }, () => bf16(lo + (hi - lo) * rng.nextFloat()));
  for (let i = 0; i < 4; i++) rows.push({ x: rand(-8, 8), t: rng.nextInt(V), label: `random ${i}` });
  {
    const x = rand(-8, 8);
    x[123] = 20;
    x[V >> 1] = -180;
    rows.push({ x, t: V >> 1, label: 'target 200 below the max' });
  }
  {
    const x = rand(-8, 8);
    for (const j of [5, (V >> 4) + 1, V - 9]) x[j] = 12;
    rows.push({ x, t: (V >> 4) + 1, label: 'ties at the max, target among them' });
  }
  {
    const x = rand(-8, 8);
    for (const j of [7, 8, V - 1]) x[j] = 9;
    rows.push({ x, t: 31, label: 'ties at the max, target elsewhere' });
  }
  {
    const x = rand(-8, 8);
    x[V >> 2] = 38;
    rows.push({ x, t: V >> 2, label: 'confident correct target' });
  }
  rows.push({ x: new Float32Array(V).fill(3.25), t: 17, label: 'all logits equal' });
  rows.push({ x: rand(996, 1004), t: rng.nextInt(V), label: 'logits near +1000' });
  rows.push({ x: rand(-1004, -996), t: rng.nextInt(V), label: 'logits near −1000' });
  {
    // One max (6) in the first group, a whole later group at 5.5: that group holds more mass, so j is not the argmax.
    const x = rand(-8, -4);
    const B = vocabGroups(V)?.size ?? 1;
    x[0] = 6;
    for (let k = 2 * B; k < 3 * B; k++) x[k] = 5.5;
    rows.push({ x, t: rng.nextInt(V), label: 'heaviest group without the max' });
  }
  {
    const x = rand(-4, 4);
    x[0] = 60;
    rows.push({ x, t: V - 1, label: 'target at the last class, spike at 0' });
  }
  {
    const x = rand(-8, 8);
    x[V >> 3] = 40;
    x[(V >> 3) + 1] = -50;
    rows.push({ x, t: (V >> 3) + 1, label: 'target 90 below the max (p[target] at bf16 underflow)' });
  }
  const N = rows.length;
  const logits = new Float32Array(N * V);
  rows.forEach((r, i) => logits.set(r.x, i * V));
  return { N, V, logits, targets: Int32Array.from(rows.map((r) => r.t)), labels: rows.map((r) => r.label) };
}

/** float64 lse and nll of each row. */
function reference(r: Rows): { lse: Float64Array; nll: Float64Array; maxAbs: Float64Array } {
  const lse = new Float64Array(r.N);
  const nll = new Float64Array(r.N);
  const maxAbs = new Float64Array(r.N);
  for (let i = 0; i < r.N; i++) {
    const x = r.logits.subarray(i * r.V, (i + 1) * r.V);
    let m = -Infinity;
    for (const v of x) {
      m = Math.max(m, v);
      maxAbs[i] = Math.max(maxAbs[i]!, Math.abs(v));
    }
    let s = 0;
    for (const v of x) s += Math.exp(v - m);
    lse[i] = m + Math.log(s);
    nll[i] = Math.log(s) + (m - x[r.targets[i]!]!);
  }
  return { lse, nll, maxAbs };
}

/** The header's bound on |Δnll|, |Δlse| for a row (absolute). */
const bound = (lse: number, maxAbs: number) => -Math.log1p(-u) + 2e-5 + 2 ** -22 * (Math.abs(lse) + 2 * maxAbs);

async function runForward(r: Rows): Promise<{ nll: Float32Array; lse: Float32Array; p: Float32Array }> {
  const g = new Graph();
  const logits = g.input('logits', 'float', ['N', r.V]);
  const tgt = g.input('tgt', 'int64', ['N', 1]);
  const f = nllFromBf16Softmax(g, logits, tgt, 'emulate', r.V);
  g.output(f.nll, 'nll');
  g.output(f.lse, 'lse');
  g.output(f.p, 'p');
  const session = await ort.InferenceSession.create(g.toModelBytes(), { executionProviders: ['cpu'] });
  try {
    const out = await session.run({
      logits: new ort.Tensor('float32', r.logits, [r.N, r.V]),
      tgt: new ort.Tensor('int64', BigInt64Array.from(Array.from(r.targets, (t) => BigInt(t))), [r.N, 1]),
    });
    return { nll: out.nll!.data as Float32Array, lse: out.lse!.data as Float32Array, p: out.p!.data as Float32Array };
  } finally {
    await session.release();
  }
}

/** The documented selection on a row of p: the first heaviest group (bf16 sums), its first largest p → j. */
function modelIndex(p: Float32Array, V: number): number {
  const split = vocabGroups(V);
  let start = 0;
  let size = V;
  if (split) {
    let best = -Infinity;
    for (let gi = 0; gi < split.groups; gi++) {
      let s = 0;
      for (let k = 0; k < split.size; k++) s = fr(s + p[gi * split.size + k]!);
      const mass = bf16(s);
      if (mass > best) {
        best = mass;
        start = gi * split.size;
      }
    }
    size = split.size;
  }
  let j = start;
  for (let k = start; k < start + size; k++) if (p[k]! > p[j]!) j = k;
  return j;
}

test('vocabGroups: V = G·B with the cheapest divisor; none for a prime V', () => {
  assert.deepEqual(vocabGroups(50257), { groups: 1733, size: 29 });
  assert.deepEqual(vocabGroups(50260), { groups: 359, size: 140 });
  assert.deepEqual(vocabGroups(512), { groups: 32, size: 16 });
  assert.equal(vocabGroups(509), null);
  assert.equal(vocabGroups(3), null);
  for (let V = 4; V < 3000; V++) {
    const s = vocabGroups(V);
    if (s) assert.ok(s.groups * s.size === V && s.size >= 2 && s.groups >= 2, `V ${V}: ${JSON.stringify(s)}`);
  }
});

for (const V of [50257, 50260, 509]) {
  const rows = buildRows(V);
  const split = vocabGroups(V);
  test(`nllFromBf16Softmax ('emulate') at V=${V} (${split ? `${split.groups} groups of ${split.size}` : 'prime: one stage'}): nll and lse of adversarial rows finite and within −log(1−u) + 2e-5 of float64; equal to the documented selection and formula on the graph's own p`, async (t) => {
    const got = await runForward(rows);
    const want = reference(rows);
    let worst = 0;
    let worstRow = '';
    for (let i = 0; i < rows.N; i++) {
      const label = rows.labels[i]!;
      assert.ok(Number.isFinite(got.nll[i]!) && Number.isFinite(got.lse[i]!), `${label}: nll ${got.nll[i]} lse ${got.lse[i]}`);
      const tol = bound(want.lse[i]!, want.maxAbs[i]!);
      const eNll = Math.abs(got.nll[i]! - want.nll[i]!);
      const eLse = Math.abs(got.lse[i]! - want.lse[i]!);
      assert.ok(eNll <= tol, `${label}: nll ${got.nll[i]} vs float64 ${want.nll[i]} (|Δ| ${eNll.toExponential(2)} > ${tol.toExponential(2)})`);
      assert.ok(eLse <= tol, `${label}: lse ${got.lse[i]} vs float64 ${want.lse[i]} (|Δ| ${eLse.toExponential(2)} > ${tol.toExponential(2)})`);
      if (Math.max(eNll, eLse) > worst) [worst, worstRow] = [Math.max(eNll, eLse), label];

      // The JS model on the graph's own p: same j, same [N,1] float arithmetic (Log within an fp32 ulp).
      const p = got.p.subarray(i * V, (i + 1) * V);
      const x = rows.logits.subarray(i * V, (i + 1) * V);
      for (const v of p.subarray(0, 64)) assert.equal(v, bf16(v), `${label}: p is not rounded to bf16`);
      const j = modelIndex(p, V);
      const logP = fr(Math.log(p[j]!));
      const mNll = fr(fr(x[j]! - x[rows.targets[i]!]!) - logP);
      const mLse = fr(x[j]! - logP);
      assert.ok(Math.abs(got.nll[i]! - mNll) <= 2 * ulp32(mNll), `${label}: nll ${got.nll[i]} vs model ${mNll} (j ${j})`);
      assert.ok(Math.abs(got.lse[i]! - mLse) <= 2 * ulp32(mLse), `${label}: lse ${got.lse[i]} vs model ${mLse} (j ${j})`);
      if (label === 'heaviest group without the max' && split) assert.notEqual(j, 0, 'j is the argmax: the heavier group was not chosen');
      if (label === 'target 200 below the max') {
        assert.equal(p[rows.targets[i]!], 0, 'p[target] is not 0 in bf16 (the row tests nothing)');
        assert.ok(got.nll[i]! > 199, `nll ${got.nll[i]}`);
      }
      if (label === 'all logits equal') {
        const pj = bf16(fr(1 / V));
        assert.ok(Math.abs(got.nll[i]! + Math.log(pj)) <= 2 * ulp32(Math.log(pj)), `uniform row nll ${got.nll[i]} vs −log bf16(1/V) ${-Math.log(pj)}`);
      }
    }
    // p really is bf16 here: the fp32 softmax would be within ~1e-5 of float64 on every row.
    assert.ok(worst > 1e-4, `worst error ${worst}: p was not rounded`);
    t.diagnostic(`worst |Δ| against float64 ${worst.toExponential(2)} (${worstRow}); bound −log(1−u) = ${(-Math.log1p(-u)).toExponential(2)}`);
  });
}

// --- gradients through lmHeadNll ------------------------------------------------------------------------------
// h = I (C = N) and W = Xᵀ [V, N], bf16 values: logits = h·Wᵀ = X exactly, and dW[v, n] is the logits gradient
// d(Σ a·nll + Σ b·lse)/dx[n, v] (with the bf16 roundings of the fused backward).

async function headRun(r: Rows, bf16Mode: Bf16Mode, variants: ModelVariants, a: Float32Array, b: Float32Array) {
  const { N, V } = r;
  const h = new Float32Array(N * N);
  for (let i = 0; i < N; i++) h[i * N + i] = 1;
  const wte = new Float32Array(V * N);
  for (let i = 0; i < N; i++) for (let v = 0; v < V; v++) wte[v * N + i] = r.logits[i * V + v]!;
  return lmHeadGradients({ N, C: N, V, bf16: bf16Mode, variants }, { h, wte, targets: r.targets, a, b });
}

test("lmHeadNll with bf16Logits ('emulate', V=50257): dh and dW bit-identical to the default bf16 graph's, dW within u of the float64 logits gradient; only nll / lse move, within the bound", async (t) => {
  const rows = buildRows(50257);
  const { N, V } = rows;
  const rng = new Rng(7);
  const a = Float32Array.from({ length: N }, () => fr(0.25 + rng.nextFloat()));
  const b = Float32Array.from({ length: N }, () => fr(rng.nextFloat() - 0.5));
  const low = await headRun(rows, 'emulate', { bf16Logits: true }, a, b);
  const dflt = await headRun(rows, 'emulate', {}, a, b);
  assert.deepEqual(Array.from(low.dh), Array.from(dflt.dh), 'dh differs from the default bf16 graph');
  assert.deepEqual(Array.from(low.dw), Array.from(dflt.dw), 'dW differs from the default bf16 graph');
  const want = reference(rows);
  let moved = 0;
  for (let i = 0; i < N; i++) {
    const tol = bound(want.lse[i]!, want.maxAbs[i]!);
    assert.ok(Math.abs(low.nll[i]! - want.nll[i]!) <= tol && Math.abs(low.lse[i]! - want.lse[i]!) <= tol, `${rows.labels[i]}: nll ${low.nll[i]} lse ${low.lse[i]}`);
    if (low.nll[i] !== dflt.nll[i]) moved++;
  }
  assert.ok(moved > N / 2, `only ${moved} of ${N} nll values differ from the default graph's: the variant was not used`);
  // float64 logits gradient, transposed to dW's [V, N] layout.
  const ref = new Float64Array(V * N);
  for (let i = 0; i < N; i++) {
    const x = rows.logits.subarray(i * V, (i + 1) * V);
    let m = -Infinity;
    for (const v of x) m = Math.max(m, v);
    let s = 0;
    for (const v of x) s += Math.exp(v - m);
    for (let v = 0; v < V; v++) ref[v * N + i] = (Math.exp(x[v]! - m) / s) * (a[i]! + b[i]!);
    ref[rows.targets[i]! * N + i]! -= a[i]!;
  }
  assert.ok(low.dw.every(Number.isFinite), 'dW not finite');
  const e = relL2(low.dw, ref);
  t.diagnostic(`dW (logits gradient) relative L2 from float64: ${e.toExponential(2)} (= the default bf16 graph's)`);
  assert.ok(e <= u, `dW relative L2 ${e} > u`);
});

// --- graph structure (real bf16) ------------------------------------------------------------------------------

const HYPER: OptimizerHyper = { weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 };
const { config: tinyConfig } = tinyGoldenSetup();

test('bf16Logits graphs (real bf16): no float [N, V] tensor and no Cast of one, Softmax on the Gemm output, p read by both backward Gemms as is; every node has a CUDA kernel, alone and with the other bf16 variants, prime V included', () => {
  const config = tinyConfig;
  const V = config.vocab_size;
  const dropout = dropoutRates(config, 0.1);
  const grads = buildGradsGraph(config, { dropout, bf16: true, seed: 0, variants: { bf16Logits: true } });
  const wide = (s: readonly (string | number)[] | null | undefined) => !!s && s.length === 2 && s[1] === V && s[0] !== V;
  const tensors = new Set(grads.nodes.flatMap((n) => [...n.inputs, ...n.outputs]).filter((x) => x && wide(x.shape)));
  assert.ok(tensors.size >= 2, 'no [N, V] tensor found');
  for (const x of tensors) assert.equal(x!.dtype, 'bfloat16', `${x!.name} is ${x!.dtype}[${x!.shape}]`);
  assert.deepEqual(grads.nodes.filter((n) => n.opType === 'Cast' && [...n.inputs, ...n.outputs].some((x) => x && wide(x.shape))).map((n) => n.name), []);
  const softmax = grads.nodes.filter((n) => n.opType === 'Softmax' && wide(n.inputs[0]!.shape));
  assert.equal(softmax.length, 1);
  const p = softmax[0]!.outputs[0]!;
  assert.equal(grads.nodes.find((n) => n.outputs.includes(softmax[0]!.inputs[0]!))?.opType, 'Gemm', 'Softmax does not read the Gemm output');
  const readers = grads.nodes.filter((n) => !n.virtual && n.inputs.includes(p)).map((n) => n.opType).sort();
  assert.deepEqual(readers, ['GatherElements', 'Gemm', 'Gemm', 'Reshape']);
  assert.deepEqual(grads.nodes.filter((n) => n.opType === 'ArgMax').map((n) => n.inputs[0]!.dtype), ['float', 'float']);

  const all: ModelVariants = { bf16Logits: true, bf16Attention: true, bf16Mlp: true, bf16Projections: true };
  for (const variants of [{ bf16Logits: true }, all]) {
    const name = Object.keys(variants).join('+');
    for (const accumulate of [false, true]) {
      assert.deepEqual(cudaUnsupportedNodes(buildTrainGraph(config, HYPER, { dropout, bf16: true, seed: 3, accumulate, flatState: true, variants })), [], `train ${name} accumulate=${accumulate}`);
    }
    assert.deepEqual(cudaUnsupportedNodes(buildGradsGraph(config, { dropout, bf16: true, seed: 0, variants }), { singleIterationLoop: true }), [], `grads ${name}`);
  }
  // Prime vocabulary: the one-stage form (Cast of p to float, ArgMax) also runs on CUDA.
  const prime = makeConfig({ n_layer: 1, n_head: 2, n_embd: 16, n_positions: 32, vocab_size: 509 });
  const primeGrads = buildGradsGraph(prime, { dropout: dropoutRates(prime, 0), bf16: true, seed: 0, variants: { bf16Logits: true } });
  assert.deepEqual(cudaUnsupportedNodes(primeGrads, { singleIterationLoop: true }), []);
  assert.equal(primeGrads.nodes.filter((n) => n.opType === 'ReduceSum' && n.inputs[0]!.shape?.length === 3).length, 0, 'prime V: no group sums');
});

test('bf16Logits off, in fp32, or with the unfused head: the train and grads graphs are byte-identical to those without the flag', () => {
  const config = tinyConfig;
  const dropout = dropoutRates(config, 0.1);
  const bytes = (bf16: Bf16Mode, variants: ModelVariants, fusedLmHead = true) => ({
    train: Buffer.from(buildTrainGraph(config, HYPER, { dropout, bf16, seed: 3, accumulate: true, flatState: true, fusedLmHead, variants }).toModelBytes()),
    grads: Buffer.from(buildGradsGraph(config, { dropout, bf16, seed: 0, fusedLmHead, variants }).toModelBytes({ singleIterationLoop: true })),
  });
  const same = (x: ReturnType<typeof bytes>, y: ReturnType<typeof bytes>, what: string) => {
    assert.ok(x.train.equals(y.train), `${what}: train graph differs`);
    assert.ok(x.grads.equals(y.grads), `${what}: grads graph differs`);
  };
  same(bytes(false, { bf16Logits: true }), bytes(false, {}), 'fp32 with the flag');
  for (const mode of [true, 'emulate'] as const) {
    same(bytes(mode, { bf16Logits: false }), bytes(mode, {}), `bf16=${mode}, flag false`);
    same(bytes(mode, { bf16Logits: true }, false), bytes(mode, {}, false), `bf16=${mode}, unfused head`);
    const on = bytes(mode, { bf16Logits: true });
    assert.ok(!on.grads.equals(bytes(mode, {}).grads), `bf16=${mode}: the flag changed nothing`);
  }
});

// --- the tiny model -------------------------------------------------------------------------------------------

test("golden batch ('emulate', dropout 0): bf16Logits gradients bit-identical to the default graph's, loss moved by less than the per-token bound", async (t) => {
  const { config, params0, mb } = tinyGoldenSetup();
  const run = async (variant: boolean) => {
    return withEnv('SFT_BF16_LOGITS', variant ? '1' : '0', async () => {
      const e = await TrainingEngine.create({ config, params: params0(), device: 'cpu', stepsPerRun: 1, bf16: 'emulate', weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1.0, dropout: 0, seed: 0 });
      try {
        return await e.gradients([mb]);
      } finally {
        await e.dispose();
      }
    });
  };
  const dflt = await run(false);
  const low = await run(true);
  for (const [name, g] of dflt.grads) assert.deepEqual(Array.from(low.grads.get(name)!.data), Array.from(g.data), `${name} differs`);
  const d = Math.abs(low.loss - dflt.loss);
  t.diagnostic(`loss ${dflt.loss} (default emulate) → ${low.loss} (bf16Logits): |Δ| ${d.toExponential(2)}`);
  assert.ok(d > 0, 'the loss did not move: the variant was not used');
  assert.ok(d <= -Math.log1p(-u) + 1e-4, `loss moved by ${d}`);
});

registerStackedVariantAccuracyTest('bf16Logits', ['SFT_BF16_LOGITS']);
