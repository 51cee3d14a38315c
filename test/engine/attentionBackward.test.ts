// The attention core's hand-written backward (engine/attention.ts) against the generic autodiff one on random
// q/k/v and a bias with masked entries (causal, a padded key, a fully masked row):
// - fp32, dropout off and on (same Dropout seed → same mask), Tq = Tk and Tq < Tk: same output, and the
//   gradients of q, k, v within 1e-5 of the reference relative to each tensor's largest entry;
// - 'emulate': the rounding scheme attention.ts documents, recomputed in JS (bf16 operands and products,
//   fp32 elementwise; the Dropout mask read from the graph) — every value within one bf16 ulp, ≥ 95 %
//   bit-identical — and within bf16 tolerance of the autodiff 'emulate' gradients;
// - the backward's passes over [B,H,Tq,Tk] tensors: the nodes writing one, by op type, per mode, and the
//   [B,H,Tq,Tk] forward tensors the backward keeps (P, mask, the second MatMul's operand);
// - the bf16Attention variant ([B,H,Tq,Tk] tensors kept bf16): 'emulate' against the same JS model with the
//   variant's roundings (bias, S + bias, softmax, dropout, P ⊙ W rounded to bf16; −r rounded for Where) —
//   within one bf16 ulp, ≥ 95 % bit-identical — and within bf16 tolerance of fp32; its real bf16 graph has
//   no Cast on a [B,H,Tq,Tk] tensor (MatMul Add Softmax Dropout / MatMul Where Mul, kept P and Pd in bf16);
//   with fp32 the variant emits the default graph byte for byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { attentionCoreAutodiff, attentionCoreFused } from '../../native-runner/engine/attention';
import { modelContext, type Bf16Mode } from '../../native-runner/engine/gpt2Graph';
import { gradients } from '../../native-runner/engine/graph/autodiff';
import { Graph, type Shape, type Tensor } from '../../native-runner/engine/graph/graph';
import { makeConfig } from '../../native-runner/model/config';
import { createSession, f32 } from '../../native-runner/engine/ortSession';
import { Rng } from '../../native-runner/util/rng';
import { bf16, bf16Ulp, relL2 } from './helpers';

const config = makeConfig({ n_layer: 1, n_head: 3, n_embd: 24, n_positions: 16, vocab_size: 16 });
type Core = typeof attentionCoreFused;

interface Dims {
  B: number;
  H: number;
  Tq: number;
  Tk: number;
  D: number;
}

interface Inputs {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  bias: Float32Array;
  r: Float32Array;
}

function randomInputs(d: Dims, seed: number): Inputs {
  const rng = new Rng(seed);
  const rand = (n: number, s: number) => Float32Array.from({ length: n }, () => s * (2 * rng.nextFloat() - 1));
  const nq = d.B * d.H * d.Tq * d.D;
  const nk = d.B * d.H * d.Tk * d.D;
  // Causal with the queries as the last Tq keys; key 1 of row 0 padded; row 1's first query sees nothing.
  const bias = new Float32Array(d.B * d.Tq * d.Tk);
  for (let b = 0; b < d.B; b++) {
    for (let i = 0; i < d.Tq; i++) {
      for (let j = 0; j < d.Tk; j++) {
        const masked = j > i + d.Tk - d.Tq || (b === 0 && j === 1) || (b === 1 && i === 0);
        bias[(b * d.Tq + i) * d.Tk + j] = masked ? -1e9 : 0;
      }
    }
  }
  return { q: rand(nq, 1.5), k: rand(nk, 1.5), v: rand(nk, 1), bias, r: rand(nq, 1) };
}

interface Built {
  g: Graph;
  /** Nodes before the backward. */
  forwardCount: number;
  y: Tensor;
}

/**
 * y = core(q, k, v, bias); loss = Σ y⊙r; outputs y, dq, dk, dv (and the Dropout mask as `mask` when asked);
 * `bf16Attention`: the ModelVariants switch keeping the [B,H,Tq,Tk] tensors bf16.
 */
function buildGraph(core: Core, d: Dims, bf16: Bf16Mode, attn: number, opts: { maskOutput?: boolean; bf16Attention?: boolean } = {}): Built {
  const g = new Graph('attention');
  const q = g.input('q', 'float', [d.B, d.H, d.Tq, d.D]);
  const k = g.input('k', 'float', [d.B, d.H, d.Tk, d.D]);
  const v = g.input('v', 'float', [d.B, d.H, d.Tk, d.D]);
  const bias = g.input('bias', 'float', [d.B, 1, d.Tq, d.Tk]);
  const r = g.input('r', 'float', [d.B, d.H, d.Tq, d.D]);
  const c = modelContext(g, config, new Map(), g.ints([d.B, d.Tq]), { bf16, dropout: { embd: 0, attn, resid: 0 }, seed: 17, variants: { bf16Attention: opts.bf16Attention ?? false } });
  const y = core(c, q, k, v, bias);
  const forwardCount = g.nodes.length;
  g.output(y, 'y');
  if (opts.maskOutput) {
    const drop = g.nodes.find((n) => n.opType === 'Dropout');
    assert.ok(drop, 'no Dropout node');
    g.output(drop.outputs[1]!, 'mask');
  }
  const [dq, dk, dv] = gradients(g, [g.reduceSum(g.mul(y, r), null, false)], [g.scalar(1)], [q, k, v]);
  g.output(dq!, 'dq');
  g.output(dk!, 'dk');
  g.output(dv!, 'dv');
  return { g, forwardCount, y };
}

type Outputs = Record<'y' | 'dq' | 'dk' | 'dv', Float32Array> & { mask?: Uint8Array };

async function runGraph(b: Built, d: Dims, x: Inputs): Promise<Outputs> {
  const s = await createSession(b.g.toModelBytes(), { device: 'cpu' });
  const qs = [d.B, d.H, d.Tq, d.D];
  const ks = [d.B, d.H, d.Tk, d.D];
  const out = await s.run({ q: f32(x.q, qs), k: f32(x.k, ks), v: f32(x.v, ks), bias: f32(x.bias, [d.B, 1, d.Tq, d.Tk]), r: f32(x.r, qs) });
  await s.release();
  const res: Outputs = { y: out.y!.data as Float32Array, dq: out.dq!.data as Float32Array, dk: out.dk!.data as Float32Array, dv: out.dv!.data as Float32Array };
  if (out.mask) res.mask = out.mask.data as Uint8Array;
  return res;
}

/** max |a − b| / max |b|. */
function relMax(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return d / m;
}


const SQUARE: Dims = { B: 2, H: 3, Tq: 7, Tk: 7, D: 8 };
const DECODE: Dims = { B: 2, H: 3, Tq: 4, Tk: 7, D: 8 };

for (const [tag, dims] of [
  ['Tq = Tk', SQUARE],
  ['Tq < Tk', DECODE],
] as const) {
  for (const attn of [0, 0.3]) {
    test(`fp32, ${tag}, attention dropout ${attn}: fused backward = autodiff within 1e-5 (y identical)`, async (t) => {
      const x = randomInputs(dims, 3 + attn * 10);
      const fused = await runGraph(buildGraph(attentionCoreFused, dims, false, attn), dims, x);
      const ref = await runGraph(buildGraph(attentionCoreAutodiff, dims, false, attn), dims, x);
      assert.deepEqual(fused.y, ref.y, 'the forward must be unchanged (same ops, same Dropout seed)');
      const errs = (['dq', 'dk', 'dv'] as const).map((n) => [n, relMax(fused[n], ref[n])] as const);
      t.diagnostic(errs.map(([n, e]) => `${n} ${e.toExponential(2)}`).join(', '));
      for (const [n, e] of errs) assert.ok(e <= 1e-5, `${n}: max difference ${e} of the largest entry`);
      if (attn > 0) {
        // The dropout is really on: the no-dropout output differs.
        const plain = await runGraph(buildGraph(attentionCoreFused, dims, false, 0), dims, x);
        assert.ok(relMax(plain.y, ref.y) > 0.05, 'dropout changed nothing');
      }
    });
  }
}

// --- 'emulate' against a JS model of the documented rounding ------------------------------------------------

const u = 2 ** -8;

/**
 * The fused attention in JS, rounding where attention.ts says the bf16 graph rounds: operands and products of
 * every MatMul (double sums rounded to fp32, then bf16), elementwise ops in fp32. With `low` (the bf16Attention
 * variant) the [B,H,Tq,Tk] values are bf16 between ops: the bias is rounded to bf16, and S + bias, softmax,
 * dropout and P ⊙ Where(…) are each computed in fp32 and rounded to bf16 once; −r is rounded to bf16 for Where.
 */
function emulatedReference(d: Dims, x: Inputs, attn: number, mask: Uint8Array | undefined, low = false): { y: number[]; dq: number[]; dk: number[]; dv: number[] } {
  const { B, H, Tq, Tk, D } = d;
  const keep = 1 - attn;
  const scale = Math.fround(1 / keep);
  /** The result of an elementwise op on the [B,H,Tq,Tk] tensors: fp32, rounded to bf16 with the variant. */
  const elt = (z: number) => (low ? bf16(z) : Math.fround(z));
  const out = { y: [] as number[], dq: [] as number[], dk: [] as number[], dv: [] as number[] };
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const qo = (i: number, e: number) => bf16(x.q[((b * H + h) * Tq + i) * D + e]!);
      const ko = (j: number, e: number) => bf16(x.k[((b * H + h) * Tk + j) * D + e]!);
      const vo = (j: number, e: number) => bf16(x.v[((b * H + h) * Tk + j) * D + e]!);
      const dy = (i: number, e: number) => x.r[((b * H + h) * Tq + i) * D + e]!;
      const kept = (i: number, j: number) => (mask ? mask[((b * H + h) * Tq + i) * Tk + j] === 1 : true);
      const P: number[][] = [];
      const Pd: number[][] = [];
      for (let i = 0; i < Tq; i++) {
        const row: number[] = [];
        for (let j = 0; j < Tk; j++) {
          let s = 0;
          for (let e = 0; e < D; e++) s += qo(i, e) * ko(j, e);
          const bias = x.bias[(b * Tq + i) * Tk + j]!;
          row.push(elt(Math.fround(bf16(Math.fround(s)) + (low ? bf16(bias) : bias))));
        }
        const m = Math.max(...row);
        const ex = row.map((z) => Math.exp(z - m));
        const sum = ex.reduce((a, z) => a + z, 0);
        P.push(ex.map((z) => elt(Math.fround(z / sum))));
        Pd.push(P[i]!.map((p, j) => (attn > 0 ? (kept(i, j) ? elt(Math.fround(p * scale)) : 0) : p)));
      }
      const PdR = Pd.map((row) => row.map(bf16));
      const y: number[][] = [];
      for (let i = 0; i < Tq; i++) {
        y.push([]);
        for (let e = 0; e < D; e++) {
          let s = 0;
          for (let j = 0; j < Tk; j++) s += PdR[i]![j]! * vo(j, e);
          y[i]!.push(bf16(Math.fround(s)));
        }
      }
      // Backward.
      const negR: number[] = [];
      for (let i = 0; i < Tq; i++) {
        let s = 0;
        for (let e = 0; e < D; e++) s += Math.fround(dy(i, e) * y[i]![e]!);
        negR.push(Math.fround(Math.fround(s) * Math.fround(-keep)));
      }
      const dS: number[][] = [];
      for (let i = 0; i < Tq; i++) {
        dS.push([]);
        for (let j = 0; j < Tk; j++) {
          // The extra GEMM columns: −r as hi + lo (Veltkamp split, hi exact in bf16) against two 1s.
          const t = Math.fround(negR[i]! * 65537);
          const hi = Math.fround(t - Math.fround(t - negR[i]!));
          let s = bf16(hi) + bf16(Math.fround(negR[i]! - hi));
          for (let e = 0; e < D; e++) s += bf16(dy(i, e)) * vo(j, e);
          const mij = bf16(Math.fround(s));
          const w = kept(i, j) ? mij : low ? bf16(negR[i]!) : negR[i]!;
          dS[i]!.push(bf16(Math.fround(P[i]![j]! * w)));
        }
      }
      const unscale = (z: number) => (attn > 0 ? Math.fround(z * scale) : z);
      for (let i = 0; i < Tq; i++) {
        for (let e = 0; e < D; e++) {
          let s = 0;
          for (let j = 0; j < Tk; j++) s += dS[i]![j]! * ko(j, e);
          out.dq.push(unscale(bf16(Math.fround(s))));
        }
      }
      for (let j = 0; j < Tk; j++) {
        for (let e = 0; e < D; e++) {
          let s = 0;
          for (let i = 0; i < Tq; i++) s += qo(i, e) * dS[i]![j]!;
          out.dk.push(unscale(bf16(Math.fround(s))));
          let sv = 0;
          for (let i = 0; i < Tq; i++) sv += bf16(dy(i, e)) * PdR[i]![j]!;
          out.dv.push(bf16(Math.fround(sv)));
        }
      }
      for (let i = 0; i < Tq; i++) out.y.push(...y[i]!);
    }
  }
  return out;
}

/** Every value within one bf16 ulp (of the reference, after any fp32 unscaling) and ≥ minExact bit-identical. */
function assertWithinUlp(name: string, got: Float32Array, ref: number[], scale: number, minExact = 0.95): number {
  assert.equal(got.length, ref.length, `${name}: length`);
  let exact = 0;
  for (let i = 0; i < ref.length; i++) {
    const dd = Math.abs(got[i]! - ref[i]!);
    if (dd === 0) exact++;
    else assert.ok(dd <= bf16Ulp(ref[i]! / scale) * scale * 1.0001, `${name}[${i}] = ${got[i]} vs reference ${ref[i]} (more than one bf16 ulp)`);
  }
  assert.ok(exact >= minExact * ref.length, `${name}: only ${exact}/${ref.length} values equal the reference`);
  return exact / ref.length;
}

/**
 * y, dq, dk, dv of a graph run against the JS model of its rounding (dq, dk carry the dropout scale 1/(1−p)):
 * each within one bf16 ulp, and the fraction of values bit-identical per output.
 */
function assertOutputsMatchModel(got: Record<'y' | 'dq' | 'dk' | 'dv', Float32Array>, ref: Record<'y' | 'dq' | 'dk' | 'dv', number[]>, attn: number): number[] {
  const scale = attn > 0 ? Math.fround(1 / (1 - attn)) : 1;
  return [
    assertWithinUlp('y', got.y, ref.y, 1),
    assertWithinUlp('dq', got.dq, ref.dq, scale),
    assertWithinUlp('dk', got.dk, ref.dk, scale),
    assertWithinUlp('dv', got.dv, ref.dv, 1),
  ];
}

for (const attn of [0, 0.3]) {
  test(`'emulate', attention dropout ${attn}: fused backward rounds as documented (JS model) and stays within bf16 tolerance of autodiff`, async (t) => {
    const dims = SQUARE;
    const x = randomInputs(dims, 40 + attn * 10);
    const fused = await runGraph(buildGraph(attentionCoreFused, dims, 'emulate', attn, { maskOutput: attn > 0 }), dims, x);
    const ref = emulatedReference(dims, x, attn, fused.mask);
    if (attn > 0) {
      const dropped = fused.mask!.reduce((a, m) => a + (m ? 0 : 1), 0);
      assert.ok(dropped > 0.15 * fused.mask!.length && dropped < 0.45 * fused.mask!.length, `${dropped} of ${fused.mask!.length} dropped at rate 0.3`);
    }
    const exact = assertOutputsMatchModel(fused, ref, attn);
    // Against the autodiff formulation under 'emulate' (which rounds at other points): bf16-sized, not more.
    const auto = await runGraph(buildGraph(attentionCoreAutodiff, dims, 'emulate', attn), dims, x);
    assert.deepEqual(fused.y, auto.y);
    const fp32 = await runGraph(buildGraph(attentionCoreAutodiff, dims, false, attn), dims, x);
    const rows: string[] = [];
    for (const n of ['dq', 'dk', 'dv'] as const) {
      const vsAuto = relL2(fused[n], auto[n]);
      const vsFp32 = relL2(fused[n], fp32[n]);
      const autoVsFp32 = relL2(auto[n], fp32[n]);
      rows.push(`${n}: vs autodiff-emulate ${vsAuto.toExponential(2)}, vs fp32 ${vsFp32.toExponential(2)} (autodiff-emulate vs fp32 ${autoVsFp32.toExponential(2)})`);
      assert.ok(vsFp32 <= 4 * u, `${n}: ${vsFp32} relative L2 from fp32`);
      assert.ok(vsFp32 > 0, `${n}: equal to fp32, nothing rounded`);
      assert.ok(vsFp32 <= 2 * autoVsFp32 + u / 4, `${n}: fused 'emulate' ${vsFp32} from fp32, autodiff 'emulate' ${autoVsFp32}`);
    }
    t.diagnostic(`bit-identical to the JS model: ${exact.map((e) => (100 * e).toFixed(1) + '%').join(', ')} (y, dq, dk, dv); ${rows.join('; ')}`);
  });
}

// --- passes over [B,H,Tq,Tk] -------------------------------------------------------------------------------

const sameShape = (a: Shape | null, b: Shape) => !!a && a.length === b.length && a.every((x, i) => x === b[i]);

/** Op types of the nodes (virtual ones excluded) from index `from` writing a [B,H,Tq,Tk] tensor. */
function fullSizeWriters(g: Graph, from: number, d: Dims, to = g.nodes.length): string[] {
  const full = [d.B, d.H, d.Tq, d.Tk];
  return g.nodes
    .slice(from, to)
    .filter((n) => !n.virtual && n.outputs.some((o) => sameShape(o.shape, full)))
    .map((n) => n.opType);
}

/** Names of forward [B,H,Tq,Tk] tensors read by backward nodes. */
function keptForBackward(b: Built, d: Dims): string[] {
  const full = [d.B, d.H, d.Tq, d.Tk];
  const fwd = new Set(b.g.nodes.slice(0, b.forwardCount).flatMap((n) => n.outputs.filter((o) => sameShape(o.shape, full))));
  const used = new Set<Tensor>();
  for (const n of b.g.nodes.slice(b.forwardCount)) for (const t of n.inputs) if (t && fwd.has(t)) used.add(t);
  return [...used].map((t) => `${t.dtype}`).sort();
}

test('backward passes over [B,H,Tq,Tk] (nodes writing one): fp32 3 with dropout / 2 without, bf16 5 / 4 — autodiff 7 / 5, 9 / 7', (t) => {
  const d = SQUARE;
  const count = (core: Core, bf16: Bf16Mode, attn: number) => {
    const b = buildGraph(core, d, bf16, attn);
    return { fwd: fullSizeWriters(b.g, 0, d, b.forwardCount), bwd: fullSizeWriters(b.g, b.forwardCount, d), kept: keptForBackward(b, d) };
  };
  const rows: string[] = [];
  const both = (bf16: Bf16Mode, attn: number) => {
    const f = count(attentionCoreFused, bf16, attn);
    const a = count(attentionCoreAutodiff, bf16, attn);
    assert.deepEqual(f.fwd, a.fwd, 'the forward must be the same ops');
    assert.deepEqual(f.kept, a.kept, 'the backward must keep the same forward tensors');
    rows.push(`bf16 ${bf16} dropout ${attn}: forward ${f.fwd.length}; backward ${a.bwd.length} → ${f.bwd.length} (${f.bwd.join(' ')}); kept ${f.kept.join(' ')}`);
    return { f, a };
  };
  // fp32 with dropout: M = [dy|−r]·[v|1]ᵀ, Where(mask, M, −r), P ⊙ ·; kept: mask, P, Pd.
  let r = both(false, 0.1);
  assert.deepEqual(r.f.fwd, ['MatMul', 'Add', 'Softmax', 'Dropout']);
  assert.deepEqual(r.f.bwd, ['MatMul', 'Where', 'Mul']);
  // (autodiff's Dropout rule: Where(mask, dy, 0)·s, no fp32 copy of the mask)
  assert.deepEqual(r.a.bwd, ['MatMul', 'Transpose', 'Where', 'Mul', 'Mul', 'Sub', 'Mul']);
  assert.deepEqual(r.f.kept, ['bool', 'float', 'float']);
  // fp32 without dropout: M, P ⊙ M.
  r = both(false, 0);
  assert.deepEqual(r.f.bwd, ['MatMul', 'Mul']);
  assert.equal(r.a.bwd.length, 5);
  // bf16: plus the cast of M to fp32 and of dS/s to bf16; kept: Pd's bf16 copy, mask, P.
  r = both(true, 0.1);
  assert.deepEqual(r.f.bwd, ['MatMul', 'Cast', 'Where', 'Mul', 'Cast']);
  assert.equal(r.a.bwd.length, 9);
  assert.deepEqual(r.f.kept, ['bfloat16', 'bool', 'float']);
  r = both(true, 0);
  assert.deepEqual(r.f.bwd, ['MatMul', 'Cast', 'Mul', 'Cast']);
  assert.equal(r.a.bwd.length, 7);
  // 'emulate': the bf16 casts as round trips (two nodes each).
  r = both('emulate', 0.1);
  assert.deepEqual(r.f.bwd, ['MatMul', 'Cast', 'Cast', 'Where', 'Mul', 'Cast', 'Cast']);
  assert.equal(r.a.bwd.length, 11);
  t.diagnostic(rows.join('\n'));
});

// --- the bf16Attention variant: [B,H,Tq,Tk] tensors kept bfloat16 --------------------------------------------

for (const attn of [0, 0.3]) {
  test(`bf16Attention 'emulate', attention dropout ${attn}: rounds as documented (JS model), within bf16 tolerance of fp32`, async (t) => {
    const dims = SQUARE;
    const x = randomInputs(dims, 60 + attn * 10);
    const low = await runGraph(buildGraph(attentionCoreFused, dims, 'emulate', attn, { maskOutput: attn > 0, bf16Attention: true }), dims, x);
    const ref = emulatedReference(dims, x, attn, low.mask, true);
    const exact = assertOutputsMatchModel(low, ref, attn);
    // The JS model of the default rounding is not what the variant computes: P itself is rounded now.
    const other = emulatedReference(dims, x, attn, low.mask, false);
    assert.ok(other.dq.some((v, i) => v !== low.dq[i]), 'the variant matches the default (fp32 elementwise) model exactly');
    const dflt = await runGraph(buildGraph(attentionCoreFused, dims, 'emulate', attn), dims, x);
    const fp32 = await runGraph(buildGraph(attentionCoreFused, dims, false, attn), dims, x);
    // Same Dropout seed, same mask: the fp32 and default-emulate graphs are comparable value by value.
    const rows: string[] = [];
    for (const n of ['y', 'dq', 'dk', 'dv'] as const) {
      const vsFp32 = relL2(low[n], fp32[n]);
      const dfltVsFp32 = relL2(dflt[n], fp32[n]);
      rows.push(`${n} ${vsFp32.toExponential(2)} (default ${dfltVsFp32.toExponential(2)})`);
      assert.ok(vsFp32 > 0 && vsFp32 <= 4 * u, `${n}: ${vsFp32} relative L2 from fp32`);
      assert.ok(vsFp32 <= 2 * dfltVsFp32 + u / 4, `${n}: variant ${vsFp32} from fp32, default 'emulate' ${dfltVsFp32}`);
    }
    t.diagnostic(`bit-identical to the JS model: ${exact.map((e) => (100 * e).toFixed(1) + '%').join(', ')} (y, dq, dk, dv); rel L2 from fp32: ${rows.join(', ')}`);
  });
}

test('bf16Attention: the [B,H,Tq,Tk] tensors are bf16 between ops — forward MatMul Add Softmax Dropout, backward MatMul Where Mul; kept P, Pd bf16', (t) => {
  const d = SQUARE;
  const full = [d.B, d.H, d.Tq, d.Tk];
  const rows: string[] = [];
  const count = (bf16: Bf16Mode, attn: number) => {
    const b = buildGraph(attentionCoreFused, d, bf16, attn, { bf16Attention: true });
    const r = { b, fwd: fullSizeWriters(b.g, 0, d, b.forwardCount), bwd: fullSizeWriters(b.g, b.forwardCount, d), kept: keptForBackward(b, d) };
    rows.push(`bf16 ${bf16} dropout ${attn}: forward ${r.fwd.join(' ')}; backward ${r.bwd.join(' ')}; kept ${r.kept.join(' ')}`);
    return r;
  };
  // Real bf16: no Cast on a [B,H,Tq,Tk] tensor at all, every such tensor but the mask is bfloat16.
  let r = count(true, 0.1);
  assert.deepEqual(r.fwd, ['MatMul', 'Add', 'Softmax', 'Dropout']);
  assert.deepEqual(r.bwd, ['MatMul', 'Where', 'Mul']);
  assert.deepEqual(r.kept, ['bfloat16', 'bfloat16', 'bool']);
  const fullOuts = r.b.g.nodes.filter((n) => !n.virtual).flatMap((n) => n.outputs.filter((o) => sameShape(o.shape, full)));
  assert.deepEqual([...new Set(fullOuts.map((o) => o.dtype))].sort(), ['bfloat16', 'bool']);
  // The bias is cast to bf16 once ([B,1,Tq,Tk]), the dq/dk MatMuls read dS/s without a cast.
  const casts = r.b.g.nodes.filter((n) => n.opType === 'Cast' && n.inputs[0]!.name === 'bias');
  assert.equal(casts.length, 1);
  const dS = r.b.g.nodes.slice(r.b.forwardCount).find((n) => n.opType === 'Mul' && sameShape(n.outputs[0]!.shape, full))!.outputs[0]!;
  assert.equal(dS.dtype, 'bfloat16');
  const readers = r.b.g.nodes.filter((n) => n.inputs.includes(dS));
  assert.deepEqual(readers.map((n) => n.opType), ['MatMul', 'MatMul']); // dq = dS·k, dkᵀ = qᵀ·dS: no Cast
  r = count(true, 0);
  assert.deepEqual(r.fwd, ['MatMul', 'Add', 'Softmax']);
  assert.deepEqual(r.bwd, ['MatMul', 'Mul']);
  assert.deepEqual(r.kept, ['bfloat16']);
  // 'emulate': a round trip after each of those ops, nothing else on [B,H,Tq,Tk].
  r = count('emulate', 0.1);
  assert.deepEqual(r.fwd, ['MatMul', 'Cast', 'Cast', 'Add', 'Cast', 'Cast', 'Softmax', 'Cast', 'Cast', 'Dropout', 'Cast', 'Cast']);
  assert.deepEqual(r.bwd, ['MatMul', 'Cast', 'Cast', 'Where', 'Mul', 'Cast', 'Cast']);
  t.diagnostic(rows.join('\n'));
});

test('bf16Attention without bf16 (fp32 mode): the graph is byte-identical to the default', () => {
  for (const attn of [0, 0.3]) {
    const on = buildGraph(attentionCoreFused, SQUARE, false, attn, { bf16Attention: true }).g.toModelBytes();
    const off = buildGraph(attentionCoreFused, SQUARE, false, attn).g.toModelBytes();
    assert.deepEqual(on, off);
  }
});
