// Whole-model accuracy checks shared by the opt-in bf16 variants (bf16Attention.test.ts, bf16Mlp.test.ts): the
// tiny model under 'emulate' on the CPU, with the variant switched on through its SFT_* variable, next to the
// default bf16 'emulate' graph and against fp32:
// - the golden batch (dropout 0 and 0.1, same Dropout seeds and masks in every graph): loss and gradients within
//   the bounds test/engine/bf16Emulation.test.ts uses (loss ≤ u relative, every gradient tensor ≤ 4u relative L2,
//   all gradients ≥ u/4 from fp32), at most twice the default's distance from fp32, and not the default's bit
//   for bit (the variant was applied);
// - 20 AdamW steps: within the GPU check's bf16 loss-curve rule (engine/bf16Tolerance.ts) and u/8 of fp32.
// u = 2^-8, bf16's unit roundoff. The engine reads the variant when it builds its sessions, so each engine below
// is created, used and disposed inside withVariant().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TrainingEngine, type TrainingEngineOptions } from '../../native-runner/engine/trainingEngine';
import type { Bf16Mode } from '../../native-runner/engine/gpt2Graph';
import { BF16_UNIT_ROUNDOFF, compareLossCurves, LOSS_CURVE_TOLERANCE } from '../../native-runner/engine/bf16Tolerance';
import type { MicroBatch } from '../../native-runner/engine/types';
import { gradStats, tinyGoldenSetup, type GradStats } from './helpers';

const { config, params0, mb } = tinyGoldenSetup();
const u = BF16_UNIT_ROUNDOFF;

function engineOpts(stepsPerRun: number, bf16: Bf16Mode, dropout: number): TrainingEngineOptions {
  return { config, params: params0(), device: 'cpu', stepsPerRun, bf16, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1.0, dropout, seed: 0 };
}

/** Registers the golden-batch and 20-step tests for the variant named `label`, switched by the variable `envVar`. */
export function registerVariantAccuracyTests(label: string, envVar: string): void {
  /** Runs `fn` with the variable set to `on` (engines built inside use the variant), then restores it. */
  async function withVariant<T>(on: boolean, fn: () => Promise<T>): Promise<T> {
    const before = process.env[envVar];
    process.env[envVar] = on ? '1' : '0';
    try {
      return await fn();
    } finally {
      if (before === undefined) delete process.env[envVar];
      else process.env[envVar] = before;
    }
  }

  // --- the golden batch -----------------------------------------------------------------------------------

  const fmt = (s: GradStats) => `loss ${s.lossRel.toExponential(2)}, worst tensor ${s.worstTensor.toExponential(2)}, all ${s.total.toExponential(2)}`;

  async function goldenGradients(bf16: Bf16Mode, variant: boolean, dropout: number) {
    return withVariant(variant, async () => {
      const e = await TrainingEngine.create(engineOpts(1, bf16, dropout));
      try {
        return await e.gradients([mb]);
      } finally {
        await e.dispose();
      }
    });
  }

  for (const dropout of [0, 0.1]) {
    test(`golden batch, dropout ${dropout}: ${label} 'emulate' loss and gradients within bf16 bounds of fp32, unlike the default's`, async (t) => {
      const ref = await goldenGradients(false, false, dropout);
      const dflt = await goldenGradients('emulate', false, dropout);
      const low = await goldenGradients('emulate', true, dropout);
      const sLow = gradStats(ref, low, true);
      const sDflt = gradStats(ref, dflt, false);
      const sBetween = gradStats(dflt, low, false);
      t.diagnostic(`vs fp32 — ${label}: ${fmt(sLow)}; default emulate: ${fmt(sDflt)}; ${label} vs default: gradients ${sBetween.total.toExponential(2)}`);
      assert.ok(sLow.lossRel <= u, `loss ${low.loss} vs fp32 ${ref.loss}`);
      assert.ok(Math.abs(low.gradNorm - ref.gradNorm) / ref.gradNorm <= u, `grad norm ${low.gradNorm} vs ${ref.gradNorm}`);
      assert.ok(sLow.total >= u / 4, `gradients only ${sLow.total} from fp32: nothing rounded`);
      // The variant was really used (the attention matrices rounded too) and costs at most ~2× the default's error.
      assert.ok(sBetween.total > 0, 'the variant produced the default gradients bit for bit');
      assert.ok(sLow.total <= 2 * sDflt.total, `${label} ${sLow.total} vs default ${sDflt.total} from fp32`);
    });
  }

  // --- 20 training steps ----------------------------------------------------------------------------------

  /** Row b of a MicroBatch as its own B=1 micro-batch. */
  function rowOf(m: MicroBatch, b: number): MicroBatch {
    const s = (a: Int32Array | Float32Array) => a.slice(b * m.T, (b + 1) * m.T);
    return { B: 1, T: m.T, inputIds: s(m.inputIds) as Int32Array, targets: s(m.targets) as Int32Array, weights: s(m.weights) as Float32Array, positions: s(m.positions) as Int32Array, segments: s(m.segments) as Int32Array };
  }

  async function lossCurve(bf16: Bf16Mode, variant: boolean): Promise<number[]> {
    return withVariant(variant, async () => {
      const K = 5;
      const e = await TrainingEngine.create(engineOpts(K, bf16, 0));
      const micro = [rowOf(mb, 0), rowOf(mb, 1)];
      const loss: number[] = [];
      try {
        for (let s = 0; s < 20; s += K) for (const m of await e.runSteps(Array.from({ length: K }, () => ({ lr: 1e-3, microBatches: micro })))) loss.push(m.loss);
      } finally {
        await e.dispose();
      }
      return loss;
    });
  }

  test(`20 AdamW steps (lr 1e-3): ${label} 'emulate' follows fp32 within the GPU check's bf16 rule and u/8`, async (t) => {
    const ref = await lossCurve(false, false);
    const dflt = await lossCurve('emulate', false);
    const low = await lossCurve('emulate', true);
    const gpuRule = compareLossCurves(ref, low, LOSS_CURVE_TOLERANCE.bf16);
    assert.ok(gpuRule.pass, `steps ${gpuRule.failedSteps} outside the bf16 rule (worst ${gpuRule.worst})`);
    const tight = compareLossCurves(ref, low, u / 8);
    const tightDflt = compareLossCurves(ref, dflt, u / 8);
    t.diagnostic(`worst |Δloss|/(|loss|+1): ${label} ${tight.worst.toExponential(2)} at step ${tight.worstStep + 1}, default emulate ${tightDflt.worst.toExponential(2)}; loss ${ref[0]!.toFixed(4)} → ${ref[19]!.toFixed(4)} (fp32), ${low[19]!.toFixed(4)} (${label})`);
    assert.ok(tight.pass, `worst step ${tight.worstStep + 1}: ${tight.worst} > 2^-8/8\nfp32 ${ref}\n${label} ${low}`);
    assert.ok(low.some((v, i) => v !== dflt[i]), 'the variant curve equals the default emulate curve');
    low.forEach((l, i) => i > 0 && assert.ok(l < low[i - 1]!, `loss rose at step ${i + 1}`));
    assert.ok(low[0]! - low[19]! > 1, `loss fell only ${low[0]! - low[19]!} in 20 steps`);
  });
}

// --- several variants at once (bf16Projections.test.ts) ------------------------------------------------------

/**
 * The variants switched on by `envVars` together, 'emulate': the golden batch (dropout 0.1) within the same
 * bounds of fp32 as one variant (loss ≤ u, every gradient tensor ≤ 4u, all ≥ u/4), and 20 AdamW steps within
 * the bf16 loss-curve rule and u/8 of fp32. Registered as two tests named after `label`.
 */
export function registerStackedVariantAccuracyTest(label: string, envVars: string[]): void {
  async function withAll<T>(on: boolean, fn: () => Promise<T>): Promise<T> {
    const before = envVars.map((v) => process.env[v]);
    for (const v of envVars) process.env[v] = on ? '1' : '0';
    try {
      return await fn();
    } finally {
      envVars.forEach((v, i) => (before[i] === undefined ? delete process.env[v] : (process.env[v] = before[i])));
    }
  }
  async function run<T>(bf16: Bf16Mode, on: boolean, stepsPerRun: number, dropout: number, fn: (e: TrainingEngine) => Promise<T>): Promise<T> {
    return withAll(on, async () => {
      const e = await TrainingEngine.create(engineOpts(stepsPerRun, bf16, dropout));
      try {
        return await fn(e);
      } finally {
        await e.dispose();
      }
    });
  }

  test(`golden batch, dropout 0.1: ${label} together, 'emulate', within the bf16 bounds of fp32`, async (t) => {
    const ref = await run(false, false, 1, 0.1, (e) => e.gradients([mb]));
    const all = await run('emulate', true, 1, 0.1, (e) => e.gradients([mb]));
    const s = gradStats(ref, all, true);
    t.diagnostic(`vs fp32: loss ${s.lossRel.toExponential(2)}, worst tensor ${s.worstTensor.toExponential(2)}, all ${s.total.toExponential(2)}`);
    assert.ok(s.lossRel <= u, `loss ${all.loss} vs fp32 ${ref.loss}`);
    assert.ok(s.total >= u / 4, `gradients only ${s.total} from fp32: nothing rounded`);
  });

  test(`20 AdamW steps (lr 1e-3): ${label} together, 'emulate', within the GPU check's bf16 rule and u/8 of fp32`, async (t) => {
    const curve = (bf16: Bf16Mode, on: boolean) =>
      run(bf16, on, 5, 0, async (e) => {
        const micro = [0, 1].map((b) => ({ B: 1, T: mb.T, inputIds: mb.inputIds.slice(b * mb.T, (b + 1) * mb.T), targets: mb.targets.slice(b * mb.T, (b + 1) * mb.T), weights: mb.weights.slice(b * mb.T, (b + 1) * mb.T), positions: mb.positions.slice(b * mb.T, (b + 1) * mb.T), segments: mb.segments.slice(b * mb.T, (b + 1) * mb.T) }));
        const loss: number[] = [];
        for (let s = 0; s < 20; s += 5) for (const m of await e.runSteps(Array.from({ length: 5 }, () => ({ lr: 1e-3, microBatches: micro })))) loss.push(m.loss);
        return loss;
      });
    const ref = await curve(false, false);
    const all = await curve('emulate', true);
    const rule = compareLossCurves(ref, all, LOSS_CURVE_TOLERANCE.bf16);
    const tight = compareLossCurves(ref, all, u / 8);
    t.diagnostic(`worst |Δloss|/(|loss|+1) ${tight.worst.toExponential(2)} at step ${tight.worstStep + 1}; loss ${ref[19]!.toFixed(4)} (fp32), ${all[19]!.toFixed(4)} (${label})`);
    assert.ok(rule.pass, `steps ${rule.failedSteps} outside the bf16 rule (worst ${rule.worst})`);
    assert.ok(tight.pass, `worst step ${tight.worstStep + 1}: ${tight.worst} > 2^-8/8`);
  });
}
