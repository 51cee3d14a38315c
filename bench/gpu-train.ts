/**
 * GPU training benchmark (issue #8): GPT-2 124M with random weights (initGpt2Params; vocab 50260 = GPT-2 +
 * the recipe's three chat tokens, dropout 0.1) trained through the engine's TrainingEngine, then the same
 * measurements in PyTorch (bench/pytorch_baseline.py) on the same machine, and the ratios.
 *
 *   npx tsx bench/gpu-train.ts [--device cuda|cpu] [--smoke] [--shapes 8x512,32x512] [--precisions fp32,bf16]
 *        [--k N] [--dolly-k 256] [--logging-steps 0 (cuda) | 10 (cpu)] [--records 15000] [--epochs 3] [--dolly-max-s 60 | --dolly-full] [--dolly-modes padded,packed]
 *        [--dolly-precision bf16] [--no-throughput] [--no-roundtrip] [--no-dolly] [--no-pytorch] [--python python3]
 *        [--pytorch-args "--tf32"] [--pytorch-from FILE] [--out DIR]
 * `--pytorch-from FILE`: no PyTorch run; the ratios use an earlier pytorch.json (from a run on the same card, with
 * the same shapes: say so when quoting them). The JSON records the file in `pytorch_from`.
 * `--no-roundtrip` skips measurement 2b; `--extra-k 64[,…]` adds, per configuration, K-step runs of those K on the
 * same engine after the main one (tok_s_by_K); both for bench/device-check.sh's ablate and profile phases.
 * `--device cpu --smoke` runs everything with a 2-layer 64-wide model and tiny shapes (< 2 min on 2 cores):
 * it checks the script, its numbers mean nothing.
 *
 * What is measured (all wall-clock, performance.now, after `await` of each session.run):
 *  1. throughput: for each B×T and precision, optimizer steps of A = 4 micro-batches of B×T random tokens
 *     (every position trained; tokens/s counts every position, as the PyTorch reference does), K steps per
 *     session.run (default: ~768k tokens per run). One warm-up run (graph build, session creation, first
 *     allocation; 1 step) is reported separately; then a run of 1 step and a run of K steps (tok/s = K-step run).
 *  2. host↔device share of a K-step run, two ways:
 *       a. intercept: t(k) = fixed + k·step from the 1-step and K-step runs; fixed = what a run costs
 *          besides its steps (feeding parameters and AdamW moments in and taking them out, ≈ 3 × 4 bytes ×
 *          124M each way, plus session.run overhead); share = fixed / t(K).
 *       b. roundtrip: the same tensors (parameters, m, v) through a graph that only negates them on the same
 *          device (Neg per tensor: one host→device and one device→host copy of each, negligible compute);
 *          share = roundtrip / t(K).
 *  3. peak GPU memory: `nvidia-smi --query-gpu=memory.used -lms 100` polled while each configuration runs,
 *     minus the memory used before it started (all processes on the card; run nothing else). On the CPU:
 *     the process's peak RSS instead.
 *  4. Dolly-shaped epochs: --records lengths from bench/dolly-lengths.ts (seed 0), 5 % held out for
 *     evaluation, the recipe's 3 epochs of batches of 8 with 4-step accumulation, evaluation over the held-out
 *     set every 200 steps, a checkpoint (model.safetensors + optimizer.safetensors, fsynced; last 3 kept)
 *     every 500 steps and at the end; `padded` = one example per row padded to the longest, `packed` =
 *     best-fit-decreasing bins of 512 (data/batching); the eval set batched the same way (the trainer's
 *     eval_packing default). The first run is one step (it also creates the session: a one-off); later runs
 *     hold up to --dolly-k steps (the trainer's CUDA default) and end at save steps, at evaluation steps unless
 *     the engine evaluates inside runs (its CUDA default, TrainingEngine.evalInRun) — and, on the CPU, at
 *     logging steps — as the trainer's runs do. The clock starts at reading the (random) weights from
 *     model.safetensors and stops after the last save; when it would exceed --dolly-max-s the loop stops there
 *     (after at least one run past the first) and the total is extrapolated (creation + first run + remaining
 *     steps × measured seconds per step of the later runs + evals × measured eval + saves × measured save),
 *     marked "extrapolated". --dolly-full: no extrapolation, and the first run as long as the trainer's.
 *  5. PyTorch: `python3 bench/pytorch_baseline.py` with the same shapes, accumulation, lengths file and
 *     schedule — run first, before any session of ours exists — and the ratios ours / PyTorch.
 * Output: a table, then one line `RESULT {json}`; with --out DIR also DIR/gpu-train.json (rewritten after each
 * phase, so an interrupted run keeps what it measured) and DIR/pytorch.json.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import type * as ort from 'onnxruntime-node';
import { Tensor as OrtTensor } from 'onnxruntime-node';
import { epochMicroBatches, groupIntoSteps } from '../native-runner/data/batching';
import { paramSpecs } from '../native-runner/engine/gpt2Graph';
import { Graph } from '../native-runner/engine/graph/graph';
import { createSession, type Device } from '../native-runner/engine/ortSession';
import { mergeFactorOf, TrainingEngine } from '../native-runner/engine/trainingEngine';
import type { MicroBatch, StepInput } from '../native-runner/engine/types';
import { countParameters, initGpt2Params } from '../native-runner/model/gpt2Params';
import { readSafetensors, writeSafetensorsSynced } from '../native-runner/model/safetensors';
import { CUDA_STEPS_PER_RUN } from '../native-runner/train/config';
import type { GPT2Config, ParamSet } from '../native-runner/model/types';
import { Rng } from '../native-runner/util/rng';
import { gpuTrainConfig, sftSwitches } from './benchModel';
import { dollyExamples, dollyLengths, lengthStats } from './dolly-lengths';

const { values: argv } = parseArgs({
  options: {
    device: { type: 'string', default: 'cuda' },
    smoke: { type: 'boolean', default: false },
    shapes: { type: 'string' },
    precisions: { type: 'string' },
    k: { type: 'string' },
    'extra-k': { type: 'string', default: '' },
    'dolly-k': { type: 'string' },
    'logging-steps': { type: 'string' },
    records: { type: 'string' },
    epochs: { type: 'string', default: '3' },
    'dolly-max-s': { type: 'string' },
    'dolly-full': { type: 'boolean', default: false },
    'dolly-modes': { type: 'string', default: 'padded,packed' },
    'dolly-precision': { type: 'string' },
    'no-throughput': { type: 'boolean', default: false },
    'no-roundtrip': { type: 'boolean', default: false },
    'no-dolly': { type: 'boolean', default: false },
    'no-pytorch': { type: 'boolean', default: false },
    python: { type: 'string', default: 'python3' },
    'pytorch-args': { type: 'string', default: '' },
    'pytorch-from': { type: 'string' },
    out: { type: 'string' },
    threads: { type: 'string', default: '0' },
  },
});

const device: Device = argv.device === 'cpu' ? 'cpu' : 'cuda';
const smoke = argv.smoke;
const ACCUM = 4;
const BATCH = 8;
const SEED = 0;
const config: GPT2Config = gpuTrainConfig(smoke);
const shapes = (argv.shapes ?? (smoke ? '2x64,4x64' : '8x512,32x512')).split(',').map((s) => s.split('x').map(Number) as [number, number]);
// bf16 MatMul/Gemm kernels exist on CUDA; the CPU EP has none, so the CPU defaults to fp32.
const precisions = (argv.precisions ?? (device === 'cuda' ? 'fp32,bf16' : 'fp32')).split(',') as ('fp32' | 'bf16')[];
const dollyPrecision = argv['dolly-precision'] ?? (device === 'cuda' ? 'bf16' : 'fp32');
const maxLength = smoke ? 128 : 512;
const records = Number(argv.records ?? (smoke ? 400 : 15000));
const epochs = Number(argv.epochs);
const evalSteps = smoke ? 10 : 200;
const saveSteps = smoke ? 25 : 500;
/** --dolly-full: the whole 3 epochs, measured (never extrapolated), the first run as long as the trainer's. */
const trainerFirstRun = argv['dolly-full'];
const dollyMaxS = trainerFirstRun ? Infinity : Number(argv['dolly-max-s'] ?? (smoke ? 20 : 60));
const dollyK = Number(argv['dolly-k'] ?? (smoke ? 4 : CUDA_STEPS_PER_RUN));
/**
 * On the CPU the trainer also ends a run at every logging step; on CUDA runs span them (train/trainer.ts
 * nextBoundary). 0 = runs do not end at logging steps.
 */
const loggingSteps = Number(argv['logging-steps'] ?? (device === 'cuda' ? 0 : 10));
const threads = Number(argv.threads);
const extraK = argv['extra-k']
  .split(',')
  .filter(Boolean)
  .map((s) => {
    const k = Number(s);
    if (!(Number.isInteger(k) && k >= 1)) throw new Error(`--extra-k takes positive integers, got ${s}`);
    return k;
  });
const outDir = argv.out ? path.resolve(argv.out) : null;
if (outDir) fs.mkdirSync(outDir, { recursive: true });

const result: Record<string, unknown> = {
  command: `tsx bench/gpu-train.ts ${process.argv.slice(2).join(' ')}`.trim(),
  device,
  smoke,
  host: `${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}`,
  model: { n_layer: config.n_layer, n_embd: config.n_embd, vocab_size: config.vocab_size, parameters: countParameters(config) },
  accum: ACCUM,
  /** Engine switches read from the environment (unset = the engine's default). */
  // Every SFT_* switch set for this run (ablations compare runs by them).
  env: sftSwitches(),
  throughput: {} as Record<string, unknown>,
};

const mergeFactor = mergeFactorOf(undefined);
if (mergeFactor > 1) {
  result.merge_micro_batches = mergeFactor;
  console.log(`note: SFT_MERGE_MICRO_BATCHES=${mergeFactor}: each step's ${ACCUM} accumulation micro-batches run in groups of ${mergeFactor}, each group as ONE micro-batch (B × ${Math.min(mergeFactor, ACCUM)} rows; engine/mergeMicroBatches.ts) — the same optimizer steps, not the B-row micro-batch shape PyTorch ran`);
}

function save(): void {
  if (outDir) fs.writeFileSync(path.join(outDir, 'gpu-train.json'), `${JSON.stringify(result, null, 1)}\n`);
}

// ---------------------------------------------------------------------------------------------------------
// Memory: nvidia-smi polling on CUDA, process RSS on the CPU
// ---------------------------------------------------------------------------------------------------------

class MemoryWatch {
  private proc: ChildProcess | null = null;
  private rssTimer: NodeJS.Timeout | null = null;
  private current = 0;
  private peak = 0;
  available = true;
  gpuName: string | null = null;

  start(): void {
    if (device === 'cuda') {
      try {
        this.proc = spawn('nvidia-smi', ['--query-gpu=memory.used', '--format=csv,noheader,nounits', '-i', '0', '-lms', '100'], { stdio: ['ignore', 'pipe', 'ignore'] });
        this.proc.on('error', () => (this.available = false));
        let buf = '';
        this.proc.stdout!.on('data', (d: Buffer) => {
          buf += d.toString();
          const lines = buf.split('\n');
          buf = lines.pop()!;
          for (const l of lines) {
            const mb = Number(l.trim());
            if (Number.isFinite(mb) && l.trim() !== '') {
              this.current = mb * 1048576;
              this.peak = Math.max(this.peak, this.current);
            }
          }
        });
      } catch {
        this.available = false;
      }
    } else {
      this.rssTimer = setInterval(() => this.sampleRss(), 50);
    }
  }

  private sampleRss(): void {
    this.current = process.memoryUsage().rss;
    this.peak = Math.max(this.peak, this.current);
  }

  /** Starts a new window; returns the level at its start (bytes). */
  async reset(): Promise<number> {
    if (device === 'cuda') await sleep(300);
    else this.sampleRss();
    this.peak = this.current;
    return this.current;
  }

  peakBytes(): number {
    if (device === 'cpu') this.sampleRss();
    return this.peak;
  }

  stop(): void {
    this.proc?.kill();
    if (this.rssTimer) clearInterval(this.rssTimer);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function gpuName(): Promise<string | null> {
  return new Promise((resolve) => {
    execFile('nvidia-smi', ['--query-gpu=name,driver_version', '--format=csv,noheader', '-i', '0'], { timeout: 10000 }, (err, out) => resolve(err ? null : out.trim()));
  });
}

const GB = 1e9;
const mem = new MemoryWatch();

// ---------------------------------------------------------------------------------------------------------
// Engine helpers
// ---------------------------------------------------------------------------------------------------------

let sharedParams: ParamSet | null = null;
function params(): ParamSet {
  if (!sharedParams) {
    const t = performance.now();
    sharedParams = initGpt2Params(config, 1);
    // Printed so that the cost the Dolly clock leaves out (drawing the random weights) can be checked on any machine.
    result.random_init_s = round((performance.now() - t) / 1000, 2);
    console.log(`random weights drawn in ${result.random_init_s} s (outside every timed figure)`);
  }
  return sharedParams;
}

function createEngine(bf16: boolean, stepsPerRun: number, initial?: ParamSet): Promise<TrainingEngine> {
  return TrainingEngine.create({
    config,
    params: initial ?? params(),
    ...(initial ? { adoptParams: true } : {}),
    device,
    stepsPerRun,
    bf16,
    dropout: null,
    weightDecay: 0.01,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    maxGradNorm: 1,
    seed: SEED,
    threads,
  });
}

function randomBatch(rng: Rng, B: number, T: number): MicroBatch {
  const n = B * T;
  const mb: MicroBatch = { B, T, inputIds: new Int32Array(n), targets: new Int32Array(n), weights: new Float32Array(n).fill(1), positions: new Int32Array(n), segments: new Int32Array(n).fill(1) };
  for (let i = 0; i < n; i++) {
    mb.inputIds[i] = rng.nextInt(config.vocab_size);
    mb.positions[i] = i % T;
  }
  for (let i = 0; i < n; i++) mb.targets[i] = (i + 1) % T === 0 ? 0 : mb.inputIds[i + 1]!;
  for (let b = 0; b < B; b++) mb.weights[b * T + T - 1] = 0;
  return mb;
}

async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await f();
  return [r, (performance.now() - t0) / 1000];
}

/** Seconds to move parameters + AdamW moments through the device once each way (Neg graph, see header). */
async function roundtripSeconds(): Promise<number> {
  const g = new Graph('roundtrip');
  const feeds: Record<string, ort.Tensor> = {};
  const p = params();
  for (const prefix of ['p', 'm', 'v']) {
    for (const { name, shape } of paramSpecs(config)) {
      const key = `${prefix}:${name}`;
      g.output(g.op('Neg', [g.input(key, 'float', shape)]), `${key}:out`);
      feeds[key] = new OrtTensor('float32', p.get(name)!.data, shape);
    }
  }
  const session = await createSession(g.toModelBytes(), { device, threads });
  try {
    await session.run(feeds); // warm-up (allocations)
    const times: number[] = [];
    for (let i = 0; i < 3; i++) times.push((await timed(() => session.run(feeds)))[1]);
    return Math.min(...times);
  } finally {
    await session.release();
  }
}

// ---------------------------------------------------------------------------------------------------------
// 1–3: throughput, host↔device share, memory
// ---------------------------------------------------------------------------------------------------------

async function throughput(): Promise<void> {
  const tp = result.throughput as Record<string, unknown>;
  const rt = argv['no-roundtrip'] ? null : await roundtripSeconds();
  if (rt !== null) {
    result.roundtrip_s = round(rt, 3);
    console.log(`parameters + moments roundtrip (3 × ${countParameters(config).toLocaleString()} floats each way): ${rt.toFixed(3)} s`);
  }
  for (const prec of precisions) {
    for (const [B, T] of shapes) {
      const key = `${prec}_B${B}_T${T}`;
      const tokensPerStep = ACCUM * B * T;
      // ~768k tokens per run on a GPU (K = 48 at B8 T512, 12 at B32): runs of 7 s or more, so that the ~1 s fixed
      // cost per run and the noise of the 1-step run weigh little in the slope (K = 16 / 4 scattered by ±5 % and
      // put one B32 projection off by 1.6×, 2026-11-28).
      const K = Number(argv.k ?? Math.max(1, Math.round((smoke ? 4096 : 786432) / tokensPerStep)));
      const rng = new Rng(11);
      const mbs = Array.from({ length: ACCUM }, () => randomBatch(rng, B, T));
      const steps: StepInput[] = Array.from({ length: K }, () => ({ lr: 2e-5, microBatches: mbs }));
      const base = await mem.reset();
      let engine: TrainingEngine | null = null;
      try {
        const [eng, createS] = await timed(() => createEngine(prec === 'bf16', Math.max(K, ...extraK)));
        engine = eng;
        const [, firstS] = await timed(() => eng.runSteps(steps.slice(0, 1)));
        const [, oneS] = await timed(() => eng.runSteps(steps.slice(0, 1)));
        const [m, kS] = await timed(() => eng.runSteps(steps));
        const perStep = K > 1 ? Math.max(0, (kS - oneS) / (K - 1)) : kS;
        const fixed = Math.max(0, kS - K * perStep);
        const peak = mem.peakBytes() - base;
        // The trainer's runs on CUDA hold CUDA_STEPS_PER_RUN steps: the same fixed cost spread over more steps.
        const kT = CUDA_STEPS_PER_RUN;
        const atTrainerK = device === 'cuda' && K > 1 && perStep > 0 ? { K: kT, tok_s: Math.round((kT * tokensPerStep) / (fixed + kT * perStep)), host_device_share: round(fixed / (fixed + kT * perStep), 3) } : null;
        const r = {
          K,
          tokens_per_run: K * tokensPerStep,
          create_s: round(createS, 2),
          first_run_s: round(firstS, 2),
          run_1_step_s: round(oneS, 3),
          run_K_steps_s: round(kS, 3),
          tok_s: Math.round((K * tokensPerStep) / kS),
          compute_tok_s: perStep > 0 ? Math.round(tokensPerStep / perStep) : null,
          host_device_share_intercept: K > 1 ? round(fixed / kS, 3) : null,
          host_device_share_roundtrip: rt === null ? null : round(rt / kS, 3),
          projected_at_trainer_K: atTrainerK,
          [device === 'cuda' ? 'peak_gpu_mem_GB' : 'peak_rss_GB']: mem.available ? round(peak / GB, 2) : null,
          loss_last: round(m[m.length - 1]!.loss, 4),
        };
        tp[key] = r;
        console.log(`${key}: ${r.tok_s.toLocaleString()} tok/s (K=${K}, ${kS.toFixed(2)} s per run; first run ${firstS.toFixed(1)} s)${atTrainerK ? `; at the trainer's K=${kT}: ${atTrainerK.tok_s.toLocaleString()} tok/s, host↔device ${(atTrainerK.host_device_share * 100).toFixed(1)} % (projected: ${fixed.toFixed(2)} s fixed + ${perStep.toFixed(3)} s/step)` : ''}`);
        if (extraK.length > 0) {
          // Saved first: a caller's time limit may cut the longer runs below.
          const byK: Record<string, { run_s: number; tok_s: number }> = { [K]: { run_s: round(kS, 3), tok_s: r.tok_s } };
          (r as Record<string, unknown>).tok_s_by_K = byK;
          save();
          for (const k2 of extraK) {
            const [, s2] = await timed(() => eng.runSteps(Array.from({ length: k2 }, () => ({ lr: 2e-5, microBatches: mbs }))));
            byK[k2] = { run_s: round(s2, 3), tok_s: Math.round((k2 * tokensPerStep) / s2) };
            console.log(`${key}: ${byK[k2]!.tok_s.toLocaleString()} tok/s at K=${k2} (${s2.toFixed(2)} s per run)`);
            save();
          }
        }
      } catch (e) {
        tp[key] = { error: (e as Error).message.split('\n')[0] };
        console.log(`${key}: failed — ${(e as Error).message.split('\n')[0]}`);
      } finally {
        await engine?.dispose();
      }
      save();
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// 4: Dolly-shaped epochs with evaluation and checkpoints
// ---------------------------------------------------------------------------------------------------------

interface DollyData {
  train: { inputIds: number[]; trained: Uint8Array }[];
  evalSet: { inputIds: number[]; trained: Uint8Array }[];
}

function dollyData(): DollyData {
  const lengths = dollyLengths(records, SEED, smoke ? { median: 30, max: maxLength } : { max: maxLength });
  const examples = dollyExamples(lengths, config.vocab_size, 1);
  // Held-out 5 %: a seeded choice of indices (the recipe's train_test_split(test_size=0.05)).
  const order = new Rng(42, 5).permutation(records);
  const nEval = Math.ceil(records * 0.05);
  const evalIdx = new Set(order.slice(0, nEval));
  const st = lengthStats(lengths, BATCH, maxLength);
  result.dolly_lengths = { records, seed: SEED, mean: round(st.mean, 1), median: st.median, p95: st.p95, max: st.max, frac_at_max: round(st.fracAtMax, 3), padding_efficiency_b8: round(st.paddingEfficiency, 3) };
  return { train: examples.filter((_, i) => !evalIdx.has(i)), evalSet: examples.filter((_, i) => evalIdx.has(i)) };
}

async function dollyRun(data: DollyData, packing: boolean, bf16: boolean): Promise<Record<string, unknown>> {
  const batchOpts = { batchSize: BATCH, padId: 50256 % config.vocab_size, packing, maxLength };
  const microPerEpoch = epochMicroBatches(data.train, SEED, 0, batchOpts).length;
  const stepsPerEpoch = Math.ceil(microPerEpoch / ACCUM);
  const totalSteps = stepsPerEpoch * epochs;
  const nEvals = Math.floor(totalSteps / evalSteps);
  const nSaves = Math.floor(totalSteps / saveSteps) + (totalSteps % saveSteps === 0 ? 0 : 1);
  const evalBatches = epochMicroBatches(data.evalSet, SEED, 0, { ...batchOpts, shuffle: false });
  const ckptRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-gpu-bench-'));
  const saved: string[] = [];
  const evalTimes: number[] = [];
  let firstRunS = 0;
  let firstRunSteps = 0;
  let saveS = 0;
  let saves = 0;
  let trainS = 0;
  let realTokens = 0;
  let positions = 0;
  let lastLoss = NaN;
  let evalLoss = NaN;
  let evalsDone = 0;
  // A user's run starts from a model folder: the random weights are drawn before the clock starts (initGpt2Params
  // takes ~7 s for 124M on one CPU core, which no real run spends) and the clock starts with reading them back from
  // model.safetensors, as the trainer loads a model.
  const weightsFile = path.join(ckptRoot, 'model.safetensors');
  writeSafetensorsSynced(weightsFile, params());
  const base = await mem.reset();
  const t0 = performance.now();
  const [initial, loadS] = await timed(async () => readSafetensors(weightsFile));
  const [engine, engineS] = await timed(() => createEngine(bf16, dollyK, initial));
  const createS = loadS + engineS;
  const doEval = async () => {
    const [r, s] = await timed(async () => {
      // As the trainer evaluates (trainer.ts evalLoss): evalBatches, one run per chunk of micro-batches on CUDA.
      let nll = 0;
      let tok = 0;
      for (const e of await engine.evalBatches(evalBatches)) {
        nll += e.nllSum;
        tok += e.tokens;
      }
      return nll / Math.max(tok, 1);
    });
    evalLoss = r;
    evalTimes.push(s);
    evalsDone++;
  };
  const doSave = async (step: number) => {
    const [, s] = await timed(async () => {
      const dir = path.join(ckptRoot, `checkpoint-${step}`);
      fs.mkdirSync(dir, { recursive: true });
      await engine.syncToHost(); // state may live on the GPU between runs (see docs/GPU.md)
      writeSafetensorsSynced(path.join(dir, 'model.safetensors'), engine.getParams());
      const o = engine.getOptimizerState();
      const opt: ParamSet = new Map();
      for (const [n, t] of o.m) opt.set(`exp_avg.${n}`, t);
      for (const [n, t] of o.v) opt.set(`exp_avg_sq.${n}`, t);
      writeSafetensorsSynced(path.join(dir, 'optimizer.safetensors'), opt, { step: String(o.step) });
      saved.push(dir);
      while (saved.length > 3) fs.rmSync(saved.shift()!, { recursive: true, force: true });
    });
    saveS += s;
    saves++;
  };
  // Evaluation inside the training runs when the engine does it (its CUDA default), as the trainer then runs.
  const inRun = engine.evalInRun && evalBatches.length > 0;
  let evalsInSteadyRuns = 0;
  let step = 0;
  let stopped = false;
  try {
    outer: for (let epoch = 0; epoch < epochs; epoch++) {
      const groups = groupIntoSteps(epochMicroBatches(data.train, SEED, epoch, batchOpts), ACCUM);
      for (let i = 0; i < groups.length; ) {
        // A run: up to K steps, ending at the next logging, evaluation or save step (as the trainer does).
        const nextEval = inRun ? Infinity : evalSteps - (step % evalSteps);
        const nextSave = saveSteps - (step % saveSteps);
        const nextLog = loggingSteps > 0 ? loggingSteps - (step % loggingSteps) : Infinity;
        // The first run holds one step: it also builds the graph and creates the session, and that one-off
        // cost must not be spread over the steps of an extrapolation (on the H200 it inflated 3 epochs by ~40 %).
        const n = Math.min(firstRunSteps === 0 && !trainerFirstRun ? 1 : dollyK, groups.length - i, nextEval, nextSave, nextLog);
        const run: StepInput[] = groups.slice(i, i + n).map((mbs, j) => ({ lr: 2e-5, microBatches: mbs, ...(inRun && (step + j + 1) % evalSteps === 0 ? { eval: true } : {}) }));
        const evalsHere = run.filter((x) => x.eval).length;
        // The engine pads every micro-batch of a run to the run's largest B and T: count what it computes.
        let maxB = 0;
        let maxT = 0;
        for (const s of run) {
          for (const mb of s.microBatches) {
            for (let j = 0; j < mb.segments.length; j++) if (mb.segments[j] !== 0) realTokens++;
            maxB = Math.max(maxB, mb.B);
            maxT = Math.max(maxT, mb.T);
          }
        }
        positions += run.length * Math.max(...run.map((s) => s.microBatches.length)) * maxB * maxT;
        const [m, s] = await timed(() => engine.runSteps(run, evalsHere > 0 ? { evalBatches } : {}));
        if (firstRunSteps === 0) {
          // The first run also builds the graph and creates the session.
          firstRunS = s;
          firstRunSteps = n;
        } else {
          trainS += s;
          evalsInSteadyRuns += evalsHere;
        }
        for (const r of m) if (r.eval) evalLoss = r.eval.nllSum / Math.max(r.eval.tokens, 1);
        evalsDone += evalsHere;
        lastLoss = m[m.length - 1]!.loss;
        step += n;
        i += n;
        if (!inRun && step % evalSteps === 0) await doEval();
        if (step % saveSteps === 0) await doSave(step);
        // Stop for the estimate only once a run after the first one has been timed.
        if ((performance.now() - t0) / 1000 > dollyMaxS && step < totalSteps && step > firstRunSteps) {
          stopped = true;
          break outer;
        }
      }
    }
    if (!stopped && step % saveSteps !== 0) await doSave(step);
    if (stopped) {
      // Make sure one evaluation and one save were measured for the estimate.
      // Two evaluations: the first also creates the evaluation session.
      // (With in-run evaluation these two only measure an evaluation's cost for the estimate.)
      while (evalTimes.length < 2) await doEval();
      if (saves === 0) await doSave(step);
    }
  } finally {
    await engine.dispose();
    fs.rmSync(ckptRoot, { recursive: true, force: true });
  }
  const wall = (performance.now() - t0) / 1000;
  const steadySteps = step - firstRunSteps;
  const perEval = evalTimes.length > 1 ? evalTimes.slice(1).reduce((a, b) => a + b, 0) / (evalTimes.length - 1) : (evalTimes[0] ?? 0);
  // In-run evaluations sit inside the timed runs: take them out of the per-step rate (at the separately measured
  // cost of one evaluation) and add them back per planned evaluation below. Out of the run, the first evaluation
  // also created the eval session: a one-off.
  const perStep = steadySteps > 0 ? (trainS - evalsInSteadyRuns * perEval) / steadySteps : firstRunS / Math.max(firstRunSteps, 1);
  const evalSetup = inRun ? 0 : (evalTimes[0] ?? 0) - perEval;
  const perSave = saveS / Math.max(saves, 1);
  const estimate = createS + firstRunS + (totalSteps - firstRunSteps) * perStep + evalSetup + nEvals * perEval + nSaves * perSave;
  trainS += firstRunS;
  return {
    packing,
    bf16,
    K: dollyK,
    logging_steps: loggingSteps,
    micro_batches_per_epoch: microPerEpoch,
    optimizer_steps: totalSteps,
    steps_done: step,
    evals_planned: nEvals,
    /** Evaluations inside the training runs (engine evalInRun): eval steps do not end runs. */
    eval_in_run: inRun,
    evals_done: evalsDone,
    saves_planned: nSaves,
    /** Reading model.safetensors and creating the engine (on CUDA: the provider's initialisation). */
    create_s: round(createS, 2),
    model_load_s: round(loadS, 2),
    first_run_s: round(firstRunS, 2),
    train_s: round(trainS, 2),
    s_per_step: round(perStep, 4),
    /** Seconds per evaluation out of a run; null when every evaluation ran inside a training run (not timed apart). */
    eval_s_each: evalTimes.length > 0 ? round(perEval, 2) : null,
    save_s_each: round(perSave, 2),
    wall_s: round(wall, 1),
    three_epochs_s: round(stopped ? estimate : wall, 1),
    extrapolated: stopped,
    /** Example tokens (no padding) per second of training runs. */
    real_tok_s: Math.round(realTokens / trainS),
    /** Positions the engine computed (runs padded to their largest B×T) per second. */
    position_tok_s: Math.round(positions / trainS),
    padding_fraction: round(1 - realTokens / positions, 3),
    loss_last: round(lastLoss, 4),
    eval_loss_last: Number.isNaN(evalLoss) ? null : round(evalLoss, 4),
    [device === 'cuda' ? 'peak_gpu_mem_GB' : 'peak_rss_GB']: mem.available ? round((mem.peakBytes() - base) / GB, 2) : null,
  };
}

async function dolly(data: DollyData): Promise<void> {
  const out: Record<string, unknown> = {};
  result.dolly = out;
  for (const mode of argv['dolly-modes'].split(',')) {
    const key = `${mode}_${dollyPrecision}`;
    try {
      const r = await dollyRun(data, mode === 'packed', dollyPrecision === 'bf16');
      out[key] = r;
      const evalText = r.eval_s_each === null ? 'evals inside the runs' : `eval ${r.eval_s_each} s`;
      console.log(`dolly ${key}: 3 epochs ${r.three_epochs_s} s${r.extrapolated ? ' (extrapolated)' : ''}, ${r.s_per_step} s/step, ${evalText}, save ${r.save_s_each} s`);
    } catch (e) {
      out[key] = { error: (e as Error).message.split('\n')[0] };
      console.log(`dolly ${key}: failed — ${(e as Error).message.split('\n')[0]}`);
    }
    save();
  }
}

// ---------------------------------------------------------------------------------------------------------
// 5: PyTorch on the same machine
// ---------------------------------------------------------------------------------------------------------

function runPytorch(data: DollyData | null): Promise<Record<string, unknown> | null> {
  const dir = outDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'sft-gpu-bench-'));
  const out = path.join(dir, 'pytorch.json');
  let lengthsDir: string | null = null;
  const args = [path.join(__dirname, 'pytorch_baseline.py'), '--device', device, '--shapes', shapes.map(([b, t]) => `${b}x${t}`).join(','), '--precisions', precisions.join(','), '--accum', String(ACCUM), '--epochs', String(epochs), '--eval-steps', String(evalSteps), '--save-steps', String(saveSteps), '--out', out];
  args.push('--dolly-precisions', dollyPrecision, ...argv['pytorch-args'].split(' ').filter(Boolean));
  if (smoke) args.push('--smoke', '--steps', '2', '--warmup', '1', '--dolly-micro', '8');
  if (data) {
    // Not in --out: the device call brings back at most 8 files (bench/device-check.sh).
    lengthsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-gpu-bench-'));
    const lf = path.join(lengthsDir, 'dolly-lengths.json');
    // The epoch-0 order of the padded batches, as our padded run sees it.
    const order = epochMicroBatches(data.train, SEED, 0, { batchSize: 1, padId: 0 }).map((mb) => mb.T);
    fs.writeFileSync(lf, JSON.stringify({ train: order, eval: data.evalSet.map((e) => e.inputIds.length) }));
    args.push('--lengths', lf);
  }
  return new Promise((resolve) => {
    const child = spawn(argv.python, args, { stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('error', (e) => {
      result.pytorch_error = `${argv.python}: ${e.message}`;
      resolve(null);
    });
    child.on('close', () => {
      if (lengthsDir) fs.rmSync(lengthsDir, { recursive: true, force: true });
      try {
        const r = JSON.parse(fs.readFileSync(out, 'utf8')) as Record<string, unknown>;
        if (r.error) {
          result.pytorch_error = r.error;
          resolve(null);
        } else resolve(r);
      } catch (e) {
        result.pytorch_error = `no result from pytorch_baseline.py (${(e as Error).message})`;
        resolve(null);
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------------------

function round(x: number, d: number): number {
  const f = 10 ** d;
  return Math.round(x * f) / f;
}

function pad(s: unknown, n: number): string {
  return String(s ?? '—').padStart(n);
}

function printTable(pt: Record<string, unknown> | null): void {
  const tp = result.throughput as Record<string, Record<string, number | null>>;
  const ptp = (pt?.throughput ?? {}) as Record<string, Record<string, number>>;
  const memKey = device === 'cuda' ? 'peak_gpu_mem_GB' : 'peak_rss_GB';
  console.log(`\n${'config'.padEnd(18)}${pad('ours tok/s', 12)}${pad('PyTorch', 12)}${pad('ratio', 8)}${pad('h↔d (icpt)', 12)}${pad('h↔d (rt)', 10)}${pad('mem GB', 8)}${pad('PT mem', 8)}`);
  const ratios: Record<string, number> = {};
  for (const [key, r] of Object.entries(tp)) {
    const p = ptp[key];
    const ratio = r.tok_s && p?.tok_s ? r.tok_s / p.tok_s : null;
    if (ratio !== null) ratios[key] = round(ratio, 2);
    console.log(`${key.padEnd(18)}${pad(r.tok_s ?? (r as unknown as { error: string }).error?.slice(0, 10), 12)}${pad(p?.tok_s, 12)}${pad(ratio?.toFixed(2), 8)}${pad(r.host_device_share_intercept, 12)}${pad(r.host_device_share_roundtrip, 10)}${pad(r[memKey], 8)}${pad(p?.peak_reserved_GB, 8)}`);
  }
  const d = (result.dolly ?? {}) as Record<string, Record<string, unknown>>;
  const pd = (pt?.dolly_padded ?? {}) as Record<string, Record<string, number>>;
  for (const [key, r] of Object.entries(d)) {
    const p = pd[dollyPrecision];
    const ratio = typeof r.three_epochs_s === 'number' && p?.est_3_epochs_s ? p.est_3_epochs_s / r.three_epochs_s : null;
    if (ratio !== null) ratios[`dolly_${key}_speedup_vs_pytorch_padded`] = round(ratio, 2);
    if (r.error) {
      console.log(`dolly ${key.padEnd(14)} failed: ${r.error}`);
      continue;
    }
    console.log(`dolly ${key.padEnd(14)} 3 epochs ${pad(r.three_epochs_s, 8)} s${r.extrapolated ? ' (extrapolated)' : ''}   PyTorch padded ${dollyPrecision}: ${p?.est_3_epochs_s ?? '—'} s${ratio ? `   speed-up ${ratio.toFixed(2)}×` : ''}`);
  }
  result.ratios = ratios;
}

async function main(): Promise<void> {
  mem.start();
  if (device === 'cuda') result.gpu = await gpuName();
  save();
  try {
    // PyTorch first: its run time is predictable, so the comparison exists even when a slow phase of ours
    // is cut by the caller's time limit (every phase saves its results as it ends).
    const data = argv['no-dolly'] ? null : dollyData();
    let pt: Record<string, unknown> | null = null;
    if (argv['pytorch-from']) {
      pt = JSON.parse(fs.readFileSync(argv['pytorch-from'], 'utf8')) as Record<string, unknown>;
      result.pytorch = pt;
      result.pytorch_from = argv['pytorch-from'];
      console.log(`PyTorch numbers from ${argv['pytorch-from']} (${String(pt.device ?? '?')}, not run now)`);
    } else if (!argv['no-pytorch']) {
      pt = await runPytorch(data);
      result.pytorch = pt;
      if (!pt) console.log(`PyTorch comparison skipped: ${result.pytorch_error}`);
      save();
    }
    // The random weights, drawn before anything is timed (each engine and the Dolly file start from them).
    if (!argv['no-throughput'] || data) params();
    if (!argv['no-throughput']) await throughput();
    if (data) await dolly(data);
    printTable(pt);
  } finally {
    mem.stop();
    save();
  }
  console.log(`RESULT ${JSON.stringify(result)}`);
}

main().catch((e) => {
  mem.stop();
  console.error(`error: ${(e as Error).message}`);
  process.exit(1);
});
