// flatNoDecay (trainGraph.ts GraphOptions.flatNoDecay, SFT_FLAT_NO_DECAY=1): the optimizer group without weight
// decay (biases, LayerNorm parameters) updated as one flat vector, its moments carried flat through the Loop.
// The per-element arithmetic is the same as per tensor, so without clipping the parameters and moments are equal bit
// for bit; the gradient norm sums in another order (relative 1e-6), and with clipping the coefficient follows it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TrainingEngine, type TrainingEngineOptions } from '../../native-runner/engine/trainingEngine';
import { buildTrainGraph, flatGroups } from '../../native-runner/engine/trainGraph';
import { paramSpecs } from '../../native-runner/engine/gpt2Graph';
import { decodeModel, type GraphProtoObj } from '../../native-runner/engine/graph/onnxProto';
import type { MicroBatch, StepInput } from '../../native-runner/engine/types';
import type { ParamSet } from '../../native-runner/model/types';
import { Rng } from '../../native-runner/util/rng';
import { paddedBatch, relL2, tinyGoldenSetup, withEnv, type Example } from './helpers';

const { config, params0 } = tinyGoldenSetup();
const HYPER = { weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 };

function batches(): { train: MicroBatch[]; evalSet: MicroBatch[] } {
  const rng = new Rng(21);
  const ex = (len: number): Example => {
    const ids = Array.from({ length: len }, () => rng.nextInt(config.vocab_size));
    return { ids, trained: ids.map((_, t) => t >= 1) };
  };
  return { train: [paddedBatch([ex(9), ex(7)], 0), paddedBatch([ex(12)], 0)], evalSet: [paddedBatch([ex(10), ex(5)], 0)] };
}

async function train(flatNoDecay: boolean, maxGradNorm: number, A: number): Promise<{ loss: number[]; norm: number[]; eval: number; params: ParamSet; m: ParamSet; v: ParamSet }> {
  const { train: mbs, evalSet } = batches();
  const opts: TrainingEngineOptions = { config, params: params0(), device: 'cpu', stepsPerRun: 3, bf16: false, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm, dropout: 0.1, seed: 5, evalInRun: true };
  return withEnv('SFT_FLAT_NO_DECAY', flatNoDecay ? '1' : '0', async () => {
    const e = await TrainingEngine.create(opts);
    const steps: StepInput[] = [0, 1, 2].map((k) => ({ lr: 3e-3, microBatches: A === 1 ? [mbs[k % 2]!] : mbs, eval: k === 2 }));
    const r = await e.runSteps(steps, { evalBatches: evalSet });
    const o = e.getOptimizerState();
    const out = { loss: r.map((x) => x.loss), norm: r.map((x) => x.gradNorm), eval: r[2]!.eval!.nllSum, params: e.getParams(), m: o.m, v: o.v };
    await e.dispose();
    return out;
  });
}

for (const A of [1, 2]) {
  test(`${A} micro-batch(es) per step, no clipping: parameters, moments and the in-run eval equal per-tensor state bit for bit`, async () => {
    const per = await train(false, 1e9, A);
    const flat = await train(true, 1e9, A);
    assert.deepEqual(flat.loss, per.loss);
    for (let k = 0; k < 3; k++) assert.ok(Math.abs(flat.norm[k]! - per.norm[k]!) <= 1e-6 * per.norm[k]!, `step ${k + 1}: norm ${flat.norm[k]} vs ${per.norm[k]}`);
    assert.equal(flat.eval, per.eval);
    for (const [what, a, b] of [['p', flat.params, per.params], ['m', flat.m, per.m], ['v', flat.v, per.v]] as const) {
      for (const [name, t] of b) assert.deepEqual(a.get(name)!.data, t.data, `${what}:${name}`);
    }
  });
}

test('with clipping (max_grad_norm 1): within float noise of per-tensor state', async () => {
  const per = await train(false, 1, 2);
  const flat = await train(true, 1, 2);
  assert.ok(per.norm[0]! > 1, `the first step's norm ${per.norm[0]} must clip for this test to mean anything`);
  for (const [name, t] of per.params) assert.ok(relL2(flat.params.get(name)!.data, t.data) <= 1e-6, name);
});

test('graph: the no-decay group costs one Sqrt and its moments cross the Loop as one vector each', () => {
  const groups = flatGroups(config);
  const noDecay = groups.find((g) => !g.decay)!;
  const decayed = paramSpecs(config).length - noDecay.names.length;
  const base = { dropout: { embd: 0, attn: 0, resid: 0 }, seed: 0, bf16: false as const, accumulate: true };
  const count = (gp: GraphProtoObj, op: string): number => {
    let n = 0;
    for (const node of gp.node ?? []) {
      if (node.opType === op) n++;
      for (const a of node.attribute ?? []) if (a.g) n += count(a.g, op);
    }
    return n;
  };
  const per = decodeModel(buildTrainGraph(config, HYPER, base).toModelBytes()).graph;
  const flat = decodeModel(buildTrainGraph(config, HYPER, { ...base, flatNoDecay: true }).toModelBytes()).graph;
  assert.equal(count(per, 'Sqrt'), decayed + noDecay.names.length);
  assert.equal(count(flat, 'Sqrt'), decayed + 1);
  const loopOf = (gp: GraphProtoObj) => gp.node.find((n) => n.opType === 'Loop')!;
  // Carried: trip, cond, p per tensor, m and v per decayed tensor + one vector each.
  assert.equal(loopOf(flat).input.length, 2 + paramSpecs(config).length + 2 * (decayed + 1));
  // The graph's inputs and outputs do not change: the host still sees m:<name>, m_out:<name> per tensor.
  assert.deepEqual(flat.input.map((i) => i.name).sort(), per.input.map((i) => i.name).sort());
  assert.deepEqual(flat.output.map((o) => o.name), per.output.map((o) => o.name));
});
