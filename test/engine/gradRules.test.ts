// Every rule of GRAD_RULES against central finite differences on small random inputs. Each case builds
// y = op(inputs), differentiates loss = Σ y·r (r random, fixed), and compares the autodiff gradient of every
// input with (loss(x+h) − loss(x−h)) / 2h. float64 graphs where ORT's CPU kernels take doubles (h = 1e-6,
// tolerance 1e-6 relative L2), fp32 otherwise (h = 1e-2, tolerance 1e-2).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { Graph, makeData, type DType, type Tensor } from '../../native-runner/engine/graph/graph';
import { gradients, GRAD_RULES } from '../../native-runner/engine/graph/autodiff';
import { Rng } from '../../native-runner/util/rng';

interface InputSpec {
  shape: number[];
  /** Value range [lo, hi) of the random entries. */
  range?: [number, number];
  /** Integer input (indices): fixed values, not differentiated. */
  ints?: number[];
}

interface Case {
  name: string;
  rule: string;
  dtype: DType;
  inputs: InputSpec[];
  build: (g: Graph, xs: Tensor[]) => Tensor;
  /** Rebuild the session per evaluation (random ops with a fixed seed). */
  freshSession?: boolean;
}

const rng = new Rng(1234);
function rand(n: number, [lo, hi]: [number, number]): number[] {
  return Array.from({ length: n }, () => lo + (hi - lo) * rng.nextFloat());
}
const size = (s: number[]) => s.reduce((a, b) => a * b, 1);

async function checkCase(c: Case): Promise<void> {
  const isDouble = c.dtype === 'double';
  const h = isDouble ? 1e-6 : 1e-2;
  const tol = isDouble ? 1e-6 : 1e-2;
  const g = new Graph();
  const xs = c.inputs.map((s, i) => (s.ints ? g.input(`x${i}`, 'int64', s.shape) : g.input(`x${i}`, c.dtype, s.shape)));
  const y = c.build(g, xs);
  assert.ok(y.shape, `${c.name}: output shape must be known`);
  const ySize = size(y.shape.map(Number));
  const r = g.tensorConst(c.dtype, y.shape.map(Number), rand(ySize, [-1, 1]));
  const loss = g.reduceSum(g.mul(y, r), null, false);
  g.output(loss, 'loss');
  const floatIdx = c.inputs.map((s, i) => (s.ints ? -1 : i)).filter((i) => i >= 0);
  const grads = gradients(g, [loss], [g.scalar(1, c.dtype)], floatIdx.map((i) => xs[i]!));
  grads.forEach((gt, k) => {
    assert.ok(gt, `${c.name}: no gradient for input ${floatIdx[k]}`);
    g.output(gt, `grad${floatIdx[k]}`);
  });
  const bytes = g.toModelBytes();
  const values = c.inputs.map((s) => (s.ints ? s.ints.slice() : rand(size(s.shape), s.range ?? [-1, 1])));
  const mk = (i: number, v: number[]) => {
    const s = c.inputs[i]!;
    if (s.ints) return new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), s.shape);
    return new ort.Tensor(isDouble ? 'float64' : 'float32', isDouble ? Float64Array.from(v) : Float32Array.from(v), s.shape);
  };
  let session = await ort.InferenceSession.create(bytes);
  const feeds = () => Object.fromEntries(values.map((v, i) => [`x${i}`, mk(i, v)]));
  const out = await session.run(feeds());
  const lossAt = async (): Promise<number> => {
    if (c.freshSession) session = await ort.InferenceSession.create(bytes);
    const o = await session.run(feeds(), ['loss']);
    return Number((o.loss!.data as Float64Array)[0]);
  };
  for (const i of floatIdx) {
    const analytic = Array.from(out[`grad${i}`]!.data as Float64Array, Number);
    const fd: number[] = [];
    const v = values[i]!;
    for (let j = 0; j < v.length; j++) {
      const x0 = v[j]!;
      v[j] = x0 + h;
      const lp = await lossAt();
      v[j] = x0 - h;
      const lm = await lossAt();
      v[j] = x0;
      fd.push((lp - lm) / (2 * h));
    }
    let num = 0;
    let den = 0;
    for (let j = 0; j < fd.length; j++) {
      num += (analytic[j]! - fd[j]!) ** 2;
      den += fd[j]! ** 2;
    }
    const rel = Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-3);
    assert.ok(rel < tol, `${c.name}: input ${i} gradient off by ${rel.toExponential(2)} (relative L2)\n analytic ${analytic.slice(0, 6)}\n fd       ${fd.slice(0, 6)}`);
  }
}

const D: DType = 'double';
const F: DType = 'float';
const POS: [number, number] = [0.5, 2];

const cases: Case[] = [
  { name: 'Identity', rule: 'Identity', dtype: D, inputs: [{ shape: [3] }], build: (g, [a]) => g.identity(a!) },
  { name: 'Add broadcast [2,3]+[3]', rule: 'Add', dtype: D, inputs: [{ shape: [2, 3] }, { shape: [3] }], build: (g, [a, b]) => g.add(a!, b!) },
  { name: 'Sub broadcast [2,3]-[2,1]', rule: 'Sub', dtype: D, inputs: [{ shape: [2, 3] }, { shape: [2, 1] }], build: (g, [a, b]) => g.sub(a!, b!) },
  { name: 'Mul broadcast [2,1,3]*[4,1]', rule: 'Mul', dtype: D, inputs: [{ shape: [2, 1, 3] }, { shape: [4, 1] }], build: (g, [a, b]) => g.mul(a!, b!) },
  { name: 'Div broadcast [2,3]/[3]', rule: 'Div', dtype: D, inputs: [{ shape: [2, 3] }, { shape: [3], range: POS }], build: (g, [a, b]) => g.div(a!, b!) },
  { name: 'Neg', rule: 'Neg', dtype: D, inputs: [{ shape: [4] }], build: (g, [a]) => g.neg(a!) },
  { name: 'Exp', rule: 'Exp', dtype: D, inputs: [{ shape: [4] }], build: (g, [a]) => g.exp(a!) },
  { name: 'Log', rule: 'Log', dtype: D, inputs: [{ shape: [4], range: POS }], build: (g, [a]) => g.log(a!) },
  { name: 'Tanh', rule: 'Tanh', dtype: D, inputs: [{ shape: [4] }], build: (g, [a]) => g.tanh(a!) },
  { name: 'Sqrt', rule: 'Sqrt', dtype: D, inputs: [{ shape: [4], range: POS }], build: (g, [a]) => g.sqrt(a!) },
  { name: 'Reciprocal', rule: 'Reciprocal', dtype: D, inputs: [{ shape: [4], range: POS }], build: (g, [a]) => g.op('Reciprocal', [a!]) },
  { name: 'Sigmoid', rule: 'Sigmoid', dtype: D, inputs: [{ shape: [4] }], build: (g, [a]) => g.op('Sigmoid', [a!]) },
  { name: 'Relu', rule: 'Relu', dtype: D, inputs: [{ shape: [4], range: [0.1, 1] }], build: (g, [a]) => g.mul(g.op('Relu', [g.sub(a!, g.scalar(0.55, 'double'))]), a!) },
  { name: 'Pow x^3', rule: 'Pow', dtype: D, inputs: [{ shape: [4] }], build: (g, [a]) => g.op('Pow', [a!, g.scalar(3, 'double')]) },
  { name: 'Cast float→double', rule: 'Cast', dtype: F, inputs: [{ shape: [4] }], build: (g, [a]) => g.cast(g.mul(g.cast(a!, 'double'), g.cast(a!, 'double')), 'float') },
  { name: 'Reshape', rule: 'Reshape', dtype: D, inputs: [{ shape: [2, 3] }], build: (g, [a]) => g.mul(g.reshape(a!, [3, 2], [3, 2]), g.tensorConst('double', [3, 2], [1, 2, 3, 4, 5, 6])) },
  { name: 'Squeeze', rule: 'Squeeze', dtype: D, inputs: [{ shape: [2, 1, 3] }], build: (g, [a]) => g.squeeze(a!, [1]) },
  { name: 'Unsqueeze', rule: 'Unsqueeze', dtype: D, inputs: [{ shape: [2, 3] }], build: (g, [a]) => g.unsqueeze(a!, [0]) },
  { name: 'Transpose', rule: 'Transpose', dtype: D, inputs: [{ shape: [2, 3, 4] }], build: (g, [a]) => g.transpose(a!, [2, 0, 1]) },
  { name: 'Expand', rule: 'Expand', dtype: D, inputs: [{ shape: [3, 1] }], build: (g, [a]) => g.expand(a!, g.ints([2, 3, 4]), [2, 3, 4]) },
  { name: 'Concat', rule: 'Concat', dtype: D, inputs: [{ shape: [2, 3] }, { shape: [2, 2] }], build: (g, [a, b]) => g.concat([a!, b!, a!], 1) },
  { name: 'Split (one part unused)', rule: 'Split', dtype: D, inputs: [{ shape: [2, 5] }], build: (g, [a]) => { const [p, , r] = g.split(a!, 1, [2, 1, 2]); return g.mul(p!, r!); } },
  { name: 'Gather rows (duplicate indices)', rule: 'Gather', dtype: D, inputs: [{ shape: [4, 3] }, { shape: [2, 3], ints: [1, 3, 1, 0, 1, 3] }], build: (g, [a, i]) => g.gather(a!, i!) },
  { name: 'Gather rank-3 data, scalar index', rule: 'Gather', dtype: D, inputs: [{ shape: [4, 2, 3] }, { shape: [], ints: [2] }], build: (g, [a, i]) => g.gather(a!, i!) },
  { name: 'GatherElements (duplicates)', rule: 'GatherElements', dtype: D, inputs: [{ shape: [2, 4] }, { shape: [2, 3], ints: [0, 0, 3, 2, 1, 2] }], build: (g, [a, i]) => g.gatherElements(a!, i!, 1) },
  { name: 'ReduceSum axes keepdims=0', rule: 'ReduceSum', dtype: D, inputs: [{ shape: [2, 3, 4] }], build: (g, [a]) => g.reduceSum(a!, [0, 2], false) },
  { name: 'ReduceSum all', rule: 'ReduceSum', dtype: D, inputs: [{ shape: [2, 3] }], build: (g, [a]) => { const s = g.reduceSum(a!, null, false); return g.mul(g.unsqueeze(s, [0]), g.unsqueeze(s, [0])); } },
  { name: 'ReduceMean keepdims', rule: 'ReduceMean', dtype: D, inputs: [{ shape: [2, 3, 4] }], build: (g, [a]) => g.reduce('ReduceMean', a!, [-1], true) },
  { name: 'MatMul batched [2,3,4]@[4,5]', rule: 'MatMul', dtype: D, inputs: [{ shape: [2, 3, 4] }, { shape: [4, 5] }], build: (g, [a, b]) => g.matmul(a!, b!) },
  { name: 'MatMul broadcast batch [2,1,3,4]@[2,4,2]', rule: 'MatMul', dtype: D, inputs: [{ shape: [2, 1, 3, 4] }, { shape: [2, 4, 2] }], build: (g, [a, b]) => g.matmul(a!, b!) },
  ...[false, true].flatMap((tA) =>
    [false, true].map(
      (tB): Case => ({
        name: `Gemm transA=${+tA} transB=${+tB} + bias`,
        rule: 'Gemm',
        dtype: D,
        inputs: [{ shape: tA ? [4, 3] : [3, 4] }, { shape: tB ? [5, 4] : [4, 5] }, { shape: [5] }],
        build: (g, [a, b, c]) => g.gemm(a!, b!, c!, { transA: tA, transB: tB }),
      }),
    ),
  ),
  { name: 'Softmax', rule: 'Softmax', dtype: D, inputs: [{ shape: [2, 5], range: [-2, 2] }], build: (g, [a]) => g.softmax(a!) },
  { name: 'LogSoftmax', rule: 'LogSoftmax', dtype: D, inputs: [{ shape: [2, 5], range: [-2, 2] }], build: (g, [a]) => g.op('LogSoftmax', [a!], { axis: -1 }) },
  { name: 'LayerNormalization (fp32)', rule: 'LayerNormalization', dtype: F, inputs: [{ shape: [3, 6], range: [-2, 2] }, { shape: [6] }, { shape: [6] }], build: (g, [x, s, b]) => g.layerNorm(x!, s!, b!, 1e-5) },
  { name: 'Gelu tanh', rule: 'Gelu', dtype: D, inputs: [{ shape: [6], range: [-3, 3] }], build: (g, [a]) => g.op('Gelu', [a!], { approximate: 'tanh' }) },
  { name: 'Dropout 0.5 (fixed seed)', rule: 'Dropout', dtype: D, inputs: [{ shape: [3, 4] }], build: (g, [a]) => g.dropout(a!, 0.5, 7), freshSession: true },
  { name: 'Where', rule: 'Where', dtype: D, inputs: [{ shape: [2, 3] }, { shape: [3] }], build: (g, [a, b]) => g.where(g.constant(makeData('bool', [2, 3], [1, 0, 1, 0, 0, 1])), a!, b!) },
  { name: 'fan-out x·x + exp(x)', rule: '(fan-out)', dtype: D, inputs: [{ shape: [3] }], build: (g, [a]) => g.add(g.mul(a!, a!), g.exp(a!)) },
];

for (const c of cases) {
  test(`grad rule ${c.name} matches finite differences`, async () => {
    await checkCase(c);
  });
}

test('every rule in the table has a finite-difference case', () => {
  const covered = new Set(cases.map((c) => c.rule));
  const missing = Object.keys(GRAD_RULES).filter((r) => !covered.has(r));
  assert.deepEqual(missing, []);
});

test('an op without a gradient rule is a loud error naming the op', () => {
  const g = new Graph();
  const x = g.input('x', 'float', [3]);
  const y = g.op('Cos', [x]);
  const loss = g.reduceSum(y, null, false);
  assert.throws(() => gradients(g, [loss], [g.scalar(1)], [x]), /no gradient rule for op Cos \(node Cos/);
});

// ORT's optimiser removes a Dropout whose mask output is unused; in training graphs the backward consumes it.
test('Dropout keeps E[y] = x and zeroes about `ratio` of the entries', async () => {
  const g = new Graph();
  const x = g.input('x', 'float', [10000]);
  g.output(g.dropout(g.mul(x, g.scalar(1)), 0.3, 11), 'y');
  g.output(g.nodes.find((n) => n.opType === 'Dropout')!.outputs[1]!, 'mask');
  const s = await ort.InferenceSession.create(g.toModelBytes());
  const o = await s.run({ x: new ort.Tensor('float32', new Float32Array(10000).fill(1), [10000]) });
  const y = o.y!.data as Float32Array;
  const zeros = y.filter((v) => v === 0).length;
  assert.ok(Math.abs(zeros / 10000 - 0.3) < 0.03, `dropped fraction ${zeros / 10000}`);
  for (const v of y) assert.ok(v === 0 || Math.abs(v - 1 / 0.7) < 1e-6);
});

// The Gelu rule uses the sigmoid form of gelu_new's derivative; over a wide fp32 range it must agree with the
// tanh form, evaluated in float64, to fp32 accuracy (no cancellation blow-up at large |x|, exact 0 slope far left).
test('Gelu (tanh) gradient in fp32 matches the float64 derivative on [-12, 12]', async () => {
  const n = 481;
  const xs = Array.from({ length: n }, (_, i) => -12 + (24 * i) / (n - 1));
  const g = new Graph();
  const x = g.input('x', 'float', [n]);
  const y = g.op('Gelu', [x], { approximate: 'tanh' });
  const loss = g.reduceSum(y, null, false);
  const [gx] = gradients(g, [loss], [g.scalar(1)], [x]);
  g.output(gx!, 'gx');
  const s = await ort.InferenceSession.create(g.toModelBytes());
  const o = await s.run({ x: new ort.Tensor('float32', Float32Array.from(xs), [n]) });
  const got = o.gx!.data as Float32Array;
  const c = Math.sqrt(2 / Math.PI);
  let worst = 0;
  xs.forEach((v, i) => {
    const xf = Math.fround(v);
    const t = Math.tanh(c * (xf + 0.044715 * xf ** 3));
    const want = 0.5 * (1 + t) + 0.5 * xf * (1 - t * t) * c * (1 + 3 * 0.044715 * xf * xf);
    worst = Math.max(worst, Math.abs(got[i]! - want));
  });
  // measured: 3.1e-6 (the tanh form of the same rule: 2.1e-6); a sign or constant slip is off by ≥ 1e-2
  assert.ok(worst < 5e-6, `worst |error| ${worst}`);
  assert.equal(Math.abs(got[0]!), 0);
  assert.ok(Math.abs(got[n - 1]! - 1) < 1e-6);
});
