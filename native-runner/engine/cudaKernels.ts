/**
 * Which nodes of our ONNX graphs would not run on the CUDA execution provider of onnxruntime 1.29 with CPU
 * fallback disabled (the way engine/cudaProvider.ts creates CUDA sessions) — checked on the graph, without a GPU.
 *
 *   CUDA_KERNELS                 op type → facts: the op's ONNX schema version at opset 21, the CUDA kernel
 *                                registration covering it, supported dtypes per type constraint, host-memory
 *                                inputs/outputs of the CUDA kernel
 *   cudaUnsupportedNodes(graph, { singleIterationLoop })
 *                                → { node, op, reason }[] for the graph and every Loop body in it
 *
 * A node is reported when
 *   1. its op (default ONNX domain) is not in the table — unknown ops are unsupported until someone looks them up;
 *   2. the CUDA registration does not cover the op's schema version at opset 21;
 *   3. an input or output dtype is outside the CUDA kernel's type constraint (e.g. a bfloat16 Log or ReduceMax),
 *      or one constraint is bound to two dtypes;
 *   4. it is in the MAIN graph and ONNX Runtime would still place it on the CPU provider. The CUDA provider hands
 *      "shape computations" to the CPU by design (onnxruntime/core/framework/fallback_cpu_capability.cc,
 *      GetCpuPreferredNodes): starting from outputs a CUDA kernel writes to host memory (Shape, Size), a consumer
 *      goes to the CPU when each of its inputs is a small initializer (≤ 100 elements), a graph input, or a host
 *      tensor that the CUDA kernel does not itself read from host memory — and no input is float16/bfloat16;
 *      placed nodes make their consumers candidates in turn. With `disable_cpu_ep_fallback` the session then
 *      fails if any such node is in the main graph; inside a subgraph (Loop body) it is allowed. That is why the
 *      grads/eval/forward/inference graphs are emitted with `toModelBytes({ singleIterationLoop: true })`: pass
 *      the same option here and the whole graph counts as a Loop body (the wrapper's Loop and Squeeze nodes are
 *      checked instead). ORT's own graph rewrites before partitioning (constant folding, common-subexpression
 *      elimination, Identity elimination) are not modelled, so rule 4 can only over-report: it may list a
 *      duplicate Slice/Concat that ORT would have merged first.
 *
 * Sources (every fact was read in one of these or measured as described):
 *   - microsoft/onnxruntime docs/OperatorKernels.md, "Operators implemented by CUDAExecutionProvider" (the
 *     version ranges "N+" = open-ended, "[a, b]", and the type lists).
 *   - Checked against the official 1.29.0 CUDA 13 provider binary (npm com.github.asus4.onnxruntime.linux-x64-gpu
 *     @0.4.9), loaded by onnxruntime-node 1.29.0 with stand-in CUDA libraries (as bench/cuda-placement builds them:
 *     partitioning and kernel lookup are the real code, no kernel runs): for every op here except Loop, every type constraint
 *     and every dtype above, a one-node model was created with CPU fallback disabled; all 384 ONNX-valid
 *     combinations agree with this table (that run added uint8 to ReduceMax and bfloat16 to ReduceSumSquare,
 *     which the 1.29 binary has and the document did not list). On the same set-up, every tiny-model graph the
 *     tests below build is created exactly when this guard reports nothing, and fails ("assigned to the default
 *     CPU EP") exactly when it reports main-graph shape arithmetic.
 *   - Host-memory inputs/outputs: the CUDA kernels' KernelDefBuilder InputMemoryType/OutputMemoryType
 *     (OrtMemTypeCPUInput) in onnxruntime/core/providers/cuda (Shape/Size output 0; Reshape, Expand, Squeeze,
 *     Unsqueeze, Split, Reduce* input 1; Slice 1–4; Range 0–2; ConstantOfShape 0; Loop 0–1; Dropout 1–2).
 *   - ONNX schema versions: onnx/defs/operator_sets.h and the ONNX 1.16 changelog (opset 21 re-versioned Cast,
 *     ConstantOfShape, Identity, Loop, Reshape, Shape, Size, Squeeze, Transpose, Unsqueeze for int4/uint4).
 * Only the dtypes a Graph can hold (graph.ts DType) are listed per constraint.
 */
import { OPSET, type DType, type Graph, type Node, type Tensor } from './graph/graph';

/** The opset the table was written for (every onnxVersion below is "newest schema version ≤ 21"). */
export const CUDA_TABLE_OPSET = 21;
/** The onnxruntime version whose CUDA provider the table describes. */
export const CUDA_TABLE_ORT_VERSION = '1.29.0';

export interface CudaKernelFacts {
  /** The op's ONNX schema version that a node of an opset-21 model resolves to. */
  onnxVersion: number;
  /** The CUDA kernel registration covering onnxVersion (until null = registered as "since+", open-ended). */
  cuda: { since: number; until: number | null };
  /** Supported dtypes per type constraint (fixed-type inputs get a constraint of their own, e.g. `shape`). */
  types: Record<string, readonly DType[]>;
  /** The constraint of each input / output, in order; with `variadic*` the last entry repeats. */
  inputs: readonly string[];
  outputs: readonly string[];
  variadicInputs?: boolean;
  variadicOutputs?: boolean;
  /** Constraints whose values may each have their own dtype (ONNX "heterogeneous", e.g. Loop's V). */
  heterogeneous?: readonly string[];
  /** Inputs the CUDA kernel reads from host memory (OrtMemTypeCPUInput). */
  cpuInputs?: readonly number[];
  /** Outputs the CUDA kernel writes to host memory. */
  cpuOutputs?: readonly number[];
}

const ALL: readonly DType[] = ['bfloat16', 'bool', 'double', 'float', 'float16', 'int32', 'int64', 'uint8'];
/** bfloat16, double, float, float16. */
const FLOAT4: readonly DType[] = ['bfloat16', 'double', 'float', 'float16'];
/** double, float, float16 — no bfloat16 kernel. */
const FLOAT3: readonly DType[] = ['double', 'float', 'float16'];
const NUMERIC_BINARY: readonly DType[] = ['bfloat16', 'double', 'float', 'float16', 'int32', 'int64', 'uint8'];
const COMPARE: readonly DType[] = ['double', 'float', 'float16', 'int32', 'int64'];
const INDEX: readonly DType[] = ['int32', 'int64'];
const I64: readonly DType[] = ['int64'];
const BOOL: readonly DType[] = ['bool'];

const open = (since: number) => ({ since, until: null });
const upTo = (since: number, until: number) => ({ since, until });

function unaryOp(onnxVersion: number, since: number, t: readonly DType[]): CudaKernelFacts {
  return { onnxVersion, cuda: open(since), types: { T: t }, inputs: ['T'], outputs: ['T'] };
}
function binaryOp(onnxVersion: number, since: number, t: readonly DType[]): CudaKernelFacts {
  return { onnxVersion, cuda: open(since), types: { T: t }, inputs: ['T', 'T'], outputs: ['T'] };
}
function compareOp(onnxVersion: number, since: number, t: readonly DType[]): CudaKernelFacts {
  return { onnxVersion, cuda: open(since), types: { T: t, T1: BOOL }, inputs: ['T', 'T'], outputs: ['T1'] };
}
/** Reduce* with axes as input 1 (read from host memory by the CUDA kernel). */
function reduceOp(onnxVersion: number, since: number, t: readonly DType[]): CudaKernelFacts {
  return { onnxVersion, cuda: open(since), types: { T: t, axes: I64 }, inputs: ['T', 'axes'], outputs: ['T'], cpuInputs: [1] };
}

/**
 * The CUDA EP's kernels for the ops our graphs use (trainGraph, gpt2Graph, autodiff rules, deviceState,
 * infer/generationGraph), plus the few the autodiff table and graph builder can emit (Size, Pow, Reciprocal,
 * Sigmoid, Relu, Erf, Abs, Less, GreaterOrEqual, ReduceMin, ReduceSumSquare, Sin, Cos).
 */
export const CUDA_KERNELS: Readonly<Record<string, CudaKernelFacts>> = {
  Abs: unaryOp(13, 13, NUMERIC_BINARY),
  Add: binaryOp(14, 14, NUMERIC_BINARY),
  Sub: binaryOp(14, 14, NUMERIC_BINARY),
  Mul: binaryOp(14, 14, NUMERIC_BINARY),
  Div: binaryOp(14, 14, NUMERIC_BINARY),
  Pow: { onnxVersion: 15, cuda: open(15), types: { T: ['bfloat16', 'double', 'float', 'float16', 'int32', 'int64'], T1: ['bfloat16', 'double', 'float', 'float16', 'int32', 'int64'] }, inputs: ['T', 'T1'], outputs: ['T'] },
  And: { onnxVersion: 7, cuda: open(7), types: { T: BOOL, T1: BOOL }, inputs: ['T', 'T'], outputs: ['T1'] },
  Or: { onnxVersion: 7, cuda: open(7), types: { T: BOOL, T1: BOOL }, inputs: ['T', 'T'], outputs: ['T1'] },
  Not: unaryOp(1, 1, BOOL),
  Equal: compareOp(19, 13, ['bool', 'double', 'float', 'float16', 'int32', 'int64']),
  Greater: compareOp(13, 13, COMPARE),
  Less: compareOp(13, 13, COMPARE),
  GreaterOrEqual: compareOp(16, 16, COMPARE),
  LessOrEqual: compareOp(16, 16, COMPARE),
  Where: { onnxVersion: 16, cuda: open(16), types: { B: BOOL, T: NUMERIC_BINARY }, inputs: ['B', 'T', 'T'], outputs: ['T'] },
  Max: { onnxVersion: 13, cuda: open(13), types: { T: ['bfloat16', 'double', 'float', 'float16', 'int32', 'int64'] }, inputs: ['T'], outputs: ['T'], variadicInputs: true },
  Min: { onnxVersion: 13, cuda: open(13), types: { T: ['bfloat16', 'double', 'float', 'float16', 'int32', 'int64'] }, inputs: ['T'], outputs: ['T'], variadicInputs: true },
  Sum: { onnxVersion: 13, cuda: open(13), types: { T: FLOAT4 }, inputs: ['T'], outputs: ['T'], variadicInputs: true },
  Neg: unaryOp(13, 13, ['bfloat16', 'double', 'float', 'float16', 'int32', 'int64']),
  Exp: unaryOp(13, 13, FLOAT4),
  Log: unaryOp(13, 13, FLOAT3),
  Sqrt: unaryOp(13, 13, FLOAT4),
  Tanh: unaryOp(13, 13, FLOAT4),
  Erf: unaryOp(13, 13, FLOAT4),
  Sigmoid: unaryOp(13, 13, FLOAT4),
  // HardSigmoid (checked for engine/mlp.ts's Gelu-derivative table, which ended up not using it): ONNX HardSigmoid-6
  // (versions 1, 6, 22) allows float16/float/double only, so at opset 21 a bfloat16 node is an invalid model (the 1.29
  // CUDA binary does hold a HardSigmoid<BFloat16> kernel class; its schema needs opset 22). CUDA registration UNARY_ACTIVATION_OP_HFD(HardSigmoid, 6)
  // in onnxruntime/core/providers/cuda/activation/activations.cc; a float node created on the 1.29.0 CUDA 13 provider
  // (bench/cuda-placement set-up, fallback disabled), the bfloat16 one refused by the schema check.
  HardSigmoid: unaryOp(6, 6, FLOAT3),
  Relu: unaryOp(14, 14, FLOAT4),
  Reciprocal: unaryOp(13, 13, FLOAT3),
  Sin: unaryOp(7, 7, FLOAT3),
  Cos: unaryOp(7, 7, FLOAT3),
  Gelu: unaryOp(20, 20, FLOAT4),
  Softmax: unaryOp(13, 13, FLOAT4),
  LogSoftmax: unaryOp(13, 13, FLOAT3),
  Identity: unaryOp(21, 19, ALL),
  Transpose: { onnxVersion: 21, cuda: upTo(21, 22), types: { T: ALL }, inputs: ['T'], outputs: ['T'] },
  Cast: { onnxVersion: 21, cuda: upTo(21, 22), types: { T1: ALL, T2: ALL }, inputs: ['T1'], outputs: ['T2'] },
  MatMul: binaryOp(13, 13, FLOAT4),
  Gemm: { onnxVersion: 13, cuda: open(13), types: { T: FLOAT4 }, inputs: ['T', 'T', 'T'], outputs: ['T'] },
  LayerNormalization: { onnxVersion: 17, cuda: open(17), types: { T: FLOAT4, U: ['float'] }, inputs: ['T', 'T', 'T'], outputs: ['T', 'U', 'U'] },
  Dropout: { onnxVersion: 13, cuda: open(13), types: { T: FLOAT4, T1: FLOAT4, T2: BOOL }, inputs: ['T', 'T1', 'T2'], outputs: ['T', 'T2'], cpuInputs: [1, 2] },
  ArgMax: { onnxVersion: 13, cuda: open(13), types: { T: FLOAT3, out: I64 }, inputs: ['T'], outputs: ['out'] },
  ReduceSum: reduceOp(13, 13, ['bfloat16', 'double', 'float', 'float16', 'int32', 'int64']),
  ReduceMean: reduceOp(18, 18, ['double', 'float', 'float16', 'int32']),
  ReduceMax: reduceOp(20, 18, ['double', 'float', 'float16', 'int32', 'int64', 'uint8']),
  ReduceMin: reduceOp(20, 18, ['double', 'float', 'float16', 'int32', 'int64', 'uint8']),
  ReduceL2: reduceOp(18, 18, ['double', 'float', 'float16', 'int32']),
  ReduceSumSquare: reduceOp(18, 18, FLOAT4),
  Concat: { onnxVersion: 13, cuda: open(13), types: { T: ALL }, inputs: ['T'], outputs: ['T'], variadicInputs: true },
  Split: { onnxVersion: 18, cuda: open(18), types: { T: ALL, split: I64 }, inputs: ['T', 'split'], outputs: ['T'], variadicOutputs: true, cpuInputs: [1] },
  Slice: { onnxVersion: 13, cuda: open(13), types: { T: ALL, Tind: INDEX }, inputs: ['T', 'Tind', 'Tind', 'Tind', 'Tind'], outputs: ['T'], cpuInputs: [1, 2, 3, 4] },
  Reshape: { onnxVersion: 21, cuda: upTo(21, 22), types: { T: ALL, shape: I64 }, inputs: ['T', 'shape'], outputs: ['T'], cpuInputs: [1] },
  Squeeze: { onnxVersion: 21, cuda: upTo(21, 22), types: { T: ALL, axes: I64 }, inputs: ['T', 'axes'], outputs: ['T'], cpuInputs: [1] },
  Unsqueeze: { onnxVersion: 21, cuda: upTo(21, 22), types: { T: ALL, axes: I64 }, inputs: ['T', 'axes'], outputs: ['T'], cpuInputs: [1] },
  Expand: { onnxVersion: 13, cuda: open(13), types: { T: ALL, shape: I64 }, inputs: ['T', 'shape'], outputs: ['T'], cpuInputs: [1] },
  Gather: { onnxVersion: 13, cuda: open(13), types: { T: ALL, Tind: INDEX }, inputs: ['T', 'Tind'], outputs: ['T'] },
  GatherElements: { onnxVersion: 13, cuda: open(13), types: { T: ALL, Tind: INDEX }, inputs: ['T', 'Tind'], outputs: ['T'] },
  ScatterElements: { onnxVersion: 18, cuda: open(18), types: { T: ALL, Tind: INDEX }, inputs: ['T', 'Tind', 'T'], outputs: ['T'] },
  ConstantOfShape: { onnxVersion: 21, cuda: open(9), types: { T1: I64, T2: ALL }, inputs: ['T1'], outputs: ['T2'], cpuInputs: [0] },
  Range: { onnxVersion: 11, cuda: open(11), types: { T: ['double', 'float', 'int32', 'int64'] }, inputs: ['T', 'T', 'T'], outputs: ['T'], cpuInputs: [0, 1, 2] },
  Shape: { onnxVersion: 21, cuda: upTo(21, 22), types: { T: ALL, T1: I64 }, inputs: ['T'], outputs: ['T1'], cpuOutputs: [0] },
  Size: { onnxVersion: 21, cuda: open(13), types: { T: ALL, T1: I64 }, inputs: ['T'], outputs: ['T1'], cpuOutputs: [0] },
  // Inference decode Loop (infer/samplingGraph.ts): TopK-11 (K read from host memory) and CumSum-14 (axis from host
  // memory), registrations and the dtypes their kernels compute in onnxruntime/core/providers/cuda/math/{topk,cumsum}.cc.
  // The dtypes the decode graph uses (float TopK, double CumSum) were checked on the 1.29.0 CUDA 13 provider with
  // bench/cuda-placement.ts (decode graphs created, no node on the CPU); the other listed dtypes were not.
  TopK: { onnxVersion: 11, cuda: open(11), types: { T: ['double', 'float', 'float16', 'int32', 'int64', 'uint8'], I: I64 }, inputs: ['T', 'I'], outputs: ['T', 'I'], cpuInputs: [1] },
  CumSum: { onnxVersion: 14, cuda: open(14), types: { T: ['double', 'float', 'float16', 'int32', 'int64'], T2: INDEX }, inputs: ['T', 'T2'], outputs: ['T'], cpuInputs: [1] },
  Loop: { onnxVersion: 21, cuda: open(19), types: { I: I64, B: BOOL, V: ALL }, inputs: ['I', 'B', 'V'], outputs: ['V'], variadicInputs: true, variadicOutputs: true, heterogeneous: ['V'], cpuInputs: [0, 1] },
  // The training graph's in-run evaluation (trainGraph.ts evalInRun): cond read from host memory.
  If: { onnxVersion: 21, cuda: open(21), types: { B: BOOL, V: ALL }, inputs: ['B'], outputs: ['V'], variadicOutputs: true, heterogeneous: ['V'], cpuInputs: [0] },
};

export interface CudaUnsupportedNode {
  /** The node's name (unique in the model: subgraphs share the main graph's name scope). */
  node: string;
  op: string;
  reason: string;
}

export interface CudaCheckOptions {
  /** The graph is emitted with toModelBytes({ singleIterationLoop: true }): its nodes run inside a Loop body. */
  singleIterationLoop?: boolean;
}

/**
 * The CUDA EP's com.microsoft (contrib) kernels our graphs may use, keyed `domain.op`; onnxVersion is the contrib
 * opset version. BiasDropout: onnxruntime/contrib_ops/cuda/math/bias_dropout.cc (ONNX_OPERATOR_KERNEL_EX(BiasDropout,
 * kMSDomain, 1, kCudaExecutionProvider): T and T1 ∈ {float16, float, double, bfloat16}, T2 bool, inputs 3 and 4
 * OrtMemTypeCPUInput); schema in onnxruntime/core/graph/contrib_ops/contrib_defs.cc: data T, bias T, residual T
 * (optional), ratio T1 (optional), training_mode T2 (optional) → output T, mask T2 (optional). It has no CPU kernel.
 */
export const CUDA_CONTRIB_KERNELS: Readonly<Record<string, CudaKernelFacts>> = {
  // FusedMatMul: onnxruntime/contrib_ops/cuda/math/fused_matmul.cc (the CUDA MatMul kernel with transA/transB); ORT
  // 1.29 itself rewrites our bf16 Transpose → MatMul into it at level 'all' (bench/cuda-placement.ts set-up), so the
  // bfloat16 kernel exists in that build; float since its first version.
  'com.microsoft.FusedMatMul': { onnxVersion: 1, cuda: open(1), types: { T: ['bfloat16', 'float'] }, inputs: ['T', 'T'], outputs: ['T'] },
  'com.microsoft.BiasDropout': { onnxVersion: 1, cuda: open(1), types: { T: FLOAT4, T1: FLOAT4, T2: BOOL }, inputs: ['T', 'T', 'T', 'T1', 'T2'], outputs: ['T', 'T2'], cpuInputs: [3, 4] },
};

/** ORT's "small initializer" bound (fallback_cpu_capability.cc kSmallInitializerThreshold). */
const SMALL_INITIALIZER_ELEMENTS = 100;

function constraintAt(list: readonly string[], i: number, variadic: boolean | undefined): string | undefined {
  if (i < list.length) return list[i];
  return variadic ? list[list.length - 1] : undefined;
}

function fmtTypes(t: readonly DType[]): string {
  return `{${t.join(', ')}}`;
}

function versionText(f: CudaKernelFacts): string {
  return f.cuda.until === null ? `${f.cuda.since}+` : `[${f.cuda.since}, ${f.cuda.until}]`;
}

/** Why the CUDA kernel table rejects node `n` (empty when it has a CUDA kernel for its op, version and dtypes). */
export function cudaKernelProblems(n: Pick<Node, 'opType' | 'domain' | 'inputs' | 'outputs'>): string[] {
  const contrib = !!n.domain && n.domain !== 'ai.onnx';
  const f = contrib ? CUDA_CONTRIB_KERNELS[`${n.domain}.${n.opType}`] : CUDA_KERNELS[n.opType];
  if (contrib && !f) return [`op ${n.domain}.${n.opType} is not in the CUDA kernel table (default ONNX domain: CUDA_KERNELS; contrib ops: CUDA_CONTRIB_KERNELS)`];
  if (!f) return [`op ${n.opType} is not in the CUDA kernel table (engine/cudaKernels.ts): look up its CUDAExecutionProvider kernel in onnxruntime ${CUDA_TABLE_ORT_VERSION} before using it`];
  const problems: string[] = [];
  if (f.onnxVersion > CUDA_TABLE_OPSET || f.onnxVersion < f.cuda.since || (f.cuda.until !== null && f.onnxVersion > f.cuda.until)) {
    problems.push(`${n.opType}-${f.onnxVersion} (opset ${CUDA_TABLE_OPSET}) has no CUDA kernel: the CUDA registration covers versions ${versionText(f)}`);
  }
  const bound = new Map<string, { dtype: DType; what: string }>();
  const check = (kind: 'input' | 'output', i: number, t: Tensor | null, list: readonly string[], variadic: boolean | undefined) => {
    if (!t) return;
    const c = constraintAt(list, i, variadic);
    const what = `${kind} ${i} (${t.name})`;
    if (c === undefined) {
      problems.push(`${what}: ${n.opType} has no ${kind} ${i}`);
      return;
    }
    const allowed = f.types[c]!;
    if (!allowed.includes(t.dtype)) {
      problems.push(`${what} is ${t.dtype}; the CUDA ${n.opType}-${f.onnxVersion} kernel supports ${c} ∈ ${fmtTypes(allowed)}`);
      return;
    }
    if (f.heterogeneous?.includes(c)) return;
    const prev = bound.get(c);
    if (prev && prev.dtype !== t.dtype) problems.push(`${what} is ${t.dtype} but ${prev.what} is ${prev.dtype}: type constraint ${c} must be one dtype`);
    else if (!prev) bound.set(c, { dtype: t.dtype, what });
  };
  n.inputs.forEach((t, i) => check('input', i, t, f.inputs, f.variadicInputs));
  n.outputs.forEach((t, i) => check('output', i, t, f.outputs, f.variadicOutputs));
  return problems;
}

function subgraphsOf(n: Node): Graph[] {
  const out: Graph[] = [];
  for (const v of Object.values(n.attrs)) if (v !== null && typeof v === 'object' && 'nodes' in v && 'inputs' in v && 'outputs' in v) out.push(v as Graph);
  return out;
}

function isSmallInitializer(g: Graph, t: Tensor): boolean {
  const d = g.constantData(t);
  return !!d && d.shape.reduce((a, b) => a * b, 1) <= SMALL_INITIALIZER_ELEMENTS;
}

/**
 * The main-graph nodes ORT's CUDA partitioning would hand to the CPU provider (GetCpuPreferredNodes), with the
 * host tensor that pulled each one there. Nodes without a CUDA kernel are treated as CPU nodes (as ORT does) but
 * not listed: kernel problems are reported separately.
 */
export function cpuPreferredMainNodes(g: Graph): { node: Node; via: Tensor }[] {
  const nodes = g.nodes.filter((n) => !n.virtual);
  const order = new Map(nodes.map((n, i) => [n, i]));
  const consumers = new Map<Tensor, Node[]>();
  for (const n of nodes) for (const t of n.inputs) if (t) consumers.set(t, [...(consumers.get(t) ?? []), n]);
  const hasKernel = new Map(nodes.map((n) => [n, cudaKernelProblems(n).length === 0]));
  const hostTensors = new Set<Tensor>();
  const pending = new Set<Node>();
  const pushConsumers = (t: Tensor) => {
    for (const c of consumers.get(t) ?? []) pending.add(c);
  };
  for (const n of nodes) {
    if (!hasKernel.get(n)) continue;
    for (const i of CUDA_KERNELS[n.opType]!.cpuOutputs ?? []) {
      const t = n.outputs[i];
      if (!t) continue;
      hostTensors.add(t);
      pushConsumers(t);
    }
  }
  const graphInputs = new Set(g.inputs);
  const visited = new Set<Node>();
  const placed: { node: Node; via: Tensor }[] = [];
  for (;;) {
    // ORT pops candidates in topological order; construction order is topological.
    let cur: Node | undefined;
    for (const c of pending) if (!cur || order.get(c)! < order.get(cur)!) cur = c;
    if (!cur) break;
    pending.delete(cur);
    if (visited.has(cur)) continue;
    visited.add(cur);
    if (!hasKernel.get(cur)) {
      for (const t of cur.outputs) {
        hostTensors.add(t);
        pushConsumers(t);
      }
      continue;
    }
    const cpuInputs = CUDA_KERNELS[cur.opType]!.cpuInputs ?? [];
    let place = true;
    let via: Tensor | null = null;
    for (let i = 0; i < cur.inputs.length && place; i++) {
      const t = cur.inputs[i];
      if (!t) place = false; // an omitted optional input is no host tensor
      else if (t.dtype === 'float16' || t.dtype === 'bfloat16') place = false;
      else if (isSmallInitializer(g, t) || graphInputs.has(t)) continue;
      else if (!hostTensors.has(t) || cpuInputs.includes(i)) place = false;
      else via ??= t;
    }
    if (!place) continue;
    placed.push({ node: cur, via: via ?? cur.inputs[0]! });
    for (const t of cur.outputs) {
      hostTensors.add(t);
      pushConsumers(t);
    }
  }
  return placed;
}

/**
 * Nodes of `graph` (and of every Loop body in it, recursively; one entry per node, its problems joined by "; ")
 * that the CUDA provider of onnxruntime 1.29 would
 * not run with CPU fallback disabled. `singleIterationLoop` must match how the graph is emitted.
 */
export function cudaUnsupportedNodes(graph: Graph, opts: CudaCheckOptions = {}): CudaUnsupportedNode[] {
  if (OPSET !== CUDA_TABLE_OPSET) {
    throw new Error(`engine/cudaKernels.ts describes opset ${CUDA_TABLE_OPSET} but graphs are emitted at opset ${OPSET}: re-derive each op's schema version and CUDA kernel range`);
  }
  if (graph.parent) throw new Error('cudaUnsupportedNodes takes a main graph (Loop bodies are visited through it)');
  const out: CudaUnsupportedNode[] = [];
  const visit = (g: Graph, path: string) => {
    for (const n of g.nodes) {
      if (n.virtual) continue;
      const where = path ? ` (in Loop body ${path})` : '';
      const problems = cudaKernelProblems(n);
      if (problems.length) out.push({ node: n.name, op: n.opType, reason: problems.join('; ') + where });
      for (const sub of subgraphsOf(n)) visit(sub, path ? `${path}/${sub.name}` : sub.name);
    }
  };
  if (opts.singleIterationLoop) {
    // What Graph.wrappedProto emits around the graph: Loop(trip int64, cond bool) with one scan output per graph
    // output, then Squeeze(scan, axes int64) → the original output.
    const wrapLoop = { opType: 'Loop', domain: '', inputs: [fakeTensor('wrap_trip', 'int64'), fakeTensor('wrap_true', 'bool')], outputs: graph.outputs.map((t) => fakeTensor(`${t.name}_scan`, t.dtype)) };
    const loopProblems = cudaKernelProblems(wrapLoop);
    if (loopProblems.length) out.push({ node: 'wrap_loop', op: 'Loop', reason: `single-iteration wrapper: ${loopProblems.join('; ')}` });
    for (const t of graph.outputs) {
      const squeeze = { opType: 'Squeeze', domain: '', inputs: [fakeTensor(`${t.name}_scan`, t.dtype), fakeTensor('wrap_axes', 'int64')], outputs: [t] };
      const problems = cudaKernelProblems(squeeze);
      if (problems.length) out.push({ node: `wrap_squeeze(${t.name})`, op: 'Squeeze', reason: `single-iteration wrapper: ${problems.join('; ')}` });
    }
    visit(graph, `${graph.name}_once`);
  } else {
    visit(graph, '');
    for (const { node, via } of cpuPreferredMainNodes(graph)) {
      out.push({
        node: node.name,
        op: node.opType,
        reason:
          `onnxruntime places this shape computation on the CPU provider (it reads host tensor ${via.name}), which a CUDA ` +
          'session with CPU fallback disabled refuses in the main graph: emit with toModelBytes({ singleIterationLoop: true }) or move it into a Loop body',
      });
    }
  }
  return out;
}

/** A stand-in tensor for the wrapper nodes, which exist only in the emitted proto. */
function fakeTensor(name: string, dtype: DType): Tensor {
  return { name, dtype, shape: null } as unknown as Tensor;
}
