/**
 * Training throughput of the engine (engine/trainingEngine.ts): trained tokens/s and peak RSS.
 *   npx tsx bench/train-throughput.ts [--model tiny|gpt2] [--batch 2] [--seq 128] [--k 4] [--accum 1]
 *        [--runs 3] [--device cpu|cuda] [--bf16] [--threads N]
 * gpt2 = GPT-2 124M (12 layers, 768 wide, vocab 50257, 1024 positions) with random weights (initGpt2Params);
 * tiny = samples/tiny-gpt2-chat. Every token is trained (weights 1). The first run (session creation and
 * warm-up) is reported separately; tokens/s is over the remaining runs. Prints one line per run and a
 * JSON summary last.
 */
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { makeConfig } from '../native-runner/model/config';
import { initGpt2Params } from '../native-runner/model/gpt2Params';
import { readConfig } from '../native-runner/model/config';
import { readSafetensors } from '../native-runner/model/safetensors';
import { TrainingEngine } from '../native-runner/engine/trainingEngine';
import type { StepInput } from '../native-runner/engine/types';
import type { GPT2Config, ParamSet } from '../native-runner/model/types';
import { Rng } from '../native-runner/util/rng';
import { randomBatch } from './benchModel';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'tiny' },
    batch: { type: 'string', default: '2' },
    seq: { type: 'string', default: '128' },
    k: { type: 'string', default: '4' },
    accum: { type: 'string', default: '1' },
    runs: { type: 'string', default: '3' },
    device: { type: 'string', default: 'cpu' },
    bf16: { type: 'boolean', default: false },
    threads: { type: 'string', default: '0' },
  },
});

async function main() {
  const B = Number(values.batch);
  const T = Number(values.seq);
  const K = Number(values.k);
  const A = Number(values.accum);
  const runs = Number(values.runs);
  const device = values.device === 'cuda' ? 'cuda' : 'cpu';
  let config: GPT2Config;
  let params: ParamSet;
  if (values.model === 'gpt2') {
    config = makeConfig({ n_layer: 12, n_head: 12, n_embd: 768, n_positions: 1024, vocab_size: 50257, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 });
    params = initGpt2Params(config, 1);
  } else {
    const dir = path.resolve(__dirname, '../samples/tiny-gpt2-chat');
    config = readConfig(dir);
    params = readSafetensors(path.join(dir, 'model.safetensors'));
  }
  const rng = new Rng(7);
  const steps: StepInput[] = Array.from({ length: K }, () => ({ lr: 1e-4, microBatches: Array.from({ length: A }, () => randomBatch(rng, B, T, config.vocab_size)) }));
  const tokensPerRun = K * A * B * T;
  let peakRss = process.memoryUsage().rss;
  const timer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 20);
  const t0 = performance.now();
  const engine = await TrainingEngine.create({ config, params, device, stepsPerRun: K, bf16: values.bf16, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1, dropout: 0, threads: Number(values.threads) });
  const times: number[] = [];
  const cpu: number[] = []; // process CPU seconds (all ORT threads), robust to other load on the machine
  for (let r = 0; r < runs; r++) {
    const s = performance.now();
    const c0 = process.cpuUsage();
    const m = await engine.runSteps(steps);
    const dt = (performance.now() - s) / 1000;
    const cu = process.cpuUsage(c0);
    times.push(dt);
    cpu.push((cu.user + cu.system) / 1e6);
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
    console.log(`run ${r}: ${dt.toFixed(3)} s wall, ${cpu[r]!.toFixed(2)} s CPU, ${(tokensPerRun / dt).toFixed(0)} tokens/s, loss ${m.map((x) => x.loss.toFixed(4)).join(' ')}${r === 0 ? ' (includes graph build + session creation)' : ''}`);
  }
  clearInterval(timer);
  const steady = times.length > 1 ? times.slice(1) : times;
  const mean = steady.reduce((a, b) => a + b, 0) / steady.length;
  const summary = {
    model: values.model,
    device,
    bf16: values.bf16,
    batch: B,
    seq: T,
    k: K,
    accum: A,
    tokensPerRun,
    firstRunS: +times[0]!.toFixed(3),
    steadyRunS: +mean.toFixed(3),
    tokensPerS: Math.round(tokensPerRun / mean),
    cpuSecondsPerRun: +((cpu.length > 1 ? cpu.slice(1) : cpu).reduce((a, b) => a + b, 0) / Math.max(1, cpu.length - 1)).toFixed(2),
    peakRssMiB: Math.round(peakRss / 2 ** 20),
    totalS: +((performance.now() - t0) / 1000).toFixed(1),
  };
  console.log(JSON.stringify(summary));
  await engine.dispose();
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
