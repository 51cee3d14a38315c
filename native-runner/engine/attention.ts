/**
 * Scaled-dot-product attention core with a hand-written backward.
 *
 *   attentionCoreFused(c, q, k, v, bias) → y [B,H,Tq,D]
 *     q [B,H,Tq,D] (already scaled by 1/√D), k, v [B,H,Tk,D], bias [B,1,Tq,Tk] (0 / −1e9, no gradient).
 *     Forward: S = q·kᵀ, P = softmax(S + bias), Pd = Dropout(P) (ONNX Dropout, seed c.nextSeed() as before),
 *     y = Pd·v — the same ops and values as the plain formulation (attentionCoreAutodiff).
 *     Backward (Graph.customGradient), s = 1/(1−p) the dropout scale, mask the Dropout mask:
 *       r  = rowsum(dy⊙y)·(1−p)                      [B,H,Tq,1]  (= rowsum(dP⊙P)/s, as Σₖ dPd·Pd = Σ_d dy·y)
 *       M  = [dy | −r | 0…]·[v | 1 | 0…]ᵀ = dy·vᵀ − r  [B,H,Tq,Tk] (one MatMul; K = D+8 keeps bf16 GEMMs aligned;
 *            with bf16 operands −r goes in as hi + lo columns, hi exact in bf16: r is rounded to ~2^-16 only)
 *       dS/s = P ⊙ Where(mask, M, −r)                 (no dropout: P ⊙ M)
 *       dq = s·((dS/s)·k),  dkᵀ = s·(qᵀ·(dS/s)),  dvᵀ = dyᵀ·Pd   (transposes only on [B,H,T,D] tensors)
 *     The dropout scale s is applied to the [B,H,T,D] gradients of q and k, never to a [B,H,Tq,Tk] tensor; the
 *     mask is used as the Where condition (no fp32 mask). Kept from the forward: P, mask, Pd (its bf16 copy
 *     with bf16; P itself without dropout) — the same [B,H,Tq,Tk] tensors the autodiff backward keeps —
 *     plus the [B,H,T,D] operands q, k, v and the output y.
 *   attentionCoreAutodiff(c, q, k, v, bias): the same forward left to the generic autodiff rules (reference).
 *
 * Precision (ModelContext.bf16): every MatMul takes operands cast to bfloat16 (true) or rounded to bf16
 * ('emulate') and its product is cast / rounded back, exactly at the same points in both modes; everything
 * elementwise (bias add, softmax, row sums, Where, Mul) is fp32. Per attention core, forward + backward:
 * 6 MatMuls and 12 precision changes, as with the autodiff formulation. fp32 gradients equal the autodiff
 * ones to ~4e-7 relative; under bf16 the folded r is computed from the fp32 dy and the bf16-rounded y, which
 * leaves dq/dk ~10 % noisier than the autodiff bf16 backward (both ≈ 4·2^-8 relative L2 at T = D = 64).
 *
 * Passes over [B,H,Tq,Tk] per layer: nodes writing such a tensor, and MB read + written in such tensors at
 * B8 T512 H12 D64 (25.2 M elements, 101 MB fp32), counted on the graphs (bench/attention-passes.ts,
 * test/engine/attentionBackward.test.ts):
 *                       forward (both)   backward autodiff → fused
 *   fp32, dropout 0.1     4, 839 MB         8, 2139 MB → 3, 931 MB   (MatMul, Where, Mul)
 *   fp32, no dropout      3, 612 MB         5, 1510 MB → 2, 705 MB   (MatMul, Mul)
 *   bf16, dropout 0.1     6, 1040 MB       10, 2139 MB → 5, 1032 MB  (MatMul, Cast, Where, Mul, Cast)
 *   bf16, no dropout      5, 814 MB         7, 1510 MB → 4, 805 MB   (MatMul, Cast, Mul, Cast)
  * Legend: B batch rows, H heads, Tq queries, Tk keys, D head width.
 */
import { makeData, type Graph, type Shape, type Tensor } from './graph/graph';
import type { ModelContext } from './gpt2Graph';

/** Extra GEMM depth: `cols` columns carrying −r, then zeros so that K = D + pad is a multiple of 8 (aligned bf16 GEMMs). */
function padWidth(D: number | string | undefined, cols: number): number {
  if (typeof D !== 'number') return cols;
  const p = 8 - (D % 8);
  return p >= cols ? p : p + 8;
}

/** A MatMul operand at the context's precision: as is (fp32), cast to bfloat16, or rounded to bf16 and back. */
function matmulOperand(c: ModelContext, g: Graph, t: Tensor): Tensor {
  if (!c.bf16) return t;
  const b = g.cast(t, 'bfloat16');
  return c.bf16 === 'emulate' ? g.cast(b, 'float') : b;
}

/** A MatMul product back to fp32: as is, cast from bfloat16, or rounded to bf16 ('emulate'). */
function matmulProduct(c: ModelContext, g: Graph, t: Tensor): Tensor {
  if (!c.bf16) return t;
  if (c.bf16 === 'emulate') return g.cast(g.cast(t, 'bfloat16'), 'float');
  return g.cast(t, 'float');
}

/**
 * x = hi + lo exactly (fp32), hi with at most 8 significant bits (exact in bfloat16): Veltkamp's split with
 * the constant 2^16 + 1, four fp32 ops on the small tensor x (IEEE round-to-nearest, no fused multiply-add).
 */
function bf16Split(g: Graph, x: Tensor): { hi: Tensor; lo: Tensor } {
  const t = g.mul(x, g.scalar(65537));
  const hi = g.sub(t, g.sub(t, x));
  return { hi, lo: g.sub(x, hi) };
}

/** Swaps the last two axes of a rank-4 tensor. */
function swapLast4(g: Graph, t: Tensor): Tensor {
  return g.transpose(t, [0, 1, 3, 2]);
}

/** ONNX Dropout in training mode (as Graph.dropout) returning the output and its bool mask. */
function dropoutWithMask(g: Graph, x: Tensor, rate: number, seed: number): { out: Tensor; mask: Tensor } {
  const [out, mask] = g.node('Dropout', [x, g.scalar(rate, 'float'), g.constant(makeData('bool', [], [1]), 'training')], { seed }, [
    { dtype: x.dtype, shape: x.shape },
    { dtype: 'bool', shape: x.shape },
  ]);
  return { out: out!, mask: mask! };
}

/** softmax(q·kᵀ + bias) → dropout → ·v with the backward described in the header. */
export function attentionCoreFused(c: ModelContext, q: Tensor, k: Tensor, v: Tensor, bias: Tensor): Tensor {
  const g = c.g;
  const rate = c.dropout.attn;
  const keep = 1 - rate;
  let qo!: Tensor;
  let ko!: Tensor;
  let vo!: Tensor;
  let probs!: Tensor;
  let mask: Tensor | null = null;
  let po!: Tensor;
  let y!: Tensor;
  const [out] = g.customGradient(
    [q, k, v],
    () => {
      qo = matmulOperand(c, g, q);
      ko = matmulOperand(c, g, k);
      vo = matmulOperand(c, g, v);
      const scores = matmulProduct(c, g, g.matmul(qo, swapLast4(g, ko))); // [B,H,Tq,Tk]
      probs = g.softmax(g.add(scores, bias), -1);
      let dropped = probs;
      if (rate > 0) ({ out: dropped, mask } = dropoutWithMask(g, probs, rate, c.nextSeed()));
      po = matmulOperand(c, g, dropped);
      y = matmulProduct(c, g, g.matmul(po, vo)); // [B,H,Tq,D]
      return [y];
    },
    (gg, gy, needs) => {
      const dy = gy[0];
      if (!dy) return [null, null, null];
      const D = q.shape?.[3];
      const unscale = (t: Tensor) => (rate > 0 ? gg.mul(t, gg.scalar(1 / keep)) : t);
      let dq: Tensor | null = null;
      let dk: Tensor | null = null;
      let dv: Tensor | null = null;
      /** dv = (dyᵀ·Pd)ᵀ from dy as a MatMul operand. */
      const dvOf = (dyOperand: Tensor) => swapLast4(gg, matmulProduct(c, gg, gg.matmul(swapLast4(gg, dyOperand), po)));
      if (needs[0] || needs[1]) {
        // −r = −rowsum(dy⊙y)·(1−p) [B,H,Tq,1], folded into the dPd GEMM as extra depth columns. With bf16
        // operands −r travels as two columns hi + lo (Veltkamp split: hi has 8 significant bits, so it is exact
        // in bf16, and lo's rounding is ~2^-16 of r), so that the subtraction costs no more precision than
        // the autodiff path's fp32 Sub.
        const negR = gg.mul(gg.reduceSum(gg.mul(dy, y), [-1], true), gg.scalar(-keep));
        const split = c.bf16 ? bf16Split(gg, negR) : null;
        const ones = split ? 2 : 1;
        const pad = padWidth(D, ones);
        const rCols = (dtype: 'float' | 'bfloat16', col: number) => gg.tensorConst(dtype, [1, 1, 1, pad], Array.from({ length: pad }, (_, i) => (i === col ? 1 : 0)));
        const rExt = split ? gg.add(gg.mul(split.hi, rCols('float', 0)), gg.mul(split.lo, rCols('float', 1))) : gg.mul(negR, rCols('float', 0));
        const ext = gg.concat([dy, rExt], -1); // [B,H,Tq,D+pad]
        const exto = matmulOperand(c, gg, ext);
        if (needs[2] && typeof D === 'number') {
          // dv first: Pd's last use, so it is freed before the [B,H,Tq,Tk] temporaries below exist.
          const dyShape: Shape | null = exto.shape ? [...exto.shape.slice(0, 3), D] : null;
          dv = dvOf(gg.op('Slice', [exto, gg.ints([0]), gg.ints([D]), gg.ints([3])], {}, { dtype: exto.dtype, shape: dyShape }));
        }
        const lead3 = gg.op('Shape', [vo], { start: 0, end: 3 }, { dtype: 'int64', shape: [3] });
        const onesShape = gg.concat([lead3, gg.ints([1])], 0);
        const onesConst = gg.tensorConst(vo.dtype === 'bfloat16' ? 'bfloat16' : 'float', [1, 1, 1, pad], Array.from({ length: pad }, (_, i) => (i < ones ? 1 : 0)));
        const vOnes = gg.expand(onesConst, onesShape, vo.shape ? [...vo.shape.slice(0, 3), pad] : null);
        const vext = gg.concat([vo, vOnes], -1); // [B,H,Tk,D+pad]
        const m = matmulProduct(c, gg, gg.matmul(exto, swapLast4(gg, vext))); // dy·vᵀ − r  [B,H,Tq,Tk]
        const w = mask ? gg.where(mask, m, negR) : m;
        const dS = gg.mul(probs, w); // dS/s [B,H,Tq,Tk]
        const dSo = matmulOperand(c, gg, dS);
        if (needs[0]) dq = unscale(matmulProduct(c, gg, gg.matmul(dSo, ko)));
        if (needs[1]) dk = unscale(swapLast4(gg, matmulProduct(c, gg, gg.matmul(swapLast4(gg, qo), dSo))));
      }
      if (needs[2] && !dv) dv = dvOf(matmulOperand(c, gg, dy));
      return [dq, dk, dv];
    },
  );
  return out!;
}

/** The same forward with the generic autodiff backward (Dropout, Softmax, MatMul, Cast rules): the reference. */
export function attentionCoreAutodiff(c: ModelContext, q: Tensor, k: Tensor, v: Tensor, bias: Tensor): Tensor {
  const g = c.g;
  const bmm = (a: Tensor, b: Tensor) => matmulProduct(c, g, g.matmul(matmulOperand(c, g, a), matmulOperand(c, g, b)));
  const scores = bmm(q, swapLast4(g, k));
  const probs = g.softmax(g.add(scores, bias), -1);
  const rate = c.dropout.attn;
  const dropped = rate > 0 ? g.dropout(probs, rate, c.nextSeed()) : probs;
  return bmm(dropped, v);
}
