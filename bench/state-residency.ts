/**
 * Device check for engine/deviceState.ts (a script to run on the GPU machine, not a test): does
 * onnxruntime-node keep the training state on the GPU between runs here, and what does it save?
 *   npx tsx bench/state-residency.ts [--model gpt2|tiny] [--batch 4] [--seq 256] [--k 4] [--runs 3] [--eval 16] [--device cuda|cpu]
 * Prints the start-up probe's verdict; then the same runs with the state on the host (stateResidency 'host')
 * and with 'auto' (on the GPU when the probe passed): seconds per run, syncToHost seconds, the largest
 * difference between the two engines' parameters and moments after the runs; then `--eval` eval
 * micro-batches scored one per run (evalBatch) and in one eval Loop (evalBatches), with their seconds and
 * the largest loss difference. Last line: RESULT {json}. On a machine without CUDA it stops after the probe.
 */
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { makeConfig, readConfig } from '../native-runner/model/config';
import { initGpt2Params } from '../native-runner/model/gpt2Params';
import { readSafetensors } from '../native-runner/model/safetensors';
import { TrainingEngine } from '../native-runner/engine/trainingEngine';
import { probeCudaDeviceState } from '../native-runner/engine/deviceState';
import type { StepInput } from '../native-runner/engine/types';
import type { GPT2Config, ParamSet } from '../native-runner/model/types';
import { Rng } from '../native-runner/util/rng';
import { randomBatch } from './benchModel';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'gpt2' },
    batch: { type: 'string', default: '4' },
    seq: { type: 'string', default: '256' },
    k: { type: 'string', default: '4' },
    runs: { type: 'string', default: '3' },
    eval: { type: 'string', default: '16' },
    device: { type: 'string', default: 'cuda' },
  },
});

function maxDiff(a: ParamSet, b: ParamSet): number {
  let worst = 0;
  for (const [k, t] of a) {
    const u = b.get(k)!.data;
    for (let i = 0; i < t.data.length; i++) worst = Math.max(worst, Math.abs(t.data[i]! - u[i]!));
  }
  return worst;
}

async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await f();
  return [r, (performance.now() - t0) / 1000];
}

async function main() {
  const result: Record<string, unknown> = {};
  const [probe, probeS] = await timed(() => probeCudaDeviceState());
  console.log(`probe (${probeS.toFixed(1)} s): ${probe.ok ? 'OK' : 'FAILED'} — ${probe.detail}`);
  Object.assign(result, { probeOk: probe.ok, probeDetail: probe.detail, probeS: +probeS.toFixed(2) });
  const device = values.device === 'cpu' ? 'cpu' : 'cuda'; // cpu: checks this script (both engines on the host)
  if (device === 'cuda' && /Failed to load shared library|cannot locate/.test(probe.detail)) {
    console.log(`RESULT ${JSON.stringify(result)}`);
    return;
  }
  const [B, T, K, R, NE] = [values.batch, values.seq, values.k, values.runs, values.eval].map(Number) as [number, number, number, number, number];
  let config: GPT2Config;
  let params: () => ParamSet;
  if (values.model === 'tiny') {
    const dir = path.resolve(__dirname, '../samples/tiny-gpt2-chat');
    config = readConfig(dir);
    params = () => readSafetensors(path.join(dir, 'model.safetensors'));
  } else {
    config = makeConfig({ n_layer: 12, n_head: 12, n_embd: 768, n_positions: 1024, vocab_size: 50257, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 });
    const p = initGpt2Params(config, 1);
    params = () => p;
  }
  const rng = new Rng(11);
  const runs: StepInput[][] = Array.from({ length: R }, () => Array.from({ length: K }, () => ({ lr: 1e-4, microBatches: [randomBatch(rng, B, T, config.vocab_size)] })));
  const evalMbs = Array.from({ length: NE }, () => randomBatch(rng, B, T, config.vocab_size));
  const engines: Record<string, TrainingEngine> = {};
  for (const residency of ['host', 'auto'] as const) {
    const e = await TrainingEngine.create({ config, params: params(), device, stepsPerRun: K, dropout: 0, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1, seed: 0, stateResidency: residency });
    engines[residency] = e;
    const times: number[] = [];
    for (const steps of runs) times.push((await timed(() => e.runSteps(steps)))[1]);
    const [, syncS] = await timed(() => e.syncToHost());
    console.log(`${residency}: state ${e.stateResidency}; run seconds ${times.map((t) => t.toFixed(3)).join(' ')}; syncToHost ${syncS.toFixed(3)} s; notes: ${e.notes.join(' | ') || '-'}`);
    result[residency] = { residency: e.stateResidency, runS: times.map((t) => +t.toFixed(3)), syncS: +syncS.toFixed(3), notes: e.notes };
    const [one, oneS] = await timed(async () => {
      const r = [];
      for (const mb of evalMbs) r.push(await e.evalBatch(mb));
      return r;
    });
    const [many, manyS] = await timed(() => e.evalBatches(evalMbs));
    const evalDiff = Math.max(...one.map((r, i) => Math.abs(r.nllSum - many[i]!.nllSum) / Math.max(1, Math.abs(r.nllSum))));
    console.log(`${residency}: ${NE} eval micro-batches: evalBatch ${oneS.toFixed(3)} s, evalBatches ${manyS.toFixed(3)} s, max rel diff ${evalDiff.toExponential(2)}`);
    Object.assign(result[residency] as object, { evalOneByOneS: +oneS.toFixed(3), evalLoopS: +manyS.toFixed(3), evalMaxRelDiff: evalDiff });
  }
  const h = engines.host!;
  const a = engines.auto!;
  result.maxParamDiff = maxDiff(h.getParams(), a.getParams());
  result.maxMDiff = maxDiff(h.getOptimizerState().m, a.getOptimizerState().m);
  result.maxVDiff = maxDiff(h.getOptimizerState().v, a.getOptimizerState().v);
  console.log(`host vs auto after ${R} runs: max |Δp| ${result.maxParamDiff}, |Δm| ${result.maxMDiff}, |Δv| ${result.maxVDiff}`);
  await h.dispose();
  await a.dispose();
  console.log(`RESULT ${JSON.stringify(result)}`);
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
