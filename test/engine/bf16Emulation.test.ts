// bf16 emulation (TrainingEngine bf16 'emulate', gpt2Graph.ts Bf16Mode): the bf16 graph's numerics checked on
// the CPU. linear/bmm against a JS bf16 reference (forward and backward), the emulated graph's structure
// (bf16 only inside float→bfloat16→float round trips, so only fp32 kernels run; one round trip wherever the
// real bf16 graph changes precision, whose every GEMM, backward included, is bf16), the golden batch's loss and
// gradients against fp32, and 20 AdamW steps against fp32 under the loss-curve rule bench/cuda-vs-cpu.ts
// applies on the GPU (engine/bf16Tolerance.ts).
//
// Tolerances, with u = 2^-8 (bf16's unit roundoff: 8 significant bits, round to nearest even):
// - one GEMM: its output is bf16(fp32 product of bf16 operands); ORT's fp32 accumulation order differs from
//   the reference's, which can move a product across a bf16 rounding boundary: every value within one bf16
//   ulp of the reference, ≥ 95 % bit-identical.
// - gradients of the golden batch: each tensor is a rounded GEMM output (RMS error u/√3 ≈ 0.6u) fed by
//   other rounded GEMMs (the incoming gradient, the forward activations, the other operand); a 2-layer
//   model has at most ~10 roundings on a path, √10·0.6u ≈ 2u: relative L2 ≤ 4u = 1.6 % per tensor
//   (measured ≤ 0.72 %). Not a no-op: the relative L2 error over all gradients is ≥ u/4 (measured 0.32 %;
//   fp32 against itself is exactly 0).
// - loss and gradient norm: sums over many independently rounded terms, so well inside one rounding:
//   relative difference ≤ u (measured 7e-6 for the loss).
// - 20 steps: per step |Δloss| ≤ tol·(|loss_fp32| + 1) with the GPU rule's tol (2e-2), and also with
//   tol = u/8 ≈ 4.9e-4 here, where only the Casts differ from the fp32 graph (measured worst 5e-5).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TrainingEngine, type TrainingEngineOptions } from '../../native-runner/engine/trainingEngine';
import { attentionCore, linear, modelContext, type Bf16Mode } from '../../native-runner/engine/gpt2Graph';
import { buildGradsGraph, buildTrainGraph } from '../../native-runner/engine/trainGraph';
import { BF16_UNIT_ROUNDOFF, compareLossCurves, LOSS_CURVE_TOLERANCE } from '../../native-runner/engine/bf16Tolerance';
import { Graph } from '../../native-runner/engine/graph/graph';
import { gradients } from '../../native-runner/engine/graph/autodiff';
import { decodeModel, type NodeProtoObj } from '../../native-runner/engine/graph/onnxProto';
import { createSession, f32 } from '../../native-runner/engine/ortSession';
import type { MicroBatch } from '../../native-runner/engine/types';
import { SftError } from '../../native-runner/util/errors';
import { Rng } from '../../native-runner/util/rng';
import { allNodes, bf16, bf16Ulp, BF16, castTo, FLOAT, gradStats, tinyGoldenSetup, withEnv } from './helpers';

const { config, params0, mb } = tinyGoldenSetup();
const u = BF16_UNIT_ROUNDOFF;

function engineOpts(stepsPerRun: number, bf16: Bf16Mode): TrainingEngineOptions {
  return { config, params: params0(), device: 'cpu', stepsPerRun, bf16, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1.0, dropout: 0, seed: 0 };
}

// --- a JS bf16 reference -------------------------------------------------------------------------------


/** C [M,N] = A [M,K] · B [K,N] (row-major), summed in double, then rounded to fp32 and to bf16. */
function bf16Gemm(a: ArrayLike<number>, b: ArrayLike<number>, M: number, K: number, N: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += a[i * K + k]! * b[k * N + j]!;
      out.push(bf16(Math.fround(s)));
    }
  }
  return out;
}
function transpose(a: ArrayLike<number>, R: number, C: number): number[] {
  const out = new Array<number>(R * C);
  for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) out[c * R + r] = a[r * C + c]!;
  return out;
}
const roundAll = (a: ArrayLike<number>) => Array.from(a, bf16);

/** Every value within one bf16 ulp of the reference and at least `minExact` of them bit-identical. */
function assertBf16Close(name: string, got: ArrayLike<number>, ref: number[], minExact = 0.95): void {
  assert.equal(got.length, ref.length, `${name}: length`);
  let exact = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(got[i]! - ref[i]!);
    if (d === 0) exact++;
    else assert.ok(d <= bf16Ulp(ref[i]!) * 1.0001, `${name}[${i}] = ${got[i]} vs bf16 reference ${ref[i]} (more than one bf16 ulp)`);
  }
  assert.ok(exact >= minExact * ref.length, `${name}: only ${exact}/${ref.length} values equal the bf16 reference`);
}

function randomValues(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => 2 * rng.nextFloat() - 1);
}

// --- linear and bmm against the reference ---------------------------------------------------------------

for (const transB of [false, true]) {
  test(`linear (transB ${transB}) under 'emulate' = bf16 GEMM with bf16 output, forward and backward`, async () => {
    const N = 8;
    const I = 24;
    const O = 12;
    const rng = new Rng(transB ? 11 : 7);
    const xv = randomValues(rng, N * I);
    const wv = randomValues(rng, I * O);
    const bv = randomValues(rng, O);
    const rv = randomValues(rng, N * O);
    const g = new Graph('linear');
    const x = g.input('x', 'float', [N, I]);
    const w = g.input('w', 'float', transB ? [O, I] : [I, O]);
    const b = g.input('b', 'float', [O]);
    const r = g.input('r', 'float', [N, O]);
    const y = linear(modelContext(g, config, new Map(), g.shapeOf(x), { bf16: 'emulate' }), x, w, b, { transB });
    g.output(y, 'y');
    const [dx, dw, db] = gradients(g, [g.reduceSum(g.mul(y, r), null, false)], [g.scalar(1)], [x, w, b]);
    g.output(dx!, 'dx');
    g.output(dw!, 'dw');
    g.output(db!, 'db');
    const s = await createSession(g.toModelBytes(), { device: 'cpu' });
    const out = await s.run({ x: f32(xv, [N, I]), w: f32(wv, transB ? [O, I] : [I, O]), b: f32(bv, [O]), r: f32(rv, [N, O]) });
    await s.release();

    const xr = roundAll(xv);
    const wr = roundAll(wv); // as given: [O,I] when transB
    const wIO = transB ? transpose(wr, O, I) : wr; // [I,O]
    // Forward: bf16(x̂·ŵ) + b in fp32.
    const prod = bf16Gemm(xr, wIO, N, I, O);
    assertBf16Close('y', out.y!.data as Float32Array, prod.map((p, i) => Math.fround(p + bv[i % O]!)));
    // Backward as a bf16 graph computes it: the incoming gradient r rounded to bf16, GEMMs on bf16 operands
    // (the forward's rounded x̂, ŵ), outputs rounded to bf16; the bias gradient in fp32.
    const gr = roundAll(rv);
    assertBf16Close('dx', out.dx!.data as Float32Array, bf16Gemm(gr, transpose(wIO, I, O), N, O, I));
    const dwIO = bf16Gemm(transpose(xr, N, I), gr, I, N, O);
    assertBf16Close('dw', out.dw!.data as Float32Array, transB ? transpose(dwIO, I, O) : dwIO);
    const dbRef = Array.from({ length: O }, (_, j) => rv.filter((_, i) => i % O === j).reduce((a, v) => a + v, 0));
    (out.db!.data as Float32Array).forEach((v, j) => assert.ok(Math.abs(v - dbRef[j]!) < 1e-5, `db[${j}] ${v} vs ${dbRef[j]} (fp32, unrounded)`));
  });
}

test("attention's two batched MatMuls under 'emulate' round operands and products to bf16", async () => {
  const [B, H, T, D] = [1, 2, 5, 8];
  const rng = new Rng(5);
  const n = B * H * T * D;
  const [qv, kv, vv] = [randomValues(rng, n), randomValues(rng, n), randomValues(rng, n)];
  const g = new Graph('attention');
  const [q, k, v] = ['q', 'k', 'v'].map((name) => g.input(name, 'float', [B, H, T, D]));
  const bias = g.input('bias', 'float', [B, 1, T, T]);
  g.output(attentionCore(modelContext(g, config, new Map(), g.ints([B, T]), { bf16: 'emulate' }), q!, k!, v!, bias), 'y');
  const s = await createSession(g.toModelBytes(), { device: 'cpu' });
  const out = await s.run({ q: f32(qv, [B, H, T, D]), k: f32(kv, [B, H, T, D]), v: f32(vv, [B, H, T, D]), bias: f32(new Float32Array(T * T), [B, 1, T, T]) });
  await s.release();
  const ref: number[] = [];
  for (let h = 0; h < H; h++) {
    const at = (a: Float32Array) => roundAll(a.subarray(h * T * D, (h + 1) * T * D));
    const scores = bf16Gemm(at(qv), transpose(at(kv), T, D), T, D, T); // [T,T]
    const probs: number[] = [];
    for (let i = 0; i < T; i++) {
      const row = scores.slice(i * T, (i + 1) * T);
      const m = Math.max(...row);
      const e = row.map((x) => Math.exp(x - m));
      const sum = e.reduce((a, x) => a + x, 0);
      probs.push(...e.map((x) => bf16(x / sum)));
    }
    ref.push(...bf16Gemm(probs, at(vv), T, T, D));
  }
  assertBf16Close('attention output', out.y!.data as Float32Array, ref, 0.9);
});

// --- the emulated graph's structure ---------------------------------------------------------------------


test("'emulate' graphs: bf16 only in Cast round trips, one per precision change of the real bf16 graph, fp32's GEMMs", () => {
  const base = { dropout: { embd: 0, attn: 0, resid: 0 }, seed: 0 };
  const nodesOf = (bf16: Bf16Mode) => allNodes(decodeModel(buildGradsGraph(config, { ...base, bf16 }).toModelBytes()).graph);
  const fp32 = nodesOf(false);
  const emu = nodesOf('emulate');
  const gemms = (ns: NodeProtoObj[]) => ns.filter((nd) => nd.opType === 'Gemm' || nd.opType === 'MatMul').length;
  assert.equal(gemms(emu), gemms(fp32));
  assert.equal(fp32.filter((nd) => nd.opType === 'Cast' && castTo(nd) === BF16).length, 0);
  // Forward: per layer 4 linear + 2 attention MatMuls, plus the lm_head; each rounds 2 operands and its product,
  // and the backward rounds the gradient at each of those 3 points again.
  const forwardGemms = 6 * config.n_layer + 1;
  const toBf16 = emu.filter((nd) => nd.opType === 'Cast' && castTo(nd) === BF16);
  // + 1: the fused lm head's backward rounds coef ⊙ h [N, C] for its dW Gemm (crossEntropy.ts lmHeadNll)
  assert.equal(toBf16.length, 6 * forwardGemms + 1);
  const consumers = new Map<string, NodeProtoObj[]>();
  for (const nd of emu) for (const i of nd.input ?? []) consumers.set(i, [...(consumers.get(i) ?? []), nd]);
  for (const c of toBf16) {
    const users = consumers.get(c.output![0]!) ?? [];
    assert.ok(users.length >= 1 && users.every((nd) => nd.opType === 'Cast' && castTo(nd) === FLOAT), `${c.name}: bfloat16 value used by ${users.map((nd) => nd.opType)}`);
  }
  // The real bf16 graph (typed tensors before serialisation): every GEMM, forward and backward, takes bfloat16
  // operands, and it changes precision (a Cast to or from bfloat16) exactly as often as 'emulate' rounds.
  const real = buildGradsGraph(config, { ...base, bf16: true }).nodes;
  const realGemms = real.filter((nd) => nd.opType === 'Gemm' || nd.opType === 'MatMul');
  assert.equal(realGemms.length, gemms(fp32));
  for (const nd of realGemms) assert.ok(nd.inputs.every((t) => !t || t.dtype === 'bfloat16'), `${nd.name} has non-bf16 operands`);
  const realCasts = real.filter((nd) => nd.opType === 'Cast' && (nd.inputs[0]!.dtype === 'bfloat16') !== (nd.outputs[0]!.dtype === 'bfloat16'));
  assert.equal(realCasts.length, toBf16.length);
  // The train graph (a Loop) carries the same round trips.
  const hyper = { weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 };
  const train = allNodes(decodeModel(buildTrainGraph(config, hyper, { ...base, bf16: 'emulate', accumulate: false }).toModelBytes()).graph);
  assert.equal(train.filter((nd) => nd.opType === 'Cast' && castTo(nd) === BF16).length, 6 * forwardGemms + 1);
});

// --- the golden batch: loss and gradients against fp32 --------------------------------------------------

test("golden batch: 'emulate' loss and gradients within bf16 tolerance of fp32, and not equal to them", async (t) => {
  const a = await TrainingEngine.create(engineOpts(1, false));
  const b = await TrainingEngine.create(engineOpts(1, 'emulate'));
  const ref = await a.gradients([mb]);
  const emu = await b.gradients([mb]);
  const lossRel = Math.abs(emu.loss - ref.loss) / ref.loss;
  assert.ok(lossRel <= u, `loss ${emu.loss} vs fp32 ${ref.loss}: relative ${lossRel}`);
  assert.notEqual(emu.loss, ref.loss, 'the emulated loss equals fp32 bit for bit: nothing was rounded');
  assert.ok(Math.abs(emu.gradNorm - ref.gradNorm) / ref.gradNorm <= u, `grad norm ${emu.gradNorm} vs ${ref.gradNorm}`);
  const { worstTensor, total } = gradStats(ref, emu, true); // every tensor ≤ 4u relative L2
  t.diagnostic(`loss rel diff ${lossRel.toExponential(2)}; gradients rel L2: worst tensor ${worstTensor.toExponential(2)}, all ${total.toExponential(2)}`);
  assert.ok(total >= u / 4, `gradients differ from fp32 by only ${total} relative L2: the backward is not rounded to bf16`);
  // The eval graph takes the mode too.
  const ea = await a.evalBatch(mb);
  const eb = await b.evalBatch(mb);
  assert.notEqual(eb.nllSum, ea.nllSum);
  assert.ok(Math.abs(eb.nllSum - ea.nllSum) / ea.nllSum <= u, `eval nll ${eb.nllSum} vs ${ea.nllSum}`);
  await a.dispose();
  await b.dispose();
});

test("eval graphs compute the forward the training graph computes (its bf16 variants); SFT_EVAL_VARIANTS=0 builds them plain", async () => {
  // The grads graph without the fused lm head computes the loss as the eval graphs do (logits, fp32 log-softmax):
  // with the same variants its forward is the same nodes, so the losses agree (measured: bit for bit).
  const train = await withEnv('SFT_FUSED_LM_HEAD', '0', async () => {
    const e = await TrainingEngine.create(engineOpts(1, 'emulate'));
    const r = await e.gradients([mb]);
    await e.dispose();
    return r;
  });
  const evalWith = async (plain: boolean) =>
    withEnv('SFT_EVAL_VARIANTS', plain ? '0' : '', async () => {
      const e = await TrainingEngine.create({ ...engineOpts(1, 'emulate'), evalBatchesPerRun: 2 });
      const one = await e.evalBatch(mb);
      const [loop] = await e.evalBatches([mb]); // the eval Loop graph
      await e.dispose();
      return { one, loop: loop! };
    });
  const v = await evalWith(false);
  const plain = await evalWith(true);
  for (const [what, r] of [['eval graph', v.one], ['eval Loop graph', v.loop]] as const) {
    const loss = r.nllSum / r.tokens;
    // (Plain eval graphs are ~1e-6 away on this batch, which is why the bound is this tight.)
    assert.ok(Math.abs(loss - train.loss) <= 1e-9 * train.loss, `${what}: loss ${loss} vs the training forward's ${train.loss}`);
  }
  // Plain eval graphs round elsewhere: within bf16 tolerance of the variants' loss, but not equal to it.
  const lossV = v.one.nllSum / v.one.tokens;
  const lossP = plain.one.nllSum / plain.one.tokens;
  assert.notEqual(lossP, lossV, 'SFT_EVAL_VARIANTS=0 built the same eval graph');
  assert.ok(Math.abs(lossP - lossV) / lossV <= u, `plain eval loss ${lossP} vs ${lossV}`);
  assert.ok(Math.abs(plain.loop.nllSum / plain.loop.tokens - lossP) <= 1e-9 * lossP);
});

// --- 20 training steps ----------------------------------------------------------------------------------

/** Row b of a MicroBatch as its own B=1 micro-batch. */
function rowOf(m: MicroBatch, b: number): MicroBatch {
  const s = (a: Int32Array | Float32Array) => a.slice(b * m.T, (b + 1) * m.T);
  return { B: 1, T: m.T, inputIds: s(m.inputIds) as Int32Array, targets: s(m.targets) as Int32Array, weights: s(m.weights) as Float32Array, positions: s(m.positions) as Int32Array, segments: s(m.segments) as Int32Array };
}

async function lossCurve(bf16: Bf16Mode): Promise<{ loss: number[]; gradNorm: number[] }> {
  // The golden batch's two rows as two micro-batches per step (the accumulating graph), K = 5 (run boundaries).
  const K = 5;
  const e = await TrainingEngine.create(engineOpts(K, bf16));
  const micro = [rowOf(mb, 0), rowOf(mb, 1)];
  const loss: number[] = [];
  const gradNorm: number[] = [];
  for (let s = 0; s < 20; s += K) {
    for (const m of await e.runSteps(Array.from({ length: K }, () => ({ lr: 1e-3, microBatches: micro })))) {
      loss.push(m.loss);
      gradNorm.push(m.gradNorm);
    }
  }
  await e.dispose();
  return { loss, gradNorm };
}

test("20 AdamW steps (lr 1e-3): 'emulate' follows the fp32 curve within the GPU check's bf16 rule and u/8; both fall", async (t) => {
  const ref = await lossCurve(false);
  const emu = await lossCurve('emulate');
  const gpuRule = compareLossCurves(ref.loss, emu.loss, LOSS_CURVE_TOLERANCE.bf16);
  assert.ok(gpuRule.pass, `steps ${gpuRule.failedSteps} outside the bf16 rule (worst ${gpuRule.worst})`);
  const tight = compareLossCurves(ref.loss, emu.loss, u / 8);
  t.diagnostic(`worst |Δloss|/(|loss|+1) ${tight.worst.toExponential(2)} at step ${tight.worstStep + 1}; loss ${ref.loss[0]!.toFixed(4)} → ${ref.loss[19]!.toFixed(4)} (fp32), ${emu.loss[19]!.toFixed(4)} (emulate)`);
  assert.ok(tight.pass, `worst step ${tight.worstStep + 1}: |Δloss|/(|loss|+1) = ${tight.worst} > 2^-8/8\nfp32 ${ref.loss}\nemu  ${emu.loss}`);
  assert.ok(tight.worst > 0 && emu.gradNorm.some((v, i) => v !== ref.gradNorm[i]), 'the emulated curve equals fp32 exactly');
  for (const [name, c] of [['fp32', ref.loss], ['emulate', emu.loss]] as const) {
    c.forEach((l, i) => i > 0 && assert.ok(l < c[i - 1]!, `${name}: loss rose at step ${i + 1} (${c[i - 1]} → ${l})`));
    assert.ok(c[0]! - c[19]! > 1, `${name}: loss fell only ${c[0]! - c[19]!} in 20 steps`);
  }
});

// --- options and the shared rule ------------------------------------------------------------------------

test("bf16 option: 'emulate' is accepted on the CPU, true still is not, other values are an SftError naming bf16", async () => {
  const e = await TrainingEngine.create(engineOpts(1, 'emulate'));
  await e.dispose();
  await assert.rejects(TrainingEngine.create(engineOpts(1, true)), (err: unknown) => err instanceof SftError && /bf16 needs --device cuda/.test(err.message));
  await assert.rejects(TrainingEngine.create(engineOpts(1, 'yes' as unknown as Bf16Mode)), (err: unknown) => err instanceof SftError && err.where === 'bf16' && /'emulate'/.test(err.message));
});

test('compareLossCurves: |Δ| ≤ tol·(|ref|+1) per step; NaN, a missing step, one step over or empty curves fail', () => {
  const ref = [10, 9, 8];
  assert.deepEqual(compareLossCurves(ref, ref, 0), { pass: true, worst: 0, worstStep: 0, failedSteps: [] });
  const ok = compareLossCurves(ref, [10.2, 9.15, 8], 0.02);
  assert.equal(ok.pass, true);
  assert.equal(ok.worstStep, 0);
  assert.ok(Math.abs(ok.worst - 0.2 / 11) < 1e-12);
  assert.deepEqual(compareLossCurves(ref, [10, 9.21, 8], 0.02).failedSteps, [1]);
  const nan = compareLossCurves(ref, [10, NaN, 8], 0.02);
  assert.equal(nan.pass, false);
  assert.deepEqual(nan.failedSteps, [1]);
  assert.ok(Number.isNaN(nan.worst));
  assert.equal(compareLossCurves(ref, [10, 9], 0.02).pass, false);
  // two empty curves compare nothing: not a pass (a tested run that made no steps against an empty reference)
  assert.equal(compareLossCurves([], [], 0.02).pass, false);
});
