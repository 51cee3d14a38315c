// The lnFold variant (ModelVariants.lnFold, SFT_LN_FOLD; layerNorm.ts layerNormFold, biasRow.ts): ln_1's and ln_2's
// γ, β folded into the c_attn / c_fc Gemm, whose bias is a weight row.
// - the fold's gradient formulas in fp32 arithmetic (mode false: no rounding), on shapes where C is odd and not a
//   multiple of 8 and the q-column scale 1/√D is not a power of two: against the unfolded graph (LayerNormalization
//   with the autodiff rule, then y·W + b, columns scaled) within fp32 rounding, and against float64 central
//   differences of a float64 model;
// - 'emulate' sublayer (LN → c_attn → q/k/v as attentionQKV builds it): forward and all five gradients within 4u of
//   the fp32 unfolded graph;
// - structure of the real bf16 grads graph: no LayerNormalization in the backward except ln_f's, the folded
//   LayerNorms normalize with unit scale / zero bias, no Mul of an [N,C] tensor by γ, no c_fc Gemm with a C input,
//   no ReduceSum over [N,4C] / [N,3C];
// - the real bf16 train (with and without accumulation) and grads graphs (tiny, GPT-2 124M) pass the CUDA kernel
//   check (engine/cudaKernels.ts);
// - fp32 graphs with the variant on are byte-identical to those without it;
// - the tiny model's golden batch and 20 AdamW steps within the bf16 bounds (bf16VariantChecks.ts), alone and
//   stacked with the other bf16 variants.
// u = 2^-8.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { attentionQKV, dropoutRates, modelContext, type Bf16Mode, type ModelVariants } from '../../native-runner/engine/gpt2Graph';
import { gradients } from '../../native-runner/engine/graph/autodiff';
import { Graph, type Tensor } from '../../native-runner/engine/graph/graph';
import { layerNormFold } from '../../native-runner/engine/layerNorm';
import { biasRowBackward, biasRowForward } from '../../native-runner/engine/biasRow';
import { makeConfig, readConfig } from '../../native-runner/model/config';
import { createSession, f32 } from '../../native-runner/engine/ortSession';
import { Rng } from '../../native-runner/util/rng';
import { buildGradsGraph, buildTrainGraph, type OptimizerHyper } from '../../native-runner/engine/trainGraph';
import { modelVariantsFromEnv } from '../../native-runner/engine/trainingEngine';
import { BF16_UNIT_ROUNDOFF } from '../../native-runner/engine/bf16Tolerance';
import { assertBf16GraphsRunOnCuda, gradStats, relL2, tinyGoldenSetup, withEnv } from './helpers';
import { TrainingEngine } from '../../native-runner/engine/trainingEngine';
import { registerStackedVariantAccuracyTest, registerVariantAccuracyTests } from './bf16VariantChecks';

const u = BF16_UNIT_ROUNDOFF;
const root = path.resolve(__dirname, '../..');
const tiny = readConfig(path.join(root, 'samples/tiny-gpt2-chat'));
const EPS = 1e-5;

// --- the fold's formulas in fp32 ------------------------------------------------------------------------------

const N = 6;
const C = 7; // odd, not a multiple of 8
const NAMES = ['x', 'gamma', 'beta', 'w', 'b'] as const;
type Values = Record<(typeof NAMES)[number] | 'r', Float64Array>;

function randomValues(seed: number, M: number, xMean = 0): Values {
  const rng = new Rng(seed);
  const rand = (n: number, s: number, m = 0) => Float64Array.from({ length: n }, () => Math.fround(m + s * (2 * rng.nextFloat() - 1)));
  return { x: rand(N * C, 2, xMean), gamma: rand(C, 0.8, 1), beta: rand(C, 0.5), w: rand(C * M, 0.6), b: rand(M, 0.5), r: rand(N * M, 1) };
}

/** z = LN(x; γ, β)·W + b, columns × s; loss Σ z ⊙ r; outputs z and the five gradients. `folded`: layerNormFold + the bias-row Gemm (mode false). */
function foldGraph(M: number, colScale: number[] | undefined, folded: boolean): Graph {
  const g = new Graph('fold');
  const x = g.input('x', 'float', ['N', C]);
  const gamma = g.input('gamma', 'float', [C]);
  const beta = g.input('beta', 'float', [C]);
  const w = g.input('w', 'float', [C, M]);
  const b = g.input('b', 'float', [M]);
  const r = g.input('r', 'float', ['N', M]);
  let z: Tensor;
  if (folded) {
    const f = layerNormFold(g, false, x, gamma, beta, w, b, EPS, colScale);
    let xAug!: Tensor;
    [z] = g.customGradient(
      [f.xo, f.wo, f.bo],
      () => {
        const o = biasRowForward(g, false, f.xo, f.wo, f.bo);
        xAug = o.xAug;
        return [o.y];
      },
      (gg, gy, needs) => biasRowBackward(gg, false, xAug, f.wo, gy[0]!, needs),
    ) as [Tensor];
  } else {
    z = g.gemm(g.layerNorm(x, gamma, beta, EPS), w, b);
    if (colScale) z = g.mul(z, g.tensorConst('float', [M], colScale));
  }
  g.output(z, 'z');
  const grads = gradients(g, [g.reduceSum(g.mul(z, r), null, false)], [g.scalar(1)], [x, gamma, beta, w, b]);
  grads.forEach((t, i) => g.output(t!, 'd' + NAMES[i]));
  return g;
}

async function run(g: Graph, v: Values, M: number): Promise<Record<string, Float32Array>> {
  const s = await createSession(g.toModelBytes(), { device: 'cpu' });
  const shapes: Record<keyof Values, number[]> = { x: [N, C], gamma: [C], beta: [C], w: [C, M], b: [M], r: [N, M] };
  const feeds = Object.fromEntries(Object.entries(v).map(([k, a]) => [k, f32(Float32Array.from(a), shapes[k as keyof Values])]));
  const out = await s.run(feeds);
  await s.release();
  return Object.fromEntries(['z', ...NAMES.map((n) => 'd' + n)].map((k) => [k, out[k]!.data as Float32Array]));
}

/** The loss Σ r ⊙ ((LN(x)·W + b) ⊙ s) in float64. */
function loss64(v: Values, M: number, s: number[]): number {
  let total = 0;
  for (let n = 0; n < N; n++) {
    let mean = 0;
    for (let c = 0; c < C; c++) mean += v.x[n * C + c]!;
    mean /= C;
    let vr = 0;
    for (let c = 0; c < C; c++) vr += (v.x[n * C + c]! - mean) ** 2;
    const inv = 1 / Math.sqrt(vr / C + EPS);
    const y = Array.from({ length: C }, (_, c) => (v.x[n * C + c]! - mean) * inv * v.gamma[c]! + v.beta[c]!);
    for (let j = 0; j < M; j++) {
      let zj = v.b[j]!;
      for (let c = 0; c < C; c++) zj += y[c]! * v.w[c * M + j]!;
      total += v.r[n * M + j]! * zj * s[j]!;
    }
  }
  return total;
}

/** Central differences of loss64 for every input value (float64, step 1e-5 relative). */
function numericGrads(v: Values, M: number, s: number[]): Record<string, Float64Array> {
  const out: Record<string, Float64Array> = {};
  for (const name of NAMES) {
    const a = v[name];
    const d = new Float64Array(a.length);
    for (let i = 0; i < a.length; i++) {
      const keep = a[i]!;
      const h = 1e-5 * Math.max(1, Math.abs(keep));
      a[i] = keep + h;
      const up = loss64(v, M, s);
      a[i] = keep - h;
      const down = loss64(v, M, s);
      a[i] = keep;
      d[i] = (up - down) / (2 * h);
    }
    out['d' + name] = d;
  }
  return out;
}

for (const [label, M, heads] of [
  ['c_attn shape (M = 3C, q columns × 1/√D with D = 7, not a power of two)', 3 * C, 1],
  ['c_fc shape (M = 4C, no column scale)', 4 * C, 0],
] as const) {
  for (const xMean of [0, 30]) {
    test(`layerNormFold fp32 formulas, ${label}, x mean ${xMean}: gradients equal the unfolded graph's within fp32 rounding and float64 central differences`, async (t) => {
      const colScale = heads ? Array.from({ length: M }, (_, j) => (j < C ? 1 / Math.sqrt(C / heads) : 1)) : undefined;
      const v = randomValues(11 + M + xMean, M, xMean);
      const fold = await run(foldGraph(M, colScale, true), v, M);
      const ref = await run(foldGraph(M, colScale, false), v, M);
      const fd = numericGrads(v, M, colScale ?? new Array(M).fill(1));
      const rows: string[] = [];
      assert.ok(relL2(fold.z!, ref.z!) < 2e-6, `z ${relL2(fold.z!, ref.z!)}`);
      for (const name of NAMES) {
        const k = 'd' + name;
        const vsRef = relL2(fold[k]!, ref[k]!);
        const vsFd = relL2(fold[k]!, fd[k]!);
        const refVsFd = relL2(ref[k]!, fd[k]!);
        rows.push(`${k}: vs unfolded ${vsRef.toExponential(1)}, vs float64 ${vsFd.toExponential(1)} (unfolded vs float64 ${refVsFd.toExponential(1)})`);
        // fp32 rounding only: the fold's sums run in another order (β·W, the bias row) than the unfolded graph's.
        assert.ok(vsRef < 1e-6, `${k} vs unfolded ${vsRef}`);
        assert.ok(vsFd < (xMean ? 3e-6 : 1e-6), `${k} vs float64 ${vsFd}`);
        assert.ok(vsFd <= 4 * refVsFd + 2e-6, `${k}: fold ${vsFd} much further from float64 than the unfolded graph ${refVsFd}`);
      }
      t.diagnostic(rows.join('; '));
    });
  }
}

// --- 'emulate' sublayer: ln_1 → c_attn → q/k/v ----------------------------------------------------------------

test("lnFold 'emulate' ln_1 → c_attn sublayer: q/k/v and the five gradients within 4u of the fp32 unfolded graph, not equal to the unfolded 'emulate' graph", async (t) => {
  const H = 2;
  const Cm = 12; // D = 6: 1/√6 not a power of two
  const config = makeConfig({ n_layer: 1, n_head: H, n_embd: Cm, n_positions: 16, vocab_size: 16, layer_norm_epsilon: EPS });
  const B = 2;
  const T = 5;
  const build = (mode: Bf16Mode, variants: ModelVariants) => {
    const g = new Graph('sub');
    const x = g.input('x', 'float', [B * T, Cm]);
    const params = [g.input('gamma', 'float', [Cm]), g.input('beta', 'float', [Cm]), g.input('w', 'float', [Cm, 3 * Cm]), g.input('b', 'float', [3 * Cm])];
    const r = g.input('r', 'float', [B, H, T, 3 * (Cm / H)]);
    const names = ['transformer.h.0.ln_1.weight', 'transformer.h.0.ln_1.bias', 'transformer.h.0.attn.c_attn.weight', 'transformer.h.0.attn.c_attn.bias'];
    const c = modelContext(g, config, new Map(names.map((n, i) => [n, params[i]!])), g.ints([B, T]), { bf16: mode, variants });
    const { q, k, v } = attentionQKV(c, 0, { residual: x, ln: 'transformer.h.0.ln_1' });
    const f = (a: Tensor) => (a.dtype === 'float' ? a : g.cast(a, 'float'));
    const qkv = g.concat([f(q), f(k), f(v)], 3); // [B,H,T,3D]
    g.output(qkv, 'qkv');
    const grads = gradients(g, [g.reduceSum(g.mul(qkv, r), null, false)], [g.scalar(1)], [x, ...params]);
    grads.forEach((t2, i) => g.output(t2!, 'd' + ['x', 'gamma', 'beta', 'w', 'b'][i]));
    return g;
  };
  const rng = new Rng(5);
  const rand = (n: number, s: number, m = 0) => Float32Array.from({ length: n }, () => m + s * (2 * rng.nextFloat() - 1));
  const feeds = { x: f32(rand(B * T * Cm, 2, 0.5), [B * T, Cm]), gamma: f32(rand(Cm, 0.5, 1), [Cm]), beta: f32(rand(Cm, 0.3), [Cm]), w: f32(rand(Cm * 3 * Cm, 0.5), [Cm, 3 * Cm]), b: f32(rand(3 * Cm, 0.3), [3 * Cm]), r: f32(rand(B * H * T * 18, 1), [B, H, T, 18]) };
  const outs = ['qkv', 'dx', 'dgamma', 'dbeta', 'dw', 'db'];
  const runG = async (g: Graph) => {
    const s = await createSession(g.toModelBytes(), { device: 'cpu' });
    const o = await s.run(feeds);
    await s.release();
    return outs.map((k) => o[k]!.data as Float32Array);
  };
  const variants = { bf16Projections: true, lnFold: true };
  const ref = await runG(build(false, variants)); // fp32: the variant does nothing
  const fold = await runG(build('emulate', variants));
  const unfolded = await runG(build('emulate', { bf16Projections: true }));
  const errs = outs.map((k, i) => [k, relL2(fold[i]!, ref[i]!), relL2(unfolded[i]!, ref[i]!)] as const);
  t.diagnostic(errs.map(([k, e, eu]) => `${k} ${e.toExponential(2)} (unfolded ${eu.toExponential(2)})`).join(', '));
  for (const [k, e] of errs) assert.ok(e <= 4 * u, `${k}: ${e} from fp32`);
  assert.ok(errs.some(([, e], i) => e !== errs[i]![2]), 'the fold changed nothing');
});

// --- structure of the real bf16 graphs ------------------------------------------------------------------------

/** Nodes of a graph and its Loop bodies. */
function nodesOf(g: Graph): Graph['nodes'] {
  const out: Graph['nodes'] = [];
  const walk = (gr: Graph) => {
    for (const n of gr.nodes) {
      if (n.virtual) continue;
      out.push(n);
      for (const a of Object.values(n.attrs)) if (a instanceof Graph) walk(a);
    }
  };
  walk(g);
  return out;
}

const isRows = (t: Tensor | null | undefined) => !!t?.shape && t.shape.length === 2 && typeof t.shape[0] !== 'number';

test('lnFold real bf16 grads graph: LayerNormalization only forward (+ ln_f backward), unit affine, no [N,C] Mul by γ, no Gemm with C on c_fc, no [N,3C]/[N,4C] ReduceSum', () => {
  const C0 = tiny.n_embd;
  const L = tiny.n_layer;
  const variants = modelVariantsFromEnv({});
  assert.equal(variants.lnFold, true, 'the engine default is on');
  const g = buildGradsGraph(tiny, { dropout: dropoutRates(tiny, 0.1), bf16: true, seed: 0, variants });
  const off = buildGradsGraph(tiny, { dropout: dropoutRates(tiny, 0.1), bf16: true, seed: 0, variants: { ...variants, lnFold: false } });
  const nodes = nodesOf(g);
  const lns = nodes.filter((n) => n.opType === 'LayerNormalization');
  assert.equal(lns.length, 2 * L + 2, 'one per LayerNorm forward, plus ln_f\'s recompute');
  assert.equal(nodesOf(off).filter((n) => n.opType === 'LayerNormalization').length, 2 * (2 * L + 1));
  const paramNamed = (t: Tensor | null, re: RegExp) => !!t && re.test(t.name);
  // ln_f's forward takes its parameters; the 2L folded forwards and ln_f's backward recompute normalize with 1, 0.
  assert.deepEqual(lns.filter((n) => paramNamed(n.inputs[1]!, /\.weight/)).map((n) => n.inputs[1]!.name.replace(/^.*:/, '')), ['transformer.ln_f.weight']);
  const unitLns = lns.filter((n) => !paramNamed(n.inputs[1]!, /\.weight/));
  assert.equal(unitLns.length, 2 * L + 1);
  for (const n of unitLns) {
    const scale = g.constantData(n.inputs[1]!) ?? n.inputs[1]!.graph.constantData(n.inputs[1]!);
    const bias = g.constantData(n.inputs[2]!) ?? n.inputs[2]!.graph.constantData(n.inputs[2]!);
    assert.ok(scale && Array.from(scale.data as ArrayLike<number>).every((x) => x === 1), `${n.name}: scale not the unit constant`);
    assert.ok(bias && Array.from(bias.data as ArrayLike<number>).every((x) => x === 0), `${n.name}: bias not zero`);
  }
  // γ of ln_1 / ln_2 never multiplies a row tensor (only the [C,1] column against [C,M] weights).
  const gammaMuls = nodes.filter((n) => n.opType === 'Mul' && n.inputs.some((t) => paramNamed(t, /h\.\d+\.ln_[12]\.weight/)) && isRows(n.outputs[0]));
  assert.deepEqual(gammaMuls.map((n) => n.name), []);
  assert.ok(nodesOf(off).some((n) => n.opType === 'Mul' && n.inputs.some((t) => paramNamed(t, /h\.\d+\.ln_[12]\.weight/)) && isRows(n.outputs[0])), 'the unfolded graph has them');
  // c_fc: the Gemm writing [N,4C] has no C; no ReduceSum reads an [N,4C] or [N,3C] tensor (the biases come from the Gemm's row C).
  const wide = (t: Tensor | null | undefined, m: number) => isRows(t) && t!.shape![1] === m;
  const fc = nodes.filter((n) => n.opType === 'Gemm' && wide(n.outputs[0], 4 * C0));
  assert.ok(fc.length >= L);
  for (const n of fc) assert.ok(n.inputs.length < 3 || !n.inputs[2], `${n.name} has a C input`);
  assert.ok(!nodes.some((n) => n.opType === 'ReduceSum' && (wide(n.inputs[0], 4 * C0) || wide(n.inputs[0], 3 * C0))));
  assert.ok(nodesOf(off).some((n) => n.opType === 'Gemm' && wide(n.outputs[0], 4 * C0) && !!n.inputs[2]), 'the unfolded c_fc Gemm has C');
});

test('fp32 with lnFold on: the tiny grads and train graphs are byte-identical to lnFold off', () => {
  const hyper: OptimizerHyper = { weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 };
  const opts = { dropout: dropoutRates(tiny, 0.1), bf16: false, seed: 0 };
  const on = modelVariantsFromEnv({});
  const off = { ...on, lnFold: false };
  assert.deepEqual(buildGradsGraph(tiny, { ...opts, variants: on }).toModelBytes(), buildGradsGraph(tiny, { ...opts, variants: off }).toModelBytes());
  for (const accumulate of [false, true]) {
    const train = (variants: ModelVariants) => buildTrainGraph(tiny, hyper, { ...opts, accumulate, flatState: accumulate, variants }).toModelBytes();
    assert.deepEqual(train(on), train(off), `train accumulate=${accumulate}`);
  }
});

const gpt2 = makeConfig({ n_layer: 12, n_head: 12, n_embd: 768, n_positions: 1024, vocab_size: 50260, embd_pdrop: 0.1, attn_pdrop: 0.1, resid_pdrop: 0.1 });
for (const [tag, config] of [
  ['tiny', tiny],
  ['GPT-2 124M', gpt2],
] as const) {
  test(`${tag}: with lnFold (engine defaults, and with bf16Mlp or bf16Projections off) the real bf16 train and grads graphs run on CUDA`, () => {
    const dropout = dropoutRates(config, tag === 'tiny' ? 0.1 : null);
    const dflt = modelVariantsFromEnv({});
    for (const variants of [dflt, { ...dflt, bf16Mlp: false }, { ...dflt, bf16Projections: false }]) assertBf16GraphsRunOnCuda(config, variants, dropout);
  });
}

// --- the tiny model with non-trivial LayerNorm parameters ----------------------------------------------------

// The fixture's LayerNorms are γ = 1, β = 0, where bf16(W⊙γ) = bf16(W) and b + β·W = b: the golden-batch checks
// below then see only the backward. Here γ ~ U(0.5, 1.5), β ~ U(−0.3, 0.3), so the folded forward rounds W⊙γ and
// b + β·W where the unfolded graph rounds y = x̂⊙γ + β.
test("tiny model, random γ and β, golden batch: lnFold 'emulate' loss and gradients within the bf16 bounds of fp32, at most 1.5× the unfolded 'emulate' error, and not equal to it", async (t) => {
  const { config, params0, mb } = tinyGoldenSetup();
  const params = params0();
  const rng = new Rng(21);
  for (const [name, p] of params) {
    if (!/\.ln_[12]\./.test(name)) continue;
    const gammaLike = name.endsWith('.weight');
    for (let i = 0; i < p.data.length; i++) p.data[i] = gammaLike ? 0.5 + rng.nextFloat() : 0.6 * rng.nextFloat() - 0.3;
  }
  const grads = async (bf16: Bf16Mode, fold: boolean) => {
    return withEnv('SFT_LN_FOLD', fold ? '1' : '0', async () => {
      const e = await TrainingEngine.create({ config, params: new Map([...params].map(([k, v]) => [k, { shape: v.shape.slice(), data: v.data.slice() }])), device: 'cpu', stepsPerRun: 1, bf16, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1.0, dropout: 0, seed: 0 });
      try {
        return await e.gradients([mb]);
      } finally {
        await e.dispose();
      }
    });
  };
  const ref = await grads(false, false);
  const unfolded = await grads('emulate', false);
  const fold = await grads('emulate', true);
  const sFold = gradStats(ref, fold, true);
  const sUnfolded = gradStats(ref, unfolded, false);
  const between = gradStats(unfolded, fold, false);
  t.diagnostic(`vs fp32 — lnFold: loss ${sFold.lossRel.toExponential(2)}, worst tensor ${sFold.worstTensor.toExponential(2)}, all ${sFold.total.toExponential(2)}; unfolded: loss ${sUnfolded.lossRel.toExponential(2)}, worst tensor ${sUnfolded.worstTensor.toExponential(2)}, all ${sUnfolded.total.toExponential(2)}; lnFold vs unfolded ${between.total.toExponential(2)}`);
  assert.ok(sFold.lossRel <= u, `loss ${fold.loss} vs fp32 ${ref.loss}`);
  assert.ok(sFold.total <= 1.5 * sUnfolded.total, `lnFold ${sFold.total} vs unfolded ${sUnfolded.total}`);
  assert.ok(between.total > 1e-4, `lnFold only ${between.total} from the unfolded graph: the forward fold did not change the rounding`);
});

// --- the tiny model: golden batch and 20 steps (bf16VariantChecks.ts) ----------------------------------------

registerVariantAccuracyTests('lnFold', 'SFT_LN_FOLD');
registerStackedVariantAccuracyTest('lnFold + bf16Projections + bf16Attention + bf16Mlp', ['SFT_LN_FOLD', 'SFT_BF16_PROJ', 'SFT_BF16_ATTENTION', 'SFT_BF16_MLP']);
