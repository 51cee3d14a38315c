/**
 * Reverse-mode automatic differentiation over a `Graph`. `gradients(g, ys, seeds, wrt)` appends the backward
 * nodes to `g` and returns d(Σ seedᵢ·yᵢ)/d(wrt) for each wrt tensor (null when no path exists).
 *
 * All backward rules live in ONE table, GRAD_RULES (op type → rule). Where a value fans out, the partial
 * gradients of its consumers are summed. A node on the path from wrt to ys whose op has no rule is a loud
 * error naming the op and the node. Nodes marked noGrad are constants; `customGradient` regions supply
 * their own rule through a virtual node.
 *
 * Summing the partials of one tensor (each a full pass over it on a GPU, so the count is the cost):
 *   - dense partials of the same static shape go into ONE variadic Sum (ORT's CUDA Sum adds up to 8
 *     same-shaped inputs in one kernel: math/variadic_elementwise_ops.cc, k_max_input_batch_size = 8);
 *   - a partial returned by `gradientSum(g, terms)` (a rule's result that is itself a sum of same-shaped
 *     terms, e.g. the LayerNorm backward's two terms) is spliced into that Sum: its own Sum node is removed
 *     when nothing else reads it, so Sum(residual, t1, t2) is one pass instead of Add(t1, t2) + Add(residual, ·);
 *   - a ScatterAddGrad (Gather / GatherElements backward: rows scatter-added into an otherwise zero tensor)
 *     is not applied on its own: it is scattered (ScatterElements, reduction 'add') straight into the sum of
 *     the dense partials, so no zeros tensor and no extra Sum pass exist (tied embeddings: the lm-head
 *     gradient [V,C] receives the embedding rows in place of zeros(V,C) + scatter + Sum). Only when a tensor
 *     has no dense partial is it scattered into zeros. Values equal the plain sum up to fp32 rounding order;
 *   - a ScaledGrad (the Dropout rule's Where(mask, dy, 0) with its 1/(1−p) not applied) is scaled by one Mul
 *     when summed, unless it is the only partial of a tensor made by a SCALE_FOLDING op (Gemm): that rule
 *     receives it unscaled with RuleContext.gyScale and folds the factor into the backward Gemms' alpha and the
 *     reduced bias gradient. So in fp32 graphs a residual dropout after a linear layer (x + Dropout(x·W + b),
 *     one Gemm) costs one Where over [N, C] in the backward. The bf16 linear (Cast, then the bias Add) gets
 *     Where and one Mul, the same ops and rounding points as without the deferral. A customGradient region
 *     created with { acceptsScale: true } receives it unscaled too, with the factor as its gradFn's gyScale
 *     (mlp.ts: into the bias sum, a deferred weight gradient and the Gelu-derivative table);
 *   - a DeferredGrad (a custom rule's gradient that is linear in raw tensors with parameter-only coefficients) is
 *     finished where it is summed, unless gradientsDeferred hands it back for a leaf (trainGraph.ts accumulates
 *     the raw tensors over the micro-batches and finishes it once per step).
 */
import { Graph, isFloatDType, makeData, Tensor, type DeferredGrad, type Node, type Shape } from './graph';

export interface RuleContext {
  g: Graph;
  node: Node;
  /** Gradient of each node output (null where no gradient flows back). */
  gy: (Tensor | null)[];
  /** Whether each node input needs a gradient. */
  needs: boolean[];
  /**
   * The constant factor each gy still has to be multiplied by (1 = none). Only rules in SCALE_FOLDING (and custom
   * regions created with acceptsScale) see a factor ≠ 1; they fold it into their result (a Gemm's alpha, a reduced
   * bias gradient).
   */
  gyScale: number[];
}
/**
 * A gradient that is `updates` scatter-added (ScatterElements, reduction 'add', along `axis`) into zeros shaped
 * like `like`, left unapplied so that the sum of partials can scatter it into a non-zero tensor instead.
 * `view`: the reshape target and static shape the scatter works on (e.g. [V, R] for a Gather's rows), null =
 * like's own shape.
 */
export interface ScatterAddGrad {
  kind: 'scatterAdd';
  like: Tensor;
  axis: number;
  view: { target: number[]; shape: Shape } | null;
  indices: Tensor;
  updates: Tensor;
}
/** A gradient `t`·`scale` whose constant factor is not applied yet (the Dropout rule's 1/(1−p)). */
export interface ScaledGrad {
  kind: 'scaled';
  t: Tensor;
  scale: number;
}
/** A gradient contribution: a tensor, a scatter-add or a scaling applied when the contributions are summed, or a deferred linear gradient. */
export type GradValue = Tensor | ScatterAddGrad | ScaledGrad | DeferredGrad;
export type { DeferredGrad };

/**
 * Rules that accept gy without its pending constant factor (RuleContext.gyScale) and fold it where it costs no
 * pass over gy: Gemm (into the backward Gemms' alpha and the reduced bias gradient). A tensor whose only partial
 * is a ScaledGrad and whose producer is one of these never gets a pass of its own for the scaling. Only Gemm:
 * handing the factor on through Add/Cast would reach the bf16 linear (Cast → Add bias), where applying it after
 * the Cast to bfloat16 moves a rounding that 'emulate' mirrors, and the bias Add would cost a kernel more.
 */
const SCALE_FOLDING = new Set(['Gemm']);

/** t·s as a tensor now (used on tensors smaller than the deferred one, e.g. a reduced bias gradient). */
function scaleNow(g: Graph, t: Tensor, s: number): Tensor {
  return s === 1 ? t : g.mul(t, g.scalarLike(s, t));
}
/** The gradient of an input broadcast into gy's shape, with gy's pending factor s (deferred if unreduced). */
function broadcastPart(g: Graph, gy: Tensor, s: number, input: Tensor, where: string): GradValue {
  const r = sumToShape(g, gy, input, where);
  if (r !== gy) return scaleNow(g, r, s);
  return s === 1 ? r : { kind: 'scaled', t: r, scale: s };
}
export type GradRule = (c: RuleContext) => (GradValue | null)[];

function isScatterAdd(v: GradValue): v is ScatterAddGrad {
  return !(v instanceof Tensor) && v.kind === 'scatterAdd';
}
function isScaled(v: GradValue): v is ScaledGrad {
  return !(v instanceof Tensor) && v.kind === 'scaled';
}
function isDeferred(v: GradValue): v is DeferredGrad {
  return !(v instanceof Tensor) && v.kind === 'deferred';
}

/** Sum node outputs made by gradientSum → their terms (spliced into the consumer's accumulation). */
const gradientSums = new WeakMap<Tensor, Tensor[]>();
/** gradientSum outputs whose Sum node was spliced away → that node (put back if the tensor is needed after all). */
const splicedSums = new WeakMap<Tensor, Node>();

/** Puts back the Sum node of a spliced gradientSum output that is needed as a tensor (e.g. given for two inputs). */
function ensureEmitted(g: Graph, t: Tensor): Tensor {
  const node = splicedSums.get(t);
  if (node) {
    g.nodes.push(node);
    splicedSums.delete(t);
  }
  return t;
}

/**
 * A gradient that is the sum of same-shaped `terms`: emitted as one Sum, which the accumulation of the
 * receiving tensor's partials replaces by the terms themselves (one Sum over all partials instead of two
 * passes). Return it from a rule or custom gradient as is; do not feed it to other nodes.
 */
export function gradientSum(g: Graph, terms: Tensor[]): Tensor {
  if (terms.length === 1) return terms[0]!;
  const s = g.op('Sum', terms);
  gradientSums.set(s, terms.slice());
  return s;
}

/** ORT CUDA's Sum adds at most this many same-shaped inputs in one kernel (variadic_elementwise_ops.h). */
const SUM_BATCH = 8;

function sameShape(a: Shape | null, b: Shape | null): boolean {
  return !!a && !!b && a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Sums a broadcast gradient back to `target`'s shape (static shapes required when they differ). */
export function sumToShape(g: Graph, grad: Tensor, target: Tensor, where: string): Tensor {
  if (sameShape(grad.shape, target.shape)) return grad;
  if (!grad.shape || !target.shape) throw new Error(`autodiff: ${where}: broadcast gradient needs static ranks (got [${grad.shape}] → [${target.shape}])`);
  const gr = grad.shape.length;
  const tr = target.shape.length;
  const axes: number[] = [];
  for (let i = 0; i < gr; i++) {
    if (i < gr - tr) axes.push(i);
    else {
      const td = target.shape[i - (gr - tr)]!;
      const gd = grad.shape[i]!;
      if (td === 1 && gd !== 1) axes.push(i);
    }
  }
  const reduced = axes.length ? g.reduceSum(grad, axes, true) : grad;
  if (reduced.shape && sameShape(reduced.shape, target.shape)) return reduced;
  return g.reshape(reduced, g.shapeOf(target), target.shape.slice());
}

function constNumber(g: Graph, t: Tensor | null, what: string): number {
  if (!t) throw new Error(`autodiff: ${what} missing`);
  const d = g.constantData(t);
  if (!d || d.data.length !== 1) throw new Error(`autodiff: ${what} must be a scalar constant`);
  return Number(d.data[0]);
}

function constInts(g: Graph, t: Tensor | null, what: string): number[] {
  if (!t) throw new Error(`autodiff: ${what} missing`);
  const d = g.constantData(t);
  if (!d) throw new Error(`autodiff: ${what} must be a constant`);
  return Array.from(d.data as ArrayLike<number | bigint>, Number);
}

function swapLast(g: Graph, t: Tensor): Tensor {
  const r = t.rank!;
  const perm = Array.from({ length: r }, (_, i) => i);
  perm[r - 1] = r - 2;
  perm[r - 2] = r - 1;
  return g.transpose(t, perm);
}

const unary = (f: (c: RuleContext, x: Tensor, y: Tensor, gy: Tensor) => Tensor): GradRule => (c) => {
  const gy = c.gy[0];
  if (!gy || !c.needs[0]) return [null];
  return [f(c, c.node.inputs[0]!, c.node.outputs[0]!, gy)];
};

/**
 * gy ⊙ gelu_new'(x) (approximate = "tanh"), in x's dtype. y = 0.5·x·(1 + tanh(u)), u = c·(x + a·x³), c = √(2/π),
 * a = 0.044715. With 0.5·(1 + tanh(u)) = σ(2u): y = x·σ(v), v = 2u = x·(2c + 2ca·x²), and
 * dy/dx = σ(v)·(1 + x·(1 − σ(v))·v'), v' = 2c + 6ca·x². 12 elementwise nodes over x's shape (the tanh form took
 * 18): on a GPU each is a full pass over the [N, 4C] MLP activations, so the count is the cost.
 */
export function geluTanhGrad(g: Graph, x: Tensor, gy: Tensor): Tensor {
  const c = Math.sqrt(2 / Math.PI);
  const a = 0.044715;
  const x2 = g.mul(x, x);
  const v = g.mul(x, g.add(g.mul(x2, g.scalarLike(2 * c * a, x)), g.scalarLike(2 * c, x)));
  const s = g.op('Sigmoid', [v]);
  const dv = g.add(g.mul(x2, g.scalarLike(6 * c * a, x)), g.scalarLike(2 * c, x));
  const r = g.mul(g.mul(x, g.sub(g.scalarLike(1, x), s)), dv);
  return g.mul(gy, g.mul(s, g.add(r, g.scalarLike(1, x))));
}

/** The gradient rule table: op type → rule. */
export const GRAD_RULES: Record<string, GradRule> = {
  Identity: unary((_c, _x, _y, gy) => gy),
  Add: ({ g, node, gy, needs }) => {
    const [a, b] = node.inputs as Tensor[];
    return [needs[0] ? sumToShape(g, gy[0]!, a!, 'Add') : null, needs[1] ? sumToShape(g, gy[0]!, b!, 'Add') : null];
  },
  Sub: ({ g, node, gy, needs }) => {
    const [a, b] = node.inputs as Tensor[];
    return [needs[0] ? sumToShape(g, gy[0]!, a!, 'Sub') : null, needs[1] ? sumToShape(g, g.neg(gy[0]!), b!, 'Sub') : null];
  },
  Mul: ({ g, node, gy, needs }) => {
    const [a, b] = node.inputs as Tensor[];
    return [needs[0] ? sumToShape(g, g.mul(gy[0]!, b!), a!, 'Mul') : null, needs[1] ? sumToShape(g, g.mul(gy[0]!, a!), b!, 'Mul') : null];
  },
  Div: ({ g, node, gy, needs }) => {
    const [a, b] = node.inputs as Tensor[];
    const y = node.outputs[0]!;
    return [
      needs[0] ? sumToShape(g, g.div(gy[0]!, b!), a!, 'Div') : null,
      needs[1] ? sumToShape(g, g.neg(g.div(g.mul(gy[0]!, y), b!)), b!, 'Div') : null,
    ];
  },
  Neg: unary(({ g }, _x, _y, gy) => g.neg(gy)),
  Exp: unary(({ g }, _x, y, gy) => g.mul(gy, y)),
  Log: unary(({ g }, x, _y, gy) => g.div(gy, x)),
  Tanh: unary(({ g }, _x, y, gy) => g.mul(gy, g.sub(g.scalarLike(1, y), g.mul(y, y)))),
  Sqrt: unary(({ g }, _x, y, gy) => g.div(g.mul(gy, g.scalarLike(0.5, y)), y)),
  Reciprocal: unary(({ g }, _x, y, gy) => g.neg(g.mul(gy, g.mul(y, y)))),
  Sigmoid: unary(({ g }, _x, y, gy) => g.mul(gy, g.mul(y, g.sub(g.scalarLike(1, y), y)))),
  Relu: unary(({ g }, x, _y, gy) => g.where(g.op('Greater', [x, g.scalarLike(0, x)]), gy, g.scalarLike(0, gy))),
  Pow: ({ g, node, gy, needs }) => {
    if (needs[1]) throw new Error(`autodiff: Pow (node ${node.name}): gradient w.r.t. the exponent is not supported`);
    const x = node.inputs[0]!;
    const p = constNumber(g, node.inputs[1]!, `Pow (node ${node.name}) exponent`);
    return [needs[0] ? g.mul(gy[0]!, g.mul(g.scalarLike(p, x), g.op('Pow', [x, g.scalarLike(p - 1, x)]))) : null, null];
  },
  Cast: unary(({ g }, x, _y, gy) => g.cast(gy, x.dtype)),
  Reshape: ({ g, node, gy, needs }) => [needs[0] ? g.reshape(gy[0]!, g.shapeOf(node.inputs[0]!), node.inputs[0]!.shape) : null, null],
  Squeeze: ({ g, node, gy, needs }) => [needs[0] ? g.reshape(gy[0]!, g.shapeOf(node.inputs[0]!), node.inputs[0]!.shape) : null, null],
  Unsqueeze: ({ g, node, gy, needs }) => [needs[0] ? g.reshape(gy[0]!, g.shapeOf(node.inputs[0]!), node.inputs[0]!.shape) : null, null],
  Transpose: unary(({ g, node }, _x, _y, gy) => {
    const perm = node.attrs.perm as number[];
    const inv = new Array<number>(perm.length);
    perm.forEach((p, i) => (inv[p] = i));
    return g.transpose(gy, inv);
  }),
  Expand: ({ g, node, gy, needs }) => [needs[0] ? sumToShape(g, gy[0]!, node.inputs[0]!, 'Expand') : null, null],
  Concat: ({ g, node, gy, needs }) => {
    const axis = node.attrs.axis as number;
    const parts = node.inputs as Tensor[];
    const sizes = g.concat(parts.map((p) => g.gather(g.shapeOf(p), g.ints([axis < 0 ? axis + p.rank! : axis]))), 0);
    const outs = g.node('Split', [gy[0]!, sizes], { axis }, parts.map((p) => ({ dtype: gy[0]!.dtype, shape: p.shape })));
    return outs.map((o, i) => (needs[i] ? o : null));
  },
  Split: ({ g, node, gy, needs }) => {
    if (!needs[0]) return [null, null];
    const axis = node.attrs.axis as number;
    const parts = node.outputs.map((o, i) => gy[i] ?? g.zerosLike(o));
    return [g.concat(parts, axis), null];
  },
  Gather: ({ g, node, gy, needs }) => {
    if (!needs[0]) return [null, null];
    const axis = (node.attrs.axis as number | undefined) ?? 0;
    if (axis !== 0) throw new Error(`autodiff: Gather (node ${node.name}): only axis 0 is differentiable`);
    const [data, idx] = node.inputs as Tensor[];
    const rest = data!.shape?.slice(1);
    if (!rest || rest.some((d) => typeof d !== 'number')) throw new Error(`autodiff: Gather (node ${node.name}): the data needs a static shape`);
    // Scatter-add the rows of gy (duplicate indices accumulate), deferred to the sum of data's partials. On
    // [V, R] views (R = Π rest) with the row index repeated along R: one scatter op that CPU and CUDA have.
    // The repeated index is int32 (both providers take int32 or int64): half the bytes of an [M, R] int64.
    const R = (rest as number[]).reduce((a, b) => a * b, 1);
    const rows = g.reshape(gy[0]!, [-1, R], ['M', R]);
    const idxCol = g.reshape(g.cast(idx!, 'int32'), [-1, 1], ['M', 1]);
    const idxFull = g.expand(idxCol, g.shapeOf(rows), ['M', R]);
    const scatter: ScatterAddGrad = { kind: 'scatterAdd', like: data!, axis: 0, view: { target: [-1, R], shape: [data!.shape![0]!, R] }, indices: idxFull, updates: rows };
    return [scatter, null];
  },
  GatherElements: ({ node, gy, needs }) => {
    if (!needs[0]) return [null, null];
    const [data, idx] = node.inputs as Tensor[];
    const axis = (node.attrs.axis as number | undefined) ?? 0;
    const scatter: ScatterAddGrad = { kind: 'scatterAdd', like: data!, axis, view: null, indices: idx!, updates: gy[0]! };
    return [scatter, null];
  },
  ReduceSum: ({ g, node, gy, needs }) => [needs[0] ? expandReduced(g, node, gy[0]!) : null, null],
  ReduceMean: ({ g, node, gy, needs }) => {
    if (!needs[0]) return [null, null];
    const x = node.inputs[0]!;
    const full = expandReduced(g, node, gy[0]!);
    const count = g.cast(g.div(g.op('Size', [x], {}, { dtype: 'int64', shape: [] }), g.op('Size', [node.outputs[0]!], {}, { dtype: 'int64', shape: [] })), x.dtype);
    return [g.div(full, count), null];
  },
  MatMul: ({ g, node, gy, needs }) => {
    const [a, b] = node.inputs as Tensor[];
    const dy = gy[0]!;
    const out: (Tensor | null)[] = [null, null];
    if (a!.rank! < 2 || b!.rank! < 2) throw new Error(`autodiff: MatMul (node ${node.name}): 1-D operands are not supported`);
    if (needs[0]) out[0] = sumToShape(g, g.matmul(dy, swapLast(g, b!)), a!, 'MatMul');
    if (needs[1]) {
      if (b!.rank === 2 && a!.rank! > 2) {
        const K = a!.shape![a!.rank! - 1]!;
        const N = b!.shape![1]!;
        const a2 = g.reshape(a!, [-1, a!.shape![a!.rank! - 1] as number], ['rows', K]);
        const d2 = g.reshape(dy, [-1, N as number], ['rows', N]);
        out[1] = g.gemm(a2, d2, null, { transA: true });
      } else out[1] = sumToShape(g, g.matmul(swapLast(g, a!), dy), b!, 'MatMul');
    }
    return out;
  },
  Gemm: ({ g, node, gy, needs, gyScale }) => {
    const alpha = node.attrs.alpha;
    const beta = node.attrs.beta;
    if ((alpha !== undefined && (alpha as { f: number }).f !== 1) || (beta !== undefined && (beta as { f: number }).f !== 1)) {
      throw new Error(`autodiff: Gemm (node ${node.name}): only alpha = beta = 1 is supported`);
    }
    const tA = node.attrs.transA === 1;
    const tB = node.attrs.transB === 1;
    const [a, b, c] = node.inputs;
    let dy = gy[0]!;
    let s = gyScale[0]!;
    // dy's pending factor goes into the backward Gemms' alpha — for float operands only: ORT's CUDA Gemm converts
    // alpha to the tensor type (bf16: 1/(1−0.1) = 1.109375, −0.16 %), where 'emulate' would keep it in fp32.
    if (s !== 1 && dy.dtype !== 'float') {
      dy = g.mul(dy, g.scalarLike(s, dy));
      s = 1;
    }
    const gemm = (x: Tensor, y: Tensor, opts: { transA?: boolean; transB?: boolean }) => {
      const out = g.gemm(x, y, null, opts);
      if (s !== 1) g.nodes[g.nodes.length - 1]!.attrs.alpha = { f: s };
      return out;
    };
    const ga = !needs[0] ? null : tA ? gemm(b!, dy, { transA: tB, transB: true }) : gemm(dy, b!, { transB: !tB });
    const gb = !needs[1] ? null : tB ? gemm(dy, a!, { transA: true, transB: tA }) : gemm(a!, dy, { transA: !tA });
    const gc = c && needs[2] ? broadcastPart(g, dy, s, c, 'Gemm') : null;
    return [ga, gb, gc];
  },
  Softmax: unary(({ g, node }, _x, y, gy) => {
    const axis = (node.attrs.axis as number | undefined) ?? -1;
    const dot = g.reduceSum(g.mul(gy, y), [axis], true);
    return g.mul(y, g.sub(gy, dot));
  }),
  LogSoftmax: unary(({ g, node }, _x, y, gy) => {
    const axis = (node.attrs.axis as number | undefined) ?? -1;
    return g.sub(gy, g.mul(g.exp(y), g.reduceSum(gy, [axis], true)));
  }),
  LayerNormalization: ({ g, node, gy, needs }) => {
    const axis = (node.attrs.axis as number | undefined) ?? -1;
    const [x, scale, bias] = node.inputs as Tensor[];
    if (axis !== -1 && axis !== x!.rank! - 1) throw new Error(`autodiff: LayerNormalization (node ${node.name}): only the last axis is supported`);
    if (gy[1] || gy[2]) throw new Error(`autodiff: LayerNormalization (node ${node.name}): Mean/InvStdDev outputs are not differentiable`);
    const dy = gy[0]!;
    const mean = g.cast(node.outputs[1]!, x!.dtype);
    const inv = g.cast(node.outputs[2]!, x!.dtype);
    const xhat = g.mul(g.sub(x!, mean), inv);
    let gx: Tensor | null = null;
    if (needs[0]) {
      const dxhat = g.mul(dy, scale!);
      const m1 = g.reduce('ReduceMean', dxhat, [-1], true);
      const m2 = g.reduce('ReduceMean', g.mul(dxhat, xhat), [-1], true);
      gx = g.mul(inv, g.sub(g.sub(dxhat, m1), g.mul(xhat, m2)));
    }
    const gs = needs[1] ? sumToShape(g, g.mul(dy, xhat), scale!, 'LayerNormalization') : null;
    const gb = bias && needs[2] ? sumToShape(g, dy, bias, 'LayerNormalization') : null;
    return [gx, gs, gb];
  },
  Gelu: unary(({ g, node }, x, _y, gy) => {
    if (node.attrs.approximate !== 'tanh') throw new Error(`autodiff: Gelu (node ${node.name}): only approximate="tanh" is supported`);
    return geluTanhGrad(g, x, gy);
  }),
  Dropout: ({ g, node, gy, needs }) => {
    if (!needs[0] || !gy[0]) return [null, null, null];
    const ratio = node.inputs[1] ? constNumber(g, node.inputs[1], `Dropout (node ${node.name}) ratio`) : 0.5;
    const mask = node.outputs[1];
    if (!mask) throw new Error(`autodiff: Dropout (node ${node.name}) needs its mask output`);
    // dy·mask/(1−p) as Where(mask, dy, 0)·s, where Cast(mask)·s·dy took three passes and an fp32 copy of the
    // mask. The factor s is deferred (ScaledGrad): when x comes straight from a Gemm (the fp32 linear layers
    // before the residual dropouts) it goes into the backward Gemms' alpha and Where is the only pass; otherwise
    // it is one Mul when the partials are summed.
    const kept = g.where(mask, gy[0], g.scalarLike(0, gy[0]));
    const scaled: ScaledGrad = { kind: 'scaled', t: kept, scale: 1 / (1 - ratio) };
    return [scaled, null, null];
  },
  Where: ({ g, node, gy, needs }) => {
    const [cond, a, b] = node.inputs as Tensor[];
    const dy = gy[0]!;
    const zero = g.scalarLike(0, dy);
    return [
      null,
      needs[1] ? sumToShape(g, g.where(cond!, dy, zero), a!, 'Where') : null,
      needs[2] ? sumToShape(g, g.where(cond!, zero, dy), b!, 'Where') : null,
    ];
  },
};

/** Broadcasts the gradient of a Reduce* output back to the input's shape. */
function expandReduced(g: Graph, node: Node, dy: Tensor): Tensor {
  const x = node.inputs[0]!;
  const keepdims = (node.attrs.keepdims as number | undefined) ?? 1;
  const axesT = node.inputs[1] ?? null;
  let d = dy;
  if (!keepdims) {
    if (axesT) d = g.unsqueeze(dy, constInts(g, axesT, `${node.opType} (node ${node.name}) axes`));
    else {
      if (x.rank === null) throw new Error(`autodiff: ${node.opType} (node ${node.name}) needs a static rank`);
      d = g.reshape(dy, new Array(x.rank).fill(1), new Array(x.rank).fill(1));
    }
  }
  return g.expand(d, g.shapeOf(x), x.shape);
}

/** Whether `t` (made in the backward) can be dropped: no node of `g` reads it and it is not an output. */
function unused(g: Graph, t: Tensor): boolean {
  return !g.outputs.includes(t) && !g.nodes.some((n) => n.inputs.includes(t));
}

/**
 * The dense partials of one tensor, with gradientSum results replaced by their terms where that keeps one
 * same-shaped Sum of at most SUM_BATCH inputs (the replaced Sum node is removed from the graph).
 */
function spliceSums(g: Graph, dense: Tensor[]): Tensor[] {
  if (dense.length < 2 || !dense.every((t) => sameShape(t.shape, dense[0]!.shape))) return dense.map((t) => ensureEmitted(g, t));
  const shape = dense[0]!.shape;
  const out: Tensor[] = [];
  dense.forEach((t, i) => {
    const terms = gradientSums.get(t);
    const room = SUM_BATCH - out.length - (dense.length - i - 1);
    if (terms && terms.length <= room && terms.every((u) => sameShape(u.shape, shape)) && unused(g, t)) {
      const k = g.nodes.findIndex((n) => n.outputs.includes(t));
      const producer = g.nodes[k];
      if (producer && producer.opType === 'Sum' && producer.inputs.length === terms.length && producer.inputs.every((u, j) => u === terms[j])) {
        g.nodes.splice(k, 1);
        gradientSums.delete(t);
        splicedSums.set(t, producer);
        out.push(...terms);
        return;
      }
    }
    out.push(ensureEmitted(g, t));
  });
  return out;
}

/** Applies a deferred scatter-add onto `base` (null = zeros shaped like s.like). */
function applyScatter(g: Graph, s: ScatterAddGrad, base: Tensor | null): Tensor {
  const data = base ?? g.zerosLike(s.like);
  const view = s.view ? g.reshape(data, s.view.target, s.view.shape) : data;
  const out = g.op('ScatterElements', [view, s.indices, s.updates], { axis: s.axis, reduction: 'add' }, { dtype: s.like.dtype, shape: view.shape });
  return s.view ? g.reshape(out, g.shapeOf(s.like), s.like.shape) : out;
}

/** The sum of one tensor's partial gradients (see the header: one Sum, scatters applied into it). */
function sumAll(g: Graph, parts: GradValue[]): Tensor {
  let dense: Tensor[] = [];
  const scatters: ScatterAddGrad[] = [];
  for (const p of parts) {
    if (isScatterAdd(p)) scatters.push(p);
    else if (isScaled(p)) dense.push(scaleNow(g, p.t, p.scale));
    else if (isDeferred(p)) dense.push(p.finish(g, p.raw));
    else dense.push(p);
  }
  dense = spliceSums(g, dense);
  let acc: Tensor | null = dense.length === 0 ? null : dense.length === 1 ? dense[0]! : g.op('Sum', dense);
  for (const s of scatters) acc = applyScatter(g, s, acc);
  return acc!;
}

/**
 * Appends the backward pass to `g`. `ys` are the differentiated outputs, `seeds` their incoming gradients
 * (same shape), `wrt` the tensors whose gradients are returned (null where ys do not depend on them).
 */
export function gradients(g: Graph, ys: Tensor[], seeds: Tensor[], wrt: Tensor[]): (Tensor | null)[] {
  return gradientsDeferred(g, ys, seeds, wrt, false) as (Tensor | null)[];
}

/**
 * gradients(), except that a wrt tensor whose every partial is a DeferredGrad comes back as that list (when
 * `allowDeferred`), for the caller to accumulate the raw tensors and finish them elsewhere (trainGraph.ts).
 */
export function gradientsDeferred(g: Graph, ys: Tensor[], seeds: Tensor[], wrt: Tensor[], allowDeferred = true): (Tensor | DeferredGrad[] | null)[] {
  const requires = new Set<Tensor>(wrt);
  const forwardNodes = g.nodes.slice();
  for (const n of forwardNodes) {
    if (n.noGrad) continue;
    if (n.inputs.some((t) => t && requires.has(t))) for (const o of n.outputs) if (isFloatDType(o.dtype)) requires.add(o);
  }
  // Backward reachability: which required tensors lead to ys.
  const contributes = new Set<Tensor>(ys.filter((y) => requires.has(y)));
  for (let i = forwardNodes.length - 1; i >= 0; i--) {
    const n = forwardNodes[i]!;
    if (n.noGrad || !n.outputs.some((o) => contributes.has(o))) continue;
    for (const t of n.inputs) if (t && requires.has(t)) contributes.add(t);
  }
  const partials = new Map<Tensor, GradValue[]>();
  const push = (t: Tensor, gt: GradValue) => {
    const l = partials.get(t);
    if (l) l.push(gt);
    else partials.set(t, [gt]);
  };
  // Each tensor's partials are summed once (the Sum may splice away gradientSum nodes: never twice).
  const totals = new Map<Tensor, Tensor>();
  const total = (t: Tensor): Tensor | null => {
    let s = totals.get(t);
    if (!s) {
      const p = partials.get(t);
      if (!p) return null;
      totals.set(t, (s = sumAll(g, p)));
    }
    return s;
  };
  ys.forEach((y, i) => push(y, seeds[i]!));
  for (let i = forwardNodes.length - 1; i >= 0; i--) {
    const n = forwardNodes[i]!;
    if (n.noGrad) continue;
    if (!n.outputs.some((o) => partials.has(o))) continue;
    const needs = n.inputs.map((t) => !!t && contributes.has(t));
    if (!needs.some(Boolean)) continue;
    // A lone deferred scaling reaches a SCALE_FOLDING rule or an acceptsScale region unapplied; every other gy is
    // summed (and scaled).
    const folds = n.virtual ? !!n.virtual.acceptsScale : SCALE_FOLDING.has(n.opType);
    const gyScale = n.outputs.map(() => 1);
    const gy = n.outputs.map((o, i) => {
      const p = partials.get(o);
      if (folds && p && p.length === 1 && isScaled(p[0]!)) {
        gyScale[i] = p[0].scale;
        return p[0].t;
      }
      return total(o);
    });
    let grads: (GradValue | null)[];
    if (n.virtual) grads = n.virtual.gradFn(g, gy, needs, gyScale);
    else {
      const rule = GRAD_RULES[n.opType];
      if (!rule) throw new Error(`autodiff: no gradient rule for op ${n.opType} (node ${n.name})`);
      grads = rule({ g, node: n, gy, needs, gyScale });
    }
    n.inputs.forEach((t, j) => {
      const gt = grads[j];
      if (t && needs[j] && gt) push(t, gt);
    });
  }
  return wrt.map((t) => {
    const p = partials.get(t);
    if (allowDeferred && p && p.length > 0 && p.every(isDeferred)) return p as DeferredGrad[];
    return total(t);
  });
}

/** A float tensor of ones shaped like `like` (a seed for a non-scalar output). */
export function onesLike(g: Graph, like: Tensor): Tensor {
  return g.op('ConstantOfShape', [g.shapeOf(like)], { value: { tensor: makeData(like.dtype, [1], [1]) } }, { dtype: like.dtype, shape: like.shape });
}
