/**
 * Loss-curve check (issue #8): the first N optimizer steps on CUDA against the same steps on the CPU.
 * Same random GPT-2 weights (initGpt2Params seed 1), the same fixed micro-batches (4 distinct batches of
 * random tokens, cycled, so the loss visibly falls as they are memorised), dropout off, AdamW lr 3e-4,
 * weight decay 0.01, clip 1.0, K = 5 steps per run (so run boundaries, i.e. state going back to the host and
 * in again, are crossed too). The CPU fp32 run is the reference; each tested run passes when every step's
 * loss is within  tol·|loss_ref| + tol  with tol = 2e-3 for fp32 (TF32 matmuls on the GPU) and 2e-2 for bf16
 * (bf16 operands: 8 significant bits, ~0.4 % per rounding): engine/bf16Tolerance.ts compareLossCurves, the
 * rule test/engine/bf16Emulation.test.ts applies on the CPU too. Gradient norms are reported, not judged.
 * Precision bf16emu = bf16 emulated on fp32 kernels (TrainingEngine bf16 'emulate'; runs on any device).
 *
 *   npx tsx bench/cuda-vs-cpu.ts [--model gpt2|tiny] [--steps 20] [--batch 2] [--seq 64]
 *        [--test cuda:fp32,cuda:bf16] [--reference FILE] [--out DIR]
 * `--reference FILE`: take the CPU fp32 reference curve from an earlier run's cuda-vs-cpu.json (same model, batch,
 * length and steps; checked) instead of computing it (GPT-2 124M: ~20 s of CPU on a 16-core machine).
 * Exit status 0 when every tested run is within tolerance, 1 otherwise. `--test cpu:fp32,cpu:bf16emu
 * --model tiny` runs here without a GPU (the CPU against itself, and emulated bf16) to check the script;
 * `--test cuda:bf16,cpu:bf16emu` puts real and emulated bf16 side by side.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import type { Device } from '../native-runner/engine/ortSession';
import { compareLossCurves, LOSS_CURVE_TOLERANCE } from '../native-runner/engine/bf16Tolerance';
import { TrainingEngine } from '../native-runner/engine/trainingEngine';
import type { MicroBatch, StepMetrics } from '../native-runner/engine/types';
import { makeConfig } from '../native-runner/model/config';
import { initGpt2Params } from '../native-runner/model/gpt2Params';
import { Rng } from '../native-runner/util/rng';
import { sftSwitches } from './benchModel';

const { values: argv } = parseArgs({
  options: {
    model: { type: 'string', default: 'gpt2' },
    steps: { type: 'string', default: '20' },
    batch: { type: 'string', default: '2' },
    seq: { type: 'string', default: '64' },
    test: { type: 'string', default: 'cuda:fp32,cuda:bf16' },
    reference: { type: 'string' },
    out: { type: 'string' },
  },
});

const config =
  argv.model === 'tiny'
    ? makeConfig({ n_layer: 2, n_head: 2, n_embd: 64, n_positions: 128, vocab_size: 2048 })
    : makeConfig({ n_layer: 12, n_head: 12, n_embd: 768, n_positions: 1024, vocab_size: 50260 });
const STEPS = Number(argv.steps);
const B = Number(argv.batch);
const T = Number(argv.seq);
const K = 5;

function batches(): MicroBatch[] {
  const rng = new Rng(3);
  return Array.from({ length: 4 }, () => {
    const n = B * T;
    const mb: MicroBatch = { B, T, inputIds: new Int32Array(n), targets: new Int32Array(n), weights: new Float32Array(n), positions: new Int32Array(n), segments: new Int32Array(n).fill(1) };
    for (let i = 0; i < n; i++) {
      mb.inputIds[i] = rng.nextInt(config.vocab_size);
      mb.positions[i] = i % T;
    }
    for (let i = 0; i < n; i++) {
      if ((i + 1) % T !== 0) {
        mb.targets[i] = mb.inputIds[i + 1]!;
        mb.weights[i] = 1;
      }
    }
    return mb;
  });
}

async function curve(device: Device, bf16: boolean | 'emulate'): Promise<{ metrics: StepMetrics[]; seconds: number }> {
  const params = initGpt2Params(config, 1);
  const mbs = batches();
  const t0 = performance.now();
  const engine = await TrainingEngine.create({ config, params, device, stepsPerRun: K, bf16, dropout: 0, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1, seed: 0 });
  const metrics: StepMetrics[] = [];
  try {
    for (let s = 0; s < STEPS; s += K) {
      const n = Math.min(K, STEPS - s);
      metrics.push(...(await engine.runSteps(Array.from({ length: n }, (_, k) => ({ lr: 3e-4, microBatches: [mbs[(s + k) % mbs.length]!] })))));
    }
  } finally {
    await engine.dispose();
  }
  return { metrics, seconds: (performance.now() - t0) / 1000 };
}

/** The reference curve of an earlier run's cuda-vs-cpu.json, refused unless it was made with the same settings. */
function readReference(file: string): { metrics: StepMetrics[]; seconds: number } {
  const j = JSON.parse(fs.readFileSync(file, 'utf8')) as { model?: string; B?: number; T?: number; steps?: number; reference?: StepMetrics[] };
  const want = { model: argv.model, B, T, steps: STEPS };
  for (const [k, v] of Object.entries(want)) {
    if (j[k as keyof typeof want] !== v) throw new Error(`${file}: ${k} is ${JSON.stringify(j[k as keyof typeof want])}, this run's is ${JSON.stringify(v)}`);
  }
  if (!Array.isArray(j.reference) || j.reference.length !== STEPS || !j.reference.every((m) => Number.isFinite(m.loss))) {
    throw new Error(`${file}: "reference" is not a list of ${STEPS} steps with a finite loss`);
  }
  return { metrics: j.reference, seconds: 0 };
}

async function main(): Promise<void> {
  const tests = argv.test.split(',').map((t) => {
    const [dev, prec] = t.split(':');
    if ((dev !== 'cpu' && dev !== 'cuda') || (prec !== 'fp32' && prec !== 'bf16' && prec !== 'bf16emu')) throw new Error(`--test entries are device:precision (cpu|cuda : fp32|bf16|bf16emu), got ${t}`);
    return { name: t, device: dev as Device, prec: prec as 'fp32' | 'bf16' | 'bf16emu' };
  });
  console.log(`model ${argv.model} (${config.n_layer} layers, ${config.n_embd} wide, vocab ${config.vocab_size}), B${B} T${T}, ${STEPS} steps, K ${K}`);
  const ref = argv.reference ? readReference(argv.reference) : await curve('cpu', false);
  console.log(argv.reference ? `reference cpu:fp32 read from ${argv.reference}` : `reference cpu:fp32 ${ref.seconds.toFixed(1)} s`);
  const result: Record<string, unknown> = { command: `tsx bench/cuda-vs-cpu.ts ${process.argv.slice(2).join(' ')}`.trim(), model: argv.model, B, T, steps: STEPS, reference: ref.metrics, runs: {} };
  if (argv.reference) result.reference_from = argv.reference;
  // Every SFT_* switch set for this run (model variants change the tested graphs, not the reference).
  result.env = sftSwitches();
  const write = () => {
    if (!argv.out) return;
    fs.mkdirSync(argv.out, { recursive: true });
    fs.writeFileSync(path.join(argv.out, 'cuda-vs-cpu.json'), `${JSON.stringify(result, null, 1)}\n`);
  };
  write(); // the reference alone survives a time limit that cuts the tested runs
  let allOk = true;
  const rows: string[][] = ref.metrics.map((m, i) => [String(i + 1), m.loss.toFixed(5), m.gradNorm.toFixed(4)]);
  const header = ['step', 'cpu loss', 'cpu |g|'];
  for (const t of tests) {
    let r: { metrics: StepMetrics[]; seconds: number };
    try {
      r = await curve(t.device, t.prec === 'bf16emu' ? 'emulate' : t.prec === 'bf16');
    } catch (e) {
      allOk = false;
      (result.runs as Record<string, unknown>)[t.name] = { error: (e as Error).message.split('\n')[0] };
      console.log(`${t.name}: failed — ${(e as Error).message.split('\n')[0]}`);
      continue;
    }
    const tol = LOSS_CURVE_TOLERANCE[t.prec === 'fp32' ? 'fp32' : 'bf16'];
    const { pass: ok, worst } = compareLossCurves(
      ref.metrics.map((m) => m.loss),
      r.metrics.map((m) => m.loss),
      tol,
    );
    r.metrics.forEach((m, i) => rows[i]!.push(m.loss.toFixed(5), m.gradNorm.toFixed(4)));
    header.push(`${t.name} loss`, `${t.name} |g|`);
    allOk &&= ok;
    (result.runs as Record<string, unknown>)[t.name] = { seconds: Math.round(r.seconds * 10) / 10, tolerance: tol, worst_relative_diff: worst, pass: ok, metrics: r.metrics };
    write();
    console.log(`${t.name}: ${r.seconds.toFixed(1)} s, worst |Δloss|/(|loss|+1) ${worst.toExponential(2)} (tolerance ${tol}) → ${ok ? 'PASS' : 'FAIL'}`);
  }
  console.log(header.map((h) => h.padStart(16)).join(''));
  for (const row of rows) console.log(row.map((c) => c.padStart(16)).join(''));
  const first = ref.metrics[0]!.loss;
  const last = ref.metrics[ref.metrics.length - 1]!.loss;
  result.reference_loss_drop = first - last;
  result.pass = allOk;
  write();
  console.log(`RESULT ${JSON.stringify({ pass: allOk, runs: Object.fromEntries(Object.entries(result.runs as Record<string, { pass?: boolean; worst_relative_diff?: number; error?: string }>).map(([k, v]) => [k, v.error ?? { pass: v.pass, worst: v.worst_relative_diff }])) })}`);
  process.exit(allOk ? 0 : 1);
}

main().catch((e) => {
  console.error(`error: ${(e as Error).message}`);
  process.exit(1);
});
