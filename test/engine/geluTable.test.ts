// The Gelu derivative from a lookup table (ModelVariants.bf16GeluGrad = 'table', SFT_BF16_GELU_GRAD=table, with
// the bf16Mlp variant; engine/mlp.ts geluTanhGradTable):
// - the float64 reference gelu_new'(x) against a central difference of gelu_new and the identity
//   gelu'(x) + gelu'(−x) = 1; its tails at ±R (0 / 1 far below bf16 resolution);
// - bf16Nearest rounds float64 once (where fp32-then-bf16 rounds twice);
// - the table: layout (Gather order, negative buckets from the end), bf16-exact entries, and its accuracy on
//   every bf16 value in [−10, 10] and on bf16-rounded N(0, 2²) samples, beside the 'exp' form (a JS model of
//   mlp.ts geluTanhGradBf16) and beside gelu_new' correctly rounded to bf16 (the best any bf16 result can do);
// - the 'emulate' graph on ORT's CPU kernels: bit-identical to the JS lookup on all those values and on ±0,
//   subnormals, ±1e30, ±inf and NaN (Gather's negative indices, the clamp, truncation toward zero);
// - structure of the real bf16 graph: [N,4C] writers Gemm Max Min Mul Cast Gather Mul, one table initializer per
//   graph shared by every layer, 'emulate' rounding once per lookup; every node has a CUDA kernel (tiny and
//   GPT-2 124M train and grads graphs, with and without bf16Attention);
// - the tiny model's golden batch and 20 AdamW steps (bf16VariantChecks.ts), the engine built with
//   SFT_BF16_GELU_GRAD=table (set for this file's process below: node:test runs each file in its own process).
// u = 2^-8.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { modelContext } from '../../native-runner/engine/gpt2Graph';
import {
  bf16Nearest,
  GELU_TABLE_RANGE,
  GELU_TABLE_SCALE_LOG2,
  geluGradTable,
  geluNewGrad,
  geluTableBucket,
  geluTanhGradTable,
  mlpBf16,
  roundBf16,
} from '../../native-runner/engine/mlp';
import { gradients } from '../../native-runner/engine/graph/autodiff';
import { Graph, type Node, type Tensor } from '../../native-runner/engine/graph/graph';
import { makeConfig, readConfig } from '../../native-runner/model/config';
import { createSession, f32 } from '../../native-runner/engine/ortSession';
import { Rng } from '../../native-runner/util/rng';
import { buildGradsGraph, buildTrainGraph, type OptimizerHyper } from '../../native-runner/engine/trainGraph';
import { cudaUnsupportedNodes } from '../../native-runner/engine/cudaKernels';
import { dropoutRates } from '../../native-runner/engine/gpt2Graph';
import { BF16_UNIT_ROUNDOFF } from '../../native-runner/engine/bf16Tolerance';
import { bf16Ulp, geluGradExpModel } from './helpers';
import { registerVariantAccuracyTests } from './bf16VariantChecks';

// Engines created in this file's process build the table variant whenever SFT_BF16_MLP is on (bf16VariantChecks).
process.env.SFT_BF16_GELU_GRAD = 'table';

const u = BF16_UNIT_ROUNDOFF;
const M = GELU_TABLE_RANGE * 2 ** GELU_TABLE_SCALE_LOG2;
const root = path.resolve(__dirname, '../..');
const tiny = readConfig(path.join(root, 'samples/tiny-gpt2-chat'));

/** gelu_new(x) = 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))) in float64. */
const geluNew = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

/** Every bf16 value with |x| ≤ 10, ascending bit patterns (±0 and subnormals included). */
function bf16Values(limit = 10): number[] {
  const f = new Float32Array(1);
  const bits = new Uint32Array(f.buffer);
  const out: number[] = [];
  for (let b = 0; b < 0x10000; b++) {
    bits[0] = b << 16;
    if (Math.abs(f[0]!) <= limit) out.push(f[0]!);
  }
  return out;
}

/** The table entry the graph gathers for x (JS model of Max, Min, ·2^k, Cast<int32>, Gather). */
function lookup(x: number): number {
  const table = geluGradTable();
  const j = Number.isNaN(x) ? 0 : Math.trunc(Math.min(Math.max(x, -GELU_TABLE_RANGE), GELU_TABLE_RANGE) * 2 ** GELU_TABLE_SCALE_LOG2);
  return table[j >= 0 ? j : table.length + j]!;
}

const expForm = geluGradExpModel;

// --- the reference ---------------------------------------------------------------------------------------

test("gelu_new' in float64: matches a central difference of gelu_new, gelu'(x) + gelu'(−x) = 1, and is 0 / 1 beyond ±8 far below bf16 resolution", (t) => {
  let worstFd = 0;
  let worstSym = 0;
  for (let i = -1000; i <= 1000; i++) {
    const x = i / 100 + 0.003;
    const h = 1e-5;
    worstFd = Math.max(worstFd, Math.abs(geluNewGrad(x) - (geluNew(x + h) - geluNew(x - h)) / (2 * h)));
    worstSym = Math.max(worstSym, Math.abs(geluNewGrad(x) + geluNewGrad(-x) - 1));
  }
  assert.ok(worstFd < 1e-8, `central difference ${worstFd}`);
  assert.ok(worstSym < 1e-15, `gelu'(x) + gelu'(−x) − 1 = ${worstSym}`);
  // The tails: gelu'(−8) = −4.7e-20 and gelu'(8) = 1 − gelu'(−8) (1 in float64); bf16's ulp at 1 is 2^-7.
  const lo = geluNewGrad(-GELU_TABLE_RANGE);
  assert.ok(lo < 0 && lo > -1e-19, `gelu'(−8) = ${lo}`);
  for (const x of [-1e4, -100, -20, -9]) assert.ok(Math.abs(geluNewGrad(x)) <= Math.abs(lo), `gelu'(${x})`);
  for (const x of [8, 9, 20, 100, 1e4]) assert.equal(geluNewGrad(x), 1, `gelu'(${x})`);
  assert.equal(geluNewGrad(Infinity), 1);
  assert.equal(geluNewGrad(-Infinity), 0);
  assert.ok(Number.isNaN(geluNewGrad(NaN)));
  t.diagnostic(`central difference ${worstFd.toExponential(1)}, symmetry ${worstSym.toExponential(1)}; gelu'(−8) = ${lo.toExponential(2)}`);
});

test('bf16Nearest rounds float64 once, ties to even; fp32-then-bf16 agrees on fp32 values and double-rounds the rest', () => {
  const rng = new Rng(3);
  for (let i = 0; i < 20000; i++) {
    const v = Math.fround((rng.nextFloat() - 0.5) * 2 ** ((rng.nextFloat() * 60) | 0) * (rng.nextFloat() < 0.5 ? 1e-10 : 1));
    assert.equal(bf16Nearest(v), roundBf16(v), `${v}`);
  }
  assert.equal(bf16Nearest(1 + 2 ** -8), 1); // tie → even
  assert.equal(bf16Nearest(1 + 3 * 2 ** -8), 1 + 2 ** -6); // tie → even (up)
  const x = 1 + 2 ** -8 + 2 ** -30; // just above the tie: up; via fp32 the 2^-30 is lost first and the tie goes down
  assert.equal(bf16Nearest(x), 1 + 2 ** -7);
  assert.equal(roundBf16(x), 1);
  assert.equal(bf16Nearest(-2.5e-20), -roundBf16(2.5e-20));
  assert.equal(bf16Nearest(2 ** -133), 2 ** -133); // smallest subnormal
  assert.equal(bf16Nearest(3.3895313892515355e38), 3.3895313892515355e38); // largest finite bf16
  assert.equal(bf16Nearest(3.39e38), 3.3895313892515355e38);
  assert.equal(bf16Nearest(3.3895313892515355e38 + 2 ** 119), Infinity); // the tie above the largest rounds to even: inf
});

// --- the table -------------------------------------------------------------------------------------------

test('the table: 2·8·2^10 + 1 bf16-exact entries in Gather order (bucket j ≥ 0 at j, j < 0 at the end); 0.5 at 0, 1 at +8, ~0 at −8', () => {
  const table = geluGradTable();
  assert.equal(table.length, 2 * M + 1);
  assert.equal(M, 8192);
  for (const v of table) assert.equal(bf16Nearest(v), v);
  assert.equal(table[0], 0.5);
  assert.equal(table[M], 1); // x ≥ 8, +inf
  assert.ok(Math.abs(table[M + 1]!) < 1e-19, `bucket −M = ${table[M + 1]}`); // x ≤ −8, −inf
  // Bucket of x: trunc(x·2^10), so 1.5 → 1536, −1.5 → −1536 (entry 2M + 1 − 1536); the two add up to 1 within a rounding.
  assert.equal(geluTableBucket(1.5), 1536);
  assert.equal(geluTableBucket(-1.5), -1536);
  assert.equal(geluTableBucket(-1e-3), -1); // −0.001·1024 = −1.02 → −1 (toward zero)
  assert.equal(geluTableBucket(1e-3), 1);
  assert.equal(geluTableBucket(5e-4), 0);
  assert.equal(geluTableBucket(-1e30), -M);
  assert.equal(geluTableBucket(Infinity), M);
  assert.equal(geluTableBucket(NaN), null);
  assert.equal(table[1536], bf16Nearest(geluNewGrad(1.5)));
  assert.equal(table[2 * M + 1 - 1536], bf16Nearest(geluNewGrad(-1.5)));
});

test("table accuracy on every bf16 value in [−10, 10]: gelu_new' correctly rounded for 1/8 ≤ |x| < 8, ≤ 0.65 ulp everywhere, 3× better worst case than the 'exp' form", (t) => {
  const xs = bf16Values(10);
  const w = { table: 0, exp: 0, once: 0, tableUlp: 0, expUlp: 0, notRounded: 0, tableAt: 0, expAt: 0 };
  for (const x of xs) {
    const exact = geluNewGrad(x);
    const tab = lookup(x);
    const ex = expForm(x);
    const once = bf16Nearest(exact);
    if (Math.abs(x) >= 2 ** (7 - GELU_TABLE_SCALE_LOG2) && Math.abs(x) < GELU_TABLE_RANGE) assert.equal(tab, once, `x = ${x}: table ${tab}, gelu' rounded ${once}`);
    if (tab !== once) w.notRounded++;
    const et = Math.abs(tab - exact);
    const ee = Math.abs(ex - exact);
    if (et > w.table) [w.table, w.tableAt] = [et, x];
    if (ee > w.exp) [w.exp, w.expAt] = [ee, x];
    w.once = Math.max(w.once, Math.abs(once - exact));
    if (Math.abs(exact) > 1e-3) {
      w.tableUlp = Math.max(w.tableUlp, et / bf16Ulp(exact));
      w.expUlp = Math.max(w.expUlp, ee / bf16Ulp(exact));
    }
    // Beyond ±8 (clamped) the error is that of 0 / 1 for the exact value: far below bf16 resolution.
    if (Math.abs(x) >= GELU_TABLE_RANGE) assert.ok(et < 1e-19, `x = ${x}: ${tab} vs ${exact}`);
  }
  t.diagnostic(
    `${xs.length} values: worst absolute — table ${w.table.toExponential(3)} (x = ${w.tableAt}), exp form ${w.exp.toExponential(3)} (x = ${w.expAt}), correctly rounded ${w.once.toExponential(3)}; ` +
      `worst ulps where |gelu'| > 1e-3 — table ${w.tableUlp.toFixed(3)}, exp ${w.expUlp.toFixed(1)}; not correctly rounded: ${w.notRounded} (all with |x| < 1/8)`,
  );
  assert.ok(w.table <= w.once * 1.0001, `table worst ${w.table} vs one rounding ${w.once}`);
  assert.ok(w.tableUlp <= 0.65, `table ${w.tableUlp} ulps`);
  assert.ok(w.notRounded <= 0.01 * xs.length, `${w.notRounded} values not correctly rounded`);
  assert.ok(w.exp >= 3 * w.table, `exp form worst ${w.exp} vs table ${w.table}`);
});

test("table accuracy on bf16-rounded N(0, 2²) samples: relative L2 of gelu' and of g·gelu' at the one-rounding level, about half the 'exp' form's", (t) => {
  const rng = new Rng(5);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rng.nextFloat())) * Math.cos(2 * Math.PI * rng.nextFloat());
  const s = { t: 0, e: 0, o: 0, ref: 0, gt: 0, ge: 0, go: 0, gref: 0 };
  for (let i = 0; i < 200_000; i++) {
    const x = roundBf16(2 * gauss());
    const gy = roundBf16(gauss());
    const exact = geluNewGrad(x);
    s.t += (lookup(x) - exact) ** 2;
    s.e += (expForm(x) - exact) ** 2;
    s.o += (bf16Nearest(exact) - exact) ** 2;
    s.ref += exact ** 2;
    const ge = gy * exact; // dh as the graphs form it: gy ⊙ d rounded once
    s.gt += (roundBf16(gy * lookup(x)) - ge) ** 2;
    s.ge += (roundBf16(gy * expForm(x)) - ge) ** 2;
    s.go += (bf16Nearest(ge) - ge) ** 2;
    s.gref += ge ** 2;
  }
  const r = (a: number, b: number) => Math.sqrt(a / b) / u;
  const d = { table: r(s.t, s.ref), exp: r(s.e, s.ref), once: r(s.o, s.ref) };
  const dh = { table: r(s.gt, s.gref), exp: r(s.ge, s.gref), once: r(s.go, s.gref) };
  t.diagnostic(`relative L2 in units of 2^-8 — gelu': table ${d.table.toFixed(3)}, exp ${d.exp.toFixed(3)}, rounded once ${d.once.toFixed(3)}; g·gelu': table ${dh.table.toFixed(3)}, exp ${dh.exp.toFixed(3)}, exact product rounded once ${dh.once.toFixed(3)}`);
  assert.ok(d.table <= 1.02 * d.once, `table ${d.table} vs ${d.once}`);
  assert.ok(d.table <= 0.6 * d.exp && dh.table <= 0.7 * dh.exp, JSON.stringify({ d, dh }));
  assert.ok(dh.table <= 0.7, `g·gelu' ${dh.table}`);
});

// --- the graph -------------------------------------------------------------------------------------------

test("the 'emulate' lookup on ORT's CPU kernels equals the JS model bit for bit: all bf16 values in [−10, 10], ±0, ±1e30, ±inf, NaN", async () => {
  const specials = [0, -0, 2 ** -133, -(2 ** -133), 1e30, -1e30, Infinity, -Infinity, NaN, 7.96875, -7.96875, 8, -8, 3.3895313892515355e38];
  const xs = Float32Array.from([...bf16Values(10), ...specials]);
  const rng = new Rng(9);
  const gy = Float32Array.from(xs, () => roundBf16(2 * rng.nextFloat() - 1));
  const g = new Graph('lookup');
  const n = xs.length;
  const c = modelContext(g, makeConfig({ n_layer: 1, n_head: 1, n_embd: 4, n_positions: 4, vocab_size: 4 }), new Map(), g.ints([n, 1]), { bf16: 'emulate' });
  g.output(geluTanhGradTable(c, g, g.input('x', 'float', [n]), g.input('gy', 'float', [n])), 'dh');
  const s = await createSession(g.toModelBytes(), { device: 'cpu' });
  const got = (await s.run({ x: f32(xs, [n]), gy: f32(gy, [n]) })).dh!.data as Float32Array;
  await s.release();
  for (let i = 0; i < n; i++) {
    const want = roundBf16(gy[i]! * lookup(xs[i]!));
    assert.ok(Object.is(got[i], want) || got[i] === want, `x = ${xs[i]}, gy = ${gy[i]}: graph ${got[i]}, model ${want}`);
  }
  // NaN takes bucket 0 (gelu'(0) = 0.5); +inf the clamped end (gelu' = 1), −inf the other (~0).
  const at = (pick: (x: number) => boolean) => {
    const i = n - specials.length + specials.findIndex(pick);
    return got[i]! / gy[i]!;
  };
  assert.equal(at((x) => Number.isNaN(x)), 0.5);
  assert.equal(at((x) => x === Infinity), 1);
  assert.ok(Math.abs(at((x) => x === -Infinity)) < 1e-19);
});

const N = 12;
const C = 8;
const W = 4 * C;
const isWide = (t: Tensor | null): t is Tensor => !!t?.shape && t.shape.length === 2 && t.shape[0] === N && t.shape[1] === W;

/** One MLP layer with the table derivative, forward + gradients; n0 = nodes of the forward. */
function layerGraph(bf16: true | 'emulate'): { g: Graph; n0: number } {
  const g = new Graph('mlp');
  const x = g.input('x', 'float', [N, C]);
  const p = [g.input('wfc', 'float', [C, W]), g.input('bfc', 'float', [W]), g.input('wproj', 'float', [W, C]), g.input('bproj', 'float', [C])] as const;
  const c = modelContext(g, makeConfig({ n_layer: 1, n_head: 2, n_embd: C, n_positions: 16, vocab_size: 16 }), new Map(), g.ints([N, 1]), { bf16, variants: { bf16Mlp: true, bf16GeluGrad: 'table' } });
  const y = mlpBf16(c, x, ...p); // the geluGrad argument defaults to c.variants.bf16GeluGrad
  const n0 = g.nodes.length;
  g.output(y, 'y');
  gradients(g, [y], [g.input('dy', 'float', [N, C])], [x, ...p]).forEach((t, i) => g.output(t!, `d${i}`));
  return { g, n0 };
}

test('real bf16 graph with the table: [N,4C] backward writers Gemm Max Min Mul Cast Gather Mul (bf16, one int32 index), dh read by both c_fc gradient Gemms and the bias sum', (t) => {
  const { g, n0 } = layerGraph(true);
  const nodes = g.nodes.filter((n) => !n.virtual);
  const bwd = g.nodes.slice(n0).filter((n) => !n.virtual && n.outputs.some(isWide));
  assert.deepEqual(
    bwd.map((n) => `${n.opType}:${n.outputs[0]!.dtype}`),
    ['Gemm:bfloat16', 'Max:bfloat16', 'Min:bfloat16', 'Mul:bfloat16', 'Cast:int32', 'Gather:bfloat16', 'Mul:bfloat16'],
  );
  const gather = bwd[5]!;
  const table = g.constants.find((k) => k.tensor === gather.inputs[0]);
  assert.ok(table && table.data.dtype === 'bfloat16' && table.data.shape[0] === 2 * M + 1, 'the Gather reads the bf16 table constant');
  const scale = g.constants.find((k) => k.tensor === bwd[3]!.inputs[1])!;
  assert.equal(new DataView((scale.data.data as Uint8Array).buffer).getUint16(0, true), 0x4480, 'the scale is 1024 in bf16');
  // No fp32 [N,4C] tensor; the only Cast on one is the index.
  assert.deepEqual([...new Set(nodes.flatMap((n) => n.outputs.filter(isWide)).map((o) => o.dtype))].sort(), ['bfloat16', 'int32']);
  assert.deepEqual(nodes.filter((n) => n.opType === 'Cast' && (n.inputs.some(isWide) || n.outputs.some(isWide))).map((n) => `${n.inputs[0]!.dtype}→${n.outputs[0]!.dtype}`), ['bfloat16→int32']);
  const dh = bwd[6]!.outputs[0]!;
  assert.deepEqual(nodes.filter((n) => n.inputs.includes(dh)).map((n) => n.opType).sort(), ['Gemm', 'Gemm', 'ReduceSum']);
  t.diagnostic(`backward [N,4C] writers: ${bwd.map((n) => n.opType).join(' ')}`);
});

test("one table initializer per graph, gathered by every layer; 'emulate' rounds once per lookup (13 round trips per layer fewer than the 'exp' form)", () => {
  const opts = { dropout: { embd: 0.1, attn: 0.1, resid: 0.1 }, seed: 0 };
  for (const bf16 of [true, 'emulate'] as const) {
    const g = buildGradsGraph(tiny, { ...opts, bf16, variants: { bf16Mlp: true, bf16GeluGrad: 'table' } });
    const gathers = g.nodes.filter((n) => n.opType === 'Gather' && g.constantData(n.inputs[0]!)?.shape[0] === 2 * M + 1);
    assert.equal(gathers.length, tiny.n_layer);
    assert.equal(new Set(gathers.map((n) => n.inputs[0])).size, 1, 'one table tensor');
    assert.equal(g.constants.filter((k) => k.data.shape.length === 1 && k.data.shape[0] === 2 * M + 1).length, 1, 'one table initializer');
    assert.equal(gathers[0]!.inputs[0]!.dtype, bf16 === true ? 'bfloat16' : 'float');
  }
  const roundTrips = (nodes: Node[]) => nodes.filter((n) => n.opType === 'Cast' && n.outputs[0]!.dtype === 'bfloat16').length;
  const emu = buildGradsGraph(tiny, { ...opts, bf16: 'emulate', variants: { bf16Mlp: true, bf16GeluGrad: 'table' } }).nodes;
  const emuExp = buildGradsGraph(tiny, { ...opts, bf16: 'emulate', variants: { bf16Mlp: true, bf16GeluGrad: 'exp' } }).nodes;
  assert.equal(roundTrips(emu), roundTrips(emuExp) - 13 * tiny.n_layer);
  // Each rounding is a round trip: the bf16 value is only cast back to float.
  for (const c of emu.filter((n) => n.opType === 'Cast' && n.outputs[0]!.dtype === 'bfloat16')) {
    const users = emu.filter((n) => n.inputs.includes(c.outputs[0]!));
    assert.ok(users.length >= 1 && users.every((n) => n.opType === 'Cast' && n.outputs[0]!.dtype === 'float'), c.name);
  }
});

const HYPER: OptimizerHyper = { weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 };
const gpt2 = makeConfig({ n_layer: 12, n_head: 12, n_embd: 768, n_positions: 1024, vocab_size: 50260, embd_pdrop: 0.1, attn_pdrop: 0.1, resid_pdrop: 0.1 });

for (const [tag, config] of [
  ['tiny', tiny],
  ['GPT-2 124M', gpt2],
] as const) {
  test(`${tag}: with bf16GeluGrad 'table' the train and grads graphs run on CUDA (bf16 Max/Min/Mul, Cast bf16→int32, Gather of a bf16 table)`, () => {
    const dropout = dropoutRates(config, tag === 'tiny' ? 0.1 : null);
    for (const variants of [
      { bf16Mlp: true, bf16GeluGrad: 'table' as const },
      { bf16Mlp: true, bf16GeluGrad: 'table' as const, bf16Attention: true },
    ]) {
      const name = JSON.stringify(variants);
      for (const accumulate of [false, true]) {
        const found = cudaUnsupportedNodes(buildTrainGraph(config, HYPER, { dropout, bf16: true, seed: 3, accumulate, flatState: true, variants }));
        assert.equal(found.length, 0, `train ${name} accumulate=${accumulate}: ${found.slice(0, 5).map((f) => `${f.node} (${f.op}): ${f.reason}`).join('\n')}`);
      }
      const grads = buildGradsGraph(config, { dropout, bf16: true, seed: 0, variants });
      const found = cudaUnsupportedNodes(grads, { singleIterationLoop: true });
      assert.equal(found.length, 0, `grads ${name}: ${found.slice(0, 5).map((f) => `${f.node} (${f.op}): ${f.reason}`).join('\n')}`);
      // The check saw the lookup: per layer a bf16 Gather from the table with int32 indices.
      const lookups = grads.nodes.filter((n) => n.opType === 'Gather' && n.inputs[0]!.dtype === 'bfloat16' && n.inputs[1]!.dtype === 'int32');
      assert.equal(lookups.length, config.n_layer);
    }
  });
}

// --- the tiny model: golden batch and 20 steps -------------------------------------------------------------

registerVariantAccuracyTests('bf16Mlp with the gelu table', 'SFT_BF16_MLP');

test('the scaled table (residual dropout 1/(1−p) taken in, mlpBf16): each entry is s × the exact midpoint rounded once, within one bf16 ulp of s × the unscaled entry', () => {
  const s = 1 / 0.9;
  const one = geluGradTable();
  const scaled = geluGradTable(s);
  assert.equal(scaled.length, one.length);
  assert.equal(geluGradTable(s), scaled, 'cached per scale');
  let differ = 0;
  for (let p = 0; p < one.length; p++) {
    const v = scaled[p]!;
    assert.equal(roundBf16(v), v, `entry ${p} is not a bf16 value`);
    const ulp = v === 0 ? 2 ** -133 : 2 ** (Math.floor(Math.log2(Math.abs(v))) - 7);
    assert.ok(Math.abs(v - s * one[p]!) <= ulp, `entry ${p}: ${v} vs ${s} × ${one[p]}`);
    if (v !== roundBf16(s * one[p]!)) differ++;
  }
  // Rounding s × (the exact midpoint) once is not always the same as rounding s × (the rounded entry).
  assert.ok(differ > 0, 'the scaled table is just the rounded product of the unscaled one');
});
