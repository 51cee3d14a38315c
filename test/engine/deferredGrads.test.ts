// Deferred linear gradients (graph.ts DeferredGrad, autodiff.gradientsDeferred, trainGraph.ts):
// - autodiff: a custom rule's DeferredGrad is finished in place by gradients() (value = finish(raw)), and handed
//   back as is by gradientsDeferred() for a leaf whose only partial it is;
// - the train graph with accumulation: lnFold's parameter gradients (ln γ/β, c_attn/c_fc W/b) are accumulated as
//   the raw dW', db' (fp32) in the micro-batch Loop and finished once per step in the step body — no dense
//   accumulator for those parameters, the finishing Muls outside the micro-batch body;
// - numbers: one 'emulate' step over two micro-batches reports the gradient norm of the summed per-micro-batch
//   gradients (the grads graph, finished per micro-batch), on a tiny model whose LayerNorms have random γ, β.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { Graph, type DeferredGrad, type Tensor } from '../../native-runner/engine/graph/graph';
import { gradients, gradientsDeferred } from '../../native-runner/engine/graph/autodiff';
import { buildTrainGraph } from '../../native-runner/engine/trainGraph';
import { dropoutRates } from '../../native-runner/engine/gpt2Graph';
import { modelVariantsFromEnv, TrainingEngine } from '../../native-runner/engine/trainingEngine';
import type { MicroBatch } from '../../native-runner/engine/types';
import { Rng } from '../../native-runner/util/rng';
import { tinyGoldenSetup } from './helpers';

/** y = x ⊙ (2a) as a region whose gradient w.r.t. a is deferred: raw = gy ⊙ x, finish = 2·raw. */
function toy() {
  const g = new Graph('deferred');
  const a = g.input('a', 'float', [2, 3]);
  const x = g.input('x', 'float', [2, 3]);
  const w = g.input('w', 'float', [2, 3]);
  const [y] = g.customGradient(
    [x, a],
    () => [g.mul(x, g.mul(a, g.scalar(2)))],
    (gg, gy, needs) => {
      const raw = gg.mul(gy[0]!, x);
      const d: DeferredGrad = { kind: 'deferred', raw: [raw], finish: (g2, r) => g2.mul(r[0]!, g2.scalar(2)) };
      return [needs[0] ? gg.mul(gy[0]!, gg.mul(a, gg.scalar(2))) : null, needs[1] ? d : null];
    },
  );
  const loss = g.reduceSum(g.mul(y!, w), null, false);
  return { g, a, x, w, loss };
}

test('gradients() finishes a DeferredGrad in place; gradientsDeferred() hands it back for a leaf', async () => {
  const t = toy();
  const [ga] = gradients(t.g, [t.loss], [t.g.scalar(1)], [t.a]);
  t.g.output(ga!, 'ga');
  const s = await ort.InferenceSession.create(t.g.toModelBytes());
  const X = Float32Array.of(1, -2, 3, 0.5, 4, -1);
  const W = Float32Array.of(2, 1, -1, 3, 0.25, 5);
  const r = await s.run({ a: new ort.Tensor('float32', new Float32Array(6).fill(1), [2, 3]), x: new ort.Tensor('float32', X, [2, 3]), w: new ort.Tensor('float32', W, [2, 3]) });
  await s.release();
  assert.deepEqual(Array.from(r.ga!.data as Float32Array), Array.from(X, (v, i) => 2 * v * W[i]!));

  const u = toy();
  const [d, dx] = gradientsDeferred(u.g, [u.loss], [u.g.scalar(1)], [u.a, u.x]);
  assert.ok(Array.isArray(d) && d.length === 1 && d[0]!.kind === 'deferred', 'the leaf a gets its DeferredGrad back');
  assert.ok(!Array.isArray(dx) && dx !== null, 'x (a dense partial) gets a tensor');
});

// --- the train graph -------------------------------------------------------------------------------------------

const { config, params0, mb } = tinyGoldenSetup();
const HYPER = { weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 };

test("train graph with accumulation ('emulate', lnFold): folded parameters accumulate the raw dW', db' and are finished in the step body", () => {
  const g = buildTrainGraph(config, HYPER, { dropout: dropoutRates(config, 0), bf16: 'emulate', seed: 0, accumulate: true, variants: modelVariantsFromEnv({}) });
  const step = g.nodes.find((n) => n.opType === 'Loop')!.attrs.body as Graph;
  const micro = step.nodes.find((n) => n.opType === 'Loop')!.attrs.body as Graph;
  const rawAcc = micro.inputs.filter((t) => t.name.startsWith('acc_raw:'));
  assert.equal(rawAcc.length, 2 * 2 * config.n_layer, "dW' and db' of c_attn and c_fc per layer");
  for (let l = 0; l < config.n_layer; l++) {
    for (const name of [`transformer.h.${l}.ln_1.weight`, `transformer.h.${l}.ln_2.bias`, `transformer.h.${l}.attn.c_attn.weight`, `transformer.h.${l}.mlp.c_fc.bias`]) {
      assert.ok(!micro.inputs.some((t) => t.name === `acc:${name}`), `${name} has a dense accumulator`);
    }
    assert.ok(micro.inputs.some((t) => t.name === `acc:transformer.h.${l}.attn.c_proj.weight`), 'an unfolded parameter keeps its accumulator');
  }
  // The finishing reads the accumulated raw sums: the step body has nodes reading the Loop outputs for them.
  const inner = step.nodes.find((n) => n.opType === 'Loop')!;
  const rawOuts = inner.outputs.slice(inner.outputs.length - 1 - rawAcc.length, inner.outputs.length - 1);
  for (const t of rawOuts) assert.ok(step.nodes.some((n) => n.inputs.includes(t as Tensor)), `raw sum ${t.name} unused`);
});

function rowOf(m: MicroBatch, b: number): MicroBatch {
  const s = <A extends Int32Array | Float32Array>(a: A) => a.slice(b * m.T, (b + 1) * m.T) as A;
  return { B: 1, T: m.T, inputIds: s(m.inputIds), targets: s(m.targets), weights: s(m.weights), positions: s(m.positions), segments: s(m.segments) };
}

test("'emulate', random LayerNorm γ and β: a step over two micro-batches reports the norm of the summed per-micro-batch gradients", async () => {
  const rng = new Rng(21);
  const params = () => {
    const p = params0();
    for (const [name, t] of p) if (/ln_[12]\.(weight|bias)$/.test(name)) t.data = t.data.map(() => (name.endsWith('weight') ? 0.5 + rng.nextFloat() : rng.nextFloat() - 0.5));
    return p;
  };
  const base = params();
  const copy = () => new Map([...base].map(([k, t]) => [k, { shape: t.shape.slice(), data: t.data.slice() }]));
  const opts = { config, device: 'cpu' as const, stepsPerRun: 1, bf16: 'emulate' as const, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1, dropout: 0, seed: 0 };
  const micro = [rowOf(mb, 0), rowOf(mb, 1)];
  const e1 = await TrainingEngine.create({ ...opts, params: copy() });
  const ref = await e1.gradients(micro);
  await e1.dispose();
  const e2 = await TrainingEngine.create({ ...opts, params: copy() });
  const [m] = await e2.runSteps([{ lr: 1e-3, microBatches: micro }]);
  await e2.dispose();
  assert.ok(Math.abs(m!.loss - ref.loss) <= 1e-6 * ref.loss, `loss ${m!.loss} vs ${ref.loss}`);
  assert.ok(Math.abs(m!.gradNorm - ref.gradNorm) <= 2e-5 * ref.gradNorm, `norm ${m!.gradNorm} vs ${ref.gradNorm}`);
});

test("'emulate', dropout 0.1: the MLP region takes the residual dropout's 1/(1−p) (no [N,C] Mul by it in the MLP branch), its c_proj weight gradient is deferred and scaled once per step", () => {
  const g = buildTrainGraph(config, HYPER, { dropout: dropoutRates(config, 0.1), bf16: 'emulate', seed: 0, accumulate: true, variants: modelVariantsFromEnv({}) });
  const step = g.nodes.find((n) => n.opType === 'Loop')!.attrs.body as Graph;
  const micro = step.nodes.find((n) => n.opType === 'Loop')!.attrs.body as Graph;
  const s = 1 / 0.9;
  const scalarValue = (t: Tensor | null) => {
    const d = t ? micro.constantData(t) : undefined;
    return d && d.shape.length === 0 ? Number(d.data[0]) : null;
  };
  const C = config.n_embd;
  const scaleMuls = micro.nodes.filter((n) => n.opType === 'Mul' && n.outputs[0]!.shape?.[1] === C && n.inputs.some((t) => scalarValue(t) !== null && Math.abs(scalarValue(t)! - s) < 1e-6));
  // Left: one per layer for the attention branch (its c_proj is a plain Gemm) and the embedding dropout's; the MLP
  // branches' n_layer are gone.
  assert.equal(scaleMuls.length, config.n_layer + 1);
  for (let l = 0; l < config.n_layer; l++) assert.ok(!micro.inputs.some((t) => t.name === `acc:transformer.h.${l}.mlp.c_proj.weight`), 'mlp.c_proj.weight accumulates raw');
});
