// In-run evaluation (TrainingEngine evalInRun, trainGraph.ts GraphOptions.evalInRun): a step marked `eval`
// evaluates the eval set after its update inside the same session.run. Checked against the engine that
// evaluates between runs (runSteps, evalBatches, runSteps): the same eval sums, the same losses afterwards and
// the same parameters — bit for bit on the CPU, dropout included (the eval If adds no random nodes, so every
// Dropout keeps its seed) — in fp32 and bf16 'emulate', with and without accumulation, per-tensor and flat state.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TrainingEngine, type TrainingEngineOptions } from '../../native-runner/engine/trainingEngine';
import type { Bf16Mode } from '../../native-runner/engine/gpt2Graph';
import type { MicroBatch, StepInput } from '../../native-runner/engine/types';
import { SftError } from '../../native-runner/util/errors';
import { Rng } from '../../native-runner/util/rng';
import { packedBatch, paddedBatch, tinyGoldenSetup, withEnv, type Example } from './helpers';

const { config, params0 } = tinyGoldenSetup();

function example(rng: Rng, len: number): Example {
  const ids = Array.from({ length: len }, () => rng.nextInt(config.vocab_size));
  return { ids, trained: ids.map((_, t) => t >= 2) };
}

/** Training micro-batches (padded, then packed) and an eval set of three micro-batches of different shapes. */
function data(): { train: MicroBatch[]; evalSet: MicroBatch[] } {
  const rng = new Rng(7);
  const train = [paddedBatch([example(rng, 9), example(rng, 6)], 0), packedBatch([[example(rng, 5), example(rng, 6)], [example(rng, 10)]], 12, 0)];
  const evalSet = [paddedBatch([example(rng, 8), example(rng, 11), example(rng, 4)], 0), packedBatch([[example(rng, 7), example(rng, 5)]], 13, 0), paddedBatch([example(rng, 3)], 0)];
  return { train, evalSet };
}

function opts(bf16: Bf16Mode, evalInRun: boolean, flatState: boolean): TrainingEngineOptions {
  return { config, params: params0(), device: 'cpu', stepsPerRun: 4, bf16, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1, dropout: 0.1, seed: 3, evalInRun, flatState, evalBatchesPerRun: 8 };
}

const steps = (train: MicroBatch[], A: number, evalAt: number[]): StepInput[] =>
  [0, 1, 2, 3].map((k) => ({ lr: 1e-3 * (k + 1), microBatches: A === 1 ? [train[k % 2]!] : train, eval: evalAt.includes(k) }));

for (const [bf16, A, flatState] of [[false, 1, false], [false, 2, false], ['emulate', 2, false], [false, 2, true]] as [Bf16Mode, number, boolean][]) {
  test(`bf16 ${bf16}, ${A} micro-batch(es) per step, ${flatState ? 'flat' : 'per-tensor'} state: eval inside the run = eval between runs, bit for bit`, async () => {
    const { train, evalSet } = data();
    const s = steps(train, A, [1, 3]);
    const inRun = await TrainingEngine.create(opts(bf16, true, flatState));
    const m = await inRun.runSteps(s, { evalBatches: evalSet });
    const between = await TrainingEngine.create(opts(bf16, false, flatState));
    const ref: { loss: number; eval?: { nllSum: number; tokens: number } }[] = [];
    for (const [from, to] of [[0, 2], [2, 4]]) {
      for (const r of await between.runSteps(s.slice(from, to).map((x) => ({ ...x, eval: false })))) ref.push({ loss: r.loss });
      let nllSum = 0;
      let tokens = 0;
      for (const r of await between.evalBatches(evalSet)) {
        nllSum += r.nllSum;
        tokens += r.tokens;
      }
      ref[to - 1]!.eval = { nllSum, tokens };
    }
    assert.deepEqual(m.map((r) => r.loss), ref.map((r) => r.loss));
    assert.equal(m[0]!.eval, undefined);
    assert.equal(m[2]!.eval, undefined);
    for (const k of [1, 3]) assert.deepEqual(m[k]!.eval, ref[k]!.eval, `step ${k + 1}`);
    assert.ok(m[1]!.eval!.tokens > 0 && m[3]!.eval!.nllSum !== m[1]!.eval!.nllSum, 'the two evaluations see different parameters');
    const pa = inRun.getParams();
    for (const [name, t] of between.getParams()) assert.deepEqual(pa.get(name)!.data, t.data, name);
    await inRun.dispose();
    await between.dispose();
  });
}

test('runs without an eval step take no eval set; eval steps need one; an engine without evalInRun refuses them', async () => {
  const { train, evalSet } = data();
  const e = await TrainingEngine.create(opts(false, true, false));
  const m = await e.runSteps(steps(train, 1, []).slice(0, 2)); // E = 0: the If is never taken
  assert.ok(m.every((r) => r.eval === undefined && Number.isFinite(r.loss)));
  await assert.rejects(e.runSteps(steps(train, 1, [0]).slice(0, 1)), (err: unknown) => err instanceof SftError && /no eval batches/.test(err.message));
  const bad = { ...evalSet[0]!, inputIds: evalSet[0]!.inputIds.map(() => config.vocab_size) };
  await assert.rejects(e.runSteps(steps(train, 1, [0]).slice(0, 1), { evalBatches: [bad] }), (err: unknown) => err instanceof SftError && /eval batch 0/.test(err.message));
  await e.dispose();
  const off = await TrainingEngine.create(opts(false, false, false));
  await assert.rejects(off.runSteps(steps(train, 1, [0]).slice(0, 1), { evalBatches: evalSet }), (err: unknown) => err instanceof SftError && /evalInRun is off/.test(err.message));
  await off.dispose();
});

test('evalInRun defaults: off on the CPU, SFT_EVAL_IN_RUN=1 turns it on, the option wins over the variable', async () => {
  const base = { ...opts(false, false, false) } as TrainingEngineOptions;
  delete base.evalInRun;
  const plain = await TrainingEngine.create(base);
  assert.equal(plain.evalInRun, false);
  await plain.dispose();
  await withEnv('SFT_EVAL_IN_RUN', '1', async () => {
    const on = await TrainingEngine.create(base);
    assert.equal(on.evalInRun, true);
    await on.dispose();
    const off = await TrainingEngine.create({ ...base, evalInRun: false });
    assert.equal(off.evalInRun, false);
    await off.dispose();
  });
});
