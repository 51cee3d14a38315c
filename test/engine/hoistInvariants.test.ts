// Loop-invariant code motion (Graph.hoistInvariantsFrom; trainGraph GraphOptions.hoistInvariants):
// - on a toy Loop: what reads only outer values and constants moves out (with its constants), what reads the
//   iteration, a random op and a body output stay; the Loop's outputs are unchanged;
// - on the tiny GPT-2 train graph with 2 micro-batches per step (fp32 and bf16 'emulate', dropout 0.1): the micro-batch
//   body keeps no node whose inputs are all invariant (no parameter cast left in it), the step body holds them, and
//   three optimizer steps give bit-identical losses, gradient norms, parameters and moments with and without the
//   motion.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { Graph, type Tensor } from '../../native-runner/engine/graph/graph';
import { buildTrainGraph, type OptimizerHyper } from '../../native-runner/engine/trainGraph';
import { dropoutRates, type Bf16Mode } from '../../native-runner/engine/gpt2Graph';
import { TrainingEngine } from '../../native-runner/engine/trainingEngine';
import type { MicroBatch, StepInput } from '../../native-runner/engine/types';
import { tinyGoldenSetup, withEnv } from './helpers';

/** outer: x [3] float; Loop 4 times: acc += (x·2 + c) ⊙ i  and  d = Dropout(x·2) (random, stays), out = x·2 (a body output). */
function toyLoop(hoist: boolean) {
  const g = new Graph('toy');
  const x = g.input('x', 'float', [3]);
  const body = g.subgraph('body');
  const i = body.freshInput('i', 'int64', []);
  body.freshInput('c_in', 'bool', []);
  const acc = body.freshInput('acc', 'float', [3]);
  const twice = body.mul(x, body.scalar(2)); // invariant
  const shifted = body.add(twice, body.tensorConst('float', [3], [1, 2, 3])); // invariant, reads a body constant
  const it = body.cast(i, 'float'); // variant
  const dropped = body.dropout(twice, 0.5, 7); // random: stays
  const bodyOut = body.mul(x, body.scalar(3)); // invariant but a body output: stays
  body.output(body.constant({ dtype: 'bool', shape: [], data: Uint8Array.of(1) }, 'true'));
  body.output(body.add(acc, body.mul(shifted, it)));
  body.output(bodyOut);
  body.output(body.reduceSum(dropped, null, false));
  const moved = hoist ? g.hoistInvariantsFrom(body) : [];
  const outs = g.node('Loop', [g.input('trip', 'int64', []), g.input('cond', 'bool', []), g.tensorConst('float', [3], [0, 0, 0])], { body }, [
    { dtype: 'float', shape: [3] },
    { dtype: 'float', shape: null },
    { dtype: 'float', shape: null },
  ]);
  g.output(outs[0]!, 'acc_out');
  g.output(outs[1]!, 'x3');
  return { g, body, moved, twice, shifted, dropped };
}

test('hoistInvariantsFrom: outer-only and constant-only nodes move out with their constants; iteration-dependent, random and body-output nodes stay; same results', async () => {
  const { g, body, moved, twice, shifted, dropped } = toyLoop(true);
  const producedBy = (t: Tensor) => moved.find((n) => n.outputs.includes(t));
  assert.ok(producedBy(twice) && producedBy(shifted), `moved: ${moved.map((n) => n.opType)}`);
  assert.ok(g.nodes.includes(producedBy(shifted)!) && !body.nodes.includes(producedBy(shifted)!));
  assert.ok(body.nodes.some((n) => n.opType === 'Dropout' && n.outputs.includes(dropped)), 'the Dropout stayed');
  assert.ok(body.nodes.some((n) => n.opType === 'Cast'), 'the iteration cast stayed');
  assert.ok(body.nodes.some((n) => n.opType === 'Mul' && n.outputs.includes(body.outputs[2]!)), 'the body output stayed');
  assert.ok(!body.constants.some((c) => c.data.shape[0] === 3), 'the [3] constant moved with its reader');
  assert.ok(g.constants.some((c) => c.data.shape[0] === 3 && c.data.dtype === 'float' && Array.from(c.data.data as Float32Array).join() === '1,2,3'));
  assert.deepEqual(g.hoistInvariantsFrom(body), [], 'a second pass finds nothing');

  const run = async (gr: Graph) => {
    const s = await ort.InferenceSession.create(gr.toModelBytes());
    try {
      const r = await s.run({ x: new ort.Tensor('float32', Float32Array.of(1, -2, 0.5), [3]), trip: new ort.Tensor('int64', BigInt64Array.of(4n), []), cond: new ort.Tensor('bool', Uint8Array.of(1), []) });
      return { acc: Array.from(r.acc_out!.data as Float32Array), x3: Array.from(r.x3!.data as Float32Array) };
    } finally {
      await s.release();
    }
  };
  const hoisted = await run(g);
  const plain = await run(toyLoop(false).g);
  assert.deepEqual(hoisted, plain);
  // acc = Σ_{i<4} (2x + c)·i = 6·(2x + c); the body output is per iteration, stacked: 4 × (3x).
  assert.deepEqual(hoisted.acc, [6 * (2 + 1), 6 * (-4 + 2), 6 * (1 + 3)]);
  assert.deepEqual(hoisted.x3, [3, -6, 1.5, 3, -6, 1.5, 3, -6, 1.5, 3, -6, 1.5]);
});

test('hoistInvariantsFrom refuses a graph that is not a subgraph of this one', () => {
  const a = new Graph('a');
  const b = new Graph('b');
  assert.throws(() => a.hoistInvariantsFrom(b.subgraph('body')), /not a subgraph of a/);
});

// --- the tiny model ---------------------------------------------------------------------------------------------

const { config, params0, mb } = tinyGoldenSetup();
const HYPER: OptimizerHyper = { weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 };

function loopBodies(g: Graph): { step: Graph; micro: Graph } {
  const step = g.nodes.find((n) => n.opType === 'Loop')!.attrs.body as Graph;
  const micro = step.nodes.find((n) => n.opType === 'Loop')!.attrs.body as Graph;
  return { step, micro };
}

for (const bf16 of [false, 'emulate'] as Bf16Mode[]) {
  test(`tiny train graph (${bf16 === false ? 'fp32' : 'bf16 emulate'}, 2 micro-batches per step): the invariant nodes run in the step body, none is left in the micro-batch body`, () => {
    const dropout = dropoutRates(config, 0.1);
    const build = (hoistInvariants: boolean) => buildTrainGraph(config, HYPER, { dropout, bf16, seed: 0, accumulate: true, hoistInvariants });
    const on = loopBodies(build(true));
    const off = loopBodies(build(false));
    const params = new Set(on.step.inputs.filter((t) => t.name.startsWith('p_in:')));
    const castsOfParams = (micro: Graph) => micro.nodes.filter((n) => n.opType === 'Cast' && n.inputs[0] && params.has(n.inputs[0])).length;
    const offParams = new Set(off.step.inputs.filter((t) => t.name.startsWith('p_in:')));
    const offCasts = off.micro.nodes.filter((n) => n.opType === 'Cast' && n.inputs[0] && offParams.has(n.inputs[0])).length;
    if (bf16) assert.ok(offCasts >= 4 * config.n_layer, `without the motion the micro body casts ${offCasts} parameters`);
    assert.equal(castsOfParams(on.micro), 0);
    const moved = off.micro.nodes.length - on.micro.nodes.length;
    assert.ok(moved > 0 && on.step.nodes.length === off.step.nodes.length + moved, `moved ${moved} nodes`);
    // Nothing invariant is left: a second motion moves nothing.
    assert.deepEqual(on.step.hoistInvariantsFrom(on.micro), []);
  });
}

/** Row b of the golden batch as its own B=1 micro-batch. */
function rowOf(m: MicroBatch, b: number): MicroBatch {
  const s = <A extends Int32Array | Float32Array>(a: A) => a.slice(b * m.T, (b + 1) * m.T) as A;
  return { B: 1, T: m.T, inputIds: s(m.inputIds), targets: s(m.targets), weights: s(m.weights), positions: s(m.positions), segments: s(m.segments) };
}

async function threeSteps(bf16: Bf16Mode, hoist: boolean) {
  return withEnv('SFT_HOIST_INVARIANTS', hoist ? '1' : '0', async () => {
    const e = await TrainingEngine.create({ config, params: params0(), device: 'cpu', stepsPerRun: 3, bf16, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1, dropout: 0.1, seed: 0 });
    try {
      const steps: StepInput[] = [0, 1, 2].map((k) => ({ lr: 1e-3 * (k + 1), microBatches: [rowOf(mb, 0), rowOf(mb, 1)] }));
      const metrics = await e.runSteps(steps);
      const opt = e.getOptimizerState();
      return { metrics, params: e.getParams(), m: opt.m, v: opt.v };
    } finally {
      await e.dispose();
    }
  });
}

for (const bf16 of [false, 'emulate'] as Bf16Mode[]) {
  test(`tiny model, 3 steps × 2 micro-batches, dropout 0.1, ${bf16 === false ? 'fp32' : 'bf16 emulate'}: with and without the motion, losses, norms, parameters and moments are bit-identical`, async () => {
    const a = await threeSteps(bf16, true);
    const b = await threeSteps(bf16, false);
    assert.equal(a.metrics.length, 3);
    assert.deepEqual(a.metrics.map((s) => [s.loss, s.gradNorm]), b.metrics.map((s) => [s.loss, s.gradNorm]));
    for (const [label, x, y] of [['p', a.params, b.params], ['m', a.m, b.m], ['v', a.v, b.v]] as const) {
      assert.equal(x.size, y.size);
      for (const [name, t] of x) assert.deepEqual(t.data, y.get(name)!.data, `${label} ${name}`);
    }
    // The steps trained: the parameters moved.
    const p0 = params0();
    assert.ok([...a.params].some(([n, t]) => t.data.some((v, i) => v !== p0.get(n)!.data[i])));
  });
}
