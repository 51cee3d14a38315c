/**
 * The training engine the runner uses. `runSteps` feeds up to K optimizer steps to one `session.run` of the
 * training Loop (trainGraph.ts) and takes the updated state back. Also: `evalBatch` (loss only),
 * `evalBatches` (several micro-batches; one run per chunk on CUDA), `evalTokens` (per-position nll/lse),
 * `gradients` (grads-only graph, for tests and diagnostics) and `createForward` (logits / log-probabilities).
 *
 * State residency. On the CPU the parameters and AdamW moments live on the host (Float32Arrays, HF names)
 * between runs. On CUDA they stay on the GPU between runs when onnxruntime-node can do it (deviceState.ts:
 * 'gpu-buffer' outputs fed back as the next run's inputs; probed once per process; not tried with
 * onnxruntime-node 1.29.0, whose binding cannot, unless SFT_CUDA_STATE_ON_DEVICE=1; off with
 * SFT_CUDA_STATE_ON_DEVICE=0); the host copies are then refreshed only by `syncToHost()` (checkpoints, final
 * save), and evaluation reads the parameters where they are. `getParams`/`getOptimizerState` throw while the
 * host copy is stale: call `await syncToHost()` first (a no-op on the host path).
 * The AdamW moments are allocated at the first training run (or getOptimizerState): an eval-only engine has
 * none, and with `adoptParams` it also uses the caller's parameter arrays without copying them.
 *
 * Learning rates are per step (StepInput.lr); bias corrections use the engine's step counter t (1-based,
 * as torch.optim.AdamW) computed on the host in double precision.
 * Dropout masks come from ONNX Dropout nodes seeded from `seed`; they differ between runs but are not
 * reproduced across a resume.
 */
import type * as ort from 'onnxruntime-node';
import type { GPT2Config, ParamSet, ParamTensor } from '../model/types';
import { SftError } from '../util/errors';
import { dropoutRates, paramSpecs, type Bf16Mode, type ModelVariants } from './gpt2Graph';
import { createSession, envSwitch, f32, releaseSessions, scalarF32, toF32, toNumber, type Device } from './ortSession';
import { buildEvalGraph, buildForwardGraph, buildGradsGraph, buildTrainGraph, type ForwardOutput, type OptimizerHyper } from './trainGraph';
import { mergeMicroBatches } from './mergeMicroBatches';
import { buildEvalLoopGraph, CudaGpuBufferIo, deviceStateWanted, probeCudaDeviceState, type DeviceStateIo, type DeviceTensor } from './deviceState';
import type { MicroBatch, StepInput, StepMetrics } from './types';
import { Tensor as OrtTensor } from 'onnxruntime-node';
import { Graph } from './graph/graph';

export interface OptimizerState {
  m: ParamSet;
  v: ParamSet;
  /** Optimizer steps taken so far (torch's `step`). */
  step: number;
}

export interface TrainingEngineOptions {
  config: GPT2Config;
  params: ParamSet;
  /**
   * true = the engine takes `params` (and `optimizer`'s moments) as its own instead of copying them (no second
   * copy of the weights; train/evaluate.ts, and the trainer, which loads them for this run only). The caller
   * must not use them afterwards: training (runSteps) may overwrite their arrays in place (they become spare
   * output buffers). Default false: copy.
   */
  adoptParams?: boolean;
  optimizer?: OptimizerState;
  device: Device;
  /** Maximum optimizer steps per session.run (K). */
  stepsPerRun: number;
  /** One rate for embd/attn/resid dropout; null/undefined = the config's rates. */
  dropout?: number | null;
  /**
   * MatMul/Gemm precision (gpt2Graph.ts Bf16Mode; master weights and moments stay fp32): true = bf16 kernels
   * (CUDA only), 'emulate' = bf16 rounding on fp32 kernels (any device; a numerics check, not a speed-up).
   */
  bf16?: Bf16Mode;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** ≤ 0 disables clipping. */
  maxGradNorm: number;
  seed?: number;
  /** ORT intra-op threads (0/undefined = ORT's default). */
  threads?: number;
  /**
   * Where the state lives between runs: 'auto' (default) = on the GPU for device 'cuda' when deviceStateWanted()
   * (SFT_CUDA_STATE_ON_DEVICE, else not on onnxruntime-node versions known to lack it) and the probe passes, else
   * on the host; 'host' forces the host.
   * Tests pass a DeviceStateIo (a fake device) to exercise the device bookkeeping on the CPU.
   */
  stateResidency?: 'auto' | 'host' | DeviceStateIo;
  /**
   * Whether ORT's intra-op threads spin while waiting for work (ORT's default: yes). undefined = the
   * environment variable SFT_ORT_SPINNING (0/1) if set, else ORT's default.
   */
  allowSpinning?: boolean;
  /**
   * Evaluation inside the training run (trainGraph.ts GraphOptions.evalInRun): a step of `runSteps` marked `eval`
   * evaluates the run's eval batches after its update, without ending the run. Default: on for CUDA (where a
   * run boundary moves the whole state between host and device), off on the CPU; SFT_EVAL_IN_RUN=0/1 overrides
   * the default.
   */
  evalInRun?: boolean;
  /** Micro-batches per eval run in `evalBatches` (default: 1 on the CPU, 64 on CUDA). */
  evalBatchesPerRun?: number;
  /** Notes about choices the engine made (state residency, fallbacks). */
  onNote?: (message: string) => void;
  /**
   * Run AdamW on one flat vector per parameter group inside the training Loop (trainGraph.ts GraphOptions
   * flatState): ~1,800 fewer nodes per step for GPT-2 124M, at the price of copies of the state. Default:
   * SFT_FLAT_STATE (0/1) if set, else off. Measured against it: on the CPU, 124M B4 T128 peak RSS 9.2 → 15 GB
   * and slower; on an H200 (2026-11-28) a 124M engine with it did not finish its first 1-step run within 50 s
   * (the per-tensor engine: created, warmed up and 16 steps in ~20 s), so it is opt-in until that is understood.
   */
  flatState?: boolean;
  /**
   * Compute each step's accumulation micro-batches in groups of this many, each group as one micro-batch
   * (engine/mergeMicroBatches.ts): the same optimizer step with fewer passes over parameter-shaped tensors and
   * factor × the activation memory. Default: SFT_MERGE_MICRO_BATCHES if set, else 1 (off).
   */
  mergeMicroBatches?: number;
}

/** The merge factor of TrainingEngineOptions.mergeMicroBatches: the option, else SFT_MERGE_MICRO_BATCHES, else 1. */
export function mergeFactorOf(option: number | undefined, env: NodeJS.ProcessEnv = process.env): number {
  if (option !== undefined) {
    if (!(Number.isInteger(option) && option >= 1)) throw new SftError(`merge_micro_batches must be an integer ≥ 1, got ${option}`, 'merge_micro_batches');
    return option;
  }
  const v = env.SFT_MERGE_MICRO_BATCHES?.trim();
  if (!v) return 1;
  const n = Number(v);
  if (!(Number.isInteger(n) && n >= 1)) throw new SftError(`SFT_MERGE_MICRO_BATCHES must be an integer ≥ 1, got ${JSON.stringify(v)}`, 'environment');
  return n;
}

/**
 * The engine's model variants (gpt2Graph.ts ModelVariants) from SFT_* environment switches. The four bf16 storage
 * variants are on by default since they passed the GPT-2 124M loss-curve check on an H200 (2026-11-28, together:
 * worst 8.2e-3 of the 2e-2 bf16 tolerance) and made a B8 T512 step 1.39× faster there (bench/results/2026-11-28-
 * h200-d): SFT_BF16_ATTENTION=0, SFT_BF16_MLP=0, SFT_BF16_PROJ=0, SFT_BF16_LOGITS=0 turn each off (they only act in
 * bf16 modes). SFT_BF16_GELU_GRAD=exp|table, SFT_AUTODIFF_ATTENTION=1 and SFT_AUTODIFF_LAYERNORM=1 select the
 * earlier formulations, for ablations. SFT_BIAS_DROPOUT=1 turns on residualBiasDropout (com.microsoft BiasDropout on
 * CUDA; opt-in until a GPU run has checked it: engine/residual.ts).
 */
export function modelVariantsFromEnv(env: NodeJS.ProcessEnv = process.env): ModelVariants {
  const geluGrad = env.SFT_BF16_GELU_GRAD;
  if (geluGrad !== undefined && geluGrad !== '' && geluGrad !== 'exp' && geluGrad !== 'table') throw new SftError(`SFT_BF16_GELU_GRAD must be exp or table, got ${JSON.stringify(geluGrad)}`, 'environment');
  return {
    autodiffAttention: envSwitch(env.SFT_AUTODIFF_ATTENTION) ?? false,
    bf16Attention: envSwitch(env.SFT_BF16_ATTENTION) ?? true,
    bf16Mlp: envSwitch(env.SFT_BF16_MLP) ?? true,
    ...(geluGrad ? { bf16GeluGrad: geluGrad } : {}),
    bf16Projections: envSwitch(env.SFT_BF16_PROJ) ?? true,
    autodiffLayerNorm: envSwitch(env.SFT_AUTODIFF_LAYERNORM) ?? false,
    bf16Logits: envSwitch(env.SFT_BF16_LOGITS) ?? true,
    residualBiasDropout: envSwitch(env.SFT_BIAS_DROPOUT) ?? false,
    lnFold: envSwitch(env.SFT_LN_FOLD) ?? true,
  };
}

/** The state of one kind (p, m or v) on the device, by parameter name; `synced`: the host copy equals it. */
interface DeviceSet {
  tensors: Map<string, DeviceTensor>;
  synced: boolean;
}
const STATE_KINDS = ['p', 'm', 'v'] as const;
type StateKind = (typeof STATE_KINDS)[number];

function cloneSet(s: ParamSet): ParamSet {
  const out: ParamSet = new Map();
  for (const [k, t] of s) out.set(k, { shape: t.shape.slice(), data: t.data.slice() });
  return out;
}

/** Checks a ParamSet against the config's parameter list (names, shapes, lengths, finiteness not checked). */
export function checkParamSet(config: GPT2Config, s: ParamSet, what: string): void {
  const specs = paramSpecs(config);
  for (const { name, shape } of specs) {
    const t = s.get(name);
    if (!t) throw new SftError(`missing tensor ${name}`, what);
    const n = shape.reduce((a, b) => a * b, 1);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]) || t.data.length !== n) {
      throw new SftError(`tensor ${name}: shape [${t.shape}] (${t.data.length} values), expected [${shape}]`, what);
    }
  }
  for (const name of s.keys()) if (!specs.some((x) => x.name === name)) throw new SftError(`unexpected tensor ${name}`, what);
}

/** Validates one MicroBatch (lengths, id and position ranges, weights); errors name the field. */
export function checkMicroBatch(config: GPT2Config, mb: MicroBatch, where: string): void {
  const { B, T } = mb;
  if (!(Number.isInteger(B) && B >= 1 && Number.isInteger(T) && T >= 1)) throw new SftError(`B and T must be positive integers, got B=${B} T=${T}`, where);
  const n = B * T;
  for (const f of ['inputIds', 'targets', 'weights', 'positions', 'segments'] as const) {
    if (mb[f].length !== n) throw new SftError(`${f} has ${mb[f].length} values, expected B·T = ${n}`, where);
  }
  const V = config.vocab_size;
  for (let i = 0; i < n; i++) {
    const id = mb.inputIds[i]!;
    if (!(id >= 0 && id < V)) throw new SftError(`inputIds[${i}] = ${id} is outside the vocabulary [0, ${V})`, where);
    const w = mb.weights[i]!;
    if (!(w >= 0 && Number.isFinite(w))) throw new SftError(`weights[${i}] = ${w} must be finite and ≥ 0`, where);
    const t = mb.targets[i]!;
    if (!(t >= 0 && t < V)) {
      if (w > 0) throw new SftError(`targets[${i}] = ${t} is outside the vocabulary [0, ${V})`, where);
    }
    const p = mb.positions[i]!;
    if (!(p >= 0 && p < config.n_positions)) throw new SftError(`positions[${i}] = ${p} is outside [0, n_positions = ${config.n_positions})`, where);
    if (!(mb.segments[i]! >= 0)) throw new SftError(`segments[${i}] = ${mb.segments[i]} must be ≥ 0`, where);
  }
}

/** Targets with out-of-range values where weight is 0 replaced by 0 (any valid id works there). */
function safeTargets(config: GPT2Config, mb: MicroBatch): Int32Array {
  let bad = false;
  for (let i = 0; i < mb.targets.length; i++) if (!(mb.targets[i]! >= 0 && mb.targets[i]! < config.vocab_size)) bad = true;
  if (!bad) return mb.targets;
  return mb.targets.map((t) => (t >= 0 && t < config.vocab_size ? t : 0));
}

function emptySet(config: GPT2Config): ParamSet {
  const s: ParamSet = new Map();
  for (const { name, shape } of paramSpecs(config)) s.set(name, { shape: shape.slice(), data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });
  return s;
}

function mbFeeds(config: GPT2Config, mb: MicroBatch): Record<string, ort.Tensor> {
  const dims = [mb.B, mb.T];
  return {
    ids: new OrtTensor('int32', mb.inputIds, dims),
    targets: new OrtTensor('int32', safeTargets(config, mb), dims),
    weights: new OrtTensor('float32', mb.weights, dims),
    positions: new OrtTensor('int32', mb.positions, dims),
    segments: new OrtTensor('int32', mb.segments, dims),
  };
}

/**
 * The token feeds of a Loop graph run: `slots` (slot i = micro-batch i in the order of the `lead` dims;
 * undefined = an unused slot, left all zeros) stacked into [...lead, B, T] buffers, each row left-aligned
 * and zero-padded to T; mb_dims [...lead, 2] = each slot's (rows, length); trip = lead[0] iterations.
 */
function loopMbFeeds(config: GPT2Config, slots: readonly (MicroBatch | undefined)[], lead: readonly number[], B: number, T: number): Record<string, ort.Tensor> {
  const n = slots.length * B * T;
  const ids = new Int32Array(n);
  const targets = new Int32Array(n);
  const weights = new Float32Array(n);
  const positions = new Int32Array(n);
  const segments = new Int32Array(n);
  const mbDims = new BigInt64Array(slots.length * 2);
  slots.forEach((mb, i) => {
    if (!mb) return;
    const tg = safeTargets(config, mb);
    for (let b = 0; b < mb.B; b++) {
      const src = b * mb.T;
      const dst = (i * B + b) * T;
      ids.set(mb.inputIds.subarray(src, src + mb.T), dst);
      targets.set(tg.subarray(src, src + mb.T), dst);
      weights.set(mb.weights.subarray(src, src + mb.T), dst);
      positions.set(mb.positions.subarray(src, src + mb.T), dst);
      segments.set(mb.segments.subarray(src, src + mb.T), dst);
    }
    mbDims[i * 2] = BigInt(mb.B);
    mbDims[i * 2 + 1] = BigInt(mb.T);
  });
  const dims = [...lead, B, T];
  return {
    ids: new OrtTensor('int32', ids, dims),
    targets: new OrtTensor('int32', targets, dims),
    weights: new OrtTensor('float32', weights, dims),
    positions: new OrtTensor('int32', positions, dims),
    segments: new OrtTensor('int32', segments, dims),
    mb_dims: new OrtTensor('int64', mbDims, [...lead, 2]),
    trip: new OrtTensor('int64', BigInt64Array.of(BigInt(lead[0]!)), []),
    cond: new OrtTensor('bool', Uint8Array.of(1), []),
  };
}

/** y = x + x for x float [n]: the smallest graph that makes the execution provider initialise (TrainingEngine.create on CUDA). */
export function probeGraph(): Graph {
  const g = new Graph('probe');
  const x = g.input('x', 'float', ['n']);
  g.output(g.op('Add', [x, x], {}, { dtype: 'float', shape: ['n'] }), 'y');
  return g;
}

function paramFeeds(config: GPT2Config, s: ParamSet, prefix: string, out: Record<string, ort.Tensor>): void {
  for (const { name, shape } of paramSpecs(config)) out[prefix + name] = f32(s.get(name)!.data, shape);
}

export class TrainingEngine {
  private params: ParamSet;
  /** AdamW moments; null until the first training run or getOptimizerState (an eval-only engine never allocates them). */
  private m: ParamSet | null;
  private v: ParamSet | null;
  private step: number;
  private readonly hyper: OptimizerHyper;
  /** Micro-batches per merged micro-batch (TrainingEngineOptions.mergeMicroBatches, resolved at creation). */
  private readonly mergeFactor: number;
  private readonly sessions = new Map<string, Promise<ort.InferenceSession>>();
  /**
   * Buffers of the state before the last run, reused as the next run's pre-allocated outputs unless they
   * were handed out (getParams/getOptimizerState) while current: saves allocating and zero-filling
   * 3 × |params| floats per run.
   */
  private spare: { p: ParamSet; m: ParamSet; v: ParamSet } | null = null;
  private exposed = false;
  private running = false;
  private disposed = false;
  /** Device mechanism while the state may live on the device; null = host path. */
  private io: DeviceStateIo | null = null;
  /** Current state on the device per kind (null: the host copy is current for that kind). */
  private dev: Record<StateKind, DeviceSet | null> = { p: null, m: null, v: null };
  /** Device runs completed (the first failing one falls back to the host path). */
  private deviceRuns = 0;
  /** Host downloads done by syncToHost (for tests and the benchmark). */
  downloads = 0;
  readonly notes: string[] = [];

  /** Whether runSteps evaluates inside the run (TrainingEngineOptions.evalInRun, resolved at creation). */
  readonly evalInRun: boolean;

  private constructor(private readonly opts: TrainingEngineOptions) {
    const { config } = opts;
    this.mergeFactor = mergeFactorOf(opts.mergeMicroBatches);
    this.evalInRun = opts.evalInRun ?? envSwitch(process.env.SFT_EVAL_IN_RUN) ?? opts.device === 'cuda';
    checkParamSet(config, opts.params, 'engine params');
    this.params = opts.adoptParams ? opts.params : cloneSet(opts.params);
    if (opts.optimizer) {
      checkParamSet(config, opts.optimizer.m, 'optimizer state m');
      checkParamSet(config, opts.optimizer.v, 'optimizer state v');
      this.m = opts.adoptParams ? opts.optimizer.m : cloneSet(opts.optimizer.m);
      this.v = opts.adoptParams ? opts.optimizer.v : cloneSet(opts.optimizer.v);
      this.step = opts.optimizer.step;
    } else {
      this.m = null;
      this.v = null;
      this.step = 0;
    }
    this.hyper = { weightDecay: opts.weightDecay, beta1: opts.beta1, beta2: opts.beta2, eps: opts.eps, maxGradNorm: opts.maxGradNorm };
  }

  /** Validates the options and creates the engine (sessions are created lazily on first use). */
  static async create(opts: TrainingEngineOptions): Promise<TrainingEngine> {
    if (!(Number.isInteger(opts.stepsPerRun) && opts.stepsPerRun >= 1)) throw new SftError(`stepsPerRun must be a positive integer, got ${opts.stepsPerRun}`, 'stepsPerRun');
    const d = opts.dropout;
    if (d !== null && d !== undefined && !(d >= 0 && d < 1)) throw new SftError(`dropout must be in [0, 1), got ${d}`, 'dropout');
    if (!(opts.beta1 >= 0 && opts.beta1 < 1 && opts.beta2 >= 0 && opts.beta2 < 1)) throw new SftError(`betas must be in [0, 1), got ${opts.beta1}, ${opts.beta2}`, 'betas');
    if (!(opts.eps > 0)) throw new SftError(`eps must be > 0, got ${opts.eps}`, 'eps');
    if (!(opts.weightDecay >= 0)) throw new SftError(`weight decay must be ≥ 0, got ${opts.weightDecay}`, 'weightDecay');
    const { n_embd: C, n_head: H } = opts.config;
    if (!(Number.isInteger(C / H) && C / H > 0)) throw new SftError(`n_embd ${C} is not a multiple of n_head ${H}`, 'config.json: n_head');
    if (opts.bf16 !== undefined && typeof opts.bf16 !== 'boolean' && opts.bf16 !== 'emulate') throw new SftError(`bf16 must be true, false or 'emulate', got ${String(opts.bf16)}`, 'bf16');
    if (opts.bf16 === true && opts.device === 'cpu') {
      throw new SftError('bf16 needs --device cuda: the CPU execution provider of onnxruntime has no bfloat16 MatMul/Gemm kernels (train in fp32 on the CPU)', 'bf16');
    }
    if (opts.evalBatchesPerRun !== undefined && !(Number.isInteger(opts.evalBatchesPerRun) && opts.evalBatchesPerRun >= 1)) {
      throw new SftError(`evalBatchesPerRun must be a positive integer, got ${opts.evalBatchesPerRun}`, 'evalBatchesPerRun');
    }
    const e = new TrainingEngine(opts);
    // Fail early and clearly when CUDA is unavailable: a one-node session initialises the provider (the CUDA
    // context, cuBLAS) without building and optimising a model graph that training may never use.
    if (opts.device === 'cuda') await e.session('probe');
    return e;
  }

  private note(m: string): void {
    this.notes.push(m);
    this.opts.onNote?.(m);
  }

  /** Decided before the first training run (an eval-only engine never probes). */
  private residencyDecided = false;

  private async chooseResidency(): Promise<void> {
    if (this.residencyDecided) return;
    this.residencyDecided = true;
    const r = this.opts.stateResidency ?? 'auto';
    if (typeof r === 'object') {
      this.io = r;
      return;
    }
    if (r === 'host' || this.opts.device !== 'cuda') return;
    if (!deviceStateWanted()) {
      this.note(
        envSwitch(process.env.SFT_CUDA_STATE_ON_DEVICE) === false
          ? 'training state kept on the host between runs (SFT_CUDA_STATE_ON_DEVICE=0)'
          : "training state kept on the host between runs: this onnxruntime-node's binding cannot keep CUDA tensors between runs (SFT_CUDA_STATE_ON_DEVICE=1 tries anyway)",
      );
      return;
    }
    const probe = await probeCudaDeviceState();
    if (probe.ok) {
      this.io = new CudaGpuBufferIo();
      this.note('training state kept on the GPU between runs');
    } else {
      this.note(`training state kept on the host between runs: onnxruntime-node cannot keep CUDA tensors between runs here (${probe.detail})`);
    }
  }

  /** 'device' while parameters and moments stay on the accelerator between runs, else 'host' (decided at the first runSteps). */
  get stateResidency(): 'host' | 'device' {
    return this.io ? 'device' : 'host';
  }

  get config(): GPT2Config {
    return this.opts.config;
  }

  /** Optimizer steps taken so far. */
  get stepCount(): number {
    return this.step;
  }

  private session(kind: 'train1' | 'trainA' | 'grads' | 'eval' | 'evalLoop' | 'probe'): Promise<ort.InferenceSession> {
    if (this.disposed) throw new Error('TrainingEngine used after dispose()');
    const train = kind === 'train1' || kind === 'trainA';
    // Device-state training sessions are separate entries: a failed device run falls back to plain ones.
    const key = train && this.io ? `${kind}:dev` : kind;
    let s = this.sessions.get(key);
    if (!s) {
      const { config } = this.opts;
      const gopts = { dropout: dropoutRates(config, this.opts.dropout), bf16: this.opts.bf16 ?? false, seed: this.opts.seed ?? 0, flatState: this.flatState(), flatNoDecay: envSwitch(process.env.SFT_FLAT_NO_DECAY) ?? false, fusedLmHead: envSwitch(process.env.SFT_FUSED_LM_HEAD) ?? true, hoistInvariants: envSwitch(process.env.SFT_HOIST_INVARIANTS) ?? true, variants: modelVariantsFromEnv() };
      // The eval graphs compute the forward as training does (the same bf16 storage variants and LayerNorm fold:
      // fewer bytes per token, the loss of the model that is trained); SFT_EVAL_VARIANTS=0 builds them plain.
      const evalBf16 = { bf16: gopts.bf16, variants: (envSwitch(process.env.SFT_EVAL_VARIANTS) ?? true) ? gopts.variants : undefined };
      const graph = kind === 'probe'
        ? probeGraph()
        : train
        ? buildTrainGraph(config, this.hyper, { ...gopts, accumulate: kind === 'trainA', evalInRun: this.evalInRun, evalVariants: evalBf16.variants })
        : kind === 'grads'
          ? buildGradsGraph(config, gopts)
          : kind === 'evalLoop'
            ? buildEvalLoopGraph(config, evalBf16)
            : buildEvalGraph(config, evalBf16);
      // The training and eval-loop graphs' main graphs are already just their Loop; the others get wrapped (see toModelBytes).
      const bytes = graph.toModelBytes({ singleIterationLoop: kind === 'grads' || kind === 'eval' });
      let preferredOutputLocation: Record<string, ort.Tensor.DataLocation> | undefined;
      if (train && this.io) {
        preferredOutputLocation = { loss: 'cpu', grad_norm: 'cpu', tokens: 'cpu', ...(this.evalInRun ? { eval_nll_sum: 'cpu' as const, eval_tokens: 'cpu' as const } : {}) };
        for (const { name } of paramSpecs(config)) for (const k of STATE_KINDS) preferredOutputLocation[`${k}_out:${name}`] = this.io.outputLocation;
      }
      s = createSession(bytes, { device: this.opts.device, threads: this.opts.threads, preferredOutputLocation, allowSpinning: this.allowSpinning() });
      this.sessions.set(key, s);
      s.catch(() => this.sessions.delete(key));
    }
    return s;
  }

  private flatState(): boolean {
    if (this.opts.flatState !== undefined) return this.opts.flatState;
    return envSwitch(process.env.SFT_FLAT_STATE) ?? false;
  }

  private allowSpinning(): boolean | undefined {
    if (this.opts.allowSpinning !== undefined) return this.opts.allowSpinning;
    return envSwitch(process.env.SFT_ORT_SPINNING);
  }

  /** Allocates zeroed AdamW moments if they are not there yet (fresh optimizer state). */
  private moments(): { m: ParamSet; v: ParamSet } {
    if (!this.m || !this.v) {
      this.m = emptySet(this.opts.config);
      this.v = emptySet(this.opts.config);
    }
    return { m: this.m, v: this.v };
  }

  /** Whether the AdamW moments have been allocated (for tests and benchmarks: an eval-only engine has none). */
  get momentsAllocated(): boolean {
    return this.m !== null;
  }

  private hostSet(k: StateKind): ParamSet {
    return k === 'p' ? this.params : k === 'm' ? this.moments().m : this.moments().v;
  }

  /** Feeds `<k>:<name>` from the device copy when it is current, else from the host copy. */
  private stateFeeds(k: StateKind, prefix: string, out: Record<string, ort.Tensor>): void {
    const d = this.dev[k];
    if (!d) return paramFeeds(this.opts.config, this.hostSet(k), prefix, out);
    for (const { name } of paramSpecs(this.opts.config)) out[prefix + name] = d.tensors.get(name)!.tensor;
  }

  private disposeDevice(k: StateKind): void {
    const d = this.dev[k];
    this.dev[k] = null;
    if (d) for (const t of d.tensors.values()) t.dispose();
  }

  /**
   * Makes the host copies current (downloads what lives only on the device; the device copies stay in use).
   * Call before getParams/getOptimizerState; a no-op when the state is on the host.
   */
  async syncToHost(): Promise<void> {
    if (!this.io) return;
    const { config } = this.opts;
    const specs = paramSpecs(config);
    for (const k of STATE_KINDS) {
      const d = this.dev[k];
      if (!d || d.synced) continue;
      const data = await this.io.download(specs.map(({ name, shape }) => ({ tensor: d.tensors.get(name)!, shape })));
      const set: ParamSet = new Map();
      specs.forEach(({ name, shape }, i) => {
        if (data[i]!.length !== shape.reduce((a, b) => a * b, 1)) throw new Error(`download of ${k}:${name} gave ${data[i]!.length} values`);
        set.set(name, { shape: shape.slice(), data: data[i]! });
      });
      if (k === 'p') this.params = set;
      else if (k === 'm') this.m = set;
      else this.v = set;
      d.synced = true;
      this.downloads++;
    }
    this.spare = null;
  }

  private hostCurrent(k: StateKind): boolean {
    const d = this.dev[k];
    return !d || d.synced;
  }

  /**
   * Runs `steps` (1..K) optimizer steps in one session.run; returns per-step metrics. Steps marked `eval` (only
   * with evalInRun) are followed, inside the run, by an evaluation over `opts.evalBatches`, reported in their
   * metrics' `eval` exactly as evalBatches would sum them.
   */
  async runSteps(steps: StepInput[], opts: { evalBatches?: readonly MicroBatch[] } = {}): Promise<StepMetrics[]> {
    if (this.running) throw new Error('TrainingEngine.runSteps called while a run is in progress');
    this.running = true;
    try {
      await this.chooseResidency();
      return await this.runStepsOnce(steps, opts.evalBatches ?? []);
    } finally {
      this.running = false;
    }
  }

  private async runStepsOnce(input: StepInput[], evalMbs: readonly MicroBatch[]): Promise<StepMetrics[]> {
    const { config, stepsPerRun } = this.opts;
    const K = input.length;
    if (K < 1 || K > stepsPerRun) throw new SftError(`runSteps takes 1..${stepsPerRun} steps, got ${K}`, 'runSteps');
    input.forEach((s, k) => {
      s.microBatches.forEach((mb, a) => checkMicroBatch(config, mb, `steps[${k}].microBatches[${a}]`));
    });
    const evalSteps = input.map((s) => s.eval === true);
    const evaluates = evalSteps.some((e) => e);
    if (evaluates && !this.evalInRun) throw new SftError('a step asks for an evaluation inside the run, but this engine evaluates between runs (evalInRun is off)', 'runSteps');
    if (evaluates && evalMbs.length === 0) throw new SftError('a step asks for an evaluation, but no eval batches were given', 'runSteps');
    if (evaluates) evalMbs.forEach((mb, i) => checkMicroBatch(config, mb, `eval batch ${i}`));
    const factor = this.mergeFactor;
    const steps = factor > 1 ? input.map((s) => ({ ...s, microBatches: mergeMicroBatches(s.microBatches, factor) })) : input;
    let A = 0;
    let B = 0;
    let T = 0;
    steps.forEach((s, k) => {
      if (s.microBatches.length === 0) throw new SftError(`step ${k} has no micro-batches`, `steps[${k}]`);
      if (!Number.isFinite(s.lr) || s.lr < 0) throw new SftError(`learning rate ${s.lr} must be finite and ≥ 0`, `steps[${k}].lr`);
      A = Math.max(A, s.microBatches.length);
      s.microBatches.forEach((mb) => {
        B = Math.max(B, mb.B);
        T = Math.max(T, mb.T);
      });
    });
    const slots: (MicroBatch | undefined)[] = [];
    const nMicro = new BigInt64Array(K);
    const hyper = new Float32Array(K * 3);
    steps.forEach((s, k) => {
      nMicro[k] = BigInt(s.microBatches.length);
      for (let a = 0; a < A; a++) slots.push(s.microBatches[a]);
      const t = this.step + k + 1;
      const { beta1, beta2, weightDecay } = this.hyper;
      hyper[k * 3] = s.lr / (1 - Math.pow(beta1, t));
      hyper[k * 3 + 1] = Math.sqrt(1 - Math.pow(beta2, t));
      hyper[k * 3 + 2] = 1 - s.lr * weightDecay;
    });
    this.moments();
    const feeds = loopMbFeeds(config, slots, [K, A], B, T);
    feeds.hyper = new OrtTensor('float32', hyper, [K, 3]);
    if (A > 1) feeds.n_micro = new OrtTensor('int64', nMicro, [K]);
    // In-run evaluation: the eval set goes with a run only when one of its steps evaluates (else E = 0).
    const E = evaluates ? evalMbs.length : 0;
    if (this.evalInRun) {
      const ev = evalMbs.slice(0, E);
      const EB = Math.max(1, ...ev.map((mb) => mb.B));
      const ET = Math.max(1, ...ev.map((mb) => mb.T));
      const f = loopMbFeeds(config, ev, [E], EB, ET);
      for (const k of ['ids', 'targets', 'weights', 'positions', 'segments'] as const) feeds[`eval_${k}`] = f[k]!;
      feeds.eval_dims = f.mb_dims!;
      feeds.eval_trip = f.trip!;
      feeds.eval_at = new OrtTensor('bool', Uint8Array.from(evalSteps, (e) => (e ? 1 : 0)), [K]);
    }
    let out: ort.InferenceSession.ReturnType;
    if (this.io) {
      try {
        out = await this.runOnDevice(A > 1 ? 'trainA' : 'train1', feeds);
      } catch (e) {
        if (this.deviceRuns > 0 || STATE_KINDS.some((k) => this.dev[k])) throw e;
        // The first device run failed while the state was still on the host: keep it there from now on.
        this.note(`training state kept on the host between runs: the first run with the state on the device failed (${(e instanceof Error ? e.message : String(e)).split('\n')[0]!.slice(0, 300)})`);
        const io = this.io;
        this.io = null;
        await io.release();
        for (const key of [...this.sessions.keys()].filter((k) => k.endsWith(':dev'))) {
          const s = this.sessions.get(key)!;
          this.sessions.delete(key);
          await s.then((x) => x.release()).catch(() => undefined);
        }
        out = await this.runOnHost(A > 1 ? 'trainA' : 'train1', feeds);
      }
    } else {
      out = await this.runOnHost(A > 1 ? 'trainA' : 'train1', feeds);
    }
    this.step += K;
    const loss = toF32(out.loss!);
    const norm = toF32(out.grad_norm!);
    const tokens = toF32(out.tokens!);
    const evNll = this.evalInRun ? toF32(out.eval_nll_sum!) : null;
    const evTok = this.evalInRun ? toF32(out.eval_tokens!) : null;
    return steps.map((_, k) => {
      const m: StepMetrics = { loss: loss[k]!, gradNorm: norm[k]!, tokens: tokens[k]! };
      if (evalSteps[k]) {
        // Summed per eval micro-batch in double, as a caller of evalBatches sums them.
        let nllSum = 0;
        let tok = 0;
        for (let e = 0; e < E; e++) {
          nllSum += evNll![k * E + e]!;
          tok += evTok![k * E + e]!;
        }
        m.eval = { nllSum, tokens: tok };
      }
      return m;
    });
  }

  /** Host path: state fed from and returned to host arrays. */
  private async runOnHost(kind: 'train1' | 'trainA', feeds: Record<string, ort.Tensor>): Promise<ort.InferenceSession.ReturnType> {
    const { config } = this.opts;
    const { m, v } = this.moments();
    paramFeeds(config, this.params, 'p:', feeds);
    paramFeeds(config, m, 'm:', feeds);
    paramFeeds(config, v, 'v:', feeds);
    const session = await this.session(kind);
    const next = this.spare ?? { p: emptySet(config), m: emptySet(config), v: emptySet(config) };
    this.spare = null;
    const fetches: Record<string, ort.Tensor | null> = { loss: null, grad_norm: null, tokens: null, ...this.evalFetches() };
    paramFeeds(config, next.p, 'p_out:', fetches as Record<string, ort.Tensor>);
    paramFeeds(config, next.m, 'm_out:', fetches as Record<string, ort.Tensor>);
    paramFeeds(config, next.v, 'v_out:', fetches as Record<string, ort.Tensor>);
    const out = await session.run(feeds, fetches);
    // ORT writes the updated state into `next`; onnxruntime-node 1.29 also returns it copied into new arrays.
    // Either holds the run's result: take the returned arrays (no third pass over 3 × |params| floats) and
    // keep `next` as the spare output buffers of the following run.
    const fresh = { p: new Map(), m: new Map(), v: new Map() } as { p: ParamSet; m: ParamSet; v: ParamSet };
    let reusable = true;
    for (const [prefix, set, dst] of [['p_out:', next.p, fresh.p], ['m_out:', next.m, fresh.m], ['v_out:', next.v, fresh.v]] as const) {
      for (const { name, shape } of paramSpecs(config)) {
        const data = toF32(out[prefix + name]!);
        const t = set.get(name)!;
        if (data.length !== t.data.length) throw new Error(`training run returned ${data.length} values for ${prefix}${name}, expected ${t.data.length}`);
        if (data.buffer === t.data.buffer && data.byteOffset === t.data.byteOffset) reusable = false;
        dst.set(name, { shape: shape.slice(), data });
      }
    }
    this.spare = reusable ? next : this.exposed ? null : { p: this.params, m, v };
    this.exposed = false;
    this.params = fresh.p;
    this.m = fresh.m;
    this.v = fresh.v;
    return out;
  }

  /** The in-run evaluation's outputs, fetched to the host (none without evalInRun). */
  private evalFetches(): Record<string, null> {
    return this.evalInRun ? { eval_nll_sum: null, eval_tokens: null } : {};
  }

  /** Device path: state fed from the device copies (or the host on the first run) and kept on the device. */
  private async runOnDevice(kind: 'train1' | 'trainA', feeds: Record<string, ort.Tensor>): Promise<ort.InferenceSession.ReturnType> {
    const io = this.io!;
    const { config } = this.opts;
    for (const k of STATE_KINDS) this.stateFeeds(k, `${k}:`, feeds);
    const session = await this.session(kind);
    const fetches: Record<string, null> = { loss: null, grad_norm: null, tokens: null, ...this.evalFetches() };
    for (const { name } of paramSpecs(config)) for (const k of STATE_KINDS) fetches[`${k}_out:${name}`] = null;
    const out = await session.run(feeds, fetches);
    const adopted: DeviceTensor[] = [];
    const next: Record<StateKind, DeviceSet> = { p: { tensors: new Map(), synced: false }, m: { tensors: new Map(), synced: false }, v: { tensors: new Map(), synced: false } };
    try {
      for (const k of STATE_KINDS) {
        for (const { name } of paramSpecs(config)) {
          const t = io.adopt(out[`${k}_out:${name}`]!, `${k}_out:${name}`);
          adopted.push(t);
          next[k].tensors.set(name, t);
        }
      }
    } catch (e) {
      for (const t of adopted) t.dispose();
      for (const { name } of paramSpecs(config)) for (const k of STATE_KINDS) {
        const t = out[`${k}_out:${name}`];
        if (t && t.location !== 'cpu' && !adopted.some((a) => a.tensor === t)) t.dispose();
      }
      throw e;
    }
    // The run has finished with the old device tensors: release them and make the new ones current.
    for (const k of STATE_KINDS) {
      this.disposeDevice(k);
      this.dev[k] = next[k];
    }
    this.spare = null;
    this.deviceRuns++;
    return out;
  }

  /** Σ w·NLL and Σ w of one micro-batch (no dropout, no update). */
  async evalBatch(mb: MicroBatch): Promise<{ nllSum: number; tokens: number }> {
    const r = await this.evalTokens(mb);
    return { nllSum: r.nllSum, tokens: r.tokens };
  }

  /** Like evalBatch plus per-position nll (unweighted) and logsumexp, both [B,T]. */
  async evalTokens(mb: MicroBatch): Promise<{ nllSum: number; tokens: number; nll: Float32Array; lse: Float32Array }> {
    const { config } = this.opts;
    checkMicroBatch(config, mb, 'eval batch');
    const feeds = mbFeeds(config, mb);
    this.stateFeeds('p', 'p:', feeds);
    const out = await (await this.session('eval')).run(feeds);
    return { nllSum: toNumber(out.nll_sum!), tokens: toNumber(out.tokens!), nll: toF32(out.nll!), lse: toF32(out.lse!) };
  }

  /**
   * evalBatch over several micro-batches, in order. With evalBatchesPerRun > 1 (the default on CUDA) up to
   * that many micro-batches go to one run of the eval Loop (the parameters are sent once per run, or not at
   * all when they live on the device); with 1 (the CPU default) it is exactly evalBatch per micro-batch.
   */
  async evalBatches(mbs: readonly MicroBatch[]): Promise<{ nllSum: number; tokens: number }[]> {
    const { config } = this.opts;
    const E = this.opts.evalBatchesPerRun ?? (this.opts.device === 'cuda' ? 64 : 1);
    const res: { nllSum: number; tokens: number }[] = [];
    if (E === 1) {
      for (const mb of mbs) res.push(await this.evalBatch(mb));
      return res;
    }
    for (let i0 = 0; i0 < mbs.length; i0 += E) {
      const chunk = mbs.slice(i0, i0 + E);
      let B = 0;
      let T = 0;
      chunk.forEach((mb, j) => {
        checkMicroBatch(config, mb, `eval batch ${i0 + j}`);
        B = Math.max(B, mb.B);
        T = Math.max(T, mb.T);
      });
      const feeds = loopMbFeeds(config, chunk, [chunk.length], B, T);
      this.stateFeeds('p', 'p:', feeds);
      const out = await (await this.session('evalLoop')).run(feeds);
      const nll = toF32(out.nll_sum!);
      const tok = toF32(out.tokens!);
      chunk.forEach((_, j) => res.push({ nllSum: nll[j]!, tokens: tok[j]! }));
    }
    return res;
  }

  /**
   * Loss and gradient of one optimizer step's micro-batches at the current parameters, without updating:
   * loss = Σ NLL / Σ w, grads of that loss (before clipping), and their global L2 norm.
   */
  async gradients(mbs: MicroBatch[]): Promise<{ loss: number; tokens: number; gradNorm: number; grads: ParamSet }> {
    const { config } = this.opts;
    let N = 0;
    mbs.forEach((mb, i) => {
      checkMicroBatch(config, mb, `microBatches[${i}]`);
      for (const w of mb.weights) N += w;
    });
    const invN = N > 0 ? 1 / N : 0;
    const session = await this.session('grads');
    const grads: ParamSet = new Map();
    let nll = 0;
    for (const mb of mbs) {
      const feeds = mbFeeds(config, mb);
      feeds.inv_n = scalarF32(invN);
      this.stateFeeds('p', 'p:', feeds);
      const out = await session.run(feeds);
      nll += toNumber(out.nll_sum!);
      for (const { name, shape } of paramSpecs(config)) {
        const gdata = toF32(out['grad:' + name]!);
        const cur = grads.get(name);
        if (!cur) grads.set(name, { shape: shape.slice(), data: gdata.slice() });
        else for (let i = 0; i < gdata.length; i++) cur.data[i]! += gdata[i]!;
      }
    }
    let sq = 0;
    for (const t of grads.values()) {
      let s = 0;
      for (const x of t.data) s += x * x;
      sq += s;
    }
    return { loss: nll * invN, tokens: N, gradNorm: Math.sqrt(sq), grads };
  }

  private requireHost(kinds: readonly StateKind[], what: string): void {
    if (kinds.some((k) => !this.hostCurrent(k))) throw new Error(`TrainingEngine.${what}: the current state is on the device; await syncToHost() first`);
  }

  /** The current parameters (host copies owned by the engine; do not mutate). Device state: syncToHost() first. */
  getParams(): ParamSet {
    this.requireHost(['p'], 'getParams');
    this.exposed = true;
    return this.params;
  }

  /** Replaces the parameters (e.g. after loading a checkpoint); moments are kept. */
  setParams(params: ParamSet): void {
    checkParamSet(this.opts.config, params, 'params');
    this.disposeDevice('p');
    this.params = cloneSet(params);
    this.spare = null;
  }

  /** The moments and step (host copies; do not mutate). Device state: syncToHost() first. */
  getOptimizerState(): OptimizerState {
    this.requireHost(['m', 'v'], 'getOptimizerState');
    this.exposed = true;
    const { m, v } = this.moments();
    return { m, v, step: this.step };
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    for (const k of STATE_KINDS) this.disposeDevice(k);
    if (this.io) await this.io.release();
    await releaseSessions(this.sessions);
  }
}

export interface ForwardModel {
  /** ids [B,T] (+ positions 0..T-1 and segments 1 by default) → [B,T,V] logits or log-probabilities. */
  run(input: { B: number; T: number; inputIds: Int32Array; positions?: Int32Array; segments?: Int32Array }): Promise<Float32Array>;
  dispose(): Promise<void>;
}

/** A forward-only model for inference (perplexity, scoring): per-position logits or log-softmax. */
export async function createForward(config: GPT2Config, params: ParamSet, device: Device, opts: { output?: ForwardOutput; bf16?: boolean; threads?: number } = {}): Promise<ForwardModel> {
  checkParamSet(config, params, 'forward params');
  const output = opts.output ?? 'logits';
  const session = await createSession(buildForwardGraph(config, output, { bf16: opts.bf16 }).toModelBytes({ singleIterationLoop: true }), { device, threads: opts.threads });
  const pf: Record<string, ort.Tensor> = {};
  paramFeeds(config, params, 'p:', pf);
  return {
    async run(input) {
      const { B, T, inputIds } = input;
      const n = B * T;
      if (inputIds.length !== n) throw new SftError(`inputIds has ${inputIds.length} values, expected B·T = ${n}`, 'forward input');
      const positions = input.positions ?? Int32Array.from({ length: n }, (_, i) => i % T);
      const segments = input.segments ?? new Int32Array(n).fill(1);
      checkMicroBatch(config, { B, T, inputIds, targets: new Int32Array(n), weights: new Float32Array(n), positions, segments }, 'forward input');
      const dims = [B, T];
      const out = await session.run({ ...pf, ids: new OrtTensor('int32', inputIds, dims), positions: new OrtTensor('int32', positions, dims), segments: new OrtTensor('int32', segments, dims) });
      return toF32(out[output]!);
    },
    async dispose() {
      await session.release();
    },
  };
}

export type { ParamTensor };
