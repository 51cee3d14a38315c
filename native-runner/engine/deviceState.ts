/**
 * Keeping the training state (parameters, AdamW m and v) on the accelerator between `session.run`s, and the
 * eval graph that scores several micro-batches per run.
 *
 * How onnxruntime-node 1.29 can hold a tensor on a device between runs: a session created with
 * `preferredOutputLocation: 'gpu-buffer'` (per output name) binds those outputs with IO binding and returns
 * them as `Tensor`s whose `location` is 'gpu-buffer' (an External holding the OrtValue); such a tensor can be
 * fed as an input of a later run and must be `dispose()`d. Its `getData()`/`download()` throws "not
 * implemented" in the Node binding, so the engine downloads by feeding the tensors to a session whose outputs
 * are on the CPU (`downloadGraph`: Identity per tensor).
 * Caveat (read from the binding's source, not verified on a GPU here): the binding names that device memory
 * "WebGPU_Buf", i.e. it was written for the WebGPU provider; whether ONNX Runtime's CUDA provider accepts
 * such bindings is decided at run time by `probeCudaDeviceState` (a child process, so that a crash there
 * cannot take the runner down). When the probe fails the engine keeps the state on the host.
 *
 * `DeviceStateIo` abstracts the device-specific parts so that the engine's bookkeeping (which copy is
 * current, when to download, what to dispose) can be tested on the CPU with a fake device.
 */
import { spawn } from 'node:child_process';
import type * as ort from 'onnxruntime-node';
import type { GPT2Config } from '../model/types';
import { Graph } from './graph/graph';
import type { Bf16Mode, ModelVariants } from './gpt2Graph';
import { evalLoop, mbInputs, paramInputs } from './trainGraph';
import { createSession, envSwitch, releaseSessions, toF32 } from './ortSession';

/** One state tensor held by the device (owned: dispose exactly once). */
export interface DeviceTensor {
  /** What is fed to the next run. */
  readonly tensor: ort.Tensor;
  dispose(): void;
}

export interface DeviceStateIo {
  /** Describes the mechanism in notes and errors. */
  readonly name: string;
  /** The preferredOutputLocation requested for the state outputs of the training session. */
  readonly outputLocation: ort.Tensor.DataLocation;
  /** Takes ownership of a state output of a run; throws if it did not come back on the device. */
  adopt(t: ort.Tensor, what: string): DeviceTensor;
  /** Host copies of device tensors (shapes as given), in order. */
  download(items: { tensor: DeviceTensor; shape: number[] }[]): Promise<Float32Array[]>;
  release(): Promise<void>;
}

/**
 * onnxruntime-node versions whose binding is known to bind 'gpu-buffer' outputs to WebGPU memory, which a CUDA
 * session cannot serve ("Failed to find allocator for device … VendorId:0", seen with 1.29.0's real CUDA
 * provider on stub CUDA libraries, bench/cuda-placement): the probe would only cost a child process.
 */
export const ORT_NODE_WITHOUT_CUDA_RESIDENCY = ['1.29.0'];

/**
 * Whether to try keeping the state on the GPU: SFT_CUDA_STATE_ON_DEVICE=0 off, =1 on (probe anyway); unset: on
 * unless the installed onnxruntime-node is one known not to support it.
 */
export function deviceStateWanted(env: NodeJS.ProcessEnv = process.env, ortVersion: string = installedOrtVersion()): boolean {
  return envSwitch(env.SFT_CUDA_STATE_ON_DEVICE) ?? !ORT_NODE_WITHOUT_CUDA_RESIDENCY.includes(ortVersion);
}

function installedOrtVersion(): string {
  try {
    return (require('onnxruntime-node/package.json') as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** Identity per tensor: inputs x<i> → outputs y<i> (float, given shapes); the session's outputs are on the CPU. */
export function downloadGraph(shapes: number[][]): Graph {
  const g = new Graph('download');
  shapes.forEach((s, i) => g.output(g.op('Identity', [g.input(`x${i}`, 'float', s)], {}, { dtype: 'float', shape: s }), `y${i}`));
  return g;
}

/** The CUDA implementation ('gpu-buffer' tensors of onnxruntime-node). */
export class CudaGpuBufferIo implements DeviceStateIo {
  readonly name = "onnxruntime-node 'gpu-buffer' outputs on the CUDA provider";
  readonly outputLocation: ort.Tensor.DataLocation = 'gpu-buffer';
  private downloads = new Map<string, Promise<ort.InferenceSession>>();

  adopt(t: ort.Tensor, what: string): DeviceTensor {
    if (t.location !== 'gpu-buffer') throw new Error(`${what} came back with location '${t.location}', not 'gpu-buffer'`);
    let live = true;
    return {
      tensor: t,
      dispose() {
        if (live) {
          live = false;
          t.dispose();
        }
      },
    };
  }

  async download(items: { tensor: DeviceTensor; shape: number[] }[]): Promise<Float32Array[]> {
    const shapes = items.map((x) => x.shape);
    const key = JSON.stringify(shapes);
    let s = this.downloads.get(key);
    if (!s) {
      s = createSession(downloadGraph(shapes).toModelBytes(), { device: 'cuda' });
      this.downloads.set(key, s);
    }
    const feeds: Record<string, ort.Tensor> = {};
    items.forEach((x, i) => (feeds[`x${i}`] = x.tensor.tensor));
    const out = await (await s).run(feeds);
    return items.map((_, i) => {
      const y = out[`y${i}`]!;
      if (y.location !== 'cpu') throw new Error(`download of a device tensor came back at '${y.location}'`);
      return toF32(y);
    });
  }

  async release(): Promise<void> {
    await releaseSessions(this.downloads);
  }
}

export interface ProbeResult {
  ok: boolean;
  detail: string;
}
let probeResult: Promise<ProbeResult> | null = null;

/**
 * Checks, in a child process, the whole chain the engine relies on with the CUDA provider: a run whose
 * output stays on the device, that tensor fed to a second run (device → device), its result fed to a
 * session with CPU outputs (download), values checked, tensors disposed. Cached per process.
 */
export function probeCudaDeviceState(timeoutMs = 180_000): Promise<ProbeResult> {
  probeResult ??= runProbe(timeoutMs);
  return probeResult;
}

async function runProbe(timeoutMs: number): Promise<ProbeResult> {
  let ortPath: string;
  try {
    ortPath = require.resolve('onnxruntime-node');
  } catch (e) {
    return { ok: false, detail: `cannot locate onnxruntime-node for the probe: ${(e as Error).message}` };
  }
  const g = new Graph('probe');
  g.output(g.mul(g.input('x', 'float', [4]), g.scalar(2)), 'y');
  const model = Buffer.from(g.toModelBytes({ singleIterationLoop: true })).toString('base64');
  const code = `
const ort = require(${JSON.stringify(ortPath)});
const bytes = Buffer.from(${JSON.stringify(model)}, 'base64');
const so = (loc) => ({ executionProviders: [{ name: 'cuda', deviceId: 0 }], extra: { session: { disable_cpu_ep_fallback: '1' } }, ...(loc ? { preferredOutputLocation: loc } : {}) });
(async () => {
  const dev = await ort.InferenceSession.create(bytes, so('gpu-buffer'));
  const host = await ort.InferenceSession.create(bytes, so(null));
  const a = (await dev.run({ x: new ort.Tensor('float32', Float32Array.of(1, 2, 3, 4), [4]) })).y;
  if (a.location !== 'gpu-buffer') throw new Error('first output at ' + a.location);
  const b = (await dev.run({ x: a })).y;
  if (b.location !== 'gpu-buffer') throw new Error('second output at ' + b.location);
  a.dispose();
  const c = (await host.run({ x: b })).y;
  b.dispose();
  const v = Array.from(c.data);
  if (c.location !== 'cpu' || v.join(',') !== '4,8,12,16') throw new Error('download gave ' + c.location + ' ' + v.join(','));
  process.stdout.write('SFT_PROBE_OK\\n');
})().catch((e) => { process.stdout.write('SFT_PROBE_FAIL ' + String(e && e.message || e).split('\\n')[0] + '\\n'); process.exitCode = 3; });
`;
  const r = await new Promise<{ stdout: string; stderr: string; code: number | null; signal: string | null; error?: Error }>((resolve) => {
    let stdout = '';
    let stderr = '';
    const child = spawn(process.execPath, ['-e', code], { env: { ...process.env, ELECTRON_RUN_AS_NODE: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    child.on('error', (error) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code: null, signal: null, error });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code, signal });
    });
  });
  if (r.stdout.includes('SFT_PROBE_OK')) return { ok: true, detail: 'device → device → host chain works' };
  const fail = /SFT_PROBE_FAIL (.*)/.exec(r.stdout)?.[1];
  const lastErr = r.stderr.trim().split('\n').slice(-1)[0] ?? '';
  const why = fail ?? (r.error ? r.error.message : r.signal ? `probe killed by ${r.signal}` : `probe exited with ${r.code}: ${lastErr}`);
  return { ok: false, detail: why.slice(0, 300) };
}

/** For tests: forget the cached probe result. */
export function resetDeviceProbe(): void {
  probeResult = null;
}

/**
 * E micro-batches scored in one run (a Loop over e): inputs p:<name>; ids, targets, positions, segments int32
 * [E,B,T], weights float [E,B,T] (each micro-batch padded to the run's max B and T, its true size in
 * mb_dims int64 [E,2]); trip int64 [] (= E), cond bool []. Outputs nll_sum [E], tokens [E] (Σ w·NLL and
 * Σ w of each micro-batch, computed on its true [B,T] exactly as the single-batch eval graph does).
 */
export function buildEvalLoopGraph(config: GPT2Config, opts: { bf16?: Bf16Mode; variants?: ModelVariants } = {}): Graph {
  const g = new Graph('eval_loop');
  const w = paramInputs(g, config, 'p:');
  const stacked = mbInputs(g, ['E']);
  const mbDims = g.input('mb_dims', 'int64', ['E', 2]);
  const trip = g.input('trip', 'int64', []);
  const cond = g.input('cond', 'bool', []);
  const { nllSum, tokens } = evalLoop(g, config, w, stacked, mbDims, trip, opts, { names: ['nll_sum', 'tokens'], cond });
  g.output(nllSum);
  g.output(tokens);
  return g;
}

