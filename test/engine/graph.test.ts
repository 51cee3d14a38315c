// The graph builder and ONNX emission: proto round trip with ONNX field numbers, Loop subgraphs that read
// outer-scope values, external data files, shape inference of broadcasting, and unique names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { Graph, makeData, OPSET } from '../../native-runner/engine/graph/graph';
import { decodeModel } from '../../native-runner/engine/graph/onnxProto';
import { trueConst } from '../../native-runner/engine/gpt2Graph';

test('emitted bytes decode back to the same model (opset, inputs, nodes, attributes, initializers)', () => {
  const g = new Graph('m');
  const x = g.input('x', 'float', ['B', 3]);
  const w = g.tensorConst('float', [3, 2], [1, 2, 3, 4, 5, 6]);
  const y = g.gemm(x, w, null, { transB: false });
  g.output(g.op('LeakyRelu', [y], { alpha: { f: 0.25 } }, { dtype: 'float', shape: ['B', 2] }), 'y');
  const m = decodeModel(g.toModelBytes());
  assert.equal(Number(m.irVersion), 10);
  assert.deepEqual(m.opsetImport.map((o) => Number(o.version)), [OPSET]);
  assert.equal(m.graph.input[0]!.name, 'x');
  assert.deepEqual(m.graph.input[0]!.type.tensorType.shape!.dim.map((d) => d.dimParam ?? Number(d.dimValue)), ['B', 3]);
  assert.deepEqual(m.graph.node.map((n) => n.opType), ['Gemm', 'LeakyRelu', 'Identity']);
  const alpha = m.graph.node[1]!.attribute.find((a) => a.name === 'alpha')!;
  assert.equal(alpha.type, 1); // FLOAT
  assert.ok(Math.abs(alpha.f! - 0.25) < 1e-7);
  assert.equal(m.graph.initializer.length, 1);
  assert.deepEqual(Array.from(new Float32Array(Uint8Array.from(m.graph.initializer[0]!.rawData!).buffer)), [1, 2, 3, 4, 5, 6]);
});

test('a Loop body reads outer-scope values and carries state across iterations', async () => {
  const g = new Graph();
  const trip = g.input('trip', 'int64', []);
  const step = g.input('step', 'float', [2]);
  const body = g.subgraph('body');
  const i = body.freshInput('i', 'int64', []);
  body.freshInput('c', 'bool', []);
  const acc = body.freshInput('acc', 'float', [2]);
  const next = body.add(acc, body.mul(step, body.cast(i, 'float'))); // acc + step·i (outer `step`)
  body.output(trueConst(body));
  body.output(next);
  body.output(body.reduceSum(next, null, false)); // scan output
  const [final, scan] = g.node('Loop', [trip, trueConst(g), g.tensorConst('float', [2], [0, 0])], { body }, [
    { dtype: 'float', shape: [2] },
    { dtype: 'float', shape: ['K'] },
  ]);
  g.output(final!, 'final');
  g.output(scan!, 'scan');
  const s = await ort.InferenceSession.create(g.toModelBytes());
  const r = await s.run({ trip: new ort.Tensor('int64', BigInt64Array.of(4n), []), step: new ort.Tensor('float32', Float32Array.of(1, 10), [2]) });
  assert.deepEqual(Array.from(r.final!.data as Float32Array), [6, 60]); // 0+1+2+3
  assert.deepEqual(Array.from(r.scan!.data as Float32Array), [0, 11, 33, 66]);
});

test('constants go to an external data file and the model still runs', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-graph-'));
  try {
    const g = new Graph();
    const x = g.input('x', 'float', [4]);
    const big = g.constant(makeData('float', [4], [1, 2, 3, 4]), 'big');
    const body = g.subgraph('b');
    body.freshInput('i', 'int64', []);
    body.freshInput('c', 'bool', []);
    const a = body.freshInput('a', 'float', [4]);
    body.output(trueConst(body));
    body.output(body.add(a, body.tensorConst('float', [4], [10, 20, 30, 40])));
    const [looped] = g.node('Loop', [g.scalar(1, 'int64'), trueConst(g), x], { body }, [{ dtype: 'float', shape: [4] }]);
    g.output(g.mul(looped!, big), 'y');
    const file = g.toModelFiles(dir, 'm.onnx', 16);
    const m = decodeModel(fs.readFileSync(file));
    assert.equal(m.graph.initializer.find((t) => t.name === 'big')!.dataLocation, 1);
    assert.equal(fs.statSync(path.join(dir, 'm.onnx.data')).size, 64 + 16);
    const s = await ort.InferenceSession.create(file);
    const r = await s.run({ x: new ort.Tensor('float32', Float32Array.of(1, 1, 1, 1), [4]) });
    assert.deepEqual(Array.from(r.y!.data as Float32Array), [11, 42, 93, 164]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('broadcast shape inference keeps symbols and rejects impossible shapes', () => {
  const g = new Graph();
  const a = g.input('a', 'float', ['B', 'T', 8]);
  const b = g.input('b', 'float', [8]);
  const c = g.input('c', 'float', ['B', 1, 1]);
  assert.deepEqual(g.add(a, b).shape, ['B', 'T', 8]);
  assert.deepEqual(g.mul(a, c).shape, ['B', 'T', 8]);
  assert.deepEqual(g.matmul(a, g.input('w', 'float', [8, 5])).shape, ['B', 'T', 5]);
  assert.throws(() => g.add(a, g.input('d', 'float', [7])), /broadcast of shapes \[B,T,8\] and \[7\] is impossible/);
  assert.throws(() => g.input('a', 'float', [1]), /graph input name a is already used/);
  const n1 = g.identity(a).name;
  const n2 = g.identity(a).name;
  assert.notEqual(n1, n2);
});

test('a graph wrapped in a single-iteration Loop gives the same outputs under the same names', async () => {
  const g = new Graph();
  const ids = g.input('ids', 'int32', ['B', 'T']);
  const x = g.input('x', 'float', ['B', 'T']);
  const bt = g.shapeOf(ids); // shape computations that ORT would place on the CPU EP
  const y = g.reshape(g.mul(x, g.cast(ids, 'float')), g.concat([bt, g.ints([1])], 0), ['B', 'T', 1]);
  g.output(y, 'y');
  g.output(g.reduceSum(x, null, false), 'total');
  const feeds = { ids: new ort.Tensor('int32', Int32Array.of(1, 2, 3, 4, 5, 6), [2, 3]), x: new ort.Tensor('float32', Float32Array.of(1, 1, 1, 2, 2, 2), [2, 3]) };
  const plain = await (await ort.InferenceSession.create(g.toModelBytes())).run(feeds);
  const wrappedBytes = g.toModelBytes({ singleIterationLoop: true });
  const m = decodeModel(wrappedBytes);
  assert.deepEqual(m.graph.node.map((n) => n.opType), ['Loop', 'Squeeze', 'Squeeze']);
  const wrapped = await (await ort.InferenceSession.create(wrappedBytes)).run(feeds);
  assert.deepEqual(wrapped.y!.dims, [2, 3, 1]);
  assert.deepEqual(Array.from(wrapped.y!.data as Float32Array), Array.from(plain.y!.data as Float32Array));
  assert.deepEqual(wrapped.total!.dims, []);
  assert.equal((wrapped.total!.data as Float32Array)[0], 9);
});
