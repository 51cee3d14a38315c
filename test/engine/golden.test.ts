// The engine against transformers (test/fixtures/golden, made by GPT2LMHeadModel + torch.optim.AdamW):
// forward loss, per-position logsumexp (padding positions included), first-64 logits and argmax, every
// parameter's step-1 gradient, and three AdamW steps (losses, pre-clip norms, parameters after step 3).
// Also: K=4 in one run equals four runs of K=1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readSafetensors } from '../../native-runner/model/safetensors';
import { readConfig } from '../../native-runner/model/config';
import type { ParamSet } from '../../native-runner/model/types';
import { createForward, TrainingEngine } from '../../native-runner/engine/trainingEngine';
import { paramSpecs, usesWeightDecay } from '../../native-runner/engine/gpt2Graph';
import { goldenMicroBatch } from './helpers';

const root = path.resolve(__dirname, '../..');
const modelDir = path.join(root, 'samples/tiny-gpt2-chat');
const goldenDir = path.join(root, 'test/fixtures/golden');
const golden = JSON.parse(fs.readFileSync(path.join(goldenDir, 'tiny-golden.json'), 'utf8'));
const config = readConfig(modelDir);
const params0 = (): ParamSet => readSafetensors(path.join(modelDir, 'model.safetensors'));
const mb = goldenMicroBatch(golden.forward.input_ids, golden.forward.attention_mask, golden.forward.labels);

const relErr = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

function engineOpts(stepsPerRun: number) {
  return { config, params: params0(), device: 'cpu' as const, stepsPerRun, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1.0, dropout: 0 };
}

test('forward: loss within 1e-5 relative, logsumexp at every position within 1e-4', async () => {
  const e = await TrainingEngine.create(engineOpts(1));
  const r = await e.evalTokens(mb);
  const loss = r.nllSum / r.tokens;
  assert.ok(relErr(loss, golden.forward.loss) < 1e-5, `loss ${loss} vs ${golden.forward.loss}`);
  const lse: number[][] = golden.forward.lse;
  let worst = 0;
  lse.forEach((row, b) => row.forEach((v, t) => (worst = Math.max(worst, Math.abs(r.lse[b * mb.T + t]! - v)))));
  assert.ok(worst < 1e-4, `max |lse - golden| = ${worst}`);
  await e.dispose();
});

test('forward: first 64 logits within 1e-4 and argmax equal at every position', async () => {
  const f = await createForward(config, params0(), 'cpu', { output: 'logits' });
  const { B, T } = mb;
  const V = config.vocab_size;
  const logits = await f.run({ B, T, inputIds: mb.inputIds, positions: mb.positions, segments: mb.segments });
  let worst = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const row = logits.subarray((b * T + t) * V, (b * T + t + 1) * V);
      const g64: number[] = golden.forward.logits_first64[b][t];
      g64.forEach((v, i) => (worst = Math.max(worst, Math.abs(row[i]! - v))));
      let am = 0;
      for (let i = 1; i < V; i++) if (row[i]! > row[am]!) am = i;
      assert.equal(am, golden.forward.argmax[b][t], `argmax at [${b},${t}]`);
    }
  }
  assert.ok(worst < 1e-4, `max |logit - golden| = ${worst}`);
  await f.dispose();
});

test('forward log-probabilities = logits − logsumexp (golden lse) at every position', async () => {
  const f = await createForward(config, params0(), 'cpu', { output: 'logprobs' });
  const { B, T } = mb;
  const V = config.vocab_size;
  const lp = await f.run({ B, T, inputIds: mb.inputIds, positions: mb.positions, segments: mb.segments });
  assert.equal(lp.length, B * T * V);
  let worst = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const g64: number[] = golden.forward.logits_first64[b][t];
      const lse: number = golden.forward.lse[b][t];
      g64.forEach((v, i) => (worst = Math.max(worst, Math.abs(lp[(b * T + t) * V + i]! - (v - lse)))));
    }
  }
  assert.ok(worst < 1e-4, `max |logprob - golden| = ${worst}`);
  await f.dispose();
});

test('gradients: every parameter within 1e-4 relative L2 of transformers, norm within 1e-5', async () => {
  const e = await TrainingEngine.create(engineOpts(1));
  const { loss, grads, gradNorm } = await e.gradients([mb]);
  assert.ok(relErr(loss, golden.forward.loss) < 1e-5);
  assert.ok(relErr(gradNorm, golden.train.steps[0].grad_norm_before_clip) < 1e-5, `norm ${gradNorm}`);
  const ref = readSafetensors(path.join(goldenDir, 'tiny-grads-step0.safetensors'));
  assert.equal(grads.size, ref.size);
  for (const [name, r] of ref) {
    const gt = grads.get(name);
    assert.ok(gt, `missing gradient ${name}`);
    let num = 0;
    let den = 0;
    for (let i = 0; i < r.data.length; i++) {
      num += (gt.data[i]! - r.data[i]!) ** 2;
      den += r.data[i]! ** 2;
    }
    const rel = Math.sqrt(num / den);
    assert.ok(rel < 1e-4, `${name}: relative L2 error ${rel}`);
  }
  await e.dispose();
});

test('three AdamW steps: losses and pre-clip norms within 1e-5 relative, params after step 3 within 1e-5', async () => {
  const e = await TrainingEngine.create(engineOpts(3));
  const metrics = await e.runSteps([0, 1, 2].map(() => ({ microBatches: [mb], lr: 1e-3 })));
  metrics.forEach((m, k) => {
    const ref = golden.train.steps[k];
    assert.ok(relErr(m.loss, ref.loss) < 1e-5, `step ${k + 1} loss ${m.loss} vs ${ref.loss}`);
    assert.ok(relErr(m.gradNorm, ref.grad_norm_before_clip) < 1e-5, `step ${k + 1} norm ${m.gradNorm} vs ${ref.grad_norm_before_clip}`);
    assert.equal(m.tokens, golden.forward.labels.flat().filter((l: number) => l !== -100).length);
  });
  const ref = readSafetensors(path.join(goldenDir, 'tiny-params-after3.safetensors'));
  const params = e.getParams();
  let worst = 0;
  let worstName = '';
  for (const [name, r] of ref) {
    const p = params.get(name)!;
    for (let i = 0; i < r.data.length; i++) {
      const d = Math.abs(p.data[i]! - r.data[i]!);
      if (d > worst) {
        worst = d;
        worstName = name;
      }
    }
  }
  assert.ok(worst < 1e-5, `max |param - golden| = ${worst} (${worstName})`);
  assert.equal(e.getOptimizerState().step, 3);
  await e.dispose();
});

test("weight decay grouping equals HF Trainer's no_decay list (biases and LayerNorm weights)", () => {
  const noDecay = paramSpecs(config).map((s) => s.name).filter((n) => !usesWeightDecay(n));
  assert.deepEqual(noDecay.slice().sort(), (golden.train.no_decay as string[]).slice().sort());
});

test('K=4 steps in one run equal four runs of K=1 (1e-6)', async () => {
  const lrs = [1e-3, 5e-4, 2e-3, 1e-4];
  const a = await TrainingEngine.create(engineOpts(4));
  const ma = await a.runSteps(lrs.map((lr) => ({ microBatches: [mb], lr })));
  const b = await TrainingEngine.create(engineOpts(1));
  const mbs: { loss: number; gradNorm: number }[] = [];
  for (const lr of lrs) mbs.push(...(await b.runSteps([{ microBatches: [mb], lr }])));
  ma.forEach((m, k) => {
    assert.ok(Math.abs(m.loss - mbs[k]!.loss) < 1e-6);
    assert.ok(Math.abs(m.gradNorm - mbs[k]!.gradNorm) < 1e-6);
  });
  for (const [name, p] of a.getParams()) {
    const q = b.getParams().get(name)!;
    for (let i = 0; i < p.data.length; i++) assert.ok(Math.abs(p.data[i]! - q.data[i]!) <= 1e-6, `${name}[${i}]`);
  }
  for (const key of ['m', 'v'] as const) {
    for (const [name, p] of a.getOptimizerState()[key]) {
      const q = b.getOptimizerState()[key].get(name)!;
      for (let i = 0; i < p.data.length; i++) assert.ok(Math.abs(p.data[i]! - q.data[i]!) <= 1e-6, `${key} ${name}[${i}]`);
    }
  }
  await a.dispose();
  await b.dispose();
});

test('flat optimizer state (one vector per decay group) equals per-tensor AdamW, with and without accumulation, A varying per step (1e-6)', async () => {
  const lrs = [1e-3, 5e-4, 2e-3];
  // micro-batches per step: none accumulated, 2 each, and 1/3/2 in one run (n_micro differs per step)
  for (const counts of [[1, 1, 1], [2, 2, 2], [1, 3, 2]]) {
    const micro = counts.join('/');
    const steps = lrs.map((lr, k) => ({ microBatches: Array.from({ length: counts[k]! }, () => mb), lr }));
    const flat = await TrainingEngine.create({ ...engineOpts(3), flatState: true, maxGradNorm: 0.5 });
    const perTensor = await TrainingEngine.create({ ...engineOpts(3), flatState: false, maxGradNorm: 0.5 });
    const a = await flat.runSteps(steps);
    const b = await perTensor.runSteps(steps);
    a.forEach((m, k) => {
      assert.ok(Math.abs(m.loss - b[k]!.loss) <= 1e-6 * Math.abs(b[k]!.loss), `micro ${micro} step ${k} loss ${m.loss} vs ${b[k]!.loss}`);
      assert.ok(Math.abs(m.gradNorm - b[k]!.gradNorm) <= 1e-6 * b[k]!.gradNorm, `micro ${micro} step ${k} norm ${m.gradNorm} vs ${b[k]!.gradNorm}`);
    });
    assert.ok(a[0]!.gradNorm > 0.5, 'clipping is active in this check');
    assert.deepEqual(a.map((m) => m.tokens), counts.map((n) => n * b[0]!.tokens / counts[0]!), 'each step saw its own number of micro-batches');
    const sets = [[flat.getParams(), perTensor.getParams()], [flat.getOptimizerState().m, perTensor.getOptimizerState().m], [flat.getOptimizerState().v, perTensor.getOptimizerState().v]] as const;
    for (const [x, y] of sets) {
      assert.equal(x.size, y.size);
      for (const [name, p] of x) {
        const q = y.get(name)!;
        assert.deepEqual(p.shape, q.shape, name);
        for (let i = 0; i < p.data.length; i++) assert.ok(Math.abs(p.data[i]! - q.data[i]!) <= 1e-6, `micro ${micro} ${name}[${i}]: ${p.data[i]} vs ${q.data[i]}`);
      }
    }
    // The moments moved (a run that returned its inputs would pass the comparisons above).
    assert.ok(flat.getOptimizerState().v.get('transformer.wte.weight')!.data.some((x) => x > 0));
    await flat.dispose();
    await perTensor.dispose();
  }
});
