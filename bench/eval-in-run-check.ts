/**
 * Checks on the device that evaluation inside a training run (TrainingEngine evalInRun, the CUDA default: an If
 * around the eval Loop inside the step Loop) gives what evaluating between runs gives. The CPU tests prove it bit
 * for bit (test/engine/evalInRun.test.ts); this runs the same comparison on the device, where only the tiny model
 * and a few steps are needed (~10 s with session creation):
 *
 *   npx tsx bench/eval-in-run-check.ts [--device cuda|cpu] [--bf16]
 *
 * Two engines from the same weights (samples/tiny-gpt2-chat, dropout 0): one runs 4 steps with evaluations after
 * steps 2 and 4 inside the run; the other runs 2 steps, evalBatches, 2 steps, evalBatches. Prints both eval losses
 * and the training losses, and "eval-in-run: PASS" when every pair agrees within 1e-5 relative (fp32; 1e-3 with
 * --bf16: the two sessions may pick different kernels), else FAIL (exit status 1).
 */
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { TrainingEngine, type TrainingEngineOptions } from '../native-runner/engine/trainingEngine';
import type { MicroBatch, StepInput } from '../native-runner/engine/types';
import { readConfig } from '../native-runner/model/config';
import { initGpt2Params } from '../native-runner/model/gpt2Params';
import { Rng } from '../native-runner/util/rng';
import { randomBatch } from './benchModel';

const { values: argv } = parseArgs({ options: { device: { type: 'string', default: 'cuda' }, bf16: { type: 'boolean', default: false } } });
const device = argv.device === 'cpu' ? 'cpu' : 'cuda';
const config = readConfig(path.join(__dirname, '..', 'samples', 'tiny-gpt2-chat'));
const tol = argv.bf16 ? 1e-3 : 1e-5;

const batch = (rng: Rng, B: number, T: number): MicroBatch => randomBatch(rng, B, T, config.vocab_size);

async function main(): Promise<void> {
  const rng = new Rng(11);
  const train = [batch(rng, 4, 64), batch(rng, 4, 48)];
  const evalSet = [batch(rng, 4, 64), batch(rng, 3, 40), batch(rng, 2, 64)];
  const params = initGpt2Params(config, 5);
  const opts = (evalInRun: boolean): TrainingEngineOptions => ({
    config, params, device, stepsPerRun: 4, bf16: argv.bf16 && device === 'cuda', weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1, dropout: 0, seed: 1, evalInRun, evalBatchesPerRun: 8,
  });
  const steps: StepInput[] = [0, 1, 2, 3].map((k) => ({ lr: 1e-3, microBatches: train, eval: k === 1 || k === 3 }));
  const t0 = performance.now();
  const a = await TrainingEngine.create(opts(true));
  const inRun = await a.runSteps(steps, { evalBatches: evalSet });
  await a.dispose();
  const b = await TrainingEngine.create(opts(false));
  const between: { loss: number; eval: number }[] = [];
  for (const half of [steps.slice(0, 2), steps.slice(2)]) {
    const r = await b.runSteps(half.map((s) => ({ ...s, eval: false })));
    let nll = 0;
    let tok = 0;
    for (const e of await b.evalBatches(evalSet)) {
      nll += e.nllSum;
      tok += e.tokens;
    }
    for (const m of r) between.push({ loss: m.loss, eval: NaN });
    between[between.length - 1]!.eval = nll / tok;
  }
  await b.dispose();
  let ok = true;
  const rel = (x: number, y: number) => Math.abs(x - y) / Math.max(Math.abs(y), 1e-12);
  inRun.forEach((m, k) => {
    const ev = m.eval ? m.eval.nllSum / m.eval.tokens : NaN;
    const lossOk = rel(m.loss, between[k]!.loss) <= tol;
    const evalOk = steps[k]!.eval ? rel(ev, between[k]!.eval) <= tol : m.eval === undefined;
    ok &&= lossOk && evalOk;
    console.log(`step ${k + 1}: loss ${m.loss.toFixed(6)} vs ${between[k]!.loss.toFixed(6)}${steps[k]!.eval ? `, eval ${ev.toFixed(6)} vs ${between[k]!.eval.toFixed(6)}` : ''}${lossOk && evalOk ? '' : '  ← differs'}`);
  });
  console.log(`eval-in-run (${device}${argv.bf16 ? ', bf16' : ''}, ${((performance.now() - t0) / 1000).toFixed(1)} s): ${ok ? 'PASS' : 'FAIL'}`);
  process.exitCode = ok ? 0 : 1;
}

main().catch((e) => {
  console.error(`eval-in-run: FAIL — ${(e as Error).message}`);
  process.exitCode = 1;
});
