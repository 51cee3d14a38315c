// The bf16Projections variant (ModelVariants.bf16Projections, SFT_BF16_PROJ=1; gpt2Graph.ts attentionQKV /
// attentionOutput, attention.ts): q/k/v and the attention output stay bfloat16 from the c_attn Gemm to the
// c_proj Gemm (c_attn's bias as an extra weight row, c_proj's as the Gemm's C; 1/√D folded into the q columns of
// the bf16 weight and bias).
// - one attention sublayer (c_attn → heads → core → merge → c_proj) under 'emulate': the forward against a JS
//   model of the documented rounding points (every value within one bf16 ulp, ≥ 90 % bit-identical); the five
//   gradients within 4u of fp32 for the fused and the autodiff core, with and without bf16Attention and
//   attention dropout, and the fused core's within 4u of the autodiff core's (same forward, bit for bit);
//   with D = 8 (1/√D not a power of two) the scale goes on the fp32 weights before their Cast, within 4u too;
// - structure of the real bf16 graph: no fp32 [N,3C] tensor, the only fp32 [B,H,T,D] tensors are the two
//   up-casts and the product of the fp32 row sum r = Σ dy⊙y; no Cast on an [N,3C] tensor, no Cast round trip;
//   5 Casts per layer fewer than the default; the dropout scale s = 1/(1−p) enters as one Gemm's alpha × the
//   diagonal of its bf16 matrix (two bf16 constants whose product is s within 2^-11.9, 2.4e-5 for p = 0.1: ORT's
//   bf16 Gemm rounds alpha to bf16; no bf16 Mul on dq/dk, whose bf16 constant would be 0.16 % off);
//   'emulate' keeps bf16 values only in float→bf16→float round trips, and every sublayer output the real graph
//   holds in bf16 (y, the five gradients) is bf16-exact under 'emulate';
// - the real bf16 train and grads graphs (tiny, GPT-2 124M; with each combination of bf16Attention/bf16Mlp)
//   pass the CUDA kernel check (engine/cudaKernels.ts), the vext Gemm with alpha included;
// - fp32 with the variant on: byte-identical to the default graphs;
// - the tiny model's golden batch and 20 AdamW steps within the bf16 bounds (bf16VariantChecks.ts), alone and
//   stacked with bf16Attention and bf16Mlp.
// u = 2^-8.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { attentionBias, attentionCore, attentionOutput, attentionQKV, modelContext, dropoutRates, type Bf16Mode, type ModelVariants } from '../../native-runner/engine/gpt2Graph';
import { gradients } from '../../native-runner/engine/graph/autodiff';
import { Graph, type Tensor } from '../../native-runner/engine/graph/graph';
import { makeConfig, readConfig } from '../../native-runner/model/config';
import { createSession, f32 } from '../../native-runner/engine/ortSession';
import { Rng } from '../../native-runner/util/rng';
import { buildGradsGraph, buildTrainGraph, type OptimizerHyper } from '../../native-runner/engine/trainGraph';
import { BF16_UNIT_ROUNDOFF } from '../../native-runner/engine/bf16Tolerance';
import { assertBf16GraphsRunOnCuda, bf16, bf16Ulp, relL2 } from './helpers';
import { bf16ScalePair } from '../../native-runner/engine/attention';
import { registerStackedVariantAccuracyTest, registerVariantAccuracyTests } from './bf16VariantChecks';

const u = BF16_UNIT_ROUNDOFF;
const root = path.resolve(__dirname, '../..');
const tiny = readConfig(path.join(root, 'samples/tiny-gpt2-chat'));

// --- one attention sublayer -----------------------------------------------------------------------------------

const B = 2;
const T = 6;
const C = 16;
const H = 4;
const D = C / H; // 4: 1/√D = 1/2, a power of two as for GPT-2 (D = 64)
const N = B * T;
const NAMES = ['transformer.h.0.attn.c_attn.weight', 'transformer.h.0.attn.c_attn.bias', 'transformer.h.0.attn.c_proj.weight', 'transformer.h.0.attn.c_proj.bias'] as const;
const INPUTS = ['x', 'wa', 'ba', 'wp', 'bp'] as const;
const GRADS = ['dx', 'dwa', 'dba', 'dwp', 'dbp'] as const;
type Inputs = Record<(typeof INPUTS)[number] | 'r', Float32Array>;
type Outputs = Record<'y' | (typeof GRADS)[number], Float32Array>;

function randomInputs(seed: number): Inputs {
  const rng = new Rng(seed);
  const rand = (n: number, s: number) => Float32Array.from({ length: n }, () => s * (2 * rng.nextFloat() - 1));
  return { x: rand(N * C, 2), wa: rand(C * 3 * C, 0.6), ba: rand(3 * C, 0.5), wp: rand(C * C, 0.5), bp: rand(C, 0.5), r: rand(N * C, 1) };
}

/** y = c_proj(attention(c_attn(x))) as block() wires it; loss = Σ y⊙r; outputs y and the gradients of x and the four parameters. */
function layerGraph(bf16Mode: Bf16Mode, variants: ModelVariants, attnDropout: number, heads = H): Graph {
  const config = makeConfig({ n_layer: 1, n_head: heads, n_embd: C, n_positions: 16, vocab_size: 16 });
  const g = new Graph('attn');
  const x = g.input('x', 'float', ['N', C]);
  const params = [g.input('wa', 'float', [C, 3 * C]), g.input('ba', 'float', [3 * C]), g.input('wp', 'float', [C, C]), g.input('bp', 'float', [C])];
  const r = g.input('r', 'float', ['N', C]);
  const segments = g.tensorConst('int32', [B, T], new Array(B * T).fill(1));
  const c = modelContext(g, config, new Map(NAMES.map((n, i) => [n, params[i]!])), g.ints([B, T]), { bf16: bf16Mode, variants, dropout: { embd: 0, attn: attnDropout, resid: 0 } });
  const { q, k, v } = attentionQKV(c, 0, x);
  const y = attentionOutput(c, 0, attentionCore(c, q, k, v, attentionBias(g, segments, segments)));
  g.output(y, 'y');
  const grads = gradients(g, [g.reduceSum(g.mul(y, r), null, false)], [g.scalar(1)], [x, ...params]);
  grads.forEach((t, i) => g.output(t!, GRADS[i]));
  return g;
}

async function runLayer(g: Graph, x: Inputs): Promise<Outputs> {
  const s = await createSession(g.toModelBytes(), { device: 'cpu' });
  const shapes: Record<keyof Inputs, number[]> = { x: [N, C], wa: [C, 3 * C], ba: [3 * C], wp: [C, C], bp: [C], r: [N, C] };
  const out = await s.run(Object.fromEntries(Object.entries(x).map(([k, v]) => [k, f32(v, shapes[k as keyof Inputs])])));
  await s.release();
  return Object.fromEntries(['y', ...GRADS].map((k) => [k, out[k]!.data as Float32Array])) as Outputs;
}

const fr = Math.fround;

/**
 * The forward's documented rounding points in JS (default attention matrices, no dropout): qkv = bf16(x̂·Ŵs + b̂s)
 * with Ŵs, b̂s the bf16 weight and bias, q columns × 1/√D (exact); S = bf16(q·kᵀ) + bias; P = softmax in fp32;
 * y = bf16(bf16(P)·v); out = float(bf16(merged·bf16(Wp) + bf16(bp))). Double sums rounded to fp32 stand for
 * fp32 accumulation.
 */
function emulatedForward(x: Inputs): number[] {
  const s = 1 / Math.sqrt(D);
  const xo = Array.from(x.x, bf16);
  const wa = Array.from(x.wa, (w, i) => bf16(w) * (i % (3 * C) < C ? s : 1));
  const ba = Array.from(x.ba, (b, i) => bf16(b) * (i < C ? s : 1));
  const qkv: number[] = [];
  for (let n = 0; n < N; n++) {
    for (let j = 0; j < 3 * C; j++) {
      let acc = 0;
      for (let i = 0; i < C; i++) acc += xo[n * C + i]! * wa[i * 3 * C + j]!;
      qkv.push(bf16(fr(fr(acc) + ba[j]!)));
    }
  }
  const at = (b: number, t: number, part: number, h: number, d: number) => qkv[(b * T + t) * 3 * C + part * C + h * D + d]!;
  const merged = new Array<number>(N * C).fill(0);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < T; i++) {
        const sc: number[] = [];
        for (let j = 0; j < T; j++) {
          let acc = 0;
          for (let d = 0; d < D; d++) acc += at(b, i, 0, h, d) * at(b, j, 1, h, d);
          sc.push(j <= i ? bf16(fr(acc)) : fr(bf16(fr(acc)) - 1e9));
        }
        const mx = Math.max(...sc);
        const e = sc.map((v) => Math.exp(v - mx));
        const sum = e.reduce((a, b2) => a + b2, 0);
        const p = e.map((v) => bf16(fr(v / sum)));
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let j = 0; j < T; j++) acc += p[j]! * at(b, j, 2, h, d);
          merged[(b * T + i) * C + h * D + d] = bf16(fr(acc));
        }
      }
    }
  }
  const out: number[] = [];
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < C; k++) {
      let acc = 0;
      for (let i = 0; i < C; i++) acc += merged[n * C + i]! * bf16(x.wp[i * C + k]!);
      out.push(bf16(fr(fr(acc) + bf16(x.bp[k]!))));
    }
  }
  return out;
}

test("bf16Projections 'emulate' forward rounds as documented (JS model: within one bf16 ulp, ≥ 90 % bit-identical), unlike the default", async (t) => {
  const x = randomInputs(5);
  const got = (await runLayer(layerGraph('emulate', { bf16Projections: true }, 0), x)).y;
  const ref = emulatedForward(x);
  let exact = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(got[i]! - ref[i]!);
    if (d === 0) exact++;
    else assert.ok(d <= bf16Ulp(ref[i]!) * 1.0001, `y[${i}] = ${got[i]} vs the JS model ${ref[i]}`);
  }
  // The output is a bf16 value (the c_proj Gemm's, cast to float).
  assert.ok(got.every((v) => v === bf16(v)), 'the c_proj output is not at bf16 precision');
  const dflt = (await runLayer(layerGraph('emulate', {}, 0), x)).y;
  assert.ok(dflt.some((v, i) => v !== got[i]), 'the variant computed the default emulate output');
  t.diagnostic(`bit-identical to the JS model: ${((100 * exact) / ref.length).toFixed(1)} %`);
  assert.ok(exact / ref.length >= 0.9, `only ${exact} of ${ref.length} bit-identical`);
});

for (const dropout of [0, 0.25]) {
  test(`bf16Projections 'emulate' sublayer, attention dropout ${dropout}: output and gradients within 4u of fp32 (fused and autodiff core, with and without bf16Attention)`, async (t) => {
    const x = randomInputs(7);
    const fp32 = await runLayer(layerGraph(false, {}, dropout), x);
    const rows: string[] = [];
    const byVariant = new Map<string, Outputs>();
    for (const autodiffAttention of [false, true]) {
      for (const bf16Attention of [false, true]) {
        if (autodiffAttention && bf16Attention) continue; // bf16Attention is ignored by the autodiff core
        const name = `${autodiffAttention ? 'autodiff' : 'fused'}${bf16Attention ? '+bf16Attention' : ''}`;
        const got = await runLayer(layerGraph('emulate', { bf16Projections: true, autodiffAttention, bf16Attention }, dropout), x);
        byVariant.set(name, got);
        const errs = (['y', ...GRADS] as const).map((k) => relL2(got[k], fp32[k]));
        rows.push(`${name}: ${errs.map((e) => e.toExponential(1)).join(' ')}`);
        errs.forEach((e, i) => assert.ok(e <= 4 * u, `${name} ${['y', ...GRADS][i]}: ${e} relative L2 from fp32`));
        // Nothing was skipped: every gradient carries bf16 noise.
        errs.forEach((e, i) => assert.ok(e > 0, `${name} ${['y', ...GRADS][i]} equals fp32`));
        // What the real graph holds in bf16 (the c_proj output, the Gemm gradients cast to float) is bf16-exact.
        for (const k of ['y', ...GRADS] as const) assert.ok(got[k].every((v) => v === bf16(v)), `${name} ${k}: not at bf16 precision under 'emulate'`);
      }
    }
    // The fused and the autodiff core compute the same gradients up to bf16 rounding.
    const fused = byVariant.get('fused')!;
    const auto = byVariant.get('autodiff')!;
    assert.deepEqual(fused.y, auto.y, 'same forward ops, same output');
    for (const k of GRADS) assert.ok(relL2(fused[k], auto[k]) <= 4 * u, `${k}: fused vs autodiff ${relL2(fused[k], auto[k])}`);
    t.diagnostic(`rel L2 from fp32 (y ${GRADS.join(' ')}): ${rows.join('; ')}`);
  });
}

test("bf16Projections with D = 8 (1/√D not a power of two): the scale multiplies the fp32 weights before their Cast; within 4u of fp32", async () => {
  const g = layerGraph(true, { bf16Projections: true }, 0.1, 2);
  const scaleMuls = g.nodes.filter((n) => n.opType === 'Mul' && n.inputs.some((t) => t?.name === 'wa' || t?.name === 'ba'));
  assert.equal(scaleMuls.length, 2);
  for (const m of scaleMuls) assert.deepEqual(g.nodes.filter((n) => n.inputs.includes(m.outputs[0]!)).map((n) => `${n.opType}:${n.outputs[0]!.dtype}`), ['Cast:bfloat16']);
  const x = randomInputs(9);
  const fp32 = await runLayer(layerGraph(false, {}, 0.1, 2), x);
  const got = await runLayer(layerGraph('emulate', { bf16Projections: true }, 0.1, 2), x);
  for (const k of ['y', ...GRADS] as const) {
    const e = relL2(got[k], fp32[k]);
    assert.ok(e > 0 && e <= 4 * u, `${k}: ${e} relative L2 from fp32`);
  }
});

test('bf16ScalePair: two bf16 constants whose fp32 product is the dropout scale within 2^-11.9 (p = k/1000 < 0.9), 2.4e-5 for p = 0.1, where one bf16 constant is up to 2^-9 off', () => {
  let worst = 0;
  for (let k = 1; k < 900; k++) {
    const s = Math.fround(1 / (1 - Math.fround(k / 1000)));
    const { alpha, diag, relError } = bf16ScalePair(s);
    assert.equal(alpha, bf16(alpha));
    assert.equal(diag, bf16(diag));
    assert.equal(relError, Math.abs(Math.fround(alpha * diag) - s) / s);
    assert.ok(relError <= Math.abs(bf16(s) - s) / s);
    worst = Math.max(worst, relError);
  }
  assert.ok(worst <= 2 ** -11.9, `worst ${worst}`);
  assert.ok(bf16ScalePair(1 / 0.9).relError < 2.5e-5);
  assert.ok(Math.abs(bf16(1 / 0.9) * 0.9 - 1) > 1.5e-3, 'one bf16 constant: 0.16 % off');
  assert.equal(bf16ScalePair(1.25).relError, 0);
});

// --- graph structure ---------------------------------------------------------------------------------------

const DROP = { embd: 0.1, attn: 0.1, resid: 0.1 };
const C3 = 3 * tiny.n_embd;
const Dt = tiny.n_embd / tiny.n_head;
const isQkv = (x: Tensor | null): x is Tensor => !!x?.shape && x.shape.length === 2 && x.shape[0] === 'N' && x.shape[1] === C3;
/** The backward's Gemm forming [s·v | 1 1 | 0…] (rows B·H·Tk, an alpha). */
const isVextGemm = (n: { opType: string; attrs: Record<string, unknown>; outputs: Tensor[] }): boolean => n.opType === 'Gemm' && n.attrs.alpha !== undefined && n.outputs[0]!.shape?.[0] === 'BHTk';
const isHeads = (x: Tensor | null): x is Tensor => !!x?.shape && x.shape.length === 4 && x.shape[0] === 'B' && x.shape[1] === tiny.n_head && x.shape[3] === Dt;

for (const bf16Attention of [false, true]) {
  test(`bf16Projections real bf16 graph${bf16Attention ? ' with bf16Attention' : ''}: no fp32 [N,3C] tensor, fp32 [B,H,T,D] only for r = Σ dy⊙y, no Cast on [N,3C], no Cast round trip, fewer Casts than the default`, (t) => {
    const variants = { bf16Projections: true, bf16Attention };
    const nodes = buildGradsGraph(tiny, { dropout: DROP, seed: 0, bf16: true, variants }).nodes.filter((n) => !n.virtual);
    const L = tiny.n_layer;
    assert.deepEqual(nodes.flatMap((n) => n.outputs.filter((o) => isQkv(o) && o.dtype !== 'bfloat16')).map((o) => o.name), [], 'an fp32 [N,3C] tensor');
    const fpHeads = nodes.filter((n) => n.outputs.some((o) => isHeads(o) && o.dtype === 'float'));
    assert.deepEqual(fpHeads.map((n) => n.opType).sort(), [...Array(2 * L).fill('Cast'), ...Array(L).fill('Mul')].sort(), 'fp32 [B,H,T,D] writers');
    // Those Casts are up-casts of y and dy, and the Mul's product only feeds the row sum.
    for (const n of fpHeads) {
      if (n.opType === 'Cast') assert.equal(n.inputs[0]!.dtype, 'bfloat16');
      else assert.deepEqual(nodes.filter((m) => m.inputs.includes(n.outputs[0]!)).map((m) => m.opType), ['ReduceSum']);
    }
    assert.equal(nodes.filter((n) => n.opType === 'Cast' && (n.inputs.some(isQkv) || n.outputs.some(isQkv))).length, 0, 'a Cast on [N,3C]');
    const producer = new Map(nodes.flatMap((n) => n.outputs.map((o) => [o, n] as const)));
    const roundTrips = nodes.filter((n) => n.opType === 'Cast' && producer.get(n.inputs[0]!)?.opType === 'Cast' && producer.get(n.inputs[0]!)!.inputs[0]!.dtype === n.outputs[0]!.dtype);
    assert.deepEqual(roundTrips.map((n) => n.name), [], 'Cast round trips');
    // c_attn: a bf16 Gemm of [x | 1 0…] [N,C+8] and [W; b; 0…] (the bias as a weight row, no C); c_proj: a bf16 Gemm
    // with the bf16 bias as C; 1/√D folded into the weights (two bf16 Muls per layer on [C,3C] and [3C]).
    const Ct = tiny.n_embd;
    const cAttn = nodes.filter((n) => n.opType === 'Gemm' && n.inputs.length === 2 && n.inputs[0]!.shape?.[1] === Ct + 8 && isQkv(n.outputs[0]!));
    assert.equal(cAttn.length, L);
    assert.ok(cAttn.every((n) => n.inputs[0]!.dtype === 'bfloat16' && n.inputs[1]!.shape?.[0] === Ct + 8));
    const cProj = nodes.filter((n) => n.opType === 'Gemm' && n.inputs[2]?.dtype === 'bfloat16' && n.outputs[0]!.shape?.[0] === 'N' && n.outputs[0]!.shape?.[1] === Ct);
    assert.equal(cProj.length, L);
    // No ReduceSum over [N,3C]: the c_attn bias gradient is a row of the weight-gradient Gemm.
    assert.ok(!nodes.some((n) => n.opType === 'ReduceSum' && n.inputs.some(isQkv)));
    assert.equal(nodes.filter((n) => n.opType === 'Mul' && n.outputs[0]!.dtype === 'bfloat16' && n.outputs[0]!.shape?.[n.outputs[0]!.shape.length - 1] === C3).length, 4 * L, 'scale Muls forward + backward');
    // The dropout scale enters through one Gemm per layer, not through Muls on dq/dk.
    assert.ok(!nodes.some((n) => n.opType === 'Mul' && n.outputs.some((o) => isHeads(o) && o.dtype === 'bfloat16')), 'a bf16 Mul on a [B,H,T,D] gradient (the dropout unscale)');
    // That Gemm ([s·v | 1 1 | 0…], rows B·H·Tk): alpha × the diagonal of its bf16 matrix is 1/(1−p) (bf16ScalePair).
    const { alpha, diag } = bf16ScalePair(1 / 0.9);
    const vextGemms = nodes.filter(isVextGemm);
    assert.equal(vextGemms.length, L);
    for (const n of vextGemms) {
      assert.equal((n.attrs.alpha as { f: number }).f, alpha);
      assert.equal(n.inputs[1]!.dtype, 'bfloat16');
      assert.ok(Math.abs((alpha * diag) / Math.fround(1 / 0.9) - 1) < 2.5e-5);
    }
    const casts = nodes.filter((n) => n.opType === 'Cast').length;
    const dflt = buildGradsGraph(tiny, { dropout: DROP, seed: 0, bf16: true, variants: { bf16Attention } }).nodes.filter((n) => n.opType === 'Cast').length;
    t.diagnostic(`Cast nodes: ${casts} (default ${dflt}), ${tiny.n_layer} layers`);
    assert.equal(dflt - casts, 5 * L, 'Casts saved per layer');
  });
}

test("bf16Projections 'emulate' graph: bf16 values only inside float→bfloat16→float round trips (fused and autodiff core, with and without bf16Attention)", () => {
  for (const autodiffAttention of [false, true]) {
    for (const bf16Attention of [false, true]) {
      const emu = buildGradsGraph(tiny, { dropout: DROP, seed: 0, bf16: 'emulate', variants: { bf16Projections: true, bf16Attention, autodiffAttention } }).nodes.filter((n) => !n.virtual);
      const toBf16 = emu.filter((n) => n.opType === 'Cast' && n.outputs[0]!.dtype === 'bfloat16');
      assert.ok(toBf16.length > 0);
      for (const c of toBf16) {
        const users = emu.filter((n) => n.inputs.includes(c.outputs[0]!));
        assert.ok(users.length >= 1 && users.every((n) => n.opType === 'Cast' && n.outputs[0]!.dtype === 'float'), `${c.name}: bf16 value used by ${users.map((n) => n.opType)}`);
      }
      assert.ok(!emu.some((n) => n.opType !== 'Cast' && n.outputs.some((o) => o.dtype === 'bfloat16')), 'a bf16 op in the emulated graph');
    }
  }
});

test('fp32 with bf16Projections on: the tiny grads and train graphs are byte-identical to the default', () => {
  const hyper: OptimizerHyper = { weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 };
  const opts = { dropout: DROP, seed: 0, bf16: false as const };
  assert.deepEqual(buildGradsGraph(tiny, { ...opts, variants: { bf16Projections: true } }).toModelBytes(), buildGradsGraph(tiny, opts).toModelBytes());
  const train = (variants: ModelVariants) => buildTrainGraph(tiny, hyper, { ...opts, accumulate: true, flatState: true, variants }).toModelBytes();
  assert.deepEqual(train({ bf16Projections: true, bf16Attention: true }), train({ bf16Attention: true }));
});

// --- CUDA kernels ------------------------------------------------------------------------------------------

const gpt2 = makeConfig({ n_layer: 12, n_head: 12, n_embd: 768, n_positions: 1024, vocab_size: 50260, embd_pdrop: 0.1, attn_pdrop: 0.1, resid_pdrop: 0.1 });
for (const [tag, config] of [
  ['tiny', tiny],
  ['GPT-2 124M', gpt2],
] as const) {
  test(`${tag}: with bf16Projections (and each combination of bf16Attention / bf16Mlp) the real bf16 train and grads graphs run on CUDA`, () => {
    const dropout = dropoutRates(config, tag === 'tiny' ? 0.1 : null);
    for (const bf16Attention of [false, true]) {
      for (const bf16Mlp of [false, true]) {
        const grads = assertBf16GraphsRunOnCuda(config, { bf16Projections: true, bf16Attention, bf16Mlp }, dropout);
        // The check saw the variant: bf16 Split/Transpose on q/k/v and the alpha Gemm.
        assert.ok(grads.nodes.some((n) => n.opType === 'Split' && n.inputs[0]!.dtype === 'bfloat16'));
        assert.equal(grads.nodes.filter(isVextGemm).length, config.n_layer);
      }
    }
  });
}

// --- the tiny model: golden batch and 20 steps (bf16VariantChecks.ts) ----------------------------------------

registerVariantAccuracyTests('bf16Projections', 'SFT_BF16_PROJ');
registerStackedVariantAccuracyTest('bf16Projections + bf16Attention + bf16Mlp', ['SFT_BF16_PROJ', 'SFT_BF16_ATTENTION', 'SFT_BF16_MLP']);
