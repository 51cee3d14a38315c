// Memory of an eval-only TrainingEngine: the AdamW moments are allocated lazily (first training run or
// getOptimizerState), and `adoptParams: true` uses the caller's parameter arrays without a copy. Measured as
// ArrayBuffer bytes (process.memoryUsage().arrayBuffers) on a model of ~3.7M parameters (~15 MB of fp32),
// so a copy or a pair of zeroed moment sets shows up as whole multiples of the parameter bytes.
// Also: lazily allocated moments give the same training run as before (bit-for-bit), and an adopted
// parameter set evaluates exactly like a copied one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeConfig } from '../../native-runner/model/config';
import { countParameters, initGpt2Params } from '../../native-runner/model/gpt2Params';
import type { ParamSet } from '../../native-runner/model/types';
import { paramSpecs } from '../../native-runner/engine/gpt2Graph';
import { TrainingEngine, type TrainingEngineOptions } from '../../native-runner/engine/trainingEngine';
import type { MicroBatch } from '../../native-runner/engine/types';

const config = makeConfig({ n_layer: 2, n_embd: 256, n_head: 4, vocab_size: 8192, n_positions: 64 });
const paramBytes = countParameters(config) * 4;

function opts(params: ParamSet, extra: Partial<TrainingEngineOptions> = {}): TrainingEngineOptions {
  return { config, params, device: 'cpu', stepsPerRun: 1, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1, dropout: 0, ...extra };
}

function batch(): MicroBatch {
  const B = 2;
  const T = 16;
  const n = B * T;
  const inputIds = Int32Array.from({ length: n }, (_, i) => (i * 7919 + 13) % config.vocab_size);
  const targets = Int32Array.from({ length: n }, (_, i) => (i * 104729 + 5) % config.vocab_size);
  return { B, T, inputIds, targets, weights: new Float32Array(n).fill(1), positions: Int32Array.from({ length: n }, (_, i) => i % T), segments: new Int32Array(n).fill(1) };
}

const arrayBuffers = () => process.memoryUsage().arrayBuffers;

test('eval-only engine with adoptParams: no parameter copy, no moments (ArrayBuffer bytes ≪ |params|)', async () => {
  const params = initGpt2Params(config, 1);
  assert.ok(paramBytes > 14e6, `test model too small: ${paramBytes} bytes`);
  const before = arrayBuffers();
  const e = await TrainingEngine.create(opts(params, { adoptParams: true }));
  const r = await e.evalBatch(batch());
  await e.evalBatches([batch(), batch()]);
  const grown = arrayBuffers() - before;
  try {
    // Before the fix: a copy of the parameters plus zeroed m and v = 3 × paramBytes (45 MB here).
    assert.ok(grown < 0.25 * paramBytes, `eval-only engine allocated ${(grown / 1e6).toFixed(1)} MB of ArrayBuffers (params ${(paramBytes / 1e6).toFixed(1)} MB)`);
    assert.equal(e.momentsAllocated, false);
    // The engine's parameters are the caller's arrays.
    const own = e.getParams();
    for (const [name, t] of params) assert.equal(own.get(name)!.data, t.data, name);
    assert.ok(r.tokens === 32 && Number.isFinite(r.nllSum) && r.nllSum > 0);
  } finally {
    await e.dispose();
  }
});

test('default engine copies the parameters once and still allocates no moments until training', async () => {
  const params = initGpt2Params(config, 1);
  const before = arrayBuffers();
  const e = await TrainingEngine.create(opts(params));
  const grown = arrayBuffers() - before;
  try {
    // One copy (1 × paramBytes), not copy + m + v (3 ×).
    assert.ok(grown > 0.9 * paramBytes && grown < 1.5 * paramBytes, `default engine allocated ${(grown / 1e6).toFixed(1)} MB (params ${(paramBytes / 1e6).toFixed(1)} MB)`);
    assert.equal(e.momentsAllocated, false);
    const own = e.getParams();
    for (const [name, t] of params) {
      assert.notEqual(own.get(name)!.data, t.data, name);
      assert.deepEqual(own.get(name)!.data, t.data, name);
    }
    await e.runSteps([{ lr: 1e-3, microBatches: [batch()] }]);
    assert.equal(e.momentsAllocated, true);
    // The caller's arrays were not touched by training.
    assert.deepEqual(params.get('transformer.h.0.attn.c_attn.weight')!.data, initGpt2Params(config, 1).get('transformer.h.0.attn.c_attn.weight')!.data);
  } finally {
    await e.dispose();
  }
});

test('adopted and copied parameters evaluate identically; lazy moments train bit-for-bit like eagerly read ones', async () => {
  const adopt = await TrainingEngine.create(opts(initGpt2Params(config, 2), { adoptParams: true, stepsPerRun: 2 }));
  const copy = await TrainingEngine.create(opts(initGpt2Params(config, 2), { stepsPerRun: 2 }));
  try {
    const mb = batch();
    assert.deepEqual(await adopt.evalTokens(mb), await copy.evalTokens(mb));
    // getOptimizerState on a fresh engine: zero moments at step 0 (allocated on demand).
    const s0 = copy.getOptimizerState();
    assert.equal(s0.step, 0);
    assert.equal(copy.momentsAllocated, true);
    for (const t of [...s0.m.values(), ...s0.v.values()]) assert.ok(t.data.every((x) => x === 0));
    assert.equal(s0.m.size, paramSpecs(config).length);
    // Two steps on each engine (one engine's moments were read first, the other's allocated by runSteps).
    const steps = [{ lr: 1e-3, microBatches: [mb] }, { lr: 5e-4, microBatches: [mb] }];
    const ma = await adopt.runSteps(steps);
    const mc = await copy.runSteps(steps);
    assert.deepEqual(ma, mc);
    const pa = adopt.getParams();
    const pc = copy.getParams();
    for (const [name, t] of pc) assert.deepEqual(pa.get(name)!.data, t.data, name);
    const oa = adopt.getOptimizerState();
    const oc = copy.getOptimizerState();
    assert.equal(oa.step, 2);
    for (const [name, t] of oc.v) assert.deepEqual(oa.v.get(name)!.data, t.data, name);
    assert.ok([...oa.m.values()].some((t) => t.data.some((x) => x !== 0)));
  } finally {
    await adopt.dispose();
    await copy.dispose();
  }
});

test('resume with adoptParams: getOptimizerState before any step is the adopted state; training matches a copying engine; exposed arrays stay intact', async () => {
  const mb = batch();
  const steps = [{ lr: 1e-3, microBatches: [mb] }];
  // A checkpoint: parameters and moments after one step.
  const first = await TrainingEngine.create(opts(initGpt2Params(config, 3)));
  await first.runSteps(steps);
  const copyOf = (s: ParamSet): ParamSet => new Map([...s].map(([n, t]) => [n, { shape: t.shape.slice(), data: t.data.slice() }]));
  const ck = { p: copyOf(first.getParams()), m: copyOf(first.getOptimizerState().m), v: copyOf(first.getOptimizerState().v) };
  await first.dispose();
  const adopted = { p: copyOf(ck.p), m: copyOf(ck.m), v: copyOf(ck.v) };
  const resumed = await TrainingEngine.create(opts(adopted.p, { adoptParams: true, optimizer: { m: adopted.m, v: adopted.v, step: 1 } }));
  const copying = await TrainingEngine.create(opts(copyOf(ck.p), { optimizer: { m: copyOf(ck.m), v: copyOf(ck.v), step: 1 } }));
  try {
    const s0 = resumed.getOptimizerState();
    assert.equal(s0.step, 1);
    assert.equal(resumed.momentsAllocated, true);
    for (const name of ck.m.keys()) assert.equal(s0.m.get(name)!.data, adopted.m.get(name)!.data, `m ${name} is the caller's array`);
    assert.ok([...s0.v.values()].some((t) => t.data.some((x) => x > 0)), 'the checkpoint moments, not zeros');
    const two = [{ lr: 5e-4, microBatches: [mb] }];
    assert.deepEqual(await resumed.runSteps(two), await copying.runSteps(two));
    await resumed.runSteps(two);
    await copying.runSteps(two);
    const [ra, rc] = [resumed.getOptimizerState(), copying.getOptimizerState()];
    assert.equal(ra.step, 3);
    for (const [name, t] of rc.v) assert.deepEqual(ra.v.get(name)!.data, t.data, name);
    for (const [name, t] of copying.getParams()) assert.deepEqual(resumed.getParams().get(name)!.data, t.data, name);
    // the state read before the first step is not reused as an output buffer by the runs after it
    for (const [name, t] of ck.v) assert.deepEqual(s0.v.get(name)!.data, t.data, `exposed v ${name}`);
  } finally {
    await resumed.dispose();
    await copying.dispose();
  }
});
