// How autodiff sums the partial gradients of one tensor (engine/graph/autodiff.ts header):
// - tied embeddings: W [V,C] read by Gather (embedding) and by a MatMul (lm head). The Gather's rows are
//   scatter-added straight into the MatMul's gradient: no zeros tensor, no Sum over [V,C]; values equal the
//   float64 derivative, duplicate indices included, and equal the old zeros + scatter + Sum formulation;
// - gradientSum terms are spliced into the receiving tensor's Sum (one Sum of residual + terms), but not when
//   the shapes differ or the Sum is read elsewhere;
// - the Dropout rule: Where(mask, dy, 0)·s, no Cast of the mask, bit-equal to dy·mask·s; after an fp32 linear
//   layer (Gemm + bias) the factor s goes into the backward Gemms' alpha and the bias sum: no scaling pass over
//   [N, C], values equal the float64 derivative; before a Cast to bf16 (the bf16 linear) s is applied first.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { Graph, type Node, type Tensor } from '../../native-runner/engine/graph/graph';
import { gradients, gradientSum } from '../../native-runner/engine/graph/autodiff';
import { Rng } from '../../native-runner/util/rng';
import { relL2 } from './helpers';

const rng = new Rng(99);
const rand = (n: number) => Array.from({ length: n }, () => 2 * rng.nextFloat() - 1);

// --- tied embeddings -------------------------------------------------------------------------------------------

const V = 7;
const C = 3;
const IDS = [2, 5, 2, 0, 2, 6]; // duplicates: 2 three times
const N = IDS.length;

/** x = W[ids] ⊙ a; logits = x·Wᵀ; loss = Σ logits ⊙ r. Returns the graph and its backward nodes. */
function tiedGraph(dtype: 'double' | 'float') {
  const g = new Graph();
  const w = g.input('w', dtype, [V, C]);
  const ids = g.input('ids', 'int64', [N]);
  const a = g.input('a', dtype, [N, C]);
  const r = g.input('r', dtype, [N, V]);
  const x = g.mul(g.gather(w, ids), a);
  const logits = g.gemm(x, w, null, { transB: true });
  const loss = g.reduceSum(g.mul(logits, r), null, false);
  g.output(loss, 'loss');
  const n0 = g.nodes.length;
  const [gw] = gradients(g, [loss], [g.scalar(1, dtype)], [w]);
  g.output(gw!, 'gw');
  return { g, back: g.nodes.slice(n0), gw: gw! };
}

test('tied embedding gradient: the Gather rows are scattered into the head GEMM gradient (no zeros, no Sum) and equal the float64 derivative', async () => {
  const { g, back, gw } = tiedGraph('double');
  assert.ok(!back.some((n) => n.opType === 'ConstantOfShape'), 'no zeros tensor');
  assert.ok(!back.some((n) => n.opType === 'Sum'), 'no Sum of [V,C] partials');
  const scatters = back.filter((n) => n.opType === 'ScatterElements');
  assert.equal(scatters.length, 1);
  const producer = (t: Tensor | null): Node | undefined => g.nodes.find((n) => n.outputs.includes(t!));
  let data = producer(scatters[0]!.inputs[0]);
  while (data?.opType === 'Reshape') data = producer(data.inputs[0]!);
  assert.equal(data?.opType, 'Gemm', 'the scatter adds into the head GEMM gradient');
  assert.equal(scatters[0]!.inputs[1]!.dtype, 'int32', 'repeated row index in int32');
  assert.ok(gw);

  const W = rand(V * C);
  const A = rand(N * C);
  const R = rand(N * V);
  const s = await ort.InferenceSession.create(g.toModelBytes());
  const o = await s.run({
    w: new ort.Tensor('float64', Float64Array.from(W), [V, C]),
    ids: new ort.Tensor('int64', BigInt64Array.from(IDS.map(BigInt)), [N]),
    a: new ort.Tensor('float64', Float64Array.from(A), [N, C]),
    r: new ort.Tensor('float64', Float64Array.from(R), [N, V]),
  });
  // d/dW of Σ_n,v r[n,v]·(W[ids[n]] ⊙ a[n])·W[v]: head part Σ_n r[n,v]·x[n], embedding part (r[n]·W) ⊙ a[n] at row ids[n].
  const ref = new Float64Array(V * C);
  for (let n = 0; n < N; n++) {
    const x = Array.from({ length: C }, (_, c) => W[IDS[n]! * C + c]! * A[n * C + c]!);
    for (let v = 0; v < V; v++) for (let c = 0; c < C; c++) ref[v * C + c] += R[n * V + v]! * x[c]!;
    for (let c = 0; c < C; c++) {
      let dx = 0;
      for (let v = 0; v < V; v++) dx += R[n * V + v]! * W[v * C + c]!;
      ref[IDS[n]! * C + c] += dx * A[n * C + c]!;
    }
  }
  const err = relL2(o.gw!.data as Float64Array, ref);
  assert.ok(err < 1e-14, `relative L2 ${err}`);
});

test('tied embedding gradient in fp32 equals the zeros + ScatterElements + Sum formulation it replaces (1e-7)', async () => {
  const { g } = tiedGraph('float');
  // The old formulation, built by hand on the same graph: Gemm gradient + Sum with a scatter into zeros.
  const scatter = g.nodes.find((n) => n.opType === 'ScatterElements')!;
  const view = g.nodes.find((n) => n.outputs.includes(scatter.inputs[0]!))!; // Reshape of the Gemm gradient to [V, C]
  const gemmGrad = view.inputs[0]!;
  assert.equal(g.nodes.find((n) => n.outputs.includes(gemmGrad))!.opType, 'Gemm');
  const zeros = g.zerosLike(scatter.inputs[0]!);
  const old = g.op('Sum', [gemmGrad, g.reshape(g.op('ScatterElements', [zeros, scatter.inputs[1]!, scatter.inputs[2]!], { axis: 0, reduction: 'add' }, { dtype: 'float', shape: [V, C] }), [V, C], [V, C])]);
  g.output(old, 'old');
  const s = await ort.InferenceSession.create(g.toModelBytes());
  const o = await s.run({
    w: new ort.Tensor('float32', Float32Array.from(rand(V * C)), [V, C]),
    ids: new ort.Tensor('int64', BigInt64Array.from(IDS.map(BigInt)), [N]),
    a: new ort.Tensor('float32', Float32Array.from(rand(N * C)), [N, C]),
    r: new ort.Tensor('float32', Float32Array.from(rand(N * V)), [N, V]),
  });
  const err = relL2(o.gw!.data as Float32Array, o.old!.data as Float32Array);
  assert.ok(err < 1e-7, `relative L2 ${err}`);
  // Rows without a duplicate index see the same two fp32 additions in the same order: bit-equal.
  const gw = o.gw!.data as Float32Array;
  const od = o.old!.data as Float32Array;
  for (const row of [5, 0, 6, 1]) for (let c = 0; c < C; c++) assert.equal(gw[row * C + c], od[row * C + c], `row ${row}`);
});

test('a Gather whose data has no other gradient still scatters into zeros', () => {
  const g = new Graph();
  const w = g.input('w', 'float', [V, C]);
  const ids = g.input('ids', 'int64', [N]);
  const loss = g.reduceSum(g.gather(w, ids), null, false);
  const [gw] = gradients(g, [loss], [g.scalar(1)], [w]);
  const scatter = g.nodes.find((n) => n.opType === 'ScatterElements')!;
  assert.ok(gw && scatter);
  let d = g.nodes.find((n) => n.outputs.includes(scatter.inputs[0]!))!;
  while (d.opType === 'Reshape') d = g.nodes.find((n) => n.outputs.includes(d.inputs[0]!))!;
  assert.equal(d.opType, 'ConstantOfShape');
});

// --- gradientSum splicing --------------------------------------------------------------------------------------

/** z = x + region(x) where the region's custom gradient returns gradientSum of two terms; loss = Σ z·r. */
function spliceGraph(termShape: 'same' | 'broadcast', readSum: boolean) {
  const g = new Graph();
  const x = g.input('x', 'double', [4, 3]);
  const r = g.input('r', 'double', [4, 3]);
  let sumOut: Tensor | null = null;
  const [y] = g.customGradient(
    [x],
    () => [g.mul(x, x)],
    (gg, gy) => {
      const dy = gy[0]!;
      const t1 = gg.mul(dy, x);
      const t2 = termShape === 'same' ? gg.mul(dy, x) : gg.reduceSum(gg.mul(dy, x), [1], true); // [4,3] or [4,1]
      sumOut = gradientSum(gg, [t1, t2]);
      if (readSum) gg.output(gg.identity(sumOut), 'peek');
      return [sumOut];
    },
  );
  const loss = g.reduceSum(g.mul(g.add(x, y!), r), null, false);
  const [gx] = gradients(g, [loss], [g.scalar(1, 'double')], [x]);
  g.output(gx!, 'gx');
  return { g, gx: gx!, sumOut: sumOut! };
}

test('gradientSum terms join the residual gradient in one Sum; values unchanged', async () => {
  const { g, gx, sumOut } = spliceGraph('same', false);
  const producer = g.nodes.find((n) => n.outputs.includes(gx))!;
  assert.equal(producer.opType, 'Sum');
  assert.equal(producer.inputs.length, 3);
  assert.ok(!g.nodes.some((n) => n.outputs.includes(sumOut)), 'the region’s own Sum node is gone');
  const X = rand(12);
  const Rv = rand(12);
  const s = await ort.InferenceSession.create(g.toModelBytes());
  const o = await s.run({ x: new ort.Tensor('float64', Float64Array.from(X), [4, 3]), r: new ort.Tensor('float64', Float64Array.from(Rv), [4, 3]) });
  const ref = X.map((v, i) => Rv[i]! * (1 + 2 * v)); // d/dx Σ (x + x²)·r
  assert.ok(relL2(o.gx!.data as Float64Array, ref) < 1e-15);
});

test('gradientSum is left whole when a term broadcasts or when its Sum is read elsewhere', async () => {
  for (const [shape, read] of [['broadcast', false], ['same', true]] as const) {
    const { g, gx, sumOut } = spliceGraph(shape, read);
    assert.ok(g.nodes.some((n) => n.outputs.includes(sumOut)), `${shape}/${read}: Sum kept`);
    const producer = g.nodes.find((n) => n.outputs.includes(gx))!;
    assert.equal(producer.inputs.length, 2, `${shape}/${read}`);
    await ort.InferenceSession.create(g.toModelBytes()); // a valid model
  }
});

test('a gradientSum given for two inputs is spliced into one accumulation and kept as a tensor for the other', async () => {
  const g = new Graph();
  const x = g.input('x', 'double', [2, 3]);
  const u = g.input('u', 'double', [2, 3]);
  const r = g.input('r', 'double', [2, 3]);
  // y = x·u with a (deliberately shared) custom gradient: both inputs get r·(x + u) as gradientSum(r·x, r·u).
  const [y] = g.customGradient(
    [x, u],
    () => [g.mul(x, u)],
    (gg, gy) => {
      const t = gradientSum(gg, [gg.mul(gy[0]!, x), gg.mul(gy[0]!, u)]);
      return [t, t];
    },
  );
  const loss = g.reduceSum(g.mul(g.add(x, y!), r), null, false);
  const [gx, gu] = gradients(g, [loss], [g.scalar(1, 'double')], [x, u]);
  g.output(gx!, 'gx');
  g.output(gu!, 'gu');
  const s = await ort.InferenceSession.create(g.toModelBytes());
  const X = rand(6);
  const U = rand(6);
  const Rv = rand(6);
  const mk = (v: number[]) => new ort.Tensor('float64', Float64Array.from(v), [2, 3]);
  const o = await s.run({ x: mk(X), u: mk(U), r: mk(Rv) });
  const shared = X.map((v, i) => Rv[i]! * (v + U[i]!));
  assert.ok(relL2(o.gx!.data as Float64Array, shared.map((v, i) => v + Rv[i]!)) < 1e-15);
  assert.ok(relL2(o.gu!.data as Float64Array, shared) < 1e-15);
});

// --- Dropout ---------------------------------------------------------------------------------------------------

test('Dropout backward: Where(mask, dy, 0)·(1/(1−p)), no Cast of the mask, equal to dy·mask/(1−p)', async () => {
  const g = new Graph();
  const x = g.input('x', 'float', [50, 40]);
  const r = g.input('r', 'float', [50, 40]);
  const y = g.dropout(g.mul(x, g.scalar(1)), 0.3, 5);
  const mask = g.nodes.find((n) => n.opType === 'Dropout')!.outputs[1]!;
  const loss = g.reduceSum(g.mul(y, r), null, false);
  const n0 = g.nodes.length;
  const [gx] = gradients(g, [loss], [g.scalar(1)], [x]);
  const back = g.nodes.slice(n0);
  assert.ok(!back.some((n) => n.opType === 'Cast'), 'no Cast in the backward');
  const where = back.find((n) => n.opType === 'Where')!;
  assert.equal(where.inputs[0], mask);
  g.output(gx!, 'gx');
  g.output(mask, 'mask');
  const s = await ort.InferenceSession.create(g.toModelBytes());
  const R = Float32Array.from(rand(2000));
  const o = await s.run({ x: new ort.Tensor('float32', Float32Array.from(rand(2000)), [50, 40]), r: new ort.Tensor('float32', R, [50, 40]) });
  const m = o.mask!.data as Uint8Array;
  const got = o.gx!.data as Float32Array;
  const scale = Math.fround(1 / 0.7); // the fp32 scalar constant
  let kept = 0;
  for (let i = 0; i < 2000; i++) {
    kept += m[i]!;
    assert.equal(got[i], m[i] ? Math.fround(R[i]! * scale) : 0, `element ${i}`);
  }
  assert.ok(kept > 1200 && kept < 1600, `kept ${kept} of 2000`);
});

/** z = res + Dropout(linear(x)); linear = Gemm(x, W, b) or (castPair) Cast(Cast(Gemm(x, W), bf16), float) + b. */
function residualDropout(castPair: boolean) {
  const [Nr, K, Cc] = [40, 6, 5];
  const g = new Graph();
  const x = g.input('x', 'float', [Nr, K]);
  const w = g.input('w', 'float', [K, Cc]);
  const b = g.input('b', 'float', [Cc]);
  const res = g.input('res', 'float', [Nr, Cc]);
  const r = g.input('r', 'float', [Nr, Cc]);
  const lin = castPair ? g.add(g.cast(g.cast(g.gemm(x, w, null), 'bfloat16'), 'float'), b) : g.gemm(x, w, b);
  const z = g.add(res, g.dropout(lin, 0.25, 3));
  const mask = g.nodes.find((n) => n.opType === 'Dropout')!.outputs[1]!;
  const loss = g.reduceSum(g.mul(z, r), null, false);
  const n0 = g.nodes.length;
  const grads = gradients(g, [loss], [g.scalar(1)], [x, w, b, res]);
  grads.forEach((t, i) => g.output(t!, `g${i}`));
  g.output(mask, 'mask');
  return { g, back: g.nodes.slice(n0), dims: [Nr, K, Cc] as const };
}

test('residual dropout after a linear layer: in fp32 1/(1−p) goes into the backward Gemms’ alpha (no scaling pass over [N, C]); before a Cast to bf16 it is applied first', async () => {
  for (const castPair of [false, true]) {
    const { g, back, dims } = residualDropout(castPair);
    const [Nr, K, Cc] = dims;
    const where = back.find((n) => n.opType === 'Where')!.outputs[0]!;
    const readers = (t: Tensor): string[] => back.filter((n) => n.inputs.includes(t)).map((n) => n.opType);
    const gemms = back.filter((n) => n.opType === 'Gemm');
    assert.equal(gemms.length, 2);
    if (castPair) {
      // Where → Mul(·, s) → bias sum and Cast to bf16 → Gemms: the ops and rounding points of the plain rule.
      assert.deepEqual(readers(where), ['Mul']);
      const mul = back.find((n) => n.opType === 'Mul' && n.inputs.includes(where))!;
      assert.deepEqual(readers(mul.outputs[0]!).sort(), ['Cast', 'ReduceSum']);
      assert.ok(gemms.every((n) => n.attrs.alpha === undefined));
      continue;
    }
    // The masked gradient Where(mask, dz, 0) is read only by the bias sum and the two Gemms.
    assert.deepEqual(readers(where).sort(), ['Gemm', 'Gemm', 'ReduceSum']);
    for (const n of gemms) assert.equal((n.attrs.alpha as { f: number }).f, 1 / 0.75);
    const s = await ort.InferenceSession.create(g.toModelBytes());
    const X = rand(Nr * K);
    const W = rand(K * Cc);
    const R = rand(Nr * Cc);
    const f32 = (v: number[], shape: number[]) => new ort.Tensor('float32', Float32Array.from(v), shape);
    const o = await s.run({ x: f32(X, [Nr, K]), w: f32(W, [K, Cc]), b: f32(rand(Cc), [Cc]), res: f32(rand(Nr * Cc), [Nr, Cc]), r: f32(R, [Nr, Cc]) });
    const m = o.mask!.data as Uint8Array;
    const d = R.map((v, i) => (m[i] ? v / 0.75 : 0)); // dLoss/dlin
    const dx = new Float64Array(Nr * K);
    const dw = new Float64Array(K * Cc);
    const db = new Float64Array(Cc);
    for (let n = 0; n < Nr; n++)
      for (let c = 0; c < Cc; c++) {
        const v = d[n * Cc + c]!;
        db[c] += v;
        for (let k = 0; k < K; k++) {
          dx[n * K + k] += v * W[k * Cc + c]!;
          dw[k * Cc + c] += X[n * K + k]! * v;
        }
      }
    assert.ok(relL2(o.g0!.data as Float32Array, dx) < 1e-6, 'dx');
    assert.ok(relL2(o.g1!.data as Float32Array, dw) < 1e-6, 'dW');
    assert.ok(relL2(o.g2!.data as Float32Array, db) < 1e-6, 'db');
    assert.ok(relL2(o.g3!.data as Float32Array, Float32Array.from(R)) === 0, 'the residual gets r as is');
  }
});
