/**
 * A small ONNX graph builder. A `Graph` holds typed tensor handles (dtype + static/symbolic shape), nodes in
 * topological (construction) order, graph inputs/outputs and constants; subgraphs (Loop bodies) share the
 * parent's name scope so outer-scope values can be referenced by name, as ONNX allows. `toModelBytes`
 * emits an ONNX ModelProto (opset 21) for `ort.InferenceSession.create`.
 *
 * Shapes: a dim is a number or a symbol (string). Shape inference covers the ops the engine uses; an op
 * whose output shape is not known gets `null` (autodiff rules that need static shapes then fail loudly).
 * Virtual nodes (`customGradient`) are never emitted: they only tell autodiff how to differentiate a
 * region whose own nodes are marked `noGrad`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { encodeModel, OnnxAttrType, OnnxDataType, type AttributeProtoObj, type GraphProtoObj, type NodeProtoObj, type TensorProtoObj, type ValueInfoProtoObj } from './onnxProto';

export type DType = 'float' | 'double' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'bool' | 'uint8';
export type Dim = number | string;
export type Shape = Dim[];

export const OPSET = 21;

export function isFloatDType(d: DType): boolean {
  return d === 'float' || d === 'double' || d === 'float16' || d === 'bfloat16';
}

export class Tensor {
  constructor(
    readonly graph: Graph,
    readonly name: string,
    readonly dtype: DType,
    public shape: Shape | null,
  ) {}
  get rank(): number | null {
    return this.shape ? this.shape.length : null;
  }
}

/** Attribute values: integers → INT, `{ f }` → FLOAT, `{ floats }`, number[] → INTS, string → STRING, Graph → GRAPH. */
export type AttrValue = number | { f: number } | { floats: number[] } | number[] | string | Graph | { tensor: ConstantData };
export type Attrs = Record<string, AttrValue>;

export interface ConstantData {
  dtype: DType;
  shape: number[];
  data: Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;
}

/**
 * Custom backward of a region: one gradient (or null) per region input. `gyScale`: the constant factor each gradOutput
 * still has to be multiplied by — ≠ 1 only for a region created with { acceptsScale: true } whose output's only partial
 * is a deferred scaling (the Dropout rule's 1/(1−p); autodiff.ts ScaledGrad): the region applies it where it is cheapest.
 */
export type CustomGradFn = (g: Graph, gradOutputs: (Tensor | null)[], needs: boolean[], gyScale: number[]) => (Tensor | DeferredGrad | null)[];

/**
 * A gradient that is a LINEAR function of `raw` with coefficients that read only values fixed outside the
 * current Loop iteration (parameters): a custom gradient may return it for an input so that a gradient-accumulation
 * Loop sums the raw tensors over its iterations and builds the gradient once, after the Loop, as
 * finish(Σ raw) = Σ finish(raw) (autodiff.gradientsDeferred; trainGraph.ts). `finish(g, raw)` builds it in `g`
 * (the Loop's graph or, when not deferred, the current one) from tensors of that shape; it must read nothing but
 * `raw` and values visible in `g` (parameters, constants it makes). Several inputs may share the same raw tensors.
 */
export interface DeferredGrad {
  kind: 'deferred';
  raw: Tensor[];
  finish: (g: Graph, raw: Tensor[]) => Tensor;
}

export interface Node {
  opType: string;
  domain: string;
  name: string;
  inputs: (Tensor | null)[];
  outputs: Tensor[];
  attrs: Attrs;
  /** Autodiff treats the outputs as constants. */
  noGrad: boolean;
  /** Not emitted; carries a custom gradient for a region. */
  virtual?: { gradFn: CustomGradFn; acceptsScale?: boolean };
}

class NameScope {
  private used = new Set<string>();
  private counter = 0;
  unique(base: string): string {
    const clean = base.replace(/[^A-Za-z0-9_.\/:-]/g, '_') || 't';
    if (!this.used.has(clean)) {
      this.used.add(clean);
      return clean;
    }
    for (;;) {
      const n = `${clean}__${this.counter++}`;
      if (!this.used.has(n)) {
        this.used.add(n);
        return n;
      }
    }
  }
  reserve(name: string): boolean {
    if (this.used.has(name)) return false;
    this.used.add(name);
    return true;
  }
}

/** Ops whose outputs differ between two runs on the same inputs (never hoisted out of a Loop body). */
const RANDOM_OPS = new Set(['Dropout', 'RandomNormal', 'RandomNormalLike', 'RandomUniform', 'RandomUniformLike', 'Multinomial', 'Bernoulli']);

const DTYPE_CODE: Record<DType, number> = {
  float: OnnxDataType.float,
  double: OnnxDataType.double,
  float16: OnnxDataType.float16,
  bfloat16: OnnxDataType.bfloat16,
  int64: OnnxDataType.int64,
  int32: OnnxDataType.int32,
  bool: OnnxDataType.bool,
  uint8: OnnxDataType.uint8,
};

function broadcastShapes(a: Shape | null, b: Shape | null): Shape | null {
  if (!a || !b) return null;
  const r = Math.max(a.length, b.length);
  const out: Shape = [];
  for (let i = 0; i < r; i++) {
    const da = i < r - a.length ? 1 : a[i - (r - a.length)]!;
    const db = i < r - b.length ? 1 : b[i - (r - b.length)]!;
    if (da === 1) out.push(db);
    else if (db === 1) out.push(da);
    else if (da === db) out.push(da);
    else if (typeof da === 'number' && typeof db === 'string') out.push(da);
    else if (typeof db === 'number' && typeof da === 'string') out.push(db);
    else if (typeof da === 'string' && typeof db === 'string') out.push(da);
    else throw new Error(`broadcast of shapes [${a}] and [${b}] is impossible`);
  }
  return out;
}

function normAxis(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

export class Graph {
  readonly nodes: Node[] = [];
  readonly inputs: Tensor[] = [];
  readonly outputs: Tensor[] = [];
  readonly constants: { tensor: Tensor; data: ConstantData }[] = [];
  private readonly scope: NameScope;
  readonly parent: Graph | null;
  /** Names of tensors whose values may be referenced from this graph's subgraphs. */
  constructor(readonly name = 'main', parent: Graph | null = null) {
    this.parent = parent;
    this.scope = parent ? parent.scope : new NameScope();
  }

  /** A subgraph (Loop/If body) sharing this graph's name scope. */
  subgraph(name: string): Graph {
    return new Graph(name, this);
  }

  uniqueName(base: string): string {
    return this.scope.unique(base);
  }

  private readonly memos = new Map<string, unknown>();
  /**
   * The value `make()` returned the first time `key` was asked for in this graph: for tensors built once per graph
   * and shared by every layer (a constant table, a cast of the attention bias, a ones column …). Subgraphs have
   * their own memo, as their tensors are theirs.
   */
  memo<T>(key: string, make: () => T): T {
    if (!this.memos.has(key)) this.memos.set(key, make());
    return this.memos.get(key) as T;
  }

  private newTensor(base: string, dtype: DType, shape: Shape | null): Tensor {
    return new Tensor(this, this.scope.unique(base), dtype, shape);
  }

  /** Declares a graph input with an exact name (it must be unique in the model). */
  input(name: string, dtype: DType, shape: Shape): Tensor {
    if (!this.scope.reserve(name)) throw new Error(`graph input name ${name} is already used`);
    const t = new Tensor(this, name, dtype, shape);
    this.inputs.push(t);
    return t;
  }

  /** Declares a graph input named `base` or, if taken, a unique variant (Loop bodies). */
  freshInput(base: string, dtype: DType, shape: Shape): Tensor {
    const t = new Tensor(this, this.scope.unique(base), dtype, shape);
    this.inputs.push(t);
    return t;
  }

  /** Marks `t` as a graph output, renaming through Identity when `name` is given. */
  output(t: Tensor, name?: string): Tensor {
    let out = t;
    if (name !== undefined && name !== t.name) {
      if (!this.scope.reserve(name)) throw new Error(`graph output name ${name} is already used`);
      out = new Tensor(this, name, t.dtype, t.shape);
      this.nodes.push({ opType: 'Identity', domain: '', name: this.scope.unique(`Identity_${name}`), inputs: [t], outputs: [out], attrs: {}, noGrad: false });
    } else if (this.inputs.includes(t) || this.outputs.includes(t)) {
      out = this.identity(t);
    }
    this.outputs.push(out);
    return out;
  }

  /** A constant (emitted as an initializer of this graph). */
  constant(data: ConstantData, base = 'const'): Tensor {
    const t = this.newTensor(base, data.dtype, data.shape.slice());
    this.constants.push({ tensor: t, data });
    return t;
  }

  scalar(v: number, dtype: DType = 'float'): Tensor {
    return this.constant(makeData(dtype, [], [v]), 'scalar');
  }
  /** 1-D int64 constant. */
  ints(v: number[]): Tensor {
    return this.constant(makeData('int64', [v.length], v), 'ints');
  }
  /** A constant of the given float dtype and shape filled from `values`. */
  tensorConst(dtype: DType, shape: number[], values: ArrayLike<number>): Tensor {
    return this.constant(makeData(dtype, shape, values), 'c');
  }

  /**
   * Adds a node. `outputs` gives each output's dtype and shape; omitted → inferred (elementwise ops) or null.
   */
  node(opType: string, inputs: (Tensor | null)[], attrs: Attrs = {}, outputs?: { dtype: DType; shape: Shape | null; name?: string }[], domain = ''): Tensor[] {
    const outSpecs: { dtype: DType; shape: Shape | null; name?: string }[] = outputs ?? [this.inferSingle(opType, inputs, attrs)];
    const nodeName = this.scope.unique(opType);
    const outs = outSpecs.map((s) => this.newTensor(s.name ?? `${nodeName}_out`, s.dtype, s.shape));
    this.nodes.push({ opType, domain, name: nodeName, inputs, outputs: outs, attrs, noGrad: false });
    return outs;
  }

  /** Single-output node. */
  op(opType: string, inputs: (Tensor | null)[], attrs: Attrs = {}, out?: { dtype: DType; shape: Shape | null }): Tensor {
    return this.node(opType, inputs, attrs, out ? [out] : undefined)[0]!;
  }

  private inferSingle(opType: string, inputs: (Tensor | null)[], attrs: Attrs): { dtype: DType; shape: Shape | null } {
    const a = inputs[0];
    if (!a) throw new Error(`${opType}: first input missing`);
    switch (opType) {
      case 'Add':
      case 'Sub':
      case 'Mul':
      case 'Div':
      case 'Pow':
        return { dtype: a.dtype, shape: broadcastShapes(a.shape, inputs[1]!.shape) };
      case 'Max':
      case 'Min':
      case 'Sum':
        return { dtype: a.dtype, shape: inputs.reduce<Shape | null>((s, t) => broadcastShapes(s, t!.shape), a.shape) };
      case 'Equal':
      case 'Less':
      case 'Greater':
      case 'LessOrEqual':
      case 'GreaterOrEqual':
      case 'And':
      case 'Or':
        return { dtype: 'bool', shape: broadcastShapes(a.shape, inputs[1]!.shape) };
      case 'Not':
        return { dtype: 'bool', shape: a.shape };
      case 'Where':
        return { dtype: inputs[1]!.dtype, shape: broadcastShapes(broadcastShapes(a.shape, inputs[1]!.shape), inputs[2]!.shape) };
      case 'Neg':
      case 'Exp':
      case 'Log':
      case 'Tanh':
      case 'Sqrt':
      case 'Abs':
      case 'Reciprocal':
      case 'Sigmoid':
      case 'Relu':
      case 'Identity':
      case 'Softmax':
      case 'LogSoftmax':
      case 'Gelu':
      case 'Cos':
      case 'Sin':
      case 'Erf':
        return { dtype: a.dtype, shape: a.shape };
      case 'Cast':
        return { dtype: dtypeFromCode(attrs.to as number), shape: a.shape };
      case 'Shape':
        return { dtype: 'int64', shape: a.shape ? [a.shape.length] : null };
      case 'Transpose': {
        const perm = attrs.perm as number[];
        return { dtype: a.dtype, shape: a.shape ? perm.map((p) => a.shape![p]!) : null };
      }
      default:
        return { dtype: a.dtype, shape: null };
    }
  }

  // ---- op helpers ---------------------------------------------------------------------------------
  add(a: Tensor, b: Tensor): Tensor { return this.op('Add', [a, b]); }
  sub(a: Tensor, b: Tensor): Tensor { return this.op('Sub', [a, b]); }
  mul(a: Tensor, b: Tensor): Tensor { return this.op('Mul', [a, b]); }
  div(a: Tensor, b: Tensor): Tensor { return this.op('Div', [a, b]); }
  neg(a: Tensor): Tensor { return this.op('Neg', [a]); }
  exp(a: Tensor): Tensor { return this.op('Exp', [a]); }
  log(a: Tensor): Tensor { return this.op('Log', [a]); }
  tanh(a: Tensor): Tensor { return this.op('Tanh', [a]); }
  sqrt(a: Tensor): Tensor { return this.op('Sqrt', [a]); }
  identity(a: Tensor): Tensor { return this.op('Identity', [a]); }
  max(a: Tensor, b: Tensor): Tensor { return this.op('Max', [a, b]); }
  min(a: Tensor, b: Tensor): Tensor { return this.op('Min', [a, b]); }
  where(c: Tensor, a: Tensor, b: Tensor): Tensor { return this.op('Where', [c, a, b]); }
  equal(a: Tensor, b: Tensor): Tensor { return this.op('Equal', [a, b]); }
  shapeOf(a: Tensor): Tensor { return this.op('Shape', [a]); }

  cast(a: Tensor, to: DType): Tensor {
    if (a.dtype === to) return a;
    return this.op('Cast', [a], { to: DTYPE_CODE[to] });
  }

  /** A float scalar of `like`'s dtype. */
  scalarLike(v: number, like: Tensor): Tensor {
    return this.scalar(v, like.dtype);
  }

  transpose(a: Tensor, perm: number[]): Tensor {
    return this.op('Transpose', [a], { perm });
  }

  /** Reshape to a constant target (ONNX semantics: 0 copies, -1 infers); `outShape` declares the result. */
  reshape(a: Tensor, target: number[] | Tensor, outShape: Shape | null): Tensor {
    const t = Array.isArray(target) ? this.ints(target) : target;
    return this.op('Reshape', [a, t], {}, { dtype: a.dtype, shape: outShape });
  }

  matmul(a: Tensor, b: Tensor): Tensor {
    let shape: Shape | null = null;
    if (a.shape && b.shape && a.shape.length >= 2 && b.shape.length >= 2) {
      const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2))!;
      shape = [...batch, a.shape[a.shape.length - 2]!, b.shape[b.shape.length - 1]!];
    }
    return this.op('MatMul', [a, b], {}, { dtype: a.dtype, shape });
  }

  /** Y = op(A)·op(B) (+ C): 2-D only. */
  gemm(a: Tensor, b: Tensor, c: Tensor | null, opts: { transA?: boolean; transB?: boolean } = {}): Tensor {
    const as = a.shape!;
    const bs = b.shape!;
    const M = opts.transA ? as[1]! : as[0]!;
    const N = opts.transB ? bs[0]! : bs[1]!;
    const attrs: Attrs = {};
    if (opts.transA) attrs.transA = 1;
    if (opts.transB) attrs.transB = 1;
    return this.op('Gemm', c ? [a, b, c] : [a, b], attrs, { dtype: a.dtype, shape: [M, N] });
  }

  private reducedShape(a: Tensor, axes: number[] | null, keepdims: boolean): Shape | null {
    if (!a.shape) return null;
    const r = a.shape.length;
    const ax = axes === null ? a.shape.map((_, i) => i) : axes.map((x) => normAxis(x, r));
    const out: Shape = [];
    a.shape.forEach((d, i) => {
      if (ax.includes(i)) {
        if (keepdims) out.push(1);
      } else out.push(d);
    });
    return out;
  }

  /** Reduce over `axes` (null = all). */
  reduce(op: 'ReduceSum' | 'ReduceMean' | 'ReduceMax' | 'ReduceSumSquare' | 'ReduceMin' | 'ReduceL2', a: Tensor, axes: number[] | null, keepdims: boolean): Tensor {
    const inputs: (Tensor | null)[] = [a];
    if (axes !== null) inputs.push(this.ints(axes));
    return this.op(op, inputs, { keepdims: keepdims ? 1 : 0 }, { dtype: a.dtype, shape: this.reducedShape(a, axes, keepdims) });
  }
  reduceSum(a: Tensor, axes: number[] | null, keepdims: boolean): Tensor {
    return this.reduce('ReduceSum', a, axes, keepdims);
  }

  softmax(a: Tensor, axis = -1): Tensor {
    return this.op('Softmax', [a], { axis });
  }

  unsqueeze(a: Tensor, axes: number[]): Tensor {
    let shape: Shape | null = null;
    if (a.shape) {
      const r = a.shape.length + axes.length;
      const ax = axes.map((x) => normAxis(x, r));
      shape = [];
      let j = 0;
      for (let i = 0; i < r; i++) shape.push(ax.includes(i) ? 1 : a.shape[j++]!);
    }
    return this.op('Unsqueeze', [a, this.ints(axes)], {}, { dtype: a.dtype, shape });
  }

  squeeze(a: Tensor, axes: number[]): Tensor {
    let shape: Shape | null = null;
    if (a.shape) {
      const ax = axes.map((x) => normAxis(x, a.shape!.length));
      shape = a.shape.filter((_, i) => !ax.includes(i));
    }
    return this.op('Squeeze', [a, this.ints(axes)], {}, { dtype: a.dtype, shape });
  }

  concat(parts: Tensor[], axis: number): Tensor {
    let shape: Shape | null = null;
    if (parts.every((p) => p.shape)) {
      const r = parts[0]!.shape!.length;
      const ax = normAxis(axis, r);
      shape = parts[0]!.shape!.slice();
      const ds = parts.map((p) => p.shape![ax]!);
      shape[ax] = ds.every((d) => typeof d === 'number') ? (ds as number[]).reduce((x, y) => x + y, 0) : ds.join('+');
    }
    return this.op('Concat', parts, { axis }, { dtype: parts[0]!.dtype, shape });
  }

  /** Split along `axis` into parts of the given static sizes. */
  split(a: Tensor, axis: number, sizes: number[]): Tensor[] {
    const ax = normAxis(axis, a.shape!.length);
    return this.node(
      'Split',
      [a, this.ints(sizes)],
      { axis },
      sizes.map((s) => {
        const shape = a.shape!.slice();
        shape[ax] = s;
        return { dtype: a.dtype, shape };
      }),
    );
  }

  /** Gather along axis 0 (embedding lookup or picking one index of a stacked tensor). */
  gather(data: Tensor, indices: Tensor, axis = 0): Tensor {
    let shape: Shape | null = null;
    if (data.shape && indices.shape) {
      const ax = normAxis(axis, data.shape.length);
      shape = [...data.shape.slice(0, ax), ...indices.shape, ...data.shape.slice(ax + 1)];
    }
    return this.op('Gather', [data, indices], { axis }, { dtype: data.dtype, shape });
  }

  gatherElements(data: Tensor, indices: Tensor, axis: number): Tensor {
    return this.op('GatherElements', [data, indices], { axis }, { dtype: data.dtype, shape: indices.shape });
  }

  expand(a: Tensor, shapeTensor: Tensor, outShape: Shape | null): Tensor {
    return this.op('Expand', [a, shapeTensor], {}, { dtype: a.dtype, shape: outShape });
  }

  /** LayerNormalization over the last axis; also returns Mean and InvStdDev ([..., 1]) for the gradient. */
  layerNorm(x: Tensor, scale: Tensor, bias: Tensor, epsilon: number): Tensor {
    const statShape = x.shape ? [...x.shape.slice(0, -1), 1] : null;
    const stashType = 'float';
    return this.node('LayerNormalization', [x, scale, bias], { axis: -1, epsilon: { f: epsilon } }, [
      { dtype: x.dtype, shape: x.shape },
      { dtype: stashType, shape: statShape },
      { dtype: stashType, shape: statShape },
    ])[0]!;
  }

  /** ONNX Dropout in training mode; returns the output (its mask is the node's second output). */
  dropout(x: Tensor, ratio: number, seed?: number): Tensor {
    if (ratio <= 0) return x;
    return this.dropoutWithMask(x, ratio, seed).out;
  }

  /** Dropout in training mode (ratio > 0) returning its output and the bool keep-mask (for hand-written backwards). */
  dropoutWithMask(x: Tensor, ratio: number, seed?: number): { out: Tensor; mask: Tensor } {
    const attrs: Attrs = {};
    if (seed !== undefined) attrs.seed = seed;
    const [out, mask] = this.node('Dropout', [x, this.scalar(ratio, x.dtype === 'double' ? 'double' : 'float'), this.constant(makeData('bool', [], [1]), 'training')], attrs, [
      { dtype: x.dtype, shape: x.shape },
      { dtype: 'bool', shape: x.shape },
    ]);
    return { out: out!, mask: mask! };
  }

  /** Marks the nodes that produced `ts` (and only those) as constants for autodiff. */
  stopGradient(t: Tensor): Tensor {
    const n = this.nodes.find((x) => x.outputs.includes(t));
    if (n) n.noGrad = true;
    return t;
  }

  /**
   * Gives the region computing `outputs` from `inputs` a custom gradient: every node added by `build`
   * is marked noGrad and a virtual node carries `gradFn` for autodiff.
   */
  customGradient(inputs: Tensor[], build: () => Tensor[], gradFn: CustomGradFn, opts: { acceptsScale?: boolean } = {}): Tensor[] {
    const start = this.nodes.length;
    const outputs = build();
    for (let i = start; i < this.nodes.length; i++) this.nodes[i]!.noGrad = true;
    this.nodes.push({ opType: 'CustomGradient', domain: '', name: this.scope.unique('CustomGradient'), inputs, outputs, attrs: {}, noGrad: false, virtual: { gradFn, ...(opts.acceptsScale ? { acceptsScale: true } : {}) } });
    return outputs;
  }

  /** The data of `t` when it is a constant of this graph or an enclosing one, else undefined. */
  constantData(t: Tensor): ConstantData | undefined {
    for (let g: Graph | null = this; g; g = g.parent) {
      const c = g.constants.find((x) => x.tensor === t);
      if (c) return c.data;
    }
    return undefined;
  }

  /**
   * Loop-invariant code motion for a Loop body `body` (a subgraph of this graph) before its Loop node is
   * added: every node of the body whose inputs are the same in each iteration — values of this or an
   * enclosing graph, constants, outputs of nodes moved before it — is moved, in order, to the end of this
   * graph, with the body constants it reads. What the body computes is unchanged; the moved nodes run once per
   * Loop instead of once per iteration (the micro-batch Loop's bf16 weight casts: once per optimizer step).
   * Never moved: random ops (a moved Dropout would reuse one mask), nodes with subgraphs, nodes producing a body
   * output, and the virtual nodes of custom-gradient regions (not emitted; they stay as markers).
   * Returns the moved nodes.
   */
  hoistInvariantsFrom(body: Graph): Node[] {
    if (body.parent !== this) throw new Error(`hoistInvariantsFrom: ${body.name} is not a subgraph of ${this.name}`);
    const variant = new Set<Tensor>(body.inputs);
    const bodyOutputs = new Set(body.outputs);
    const moved: Node[] = [];
    const kept: Node[] = [];
    for (const n of body.nodes) {
      if (n.virtual) {
        kept.push(n);
        continue;
      }
      const movable =
        !RANDOM_OPS.has(n.opType) &&
        !Object.values(n.attrs).some((a) => a instanceof Graph) &&
        n.inputs.every((t) => !t || !variant.has(t)) &&
        n.outputs.every((t) => !bodyOutputs.has(t));
      if (movable) moved.push(n);
      else {
        kept.push(n);
        for (const t of n.outputs) variant.add(t);
      }
    }
    if (moved.length === 0) return moved;
    const read = new Set<Tensor>();
    for (const n of moved) for (const t of n.inputs) if (t) read.add(t);
    const stay: typeof body.constants = [];
    for (const c of body.constants) (read.has(c.tensor) ? this.constants : stay).push(c);
    body.constants.splice(0, body.constants.length, ...stay);
    body.nodes.splice(0, body.nodes.length, ...kept);
    this.nodes.push(...moved);
    return moved;
  }

  /** Zeros shaped like `like` (dynamic shape). */
  zerosLike(like: Tensor): Tensor {
    return this.op('ConstantOfShape', [this.shapeOf(like)], { value: { tensor: makeData(like.dtype, [1], [0]) } }, { dtype: like.dtype, shape: like.shape });
  }

  // ---- emission ------------------------------------------------------------------------------------
  toProto(ext?: ExternalDataSink): GraphProtoObj {
    const valueInfo = (t: Tensor): ValueInfoProtoObj => ({
      name: t.name,
      type: {
        tensorType: {
          elemType: DTYPE_CODE[t.dtype],
          ...(t.shape ? { shape: { dim: t.shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } : {}),
        },
      },
    });
    const nodes: NodeProtoObj[] = [];
    for (const n of this.nodes) {
      if (n.virtual) continue;
      nodes.push({
        input: n.inputs.map((t) => (t ? t.name : '')),
        output: n.outputs.map((t) => t.name),
        name: n.name,
        opType: n.opType,
        ...(n.domain ? { domain: n.domain } : {}),
        attribute: Object.entries(n.attrs).map(([k, v]) => attrProto(k, v, ext)),
      });
    }
    return {
      name: this.name,
      node: nodes,
      initializer: this.constants.map((c) => tensorProto(c.tensor.name, c.data, ext)),
      input: this.inputs.map(valueInfo),
      // Loop body outputs keep their shapes loose (symbolic dims may change per iteration).
      output: this.outputs.map((t) => (this.parent ? { name: t.name, type: { tensorType: { elemType: DTYPE_CODE[t.dtype] } } } : valueInfo(t))),
    };
  }

  /** The model's opset imports: the default domain at OPSET, plus com.microsoft (version 1) when a node of this graph or a subgraph uses it. */
  opsetImports(): { domain: string; version: number }[] {
    const domains = new Set<string>();
    const visit = (gr: Graph) => {
      for (const n of gr.nodes) {
        if (n.virtual) continue;
        if (n.domain && n.domain !== 'ai.onnx') domains.add(n.domain);
        for (const a of Object.values(n.attrs)) if (a instanceof Graph) visit(a);
      }
    };
    visit(this);
    for (const d of domains) if (d !== 'com.microsoft') throw new Error(`graph ${this.name}: nodes of domain ${d} (only the default domain and com.microsoft are imported)`);
    return [{ domain: '', version: OPSET }, ...[...domains].map((domain) => ({ domain, version: 1 }))];
  }

  /**
   * ONNX bytes. `singleIterationLoop` wraps the whole graph in a Loop that runs once (outputs squeezed back),
   * so the main graph holds only the Loop and Squeeze nodes: with the CUDA provider and CPU fallback
   * disabled, ORT still places shape computations (Shape → Gather → Concat …) on the CPU EP, which is an
   * error in the main graph but allowed inside subgraphs.
   */
  toModelBytes(opts: { singleIterationLoop?: boolean } = {}): Uint8Array {
    return encodeModel({
      irVersion: 10,
      producerName: 'sft-studio',
      opsetImport: this.opsetImports(),
      graph: opts.singleIterationLoop ? this.wrappedProto() : this.toProto(),
    });
  }

  private wrappedProto(): GraphProtoObj {
    if (this.parent) throw new Error('only a main graph can be wrapped in a Loop');
    const inner = this.toProto();
    const u = (b: string) => this.scope.unique(b);
    // Inside the body the outputs get new names; the main graph's Squeeze nodes produce the original ones.
    const rename = new Map(this.outputs.map((t) => [t.name, u(`${t.name}_inner`)]));
    const renameIn = (g: GraphProtoObj) => {
      for (const n of g.node) {
        n.input = n.input.map((x) => rename.get(x) ?? x);
        n.output = n.output.map((x) => rename.get(x) ?? x);
        for (const a of n.attribute) if (a.g) renameIn(a.g);
      }
    };
    renameIn(inner);
    const iter = u('wrap_iter');
    const condIn = u('wrap_cond_in');
    const condOut = u('wrap_cond_out');
    const trueName = u('wrap_true');
    const tripName = u('wrap_trip');
    const axesName = u('wrap_axes');
    const scanNames = this.outputs.map((t) => u(`${t.name}_scan`));
    const boolT = (name: string): ValueInfoProtoObj => ({ name, type: { tensorType: { elemType: DTYPE_CODE.bool, shape: { dim: [] } } } });
    const body: GraphProtoObj = {
      name: `${this.name}_once`,
      node: [...inner.node, { input: [condIn], output: [condOut], name: u('wrap_cond_identity'), opType: 'Identity', attribute: [] }],
      initializer: inner.initializer,
      input: [{ name: iter, type: { tensorType: { elemType: DTYPE_CODE.int64, shape: { dim: [] } } } }, boolT(condIn)],
      output: [
        { name: condOut, type: { tensorType: { elemType: DTYPE_CODE.bool } } },
        ...this.outputs.map((t) => ({ name: rename.get(t.name)!, type: { tensorType: { elemType: DTYPE_CODE[t.dtype] } } })),
      ],
    };
    const nodes: NodeProtoObj[] = [
      { input: [tripName, trueName], output: scanNames, name: u('wrap_loop'), opType: 'Loop', attribute: [attrProto('body', { graphProto: body } as unknown as AttrValue)] },
      ...this.outputs.map((t, i) => ({ input: [scanNames[i]!, axesName], output: [t.name], name: u('wrap_squeeze'), opType: 'Squeeze', attribute: [] })),
    ];
    return {
      name: this.name,
      node: nodes,
      initializer: [tensorProto(tripName, makeData('int64', [], [1])), tensorProto(trueName, makeData('bool', [], [1])), tensorProto(axesName, makeData('int64', [1], [0]))],
      input: inner.input,
      output: inner.output,
    };
  }

  /**
   * Writes `<dir>/<name>` plus `<dir>/<name>.data` holding every constant of at least `minBytes` bytes as
   * ONNX external data (64-byte aligned), for models past protobuf's 2 GB limit; returns the model path
   * for `InferenceSession.create(path)`.
   */
  toModelFiles(dir: string, name = 'model.onnx', minBytes = 1024): string {
    const dataName = `${name}.data`;
    const chunks: Uint8Array[] = [];
    let offset = 0;
    const ext: ExternalDataSink = {
      minBytes,
      add(bytes: Uint8Array) {
        const pad = (64 - (offset % 64)) % 64;
        if (pad) chunks.push(new Uint8Array(pad));
        offset += pad;
        const at = offset;
        chunks.push(bytes);
        offset += bytes.byteLength;
        return [
          { key: 'location', value: dataName },
          { key: 'offset', value: String(at) },
          { key: 'length', value: String(bytes.byteLength) },
        ];
      },
    };
    const bytes = encodeModel({ irVersion: 10, producerName: 'sft-studio', opsetImport: this.opsetImports(), graph: this.toProto(ext) });
    fs.mkdirSync(dir, { recursive: true });
    const fd = fs.openSync(path.join(dir, dataName), 'w');
    try {
      for (const c of chunks) fs.writeSync(fd, c);
    } finally {
      fs.closeSync(fd);
    }
    const modelPath = path.join(dir, name);
    fs.writeFileSync(modelPath, bytes);
    return modelPath;
  }
}

function dtypeFromCode(code: number): DType {
  for (const [k, v] of Object.entries(DTYPE_CODE)) if (v === code) return k as DType;
  throw new Error(`unknown ONNX dtype code ${code}`);
}

export function dtypeCode(d: DType): number {
  return DTYPE_CODE[d];
}

/** Builds constant data of a dtype from plain numbers. */
export function makeData(dtype: DType, shape: number[], values: ArrayLike<number>): ConstantData {
  const n = shape.reduce((a, b) => a * b, 1);
  if (values.length !== n) throw new Error(`constant of shape [${shape}] needs ${n} values, got ${values.length}`);
  switch (dtype) {
    case 'float':
      return { dtype, shape, data: Float32Array.from(values) };
    case 'double':
      return { dtype, shape, data: Float64Array.from(values) };
    case 'int32':
      return { dtype, shape, data: Int32Array.from(values) };
    case 'int64':
      return { dtype, shape, data: BigInt64Array.from(Array.from(values, (v) => BigInt(v))) };
    case 'bool':
    case 'uint8':
      return { dtype, shape, data: Uint8Array.from(values) };
    case 'bfloat16': {
      const f = Float32Array.from(values);
      const u = new Uint32Array(f.buffer);
      const out = new Uint8Array(n * 2);
      const dv = new DataView(out.buffer);
      for (let i = 0; i < n; i++) {
        const x = u[i]!;
        const rounded = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16; // round to nearest even
        dv.setUint16(i * 2, rounded & 0xffff, true);
      }
      return { dtype, shape, data: out };
    }
    default:
      throw new Error(`constants of dtype ${dtype} are not supported`);
  }
}

/** Receives large constants when emitting with external data; returns the external_data entries. */
export interface ExternalDataSink {
  minBytes: number;
  add(bytes: Uint8Array): { key: string; value: string }[];
}

function tensorProto(name: string, c: ConstantData, ext?: ExternalDataSink): TensorProtoObj {
  const d = c.data;
  if (ext && d.byteLength >= ext.minBytes) {
    return { name, dims: c.shape, dataType: DTYPE_CODE[c.dtype], dataLocation: 1, externalData: ext.add(new Uint8Array(d.buffer, d.byteOffset, d.byteLength)) };
  }
  return {
    name,
    dims: c.shape,
    dataType: DTYPE_CODE[c.dtype],
    rawData: new Uint8Array(d.buffer, d.byteOffset, d.byteLength),
  };
}

function attrProto(name: string, v: AttrValue, ext?: ExternalDataSink): AttributeProtoObj {
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new Error(`attribute ${name}: ${v} is not an integer (use { f } for floats)`);
    return { name, type: OnnxAttrType.INT, i: v };
  }
  if (typeof v === 'string') return { name, type: OnnxAttrType.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: OnnxAttrType.INTS, ints: v };
  if (v instanceof Graph) return { name, type: OnnxAttrType.GRAPH, g: v.toProto(ext) };
  if ('graphProto' in v) return { name, type: OnnxAttrType.GRAPH, g: (v as { graphProto: GraphProtoObj }).graphProto };
  if ('f' in v) return { name, type: OnnxAttrType.FLOAT, f: v.f };
  if ('floats' in v) return { name, type: OnnxAttrType.FLOATS, floats: v.floats };
  return { name, type: OnnxAttrType.TENSOR, t: tensorProto(name, v.tensor) };
}
