/**
 * The static cost model of one training step behind bench/step-traffic.ts and bench/profile-vs-model.ts (issue #8):
 * the engine's own train graph, built for a Setup, counted node by node — bytes read and written, MatMul FLOPs, one
 * kernel per node — and timed as bytes / bandwidth + FLOPs / rate + a fixed cost per kernel (Rates). The counting
 * rules (which ops move nothing, which read only what they pick, ORT's Gemm copying C into Y) are described in
 * step-traffic.ts's header; the default Rates are the ones fitted to the H200's measured steps.
 */
import { buildTrainGraph } from '../native-runner/engine/trainGraph';
import type { ModelVariants } from '../native-runner/engine/gpt2Graph';
import type { Graph, Node, Tensor, DType } from '../native-runner/engine/graph/graph';
import type { GPT2Config } from '../native-runner/model/types';

/** Bandwidth (bytes/s), MatMul rates (FLOP/s) and the fixed cost per kernel (s). */
export interface Rates {
  bw: number;
  bf16: number;
  tf32: number;
  launch: number;
}
/** 2.6 TB/s and 0.7 µs per kernel: the values that reproduce the H200's two measured bf16 steps of 2026-11-28. */
export const H200_RATES: Rates = { bw: 2.6e12, bf16: 600e12, tf32: 350e12, launch: 0.7e-6 };

/** One configuration of the step to model: the model, the shapes, precision and the engine's switches. */
export interface Setup {
  config: GPT2Config;
  B: number;
  T: number;
  /** Micro-batches per optimizer step. */
  A: number;
  dropout: number;
  bf16: boolean;
  variants: ModelVariants;
  fusedLmHead: boolean;
  flatState: boolean;
  /** trainGraph GraphOptions.flatNoDecay (absent: off). */
  flatNoDecay?: boolean;
  /** trainGraph GraphOptions.hoistInvariants (absent: the default, on). */
  hoistInvariants?: boolean;
  /**
   * Count two rewrites ONNX Runtime makes at optimisation level 'all' (the engine's default), seen in the optimized
   * 124M train graph that the CUDA provider produced on stubs (bench/cuda-placement.ts): BiasDropoutFusion (Add of a
   * 1-D bias → Dropout → optional residual Add, each read only by the next, becomes one com.microsoft BiasDropout
   * reading x, bias and residual and writing the output and mask) and MatMulTransposeFusion (a Transpose swapping
   * the last two axes read only by a MatMul disappears into a FusedMatMul), and one of level 'basic': a Transpose read
   * only by another Transpose is merged into it. Absent: on. false = our graph as emitted (what level 'disabled' runs).
   */
  ortFusions?: boolean;
}

const BYTES: Record<DType, number> = { float: 4, double: 8, float16: 2, bfloat16: 2, int64: 8, int32: 4, bool: 1, uint8: 1 };
/** Ops that only relabel a buffer (ORT aliases their output to the input) or read nothing but a shape: no kernel. */
export const METADATA_OPS = new Set(['Shape', 'Size', 'Reshape', 'Squeeze', 'Unsqueeze', 'Identity', 'Flatten']);
/** Ops that read only what they pick: the output's size from the data input, plus the indices. */
const PICKING_OPS = new Set(['Gather', 'GatherElements', 'GatherND', 'Slice']);

export interface Cost {
  nodes: number;
  bytes: number;
  flopsBf16: number;
  flopsF32: number;
}
export const zero = (): Cost => ({ nodes: 0, bytes: 0, flopsBf16: 0, flopsF32: 0 });
export const timeOf = (c: Cost, r: Rates = H200_RATES) => c.bytes / r.bw + c.flopsBf16 / r.bf16 + c.flopsF32 / r.tf32 + c.nodes * r.launch;
export const add = (c: Cost, d: Cost, times: number) => {
  c.nodes += d.nodes * times;
  c.bytes += d.bytes * times;
  c.flopsBf16 += d.flopsBf16 * times;
  c.flopsF32 += d.flopsF32 * times;
};

export type Part = 'forward' | 'backward' | 'step (norm, AdamW, accumulation)';
export const PARTS: Part[] = ['forward', 'backward', 'step (norm, AdamW, accumulation)'];
export type Tally = Cost & { part: Map<Part, number> };


export interface StepModel {
  setup: Setup;
  tokens: number;
  byPart: Map<Part, Cost>;
  byOp: Map<string, Tally>;
  byClass: Map<string, Tally>;
  total: Cost;
  microBody: Graph;
  fwdNodes: Set<Node>;
  nodeCost: (n: Node) => Cost;
  tensorClass: (n: Node) => string;
  /** Every counted node by name: its part, how many times it runs per optimizer step, its cost per execution, its op key. */
  nodes: Map<string, NodeEntry>;
  rates: Rates;
}

/** A counted node of the step (kernels only: nodes that move nothing are left out). */
export interface NodeEntry {
  node: Node;
  part: Part;
  /** Executions per optimizer step (A for the micro-batch body, 1 for the step body). */
  times: number;
  cost: Cost;
  /** Op type and output dtype, as in the tables: "Mul → float". */
  opKey: string;
  cls: string;
}

/** "Mul → float": a node's op type and its first output's dtype. */
export function opKeyOf(n: Node): string {
  return `${n.opType}${n.outputs[0] ? ` → ${n.outputs[0].dtype}` : ''}`;
}

function subgraphOf(n: Node): Graph | null {
  const b = n.attrs.body;
  return b && typeof b === 'object' && 'nodes' in b ? (b as Graph) : null;
}

/**
 * Forward = the nodes the micro-batch's loss depends on (ancestors of `lossOut`); the rest of the body is backward
 * (gradients, including derivative factors computed from forward values only, such as GELU's, and the gradient
 * accumulation adds).
 */
function forwardNodes(body: Graph, lossOut: Tensor): Set<Node> {
  const producer = new Map<string, Node>();
  for (const n of body.nodes) if (!n.virtual) for (const o of n.outputs) producer.set(o.name, n);
  const fwd = new Set<Node>();
  const stack = [lossOut.name];
  while (stack.length) {
    const n = producer.get(stack.pop()!);
    if (!n || fwd.has(n)) continue;
    fwd.add(n);
    for (const t of n.inputs) if (t) stack.push(t.name);
  }
  return fwd;
}

/** What a node works on, named after its largest tensor's shape: the attention matrices, the MLP's 4C activations … */
function classifier(cfg: GPT2Config, elements: (t: Tensor) => number): (n: Node) => string {
  const C = cfg.n_embd;
  const H = cfg.n_head;
  const V = cfg.vocab_size;
  return (n) => {
    let best: Tensor | null = null;
    for (const t of [...n.inputs, ...n.outputs]) if (t && (!best || elements(t) > elements(best))) best = t;
    const s = (best?.shape ?? []).map(String);
    const key = s.join(',');
    if (s.length === 4 && s[1] === String(H) && s[3] !== String(C / H) && s[2] !== String(C / H)) return '[B,H,T,T] attention matrices';
    if (s.length === 4) return '[B,H,T,D] heads';
    if (key === `N,${V}`) return '[N,V] logits';
    if (key === `${V},${C}`) return '[V,C] embedding / head weight';
    if (key === `N,${4 * C}`) return '[N,4C] MLP activations';
    if (key === `N,${3 * C}`) return '[N,3C] qkv';
    if (key === `N,${C}` || key === `M,${C}`) return '[N,C] residual stream, LN';
    if (s.length === 2 && !s.some((d) => /[A-Z]/.test(d))) return 'other parameter-shaped';
    return 'other';
  };
}

/** Builds the engine's train graph for `setup` and counts one optimizer step of it (A micro-batches). */
export function modelStep(setup: Setup, rates: Rates = H200_RATES): StepModel {
  const { B, T, A, config } = setup;
  const rate = setup.dropout;
  const timeOf1 = (c: Cost) => timeOf(c, rates);
  const graph = buildTrainGraph(config, { weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 }, {
    dropout: { embd: rate, attn: rate, resid: rate },
    bf16: setup.bf16,
    seed: 1,
    accumulate: A > 1,
    fusedLmHead: setup.fusedLmHead,
    flatState: setup.flatState,
    flatNoDecay: setup.flatNoDecay,
    variants: setup.variants,
    hoistInvariants: setup.hoistInvariants,
  });
  const symbols: Record<string, number> = { B, T, Tq: T, Tk: T, N: B * T, M: B * T, K: 1, A };
  // Letters a composite symbolic dim may be made of (a flattened 'BHTk' = B·H·Tk).
  const letters: [string, number][] = [['Tq', T], ['Tk', T], ['B', B], ['H', config.n_head], ['T', T], ['N', B * T], ['D', config.n_embd / config.n_head]];
  const symbolValue = (d: string): number | undefined => {
    if (symbols[d] !== undefined) return symbols[d];
    let rest = d;
    let v = 1;
    while (rest) {
      const hit = letters.find(([l]) => rest.startsWith(l));
      if (!hit) return undefined;
      v *= hit[1];
      rest = rest.slice(hit[0].length);
    }
    return v;
  };
  const elements = (t: Tensor): number => {
    if (!t.shape) throw new Error(`tensor ${t.name}: no shape, the model needs every shape`);
    return t.shape.reduce<number>((a, d) => {
      const v = typeof d === 'number' ? d : symbolValue(d);
      if (v === undefined) throw new Error(`tensor ${t.name}: unknown symbolic dim ${d}`);
      return a * v;
    }, 1);
  };
  const bytesOf = (t: Tensor) => elements(t) * BYTES[t.dtype];
  /** FLOPs of a MatMul/Gemm: 2 · (output elements) · (inner dimension). */
  const flopsOf = (n: Node): number => {
    if (n.opType !== 'MatMul' && n.opType !== 'Gemm' && n.opType !== 'FusedMatMul') return 0;
    const aShape = n.inputs[0]!.shape!;
    const transA = n.opType !== 'MatMul' && n.attrs.transA === 1;
    const k = aShape[transA ? aShape.length - 2 : aShape.length - 1]!;
    const kv = typeof k === 'number' ? k : symbolValue(k);
    if (kv === undefined) throw new Error(`node ${n.name}: unknown symbolic inner dim ${k}`);
    return 2 * elements(n.outputs[0]!) * kv;
  };
  const nodeCost = (n: Node): Cost => {
    if (METADATA_OPS.has(n.opType)) return zero();
    if (PICKING_OPS.has(n.opType)) return { nodes: 1, bytes: 2 * bytesOf(n.outputs[0]!) + (n.opType === 'Slice' ? 0 : bytesOf(n.inputs[1]!)), flopsBf16: 0, flopsF32: 0 };
    let bytes = 0;
    for (const t of n.inputs) if (t) bytes += bytesOf(t);
    for (const t of n.outputs) bytes += bytesOf(t);
    if (n.opType === 'Gemm' && n.inputs[2]) bytes += 2 * bytesOf(n.outputs[0]!);
    const f = flopsOf(n);
    const lowp = n.inputs[0]?.dtype === 'bfloat16' || n.inputs[0]?.dtype === 'float16';
    return { nodes: 1, bytes, flopsBf16: lowp ? f : 0, flopsF32: lowp ? 0 : f };
  };
  const tensorClass = classifier(config, elements);

  /** Cost overrides for the nodes ORT's fusions and merges replace (Setup.ortFusions), per body. */
  const fused = new Map<Node, Cost>();
  const modelFusions = (body: Graph) => {
    const readers = new Map<Tensor, Node[]>();
    for (const n of body.nodes) if (!n.virtual) for (const t of n.inputs) if (t) readers.get(t)?.push(n) ?? readers.set(t, [n]);
    const outs = new Set(body.outputs);
    const producer = new Map<Tensor, Node>();
    for (const n of body.nodes) if (!n.virtual) for (const t of n.outputs) producer.set(t, n);
    const onlyReader = (t: Tensor): Node | undefined => {
      const r = readers.get(t);
      return r && r.length === 1 && !outs.has(t) ? r[0] : undefined;
    };
    for (const n of body.nodes) {
      if (n.virtual) continue;
      if (n.opType === 'Add' && n.inputs.length === 2) {
        const biasAt = n.inputs.findIndex((t) => t?.shape?.length === 1);
        const drop = onlyReader(n.outputs[0]!);
        if (biasAt < 0 || drop?.opType !== 'Dropout' || drop.inputs[0] !== n.outputs[0]) continue;
        // As ORT 1.29 fused our graph: the bias Add and the Dropout, not the residual Add after them (the fused
        // nodes of the optimized 124M graph have an empty residual input).
        const x = n.inputs[1 - biasAt]!;
        let bytes = bytesOf(x) + bytesOf(n.inputs[biasAt]!) + bytesOf(drop.outputs[0]!);
        if (drop.outputs[1]) bytes += bytesOf(drop.outputs[1]);
        fused.set(n, zero());
        fused.set(drop, { nodes: 1, bytes, flopsBf16: 0, flopsF32: 0 });
      } else if (n.opType === 'Transpose') {
        const perm = n.attrs.perm as number[] | undefined;
        const r = perm?.length ?? 0;
        const swapsLastTwo = !!perm && r >= 2 && perm.every((p, i) => (i < r - 2 ? p === i : p === (i === r - 2 ? r - 1 : r - 2)));
        const reader = onlyReader(n.outputs[0]!);
        // MatMulTransposeFusion ('all'; in the optimized 124M graph only as the MatMul's second operand, transB,
        // and not on a Transpose of a Transpose, which the transpose optimizer has composed into one first), and
        // that optimizer's merge of a Transpose read only by another Transpose ('basic'). On the graph ORT's optimized
        // copy was dumped from, these rules remove 3 of the 14 Transposes per layer and micro-batch, as ORT did (168 → 132).
        const ofTranspose = producer.get(n.inputs[0]!)?.opType === 'Transpose';
        if ((swapsLastTwo && !ofTranspose && reader?.opType === 'MatMul' && reader.inputs[1] === n.outputs[0]) || reader?.opType === 'Transpose') fused.set(n, zero());
      }
    }
  };

  // The step body (the outer Loop's body) and, with accumulation, the micro-batch body inside it.
  const stepBody = subgraphOf(graph.nodes.find((n) => n.opType === 'Loop')!)!;
  const innerLoop = stepBody.nodes.find((n) => n.opType === 'Loop');
  const microBody = innerLoop ? subgraphOf(innerLoop)! : stepBody;
  // The loss: the micro body's last output (nll_acc + Σ w·NLL), or the step body's loss output without accumulation.
  const lossOutput = microBody === stepBody ? stepBody.outputs[stepBody.outputs.length - 3]! : microBody.outputs[microBody.outputs.length - 1]!;
  const fwdNodes = forwardNodes(microBody, lossOutput);
  if (setup.ortFusions ?? true) for (const b of new Set([microBody, stepBody])) modelFusions(b);

  const byPart = new Map<Part, Cost>();
  const byOp = new Map<string, Tally>();
  const byClass = new Map<string, Tally>();
  const tally = (m: Map<string, Tally>, key: string, c: Cost, part: Part, times: number) => {
    if (!m.has(key)) m.set(key, { ...zero(), part: new Map() });
    const o = m.get(key)!;
    add(o, c, times);
    o.part.set(part, (o.part.get(part) ?? 0) + timeOf1(c) * times);
  };
  const nodes = new Map<string, NodeEntry>();
  const account = (n: Node, part: Part, times: number) => {
    if (n.virtual || n.opType === 'Loop') return;
    const c = fused.get(n) ?? nodeCost(n);
    if (c.nodes === 0) return;
    if (!byPart.has(part)) byPart.set(part, zero());
    add(byPart.get(part)!, c, times);
    const opKey = opKeyOf(n);
    const cls = tensorClass(n);
    tally(byOp, opKey, c, part, times);
    tally(byClass, cls, c, part, times);
    nodes.set(n.name, { node: n, part, times, cost: c, opKey, cls });
  };
  // Per optimizer step: A micro-batch bodies and one step body (without accumulation the step body is the micro body).
  if (microBody !== stepBody) {
    for (const n of microBody.nodes) account(n, fwdNodes.has(n) ? 'forward' : 'backward', A);
    for (const n of stepBody.nodes) account(n, 'step (norm, AdamW, accumulation)', 1);
  } else {
    for (const n of stepBody.nodes) account(n, fwdNodes.has(n) ? 'forward' : 'backward', 1);
  }
  const total = zero();
  for (const c of byPart.values()) add(total, c, 1);
  return { setup, tokens: A * B * T, byPart, byOp, byClass, total, microBody, fwdNodes, nodeCost, tensorClass, nodes, rates };
}

