// The bf16Mlp variant (ModelVariants.bf16Mlp, SFT_BF16_MLP=1; engine/mlp.ts): the MLP's [N,4C] activations
// stay bfloat16 from the c_fc Gemm to the c_proj Gemm, with a hand-written backward.
// - one MLP on random inputs under 'emulate': output and all five gradients against a JS model of the rounding
//   mlp.ts documents (bf16 GEMM operands and products, bias as the Gemm's C, FastGeluKernel<BFloat16>'s 8
//   bf16 steps, the Gelu derivative's 15 bf16 nodes — or, with geluGrad 'table', the table entry of h's bucket
//   times g rounded once, or with 'fp32' the fp32 chain rounded once) — every value within one bf16 ulp and the
//   bf16 outputs ≥ 90 % bit-identical (measured: 100 %); the table variant's own tests: geluTable.test.ts;
// - the JS model of the bf16 Gelu kernel against gelu_new: where it is accurate and where it is not;
// - fp32 with the variant: the graph is byte-identical to the default (layer and whole grads graph);
// - structure of the real bf16 graph: every [N,4C] tensor is bf16 (forward Gemm Gelu, backward Gemm + 15
//   nodes), no Cast on one, dh read by the two c_fc gradient Gemms and the bias ReduceSum, h and a kept in
//   bf16; 'emulate' rounds where the real graph rounds (7 more per layer: the Gelu kernel's inner steps);
// - the tiny model's golden batch: loss and gradients within bf16Emulation.test.ts's bounds of fp32, beside
//   the default 'emulate' graph's; 20 AdamW steps within engine/bf16Tolerance.ts's bf16 rule and u/8.
// u = 2^-8. The engine reads the variant from SFT_BF16_MLP when it builds its sessions (withVariant below).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { mlp, modelContext, type Bf16Mode } from '../../native-runner/engine/gpt2Graph';
import { GELU_BF16_CONSTANTS, GELU_TABLE_RANGE, GELU_TABLE_SCALE_LOG2, geluGradTable, mlpBf16, roundBf16 as bf16, type GeluGradPrecision } from '../../native-runner/engine/mlp';
import { gradients } from '../../native-runner/engine/graph/autodiff';
import { Graph, type Shape, type Tensor } from '../../native-runner/engine/graph/graph';
import { makeConfig, readConfig } from '../../native-runner/model/config';
import { createSession, f32 } from '../../native-runner/engine/ortSession';
import { Rng } from '../../native-runner/util/rng';
import { buildGradsGraph } from '../../native-runner/engine/trainGraph';
import { BF16_UNIT_ROUNDOFF } from '../../native-runner/engine/bf16Tolerance';
import { bf16Ulp, geluGradExpModel, relL2 } from './helpers';
import { registerVariantAccuracyTests } from './bf16VariantChecks';

const u = BF16_UNIT_ROUNDOFF;

// --- one MLP against the JS rounding model ------------------------------------------------------------------

const N = 12;
const C = 8;
const W = 4 * C;
const NAMES = ['transformer.h.0.mlp.c_fc.weight', 'transformer.h.0.mlp.c_fc.bias', 'transformer.h.0.mlp.c_proj.weight', 'transformer.h.0.mlp.c_proj.bias'] as const;
const GRADS = ['dx', 'dwfc', 'dbfc', 'dwproj', 'dbproj'] as const;
type Outputs = Record<'y' | (typeof GRADS)[number], Float32Array>;

interface Inputs {
  x: Float32Array;
  wfc: Float32Array;
  bfc: Float32Array;
  wproj: Float32Array;
  bproj: Float32Array;
  r: Float32Array;
}

function randomInputs(seed: number): Inputs {
  const rng = new Rng(seed);
  const rand = (n: number, s: number) => Float32Array.from({ length: n }, () => s * (2 * rng.nextFloat() - 1));
  // h = x·Wfc + b spreads over about ±5, so the Gelu runs through its negative tail, its minimum and its linear part.
  return { x: rand(N * C, 2), wfc: rand(C * W, 0.9), bfc: rand(W, 1), wproj: rand(W * C, 0.5), bproj: rand(C, 0.5), r: rand(N * C, 1) };
}

/** y = mlp(x) (mlpBf16 with `geluGrad` when given); loss = Σ y⊙r; outputs y and the gradients of x and the four parameters. */
function layerGraph(bf16: Bf16Mode, bf16Mlp: boolean, geluGrad?: GeluGradPrecision): { g: Graph; n0: number } {
  const config = makeConfig({ n_layer: 1, n_head: 2, n_embd: C, n_positions: 16, vocab_size: 16 });
  const g = new Graph('mlp');
  const x = g.input('x', 'float', [N, C]);
  const shapes: Shape[] = [[C, W], [W], [W, C], [C]];
  const params = NAMES.map((n, i) => g.input(['wfc', 'bfc', 'wproj', 'bproj'][i]!, 'float', shapes[i]!));
  const r = g.input('r', 'float', [N, C]);
  const c = modelContext(g, config, new Map(NAMES.map((n, i) => [n, params[i]!])), g.ints([N, 1]), { bf16, variants: { bf16Mlp } });
  const y = geluGrad ? mlpBf16(c, x, params[0]!, params[1]!, params[2]!, params[3]!, geluGrad) : mlp(c, 0, x);
  const n0 = g.nodes.length;
  g.output(y, 'y');
  const grads = gradients(g, [g.reduceSum(g.mul(y, r), null, false)], [g.scalar(1)], [x, ...params]);
  grads.forEach((t, i) => g.output(t!, GRADS[i]));
  return { g, n0 };
}

async function runLayer(g: Graph, x: Inputs): Promise<Outputs> {
  const s = await createSession(g.toModelBytes(), { device: 'cpu' });
  const out = await s.run({ x: f32(x.x, [N, C]), wfc: f32(x.wfc, [C, W]), bfc: f32(x.bfc, [W]), wproj: f32(x.wproj, [W, C]), bproj: f32(x.bproj, [C]), r: f32(x.r, [N, C]) });
  await s.release();
  return Object.fromEntries(['y', ...GRADS].map((k) => [k, out[k]!.data as Float32Array])) as Outputs;
}

const fr = Math.fround;

/** The bf16 kernel's Gelu (FastGeluKernel<BFloat16>): every step rounded to bf16, constants in bf16. */
function geluKernelBf16(x: number): number {
  const { a, b, c } = GELU_BF16_CONSTANTS;
  const inner = bf16(bf16(bf16(c * x) * x) + b);
  const t = bf16(Math.tanh(bf16(x * inner)));
  return bf16(x * bf16(bf16(a * t) + a));
}

/** gy·gelu_new'(x) in fp32 steps, the formula of autodiff.ts geluTanhGrad (mlp.ts's fp32 option) (σ computed exactly, then rounded to fp32). */
function geluGradFp32(x: number, gy: number): number {
  const k = Math.sqrt(2 / Math.PI);
  const a = 0.044715;
  const x2 = fr(x * x);
  const v = fr(x * fr(fr(x2 * fr(2 * k * a)) + fr(2 * k)));
  const s = fr(1 / (1 + Math.exp(-v)));
  const dv = fr(fr(x2 * fr(6 * k * a)) + fr(2 * k));
  const r = fr(fr(x * fr(1 - s)) * dv);
  return fr(gy * fr(s * fr(r + 1)));
}

/** gy·gelu_new'(x) in bf16 steps, the formula of mlp.ts geluTanhGradBf16 (each op rounded to bf16, constants in bf16). */
function geluGradBf16(x: number, gy: number): number {
  return bf16(gy * geluGradExpModel(x));
}

/** gy·gelu_new'(x) as mlp.ts geluTanhGradTable computes it: the table entry of x's bucket (trunc(clamp(x, ±R)·2^k), negative buckets from the end), times gy, rounded once. */
function geluGradTableModel(x: number, gy: number): number {
  const table = geluGradTable();
  const j = Math.trunc(Math.min(Math.max(x, -GELU_TABLE_RANGE), GELU_TABLE_RANGE) * 2 ** GELU_TABLE_SCALE_LOG2);
  return bf16(gy * table[j >= 0 ? j : table.length + j]!);
}

/** The documented 'emulate' rounding of mlp.ts in JS (double sums rounded to fp32 stand for fp32 accumulation). */
function emulatedReference(x: Inputs, geluGrad: GeluGradPrecision): Record<'y' | 'h' | (typeof GRADS)[number], number[]> {
  const xo = Array.from(x.x, bf16);
  const wfc = Array.from(x.wfc, bf16);
  const bfc = Array.from(x.bfc, bf16);
  const wproj = Array.from(x.wproj, bf16);
  const dyo = Array.from(x.r, bf16);
  const h: number[] = [];
  const act: number[] = [];
  for (let n = 0; n < N; n++) {
    for (let j = 0; j < W; j++) {
      let s = 0;
      for (let i = 0; i < C; i++) s += xo[n * C + i]! * wfc[i * W + j]!;
      const v = bf16(fr(fr(s) + bfc[j]!));
      h.push(v);
      act.push(geluKernelBf16(v));
    }
  }
  const out = { h, y: [] as number[], dx: [] as number[], dwfc: [] as number[], dbfc: [] as number[], dwproj: [] as number[], dbproj: [] as number[] };
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < C; k++) {
      let s = 0;
      for (let j = 0; j < W; j++) s += act[n * W + j]! * wproj[j * C + k]!;
      out.y.push(fr(bf16(fr(s)) + x.bproj[k]!));
    }
  }
  for (let k = 0; k < C; k++) {
    let s = 0;
    for (let n = 0; n < N; n++) s += x.r[n * C + k]!;
    out.dbproj.push(fr(s));
  }
  for (let j = 0; j < W; j++) {
    for (let k = 0; k < C; k++) {
      let s = 0;
      for (let n = 0; n < N; n++) s += act[n * W + j]! * dyo[n * C + k]!;
      out.dwproj.push(bf16(fr(s)));
    }
  }
  const dh: number[] = [];
  for (let n = 0; n < N; n++) {
    for (let j = 0; j < W; j++) {
      let s = 0;
      for (let k = 0; k < C; k++) s += dyo[n * C + k]! * wproj[j * C + k]!;
      const gy = bf16(fr(s));
      const hv = h[n * W + j]!;
      dh.push(geluGrad === 'fp32' ? geluGradFp32(hv, gy) : geluGrad === 'table' ? geluGradTableModel(hv, gy) : geluGradBf16(hv, gy));
    }
  }
  // fp32: dh is fp32, its column sums too; exp/table: dh is bf16 already and its sums are rounded to bf16.
  for (let j = 0; j < W; j++) {
    let s = 0;
    for (let n = 0; n < N; n++) s += dh[n * W + j]!;
    out.dbfc.push(geluGrad === 'fp32' ? fr(s) : bf16(fr(s)));
  }
  const dho = dh.map(bf16);
  for (let n = 0; n < N; n++) {
    for (let i = 0; i < C; i++) {
      let s = 0;
      for (let j = 0; j < W; j++) s += dho[n * W + j]! * wfc[i * W + j]!;
      out.dx.push(bf16(fr(s)));
    }
  }
  for (let i = 0; i < C; i++) {
    for (let j = 0; j < W; j++) {
      let s = 0;
      for (let n = 0; n < N; n++) s += xo[n * C + i]! * dho[n * W + j]!;
      out.dwfc.push(bf16(fr(s)));
    }
  }
  return out;
}


/**
 * Every value within `ulps` bf16 ulps of the reference (of the value's bf16 part `less` removed, for y = bf16 + bias)
 * or, for fp32 sums, within `rel` of the largest reference entry; returns the bit-identical share.
 */
function compare(name: string, got: Float32Array, ref: number[], opts: { ulps?: number; rel?: number; less?: (i: number) => number } = {}): number {
  assert.equal(got.length, ref.length, `${name}: length`);
  const peak = Math.max(...ref.map(Math.abs));
  let exact = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(got[i]! - ref[i]!);
    if (d === 0) {
      exact++;
      continue;
    }
    if (opts.rel !== undefined) assert.ok(d <= opts.rel * peak, `${name}[${i}] = ${got[i]} vs reference ${ref[i]}`);
    else {
      const base = ref[i]! - (opts.less?.(i) ?? 0);
      assert.ok(d <= (opts.ulps ?? 1) * bf16Ulp(base) * 1.0001, `${name}[${i}] = ${got[i]} vs reference ${ref[i]} (more than ${opts.ulps ?? 1} bf16 ulp)`);
    }
  }
  return exact / ref.length;
}


for (const geluGrad of ['exp', 'table', 'fp32'] as const) {
test(`bf16Mlp 'emulate', Gelu derivative in ${geluGrad}: output and gradients round as mlp.ts documents (JS model), within bf16 tolerance of fp32`, async (t) => {
  const x = randomInputs(11);
  const got = await runLayer(layerGraph('emulate', true, geluGrad).g, x);
  const ref = emulatedReference(x, geluGrad);
  // h spans the Gelu's regions: the negative tail, the minimum, the near-linear part.
  assert.ok(Math.min(...ref.h) < -2.5 && Math.max(...ref.h) > 2.5 && ref.h.some((v) => v > -1 && v < -0.5), `h in [${Math.min(...ref.h)}, ${Math.max(...ref.h)}]`);
  const exact = {
    y: compare('y', got.y, ref.y, { less: (i) => x.bproj[i % C]! }),
    dx: compare('dx', got.dx, ref.dx),
    dwfc: compare('dwfc', got.dwfc, ref.dwfc),
    dbfc: geluGrad === 'fp32' ? compare('dbfc', got.dbfc, ref.dbfc, { rel: 1e-5 }) : compare('dbfc', got.dbfc, ref.dbfc),
    dwproj: compare('dwproj', got.dwproj, ref.dwproj),
    dbproj: compare('dbproj', got.dbproj, ref.dbproj, { rel: 1e-6 }),
  };
  for (const [k, e] of Object.entries(exact)) if (k !== 'dbproj' && (k !== 'dbfc' || geluGrad !== 'fp32')) assert.ok(e >= 0.9, `${k}: only ${(100 * e).toFixed(1)} % bit-identical to the JS model`);
  // The JS model of the default rounding (fp32 bias add and Gelu) is not what the variant computes.
  const fp32 = await runLayer(layerGraph(false, false).g, x);
  const dflt = await runLayer(layerGraph('emulate', false).g, x);
  assert.ok(dflt.y.some((v, i) => v !== got.y[i]), 'the variant computed the default emulate output');
  const rows: string[] = [];
  for (const k of ['y', ...GRADS] as const) {
    const e = relL2(got[k], fp32[k]);
    const d = relL2(dflt[k], fp32[k]);
    rows.push(`${k} ${e.toExponential(2)} (default ${d.toExponential(2)})`);
    assert.ok(e <= 4 * u, `${k}: ${e} relative L2 from fp32`);
  }
  t.diagnostic(`bit-identical to the JS model: ${Object.entries(exact).map(([k, e]) => `${k} ${(100 * e).toFixed(1)}%`).join(', ')}; rel L2 from fp32: ${rows.join(', ')}`);
});
}

test('the bf16 Gelu kernel model: constants 0.13 % / 0.09 % off; ≤ 2 bf16 ulps for x ≥ 0, ≤ 9 on [-2, 0), 0.01 absolute on [-8, 8]', (t) => {
  const k = Math.sqrt(2 / Math.PI);
  assert.equal(GELU_BF16_CONSTANTS.b, 0.796875);
  assert.ok(Math.abs(GELU_BF16_CONSTANTS.b / k - 1) < 1.4e-3 && Math.abs(GELU_BF16_CONSTANTS.b / k - 1) > 1.2e-3);
  assert.ok(Math.abs(GELU_BF16_CONSTANTS.c / (0.044715 * k) - 1) < 1e-3);
  const worst = { pos: 0, mid: 0, tail: 0, abs: 0 };
  for (let i = -800; i <= 800; i++) {
    const v = bf16(i / 100);
    const exact = 0.5 * v * (1 + Math.tanh(k * (v + 0.044715 * v ** 3)));
    const d = Math.abs(geluKernelBf16(v) - exact);
    const ulps = d / bf16Ulp(exact);
    if (v >= 0) worst.pos = Math.max(worst.pos, ulps);
    else if (v >= -2) worst.mid = Math.max(worst.mid, ulps);
    else worst.tail = Math.max(worst.tail, ulps);
    worst.abs = Math.max(worst.abs, d);
  }
  t.diagnostic(`worst bf16 ulps: x ≥ 0 ${worst.pos.toFixed(2)}, [-2, 0) ${worst.mid.toFixed(2)}, x < -2 ${worst.tail.toFixed(0)} (0.5 + 0.5·tanh cancels); worst absolute ${worst.abs.toExponential(2)}`);
  assert.ok(worst.pos <= 2 && worst.mid <= 9 && worst.abs <= 0.01, JSON.stringify(worst));
  // The cancellation in the negative tail is real: relative accuracy is lost there (the test documents it).
  assert.ok(worst.tail > 16);
});

// --- graph structure ------------------------------------------------------------------------------------------

const isWide = (t: Tensor | null): t is Tensor => !!t?.shape && t.shape.length === 2 && t.shape[0] === N && t.shape[1] === W;

test('fp32 with bf16Mlp on: the layer and the tiny grads graph are byte-identical to the default', () => {
  assert.deepEqual(layerGraph(false, true).g.toModelBytes(), layerGraph(false, false).g.toModelBytes());
  const tiny = readConfig(path.resolve(__dirname, '../../samples/tiny-gpt2-chat'));
  const opts = { dropout: { embd: 0.1, attn: 0.1, resid: 0.1 }, seed: 0, bf16: false as const };
  assert.deepEqual(buildGradsGraph(tiny, { ...opts, variants: { bf16Mlp: true } }).toModelBytes(), buildGradsGraph(tiny, opts).toModelBytes());
});

test('bf16Mlp real bf16 graph: every [N,4C] tensor is bf16 (forward Gemm Gelu, backward Gemm + 15 bf16 nodes), no Cast on one, dh read by the c_fc gradient Gemms and the bias ReduceSum', (t) => {
  const { g, n0 } = layerGraph(true, true, 'exp');
  const nodes = g.nodes.filter((n) => !n.virtual);
  const fwd = g.nodes.slice(0, n0).filter((n) => !n.virtual && n.outputs.some(isWide));
  assert.deepEqual(fwd.map((n) => `${n.opType}:${n.outputs[0]!.dtype}`), ['Gemm:bfloat16', 'Gelu:bfloat16']);
  assert.equal(fwd[0]!.inputs[2]!.dtype, 'bfloat16', 'the c_fc bias is the Gemm C input in bf16');
  const bwd = g.nodes.slice(n0).filter((n) => !n.virtual && n.outputs.some(isWide));
  assert.deepEqual(bwd.map((n) => n.opType), ['Gemm', 'Mul', 'Mul', 'Add', 'Mul', 'Min', 'Exp', 'Add', 'Mul', 'Add', 'Mul', 'Add', 'Mul', 'Mul', 'Div', 'Mul']);
  const wideOut = nodes.flatMap((n) => n.outputs.filter(isWide));
  assert.deepEqual([...new Set(wideOut.map((o) => o.dtype))], ['bfloat16'], 'an fp32 [N,4C] tensor in the variant graph');
  assert.equal(nodes.filter((n) => n.opType === 'Cast' && (n.inputs.some(isWide) || n.outputs.some(isWide))).length, 0);
  const dh = bwd[bwd.length - 1]!.outputs[0]!;
  assert.deepEqual(nodes.filter((n) => n.inputs.includes(dh)).map((n) => n.opType).sort(), ['Gemm', 'Gemm', 'ReduceSum']);
  // Kept from the forward: h and a, both bf16.
  const produced = new Set(g.nodes.slice(0, n0).flatMap((n) => n.outputs.filter(isWide)));
  const kept = new Set(g.nodes.slice(n0).flatMap((n) => n.inputs.filter((i): i is Tensor => !!i && produced.has(i))));
  assert.deepEqual([...kept].map((k) => k.dtype), ['bfloat16', 'bfloat16']);
  // With the fp32 derivative: two Casts up (h, g), one down (dh), the chain in fp32.
  const f = layerGraph(true, true, 'fp32').g.nodes.filter((n) => !n.virtual);
  const wideCasts = f.filter((n) => n.opType === 'Cast' && (n.outputs.some(isWide) || n.inputs.some(isWide)));
  assert.deepEqual(wideCasts.map((n) => `${n.inputs[0]!.dtype}→${n.outputs[0]!.dtype}`).sort(), ['bfloat16→float', 'bfloat16→float', 'float→bfloat16']);
  // The default bf16 graph writes fp32 [N,4C] tensors in the forward (Cast, Add, Gelu) and keeps h in fp32.
  const d = layerGraph(true, false);
  const dfwd = d.g.nodes.slice(0, d.n0).filter((n) => !n.virtual && n.outputs.some(isWide));
  assert.deepEqual(dfwd.map((n) => `${n.opType}:${n.outputs[0]!.dtype}`), ['Gemm:bfloat16', 'Cast:float', 'Add:float', 'Gelu:float', 'Cast:bfloat16']);
  t.diagnostic(`bf16Mlp backward [N,4C] writers: ${bwd.map((n) => n.opType).join(' ')}`);
});

test("bf16Mlp 'emulate' rounds where the real bf16 graph rounds: one round trip per rounding node, plus the Gelu kernel's 7 inner steps per layer", () => {
  const tiny = readConfig(path.resolve(__dirname, '../../samples/tiny-gpt2-chat'));
  const opts = { dropout: { embd: 0.1, attn: 0.1, resid: 0.1 }, seed: 0, variants: { bf16Mlp: true, bf16GeluGrad: 'exp' as const } };
  const emu = buildGradsGraph(tiny, { ...opts, bf16: 'emulate' }).nodes.filter((n) => !n.virtual);
  const toBf16 = emu.filter((n) => n.opType === 'Cast' && n.outputs[0]!.dtype === 'bfloat16');
  for (const c of toBf16) {
    const users = emu.filter((n) => n.inputs.includes(c.outputs[0]!));
    assert.ok(users.length >= 1 && users.every((n) => n.opType === 'Cast' && n.outputs[0]!.dtype === 'float'), `${c.name}: bf16 value used by ${users.map((n) => n.opType)}`);
  }
  const real = buildGradsGraph(tiny, { ...opts, bf16: true }).nodes.filter((n) => !n.virtual);
  const NO_ROUNDING = new Set(['Transpose', 'Reshape', 'Slice', 'Concat', 'Expand', 'Where', 'Identity', 'Split', 'Squeeze', 'Unsqueeze', 'Min']);
  const rounding = real.filter((n) => n.outputs.some((o) => o.dtype === 'bfloat16') && !NO_ROUNDING.has(n.opType) && !(n.opType === 'Cast' && n.inputs[0]!.dtype === 'bfloat16'));
  assert.ok(rounding.some((n) => n.opType === 'Gelu'));
  assert.equal(toBf16.length, rounding.length + 7 * tiny.n_layer, `'emulate' rounds ${toBf16.length} times, the real graph ${rounding.length} (+7 per layer)`);
});

// --- the tiny model: golden batch and 20 steps (shared with bf16Attention.test.ts) -------------------------

registerVariantAccuracyTests('bf16Mlp', 'SFT_BF16_MLP');
