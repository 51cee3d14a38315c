/**
 * The engine's bridge to onnxruntime-node: session creation for 'cpu' | 'cuda' (CUDA with CPU fallback
 * disabled, and a clear SftError when the CUDA provider library is missing), and host ⇄ ort.Tensor helpers.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { cudaSessionOptions, explainCudaFailure } from './cudaProvider';
import type { DType } from './graph/graph';
import { SftError } from '../util/errors';

export type Device = 'cpu' | 'cuda';

export interface SessionOptions {
  device: Device;
  /** Graph optimisation level; 'all' by default. */
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Intra-op threads (0 = ORT default). */
  threads?: number;
  /**
   * Where outputs are returned ('cpu' by default; 'gpu-buffer' keeps them on the device, see deviceState.ts),
   * one location for all or per output name. Setting it switches the binding to IO binding, which ignores
   * pre-allocated outputs.
   */
  preferredOutputLocation?: ort.Tensor.DataLocation | Record<string, ort.Tensor.DataLocation>;
  /** false: intra-op threads do not spin while waiting (ORT's session.intra_op.allow_spinning = 0). */
  allowSpinning?: boolean;
}

const OPT_LEVELS = ['disabled', 'basic', 'extended', 'all'] as const;
type OptLevel = (typeof OPT_LEVELS)[number];

/**
 * SFT_ORT_OPT_LEVEL = disabled | basic | extended | all: ONNX Runtime's graph optimisation level for sessions whose
 * caller did not choose one (default 'all'). A diagnostic for the GPU check: creating the GPT-2 124M training session
 * takes ~8 s on the H200 and its graph is already fused by hand, so a lower level may cost nothing at run time (on
 * this CPU: 3.1 s at 'all', 2.4 s at 'basic', 1.1 s 'disabled').
 */
export function optimizationFromEnv(env: NodeJS.ProcessEnv = process.env): OptLevel | undefined {
  const v = env.SFT_ORT_OPT_LEVEL?.trim();
  if (!v) return undefined;
  if (!(OPT_LEVELS as readonly string[]).includes(v)) throw new SftError(`SFT_ORT_OPT_LEVEL must be one of ${OPT_LEVELS.join(', ')}, got ${JSON.stringify(v)}`, 'environment');
  return v as OptLevel;
}

/** `model`: ONNX bytes, or the path of a model file (external data next to it). */
export async function createSession(model: Uint8Array | string, opts: SessionOptions): Promise<ort.InferenceSession> {
  const optimization = opts.optimization ?? optimizationFromEnv();
  // CUDA: the EP with CPU fallback disabled, as cudaProvider defines it; CPU: the CPU EP.
  const base: ort.InferenceSession.SessionOptions & { extra?: { session?: Record<string, string> } } =
    opts.device === 'cuda'
      ? cudaSessionOptions(0, { optimization, threads: opts.threads })
      : { executionProviders: ['cpu'], graphOptimizationLevel: optimization ?? 'all', ...(opts.threads ? { intraOpNumThreads: opts.threads } : {}) };
  const so: ort.InferenceSession.SessionOptions = {
    ...base,
    ...(opts.preferredOutputLocation ? { preferredOutputLocation: opts.preferredOutputLocation } : {}),
    // SFT_ORT_ARENA=0 turns ONNX Runtime's CPU memory arena off: GPT-2 124M training peaks at ~6.6 GB instead
    // of ~9.2 GB, ~15 % slower (README, Performance).
    ...(process.env.SFT_ORT_ARENA === '0' ? { enableCpuMemArena: false } : {}),
    ...profilingOptions(),
  };
  const session: Record<string, string> = { ...base.extra?.session };
  if (opts.allowSpinning === false) session['intra_op.allow_spinning'] = '0';
  if (Object.keys(session).length > 0) (so as Record<string, unknown>).extra = { session };
  try {
    return typeof model === 'string' ? await ort.InferenceSession.create(model, so) : await ort.InferenceSession.create(model, so);
  } catch (e) {
    if (opts.device === 'cuda') throw explainCudaFailure(e);
    throw e;
  }
}

/**
 * An on/off environment switch (SFT_FLAT_STATE, SFT_ORT_SPINNING, SFT_CUDA_STATE_ON_DEVICE): unset or blank →
 * undefined (the caller's default), 0/false/no/off (any case, surrounding blanks ignored) → false, else true.
 */
export function envSwitch(value: string | undefined): boolean | undefined {
  const v = value?.trim();
  if (v === undefined || v === '') return undefined;
  return !/^(0|false|no|off)$/i.test(v);
}

let profiledSessions = 0;

/**
 * SFT_ORT_PROFILE=<path prefix> turns ONNX Runtime's profiler on for every session this process creates (a
 * diagnostic for bench/ort-profile.ts; off by default). Each session gets its own prefix `<prefix>-<pid>-<n>`
 * (ORT appends `_<date>_<time>_<ms>.json`) and ORT writes the Chrome-trace JSON when the session is released.
 * The prefix's folder is created here: ORT silently writes nothing when it is missing.
 */
function profilingOptions(): Pick<ort.InferenceSession.SessionOptions, 'enableProfiling' | 'profileFilePrefix'> {
  const prefix = process.env.SFT_ORT_PROFILE;
  if (!prefix) return {};
  fs.mkdirSync(path.dirname(path.resolve(prefix)), { recursive: true });
  return { enableProfiling: true, profileFilePrefix: `${prefix}-${process.pid}-${++profiledSessions}` };
}

const ORT_TYPE: Record<DType, ort.Tensor.Type> = {
  float: 'float32',
  double: 'float64',
  float16: 'float16',
  bfloat16: 'bfloat16' as ort.Tensor.Type,
  int64: 'int64',
  int32: 'int32',
  bool: 'bool',
  uint8: 'uint8',
};

/** Empties a cache of sessions (created or still being created) and releases each; one that failed to create has nothing to release. */
export async function releaseSessions(cache: Map<string, Promise<ort.InferenceSession>>): Promise<void> {
  const all = [...cache.values()];
  cache.clear();
  for (const s of all) {
    try {
      await (await s).release();
    } catch {
      // a session that failed to create has nothing to release
    }
  }
}

export function ortType(d: DType): ort.Tensor.Type {
  return ORT_TYPE[d];
}

export function f32(data: Float32Array, dims: readonly number[]): ort.Tensor {
  return new ort.Tensor('float32', data, dims);
}

export function i64(data: ArrayLike<number>, dims: readonly number[]): ort.Tensor {
  const b = new BigInt64Array(data.length);
  for (let i = 0; i < data.length; i++) b[i] = BigInt(data[i]!);
  return new ort.Tensor('int64', b, dims);
}

export function scalarF32(v: number): ort.Tensor {
  return new ort.Tensor('float32', Float32Array.of(v), []);
}

export function scalarI64(v: number): ort.Tensor {
  return new ort.Tensor('int64', BigInt64Array.of(BigInt(v)), []);
}

/** Float32 data of an output (copied when ORT returned another float type). */
export function toF32(t: ort.Tensor): Float32Array {
  if (t.data instanceof Float32Array) return t.data;
  return Float32Array.from(t.data as ArrayLike<number>);
}

export function toNumber(t: ort.Tensor): number {
  const v = (t.data as ArrayLike<number | bigint>)[0];
  return Number(v);
}
