/**
 * CUDA placement check without a GPU (issue #8): creates an onnxruntime-node 1.29 session on the CUDA execution
 * provider — CPU fallback disabled, exactly the options of engine/cudaProvider.ts's cudaSessionOptions — for
 * every graph the project builds, and reports for each: created OK, or ORT's exact error; and where ORT placed
 * the nodes (the "Node placements" blocks of its verbose log: nodes on the CPU provider, by op type and name).
 *
 *   npx tsx bench/cuda-placement.ts [--models tiny,gpt2] [--only REGEX] [--jobs 2] [--timeout-s 900]
 *        [--provider-dir DIR] [--stubs DIR] [--ort-copy DIR] [--logs DIR] [--json FILE] [--no-controls]
 *
 * How it works without a GPU (bench/cuda-placement/README.md): bench/cuda-placement/make-stubs.sh builds stand-in
 * CUDA libraries (libcudart.so.13, libcublas*.so.13, libcurand.so.10, libcuda.so.1) whose functions succeed on the
 * host; a private copy of onnxruntime-node (its JS and linux-x64 binaries, in --ort-copy, default
 * $TMPDIR/sft-cuda-placement/ort) gets the real provider libraries libonnxruntime_providers_{cuda,shared}.so
 * (--provider-dir: the npm package com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9, Plugins/Linux/x64) linked
 * next to libonnxruntime.so.1, so the project's node_modules is left untouched. Each session is created in a child
 * process (LD_LIBRARY_PATH = the stubs) so that a crash inside a stub cannot end the run; kernels never execute.
 *
 * Graphs (built as the code builds them; legend as in trainGraph.ts):
 *   train1 / trainA   buildTrainGraph(accumulate false / true) × bf16 false / true / 'emulate' × flatState on / off,
 *                     toModelBytes() as TrainingEngine.session() does (main graph = the step Loop)
 *   grads, eval       buildGradsGraph / buildEvalGraph, toModelBytes({ singleIterationLoop: true })
 *   evalLoop          deviceState.buildEvalLoopGraph, toModelBytes()
 *   forward-*         createForward's buildForwardGraph(logits | logprobs), singleIterationLoop
 *   generate, score,  infer/generationGraph.buildInferenceGraph(config, params, kind, 'cuda') (EngineLM's sessions;
 *   decode            decode = the multi-token decode Loop with in-graph sampling)
 *   download          deviceState.downloadGraph(shapes of every parameter), toModelBytes() (CudaGpuBufferIo)
 *   probe             trainingEngine.probeGraph (TrainingEngine.create's CUDA check; once, not per model)
 * for the tiny model (samples/tiny-gpt2-chat/config.json) and GPT-2 124M (12×768, vocab 50260, dropout 0.1).
 * plus two negative controls (an op without a CUDA kernel in the main graph → refused; inside a Loop → on the CPU).
 * Output: a table (graph → OK / error, nodes on CPU), one line `RESULT {json}`; --json FILE writes the same JSON;
 * --logs DIR keeps, per graph, the placement lines and errors of ORT's verbose log plus its last 60 lines.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { cudaSessionOptions } from '../native-runner/engine/cudaProvider';
import { optimizationFromEnv } from '../native-runner/engine/ortSession';
import { buildEvalLoopGraph, downloadGraph } from '../native-runner/engine/deviceState';
import { Graph } from '../native-runner/engine/graph/graph';
import { dropoutRates, paramSpecs } from '../native-runner/engine/gpt2Graph';
import { decodeModel, type GraphProtoObj } from '../native-runner/engine/graph/onnxProto';
import { buildEvalGraph, buildForwardGraph, buildGradsGraph, buildTrainGraph, type GraphOptions, type OptimizerHyper } from '../native-runner/engine/trainGraph';
import { buildInferenceGraph } from '../native-runner/infer/generationGraph';
import { makeConfig, readConfig } from '../native-runner/model/config';
import { initGpt2Params } from '../native-runner/model/gpt2Params';
import { modelVariantsFromEnv, probeGraph } from '../native-runner/engine/trainingEngine';
import type { GPT2Config, ParamSet } from '../native-runner/model/types';

const ROOT = path.resolve(__dirname, '..');
const { values: args } = parseArgs({
  options: {
    models: { type: 'string', default: 'tiny,gpt2' },
    only: { type: 'string' },
    jobs: { type: 'string', default: '2' },
    'timeout-s': { type: 'string', default: '900' },
    'provider-dir': { type: 'string', default: process.env.CUDA_PROVIDER_DIR ?? '/tmp/provx/package/Plugins/Linux/x64' },
    stubs: { type: 'string', default: process.env.CUDA_STUB_DIR ?? path.join(os.tmpdir(), 'cuda-stubs') },
    'ort-copy': { type: 'string', default: path.join(os.tmpdir(), 'sft-cuda-placement', 'ort') },
    logs: { type: 'string' },
    json: { type: 'string' },
    'no-controls': { type: 'boolean', default: false },
  },
});

// ---------------------------------------------------------------------------------------------------------
// Set-up: stubs and a private onnxruntime-node copy that finds the provider next to libonnxruntime.so.1
// ---------------------------------------------------------------------------------------------------------

const PROVIDER_FILES = ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so'];

function commonDir(ortDir: string): string {
  for (let d = ortDir; ; d = path.dirname(d)) {
    const c = path.join(d, 'node_modules', 'onnxruntime-common');
    if (fs.existsSync(path.join(c, 'package.json'))) return c;
    const sib = path.join(path.dirname(ortDir), 'onnxruntime-common');
    if (fs.existsSync(path.join(sib, 'package.json'))) return sib;
    if (path.dirname(d) === d) throw new Error(`onnxruntime-common not found near ${ortDir}`);
  }
}

function setUp(): { ortEntry: string; stubDir: string } {
  const providerDir = path.resolve(args['provider-dir']!);
  for (const f of PROVIDER_FILES) {
    if (!fs.existsSync(path.join(providerDir, f))) {
      throw new Error(`${path.join(providerDir, f)} not found: npm pack com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9 and unpack it (Plugins/Linux/x64), or pass --provider-dir`);
    }
  }
  const stubDir = path.resolve(args.stubs!);
  if (!fs.existsSync(path.join(stubDir, 'libcudart.so.13'))) {
    const r = require('node:child_process').spawnSync('bash', [path.join(ROOT, 'bench/cuda-placement/make-stubs.sh'), providerDir, stubDir], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`make-stubs.sh failed (exit ${r.status})`);
  }
  const src = path.dirname(require.resolve('onnxruntime-node/package.json'));
  // onnxruntime-common's exports hide its package.json: its folder is the node_modules entry that holds it.
  const common = commonDir(src);
  const nm = path.resolve(args['ort-copy']!, 'node_modules');
  const dst = path.join(nm, 'onnxruntime-node');
  const bin = path.join(dst, 'bin', 'napi-v6', 'linux', 'x64');
  if (!fs.existsSync(path.join(bin, 'libonnxruntime.so.1'))) {
    fs.rmSync(nm, { recursive: true, force: true });
    fs.mkdirSync(path.dirname(bin), { recursive: true });
    fs.cpSync(common, path.join(nm, 'onnxruntime-common'), { recursive: true });
    fs.copyFileSync(path.join(src, 'package.json'), path.join(dst, 'package.json'));
    fs.cpSync(path.join(src, 'dist'), path.join(dst, 'dist'), { recursive: true });
    fs.cpSync(path.join(src, 'bin', 'napi-v6', 'linux', 'x64'), bin, { recursive: true });
  }
  for (const f of PROVIDER_FILES) {
    const link = path.join(bin, f);
    fs.rmSync(link, { force: true });
    fs.symlinkSync(path.join(providerDir, f), link);
  }
  return { ortEntry: dst, stubDir };
}

// ---------------------------------------------------------------------------------------------------------
// The graphs
// ---------------------------------------------------------------------------------------------------------

interface GraphCase {
  name: string;
  /** Controls only: what a working harness must report (checked and printed). */
  expect?: (r: CaseResult) => boolean;
  /** ONNX bytes, built on demand (GPT-2 124M graphs are large). */
  build: () => Uint8Array;
}

/** The recipe's optimizer (AdamW, weight decay 0, clipping at 1.0); clipping adds nodes, so it is on. */
const HYPER: OptimizerHyper = { weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1.0 };

function casesFor(tag: string, config: GPT2Config, dropout: number | null): GraphCase[] {
  const out: GraphCase[] = [];
  const drop = dropoutRates(config, dropout);
  let params: ParamSet | null = null;
  const weights = () => (params ??= initGpt2Params(config, 1));
  for (const bf16 of [false, true, 'emulate'] as const) {
    const b = bf16 === 'emulate' ? 'bf16emu' : bf16 ? 'bf16' : 'fp32';
    for (const flatState of [true, false]) {
      for (const accumulate of [false, true]) {
        out.push({
          name: `${tag}/${accumulate ? 'trainA' : 'train1'}/${b}/${flatState ? 'flat' : 'pertensor'}`,
          build: () => buildTrainGraph(config, HYPER, { dropout: drop, bf16, seed: 0, flatState, accumulate }).toModelBytes({ singleIterationLoop: false }),
        });
      }
    }
    // The ablation variants (gpt2Graph.ts ModelVariants, trainGraph.ts fusedLmHead) on the per-tensor train graph
    // with accumulation: what the device check's ablate phase runs.
    const variants: [string, Partial<GraphOptions>][] = [
      ['previous', { variants: { autodiffAttention: true }, fusedLmHead: false }],
      // The engine's CUDA default: evaluation inside the step Loop (an If around the eval Loop).
      ['evalinrun', { variants: modelVariantsFromEnv({}), evalInRun: true }],
      // Opt-in: the no-decay group's AdamW on one flat vector (SFT_FLAT_NO_DECAY=1), with in-run evaluation.
      ['flatnodecay', { variants: modelVariantsFromEnv({}), evalInRun: true, flatNoDecay: true }],
      ...(bf16 ? ([['bf16att', { variants: { bf16Attention: true } }], ['bf16mlp', { variants: { bf16Mlp: true } }], ['bf16both', { variants: { bf16Attention: true, bf16Mlp: true } }], ['defaults', { variants: modelVariantsFromEnv({}) }], ['biasdropout', { variants: { ...modelVariantsFromEnv({}), residualBiasDropout: true }, dropout: dropoutRates(config, 0.1) }]] as [string, Partial<GraphOptions>][]) : []),
    ];
    for (const [vname, extra] of variants) {
      out.push({
        name: `${tag}/trainA/${b}/${vname}`,
        build: () => buildTrainGraph(config, HYPER, { dropout: drop, bf16, seed: 0, flatState: false, accumulate: true, ...extra }).toModelBytes({ singleIterationLoop: false }),
      });
    }
    // As TrainingEngine.session(): 'emulate' passes through, and the eval graphs get the training forward's variants.
    const evalBf16 = { bf16, variants: modelVariantsFromEnv({}) } as { bf16?: boolean; variants: ReturnType<typeof modelVariantsFromEnv> };
    out.push({ name: `${tag}/grads/${b}`, build: () => buildGradsGraph(config, { dropout: drop, bf16, seed: 0 }).toModelBytes({ singleIterationLoop: true }) });
    out.push({ name: `${tag}/eval/${b}`, build: () => buildEvalGraph(config, evalBf16).toModelBytes({ singleIterationLoop: true }) });
    out.push({ name: `${tag}/evalLoop/${b}`, build: () => buildEvalLoopGraph(config, evalBf16).toModelBytes({ singleIterationLoop: false }) });
    if (bf16 !== 'emulate') {
      for (const o of ['logits', 'logprobs'] as const) {
        out.push({ name: `${tag}/forward-${o}/${b}`, build: () => buildForwardGraph(config, o, { bf16 }).toModelBytes({ singleIterationLoop: true }) });
      }
    }
  }
  out.push({ name: `${tag}/generate/fp32`, build: () => buildInferenceGraph(config, weights(), 'generate', 'cuda') });
  out.push({ name: `${tag}/score/fp32`, build: () => buildInferenceGraph(config, weights(), 'score', 'cuda') });
  out.push({ name: `${tag}/decode/fp32`, build: () => buildInferenceGraph(config, weights(), 'decode', 'cuda') });
  out.push({ name: `${tag}/download/fp32`, build: () => downloadGraph(paramSpecs(config).map((s) => s.shape)).toModelBytes() });
  if (tag === 'tiny') out.push({ name: 'probe/fp32', build: () => probeGraph().toModelBytes() });
  return out;
}

/**
 * Negative controls: Unique (an op the CUDA EP has no kernel for) in the main graph must be refused by the
 * fallback check; the same graph wrapped in a single-iteration Loop must be created with Unique on the CPU.
 */
function controlCases(): GraphCase[] {
  const unique = () => {
    const g = new Graph('control');
    g.output(g.op('Unique', [g.input('x', 'float', ['N'])], {}, { dtype: 'float', shape: ['U'] }), 'y');
    return g;
  };
  return [
    { name: 'control/unique-main', build: () => unique().toModelBytes(), expect: (r) => !r.ok && /fallback to CPU EP has been explicitly disabled/.test(r.error ?? '') && r.cpu.some((n) => n.op === 'Unique' && n.depth === 0) },
    { name: 'control/unique-in-loop', build: () => unique().toModelBytes({ singleIterationLoop: true }), expect: (r) => r.ok && r.cpu.some((n) => n.op === 'Unique' && n.depth === 1 && n.why === 'kernel') },
  ];
}

// ---------------------------------------------------------------------------------------------------------
// One session creation in a child process
// ---------------------------------------------------------------------------------------------------------

const CHILD = `
const [ortEntry, modelPath, optsJson, allowFallback] = process.argv.slice(1);
const ort = require(ortEntry);
ort.env.logLevel = 'verbose';
const so = JSON.parse(optsJson);
so.logSeverityLevel = 0;
so.logVerbosityLevel = 0;
if (allowFallback === '1') so.extra.session.disable_cpu_ep_fallback = '0';
const t0 = Date.now();
(async () => {
  const s = await ort.InferenceSession.create(require('fs').readFileSync(modelPath), so);
  process.stdout.write('\\nCUDA_PLACE_RESULT ' + JSON.stringify({ ok: true, ms: Date.now() - t0, inputs: s.inputNames.length, outputs: s.outputNames.length }) + '\\n');
  await s.release();
})().catch((e) => {
  process.stdout.write('\\nCUDA_PLACE_RESULT ' + JSON.stringify({ ok: false, ms: Date.now() - t0, error: String((e && e.message) || e) }) + '\\n');
  process.exitCode = 3;
});
`;

interface Placement {
  provider: string;
  count: number;
  /** "OpType (node name)" for providers other than CUDA (ORT lists the nodes only for those). */
  nodes: string[];
}

interface CaseResult {
  name: string;
  ok: boolean;
  error: string | null;
  /** Child died without a verdict (signal, exit code). */
  crash: string | null;
  buildMs: number;
  createMs: number | null;
  modelBytes: number;
  /** One entry per "Node placements" block (main graph and each subgraph), in log order. */
  placements: Placement[][];
  /** Nodes ORT hands to the CPU on purpose (small shape computations: "Force fallback to CPU execution for node"). */
  forcedCpu: string[];
  /** Every node on a non-CUDA provider, located in the model and classified (see classify). */
  cpu: CpuNode[];
  /** When creation failed for the CPU-fallback check: the placement of a re-run with fallback allowed. */
  placementsWithFallback: Placement[][] | null;
}

interface CpuNode {
  op: string;
  name: string;
  provider: string;
  /** 0 = main graph (fatal with fallback disabled), ≥ 1 = inside a Loop/If body; null = a node ORT created. */
  depth: number | null;
  /** 'shape': handed to the CPU by ORT's CPU-preference rule (cheap shape arithmetic); 'kernel': the CUDA EP took it not (no kernel for op/opset/dtype). */
  why: 'shape' | 'kernel';
}

/** node name → depth (0 = main graph) and op type, over the model's graph and every subgraph attribute. */
function indexNodes(bytes: Uint8Array): Map<string, { depth: number; op: string }> {
  const out = new Map<string, { depth: number; op: string }>();
  const walk = (g: GraphProtoObj, depth: number) => {
    for (const n of g.node ?? []) {
      if (n.name) out.set(n.name, { depth, op: n.opType });
      for (const a of n.attribute ?? []) if (a.g) walk(a.g, depth + 1);
    }
  };
  walk(decodeModel(bytes).graph, 0);
  return out;
}

function classify(placements: Placement[][], forced: string[], index: Map<string, { depth: number; op: string }>): CpuNode[] {
  const out: CpuNode[] = [];
  const forcedSet = new Set(forced);
  for (const b of placements) {
    for (const p of b) {
      if (p.provider === 'CUDAExecutionProvider') continue;
      // "All nodes placed on [X]" lists no node: then every node of the model is on X.
      const nodes = p.nodes.length > 0 || b.length > 1 ? p.nodes : [...index].map(([name, v]) => `${v.op} (${name})`);
      for (const n of nodes) {
        const m = /^(\S+) \((.*)\)$/.exec(n)!;
        const name = m[2]!;
        out.push({ op: m[1]!, name, provider: p.provider, depth: index.get(name)?.depth ?? null, why: forcedSet.has(name) ? 'shape' : 'kernel' });
      }
    }
  }
  return out;
}

const LOG_KEEP = /VerifyEachNodeIsAssignedToAnEp|kernel not found|Force fallback|fallback|\[E:|\[W:|CUDA_PLACE_RESULT/;

type ChildResult = Pick<CaseResult, 'ok' | 'error' | 'crash' | 'createMs' | 'placements' | 'forcedCpu'>;

function createInChild(ortEntry: string, stubDir: string, modelPath: string, timeoutMs: number, logFile: string | null, allowFallback: boolean): Promise<ChildResult> {
  const opts = cudaSessionOptions(0, { optimization: optimizationFromEnv() }); // SFT_ORT_OPT_LEVEL, as the engine
  return new Promise((resolve) => {
    const env = { ...process.env, LD_LIBRARY_PATH: [stubDir, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':') };
    const child = spawn(process.execPath, ['-e', CHILD, ortEntry, modelPath, JSON.stringify(opts), allowFallback ? '1' : '0'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const kept: string[] = [];
    let tail: string[] = [];
    let partial = { out: '', err: '' };
    let result: { ok: boolean; ms: number; error?: string } | null = null;
    const placements: Placement[][] = [];
    let block: Placement[] | null = null;
    const forcedCpu: string[] = [];
    const onLine = (line: string) => {
      tail.push(line);
      if (tail.length > 120) tail = tail.slice(-60);
      if (LOG_KEEP.test(line)) kept.push(line);
      const r = /CUDA_PLACE_RESULT (\{.*\})/.exec(line);
      if (r) result = JSON.parse(r[1]!);
      if (/VerifyEachNodeIsAssignedToAnEp\] Node placements/.test(line)) {
        block = [];
        placements.push(block);
        return;
      }
      const p = /VerifyEachNodeIsAssignedToAnEp\]\s+(?:All nodes|Node\(s\)) placed on \[(\w+)\]\. Number of nodes: (\d+)/.exec(line);
      if (p && block) {
        block.push({ provider: p[1]!, count: Number(p[2]), nodes: [] });
        return;
      }
      const n = /VerifyEachNodeIsAssignedToAnEp\]\s+(\S+) \((.*)\)\s*$/.exec(line);
      const cur = block?.at(-1);
      // ORT lists every node of a mixed placement; only the non-CUDA ones are kept.
      if (n && cur && cur.provider !== 'CUDAExecutionProvider') cur.nodes.push(`${n[1]} (${n[2]})`);
      const f = /Force fallback to CPU execution for node: (\S+)/.exec(line);
      if (f) forcedCpu.push(f[1]!);
    };
    const feed = (which: 'out' | 'err') => (d: Buffer) => {
      const s = partial[which] + d.toString();
      const lines = s.split('\n');
      partial[which] = lines.pop()!;
      for (const l of lines) onLine(l);
    };
    child.stdout.on('data', feed('out'));
    child.stderr.on('data', feed('err'));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (partial.out) onLine(partial.out);
      if (partial.err) onLine(partial.err);
      if (logFile) fs.writeFileSync(logFile, [...kept, '----- last lines -----', ...tail.slice(-60)].join('\n') + '\n');
      const r = result as { ok: boolean; ms: number; error?: string } | null;
      resolve({
        ok: !!r?.ok,
        error: r && !r.ok ? (r.error ?? 'unknown error') : null,
        crash: r ? null : signal ? `killed by ${signal}${signal === 'SIGKILL' ? ' (timeout?)' : ''}; last log line: ${tail.at(-1) ?? ''}` : `exited ${code} without a verdict; last log line: ${tail.at(-1) ?? ''}`,
        createMs: r?.ms ?? null,
        placements,
        forcedCpu: [...new Set(forcedCpu)],
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------------------

/** "Op×n" summary of CPU nodes matching `pick`. */
function opSummary(nodes: CpuNode[]): string {
  const ops = new Map<string, number>();
  for (const n of nodes) ops.set(n.op, (ops.get(n.op) ?? 0) + 1);
  return [...ops].map(([op, k]) => `${op}×${k}`).join(' ');
}

function cpuNodes(r: CaseResult): { count: number } {
  return { count: r.cpu.length };
}

async function main(): Promise<void> {
  const { ortEntry, stubDir } = setUp();
  const timeoutMs = Number(args['timeout-s']) * 1000;
  const jobs = Math.max(1, Number(args.jobs) || 1);
  const only = args.only ? new RegExp(args.only) : null;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-cuda-placement-'));
  const logs = args.logs ? path.resolve(args.logs) : null;
  if (logs) fs.mkdirSync(logs, { recursive: true });

  const cases: GraphCase[] = args['no-controls'] ? [] : controlCases();
  for (const m of args.models!.split(',').map((s) => s.trim()).filter(Boolean)) {
    if (m === 'tiny') cases.push(...casesFor('tiny', readConfig(path.join(ROOT, 'samples/tiny-gpt2-chat')), null));
    else if (m === 'gpt2') cases.push(...casesFor('gpt2', makeConfig({ n_layer: 12, n_head: 12, n_embd: 768, n_positions: 1024, vocab_size: 50260 }), null));
    else throw new Error(`unknown model ${m} (tiny, gpt2)`);
  }
  const selected = cases.filter((c) => !only || only.test(c.name));
  console.log(`cuda-placement: ${selected.length} graphs; provider ${args['provider-dir']}; stubs ${stubDir}; ORT copy ${ortEntry}`);

  const results: CaseResult[] = [];
  let next = 0;
  const worker = async () => {
    while (next < selected.length) {
      const c = selected[next++]!;
      const t0 = performance.now();
      let bytes: Uint8Array;
      try {
        bytes = c.build();
      } catch (e) {
        const r: CaseResult = { name: c.name, ok: false, error: `graph build failed: ${(e as Error).message}`, crash: null, buildMs: performance.now() - t0, createMs: null, modelBytes: 0, placements: [], forcedCpu: [], cpu: [], placementsWithFallback: null };
        results.push(r);
        console.log(`  ${c.name}: BUILD FAILED ${r.error}`);
        continue;
      }
      const buildMs = performance.now() - t0;
      const file = path.join(work, c.name.replace(/\//g, '_') + '.onnx');
      fs.writeFileSync(file, bytes);
      const logFile = logs ? path.join(logs, c.name.replace(/\//g, '_') + '.log') : null;
      const index = indexNodes(bytes);
      const first = await createInChild(ortEntry, stubDir, file, timeoutMs, logFile, false);
      let placementsWithFallback: Placement[][] | null = null;
      let forced = first.forcedCpu;
      if (!first.ok && first.error && /fallback to CPU EP has been explicitly disabled/.test(first.error)) {
        // ORT names no node in that error: a second creation with fallback allowed shows where each node went.
        const again = await createInChild(ortEntry, stubDir, file, timeoutMs, logFile ? logFile.replace(/\.log$/, '.with-fallback.log') : null, true);
        placementsWithFallback = again.placements;
        forced = [...new Set([...forced, ...again.forcedCpu])];
      }
      fs.rmSync(file, { force: true });
      const r: CaseResult = {
        name: c.name,
        buildMs,
        modelBytes: bytes.length,
        ...first,
        forcedCpu: forced,
        placementsWithFallback,
        cpu: classify(placementsWithFallback ?? first.placements, forced, index),
      };
      results.push(r);
      const cpu = cpuNodes(r);
      const verdict = r.ok ? 'OK' : r.error ? 'ERROR' : 'CRASH';
      console.log(`  ${c.name}: ${verdict} (build ${(buildMs / 1000).toFixed(1)} s, create ${r.createMs === null ? '-' : (r.createMs / 1000).toFixed(1) + ' s'}, CPU nodes ${cpu.count})${r.ok ? '' : ': ' + (r.error ?? r.crash)}`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(jobs, selected.length) }, worker));
  fs.rmSync(work, { recursive: true, force: true });

  results.sort((a, b) => selected.findIndex((c) => c.name === a.name) - selected.findIndex((c) => c.name === b.name));
  console.log('\nCPU nodes: main = in the main graph (fatal with fallback disabled); sub = inside a Loop body, split into');
  console.log("shape (ORT's CPU preference for shape arithmetic, intended) and kernel (the CUDA EP has no kernel: real work on the CPU).");
  console.log('\ngraph                              verdict  create_s  CUDA nodes  CPU main  sub:shape  sub:kernel  details');
  for (const r of results) {
    const pl = r.placementsWithFallback ?? r.placements;
    const cuda = pl.flat().filter((p) => p.provider === 'CUDAExecutionProvider').reduce((a, p) => a + p.count, 0);
    // Nodes ORT made itself (optimizers) are not in our model, so their level is unknown; on a created session
    // they cannot be in the main graph (the fallback check would have refused it), so they count as sub.
    const main = r.cpu.filter((n) => n.depth === 0 || (n.depth === null && !r.ok));
    const sub = r.cpu.filter((n) => !main.includes(n));
    const subShape = sub.filter((n) => n.why === 'shape');
    const subKernel = sub.filter((n) => n.why === 'kernel');
    const verdict = r.ok ? 'OK' : r.error ? 'ERROR' : 'CRASH';
    const parts: string[] = [];
    if (!r.ok) parts.push((r.error ?? r.crash ?? '').replace(/\s+/g, ' ').slice(0, 300));
    if (main.length) parts.push(`main CPU: ${main.map((n) => `${n.op}(${n.name})${n.depth === null ? '[ORT-made]' : ''}${n.why === 'shape' ? '[shape]' : '[no kernel]'}`).join(' ')}`);
    if (subKernel.length) parts.push(`no CUDA kernel: ${subKernel.map((n) => `${n.op}(${n.name})`).join(' ')}`);
    if (subShape.length) parts.push(`shape ops: ${opSummary(subShape)}`);
    console.log(
      `${r.name.padEnd(34)} ${verdict.padEnd(8)} ${(r.createMs === null ? '-' : (r.createMs / 1000).toFixed(1)).padStart(8)}  ${String(cuda).padStart(10)}  ${String(main.length).padStart(8)}  ${String(subShape.length).padStart(9)}  ${String(subKernel.length).padStart(10)}  ${parts.join(' | ')}`,
    );
  }
  const controls = results.filter((r) => selected.find((c) => c.name === r.name)?.expect);
  for (const r of controls) {
    const good = selected.find((c) => c.name === r.name)!.expect!(r);
    console.log(`${good ? 'control as expected' : 'CONTROL FAILED (the harness cannot be trusted)'}: ${r.name}`);
    if (!good) process.exitCode = 2;
  }
  const real = results.filter((r) => !controls.includes(r));
  const summary = { graphs: real.length, ok: real.filter((r) => r.ok).length, failed: real.filter((r) => !r.ok).map((r) => r.name), controlsOk: controls.every((r) => selected.find((c) => c.name === r.name)!.expect!(r)), results };
  if (args.json) fs.writeFileSync(args.json, JSON.stringify(summary, null, 1));
  console.log(`RESULT ${JSON.stringify({ graphs: summary.graphs, ok: summary.ok, failed: summary.failed, controlsOk: summary.controlsOk })}`);
  if (summary.failed.length > 0) process.exitCode ||= 1;
}

main().catch((e) => {
  console.error(`cuda-placement: ${(e as Error).message}`);
  process.exitCode = 1;
});
