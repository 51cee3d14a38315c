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
 * bf16 attention matrices (c.variants.bf16Attention; the engine's default, SFT_BF16_ATTENTION=0 off; only with c.bf16 true or
 * 'emulate', otherwise the default graph is emitted byte for byte; ignored when autodiffAttention is on): the
 * [B,H,Tq,Tk] tensors stay bfloat16 between ops. Forward: S = q·kᵀ is the MatMul's bf16 output (no Cast),
 * S + bias (the bias [B,1,Tq,Tk] cast to bf16 once per graph and shared by the layers: 0 stays 0, −1e9
 * becomes −998244352, still a zero weight; a fully masked row stays uniform), P = Softmax, Pd = Dropout(P)
 * are bf16 and Pd is the P·v operand as is. Backward: M = [dy|−r]·[v|1]ᵀ stays bf16, Where(mask, M, bf16(−r))
 * and dS/s = P ⊙ W are bf16 and feed the dq/dk MatMuls directly. The [B,H,T,D] / [B,H,T,1] tensors keep the
 * default precision: y and the dq/dk/dv products are cast to fp32, r is computed in fp32 and enters M as
 * hi + lo columns as above; only the Where's −r (dropped entries) is rounded to bf16 ([B,H,Tq,1], one Cast).
 * Kept for the backward: P and Pd in bf16 plus the mask (P alone without dropout) — 126 MB instead of 176 MB
 * per layer at B8 T512 H12 with dropout, 50 MB instead of 151 MB without.
 * 'emulate' mirrors it on fp32 kernels: each op the real graph runs on bf16 is the fp32 op followed by one
 * round to bf16 (Cast bf16 → Cast float) at exactly the same points; Where, Transpose, Slice, Concat move
 * values and need none. Per op, the assumption that makes the fp32 op + one rounding the real kernel's result
 * (ORT's CUDA kernels for bfloat16 load the operands as float, compute in float and round the result to bf16
 * once, round-to-nearest-even — read in onnxruntime/core/providers/cuda: nn/dropout_impl.cu, math/softmax*
 * with a float accumulation type; not yet measured on a GPU):
 *   MatMul   fp32 accumulation (cuBLAS), product rounded once — as in the default path.
 *   Add      S + bias: 'emulate' rounds the exact sum to fp32, then to bf16 (double rounding); a bf16 kernel
 *            that adds in fp32 does the same, one using a native bf16 add rounds once, and the two can differ
 *            by one bf16 ulp. Only where the fp32 sum is inexact, i.e. bias ≠ 0: masked entries, whose
 *            softmax weight is 0 either way (S + 0 is exact; a fully masked row, |S| ≪ 2^21, is exactly
 *            −998244352 everywhere in both, so it stays uniform).
 *   Softmax  max, exp and the row sum in fp32 (AccumulationType of bf16 is float), each output rounded once;
 *            the CUDA and CPU exp/sum order can move a value across a bf16 rounding boundary (one ulp).
 *   Dropout  P·(1/(1−p)) in fp32 rounded once (the mask is the RNG's, device-dependent anyway).
 *   Where    selects, no rounding (−r is rounded by its own Cast first).
 *   Mul      P ⊙ W of two bf16 values is exact in fp32 (8 + 8 significant bits), so the one rounding to bf16
 *            is the only one: identical in both modes.
 * Every op used in bf16 (MatMul, Add, Softmax, Dropout with a float ratio, Where, Mul) has a CUDA bfloat16
 * kernel (engine/cudaKernels.ts; Sub only appears in the fp32 hi/lo split); test/engine/cudaKernels.test.ts
 * checks the variant's train and grads graphs. Accuracy ('emulate', test/engine/attentionBackward.test.ts
 * and bf16Attention.test.ts): y/dq/dk/dv relative L2 from fp32 3.7e-3 / 7.7e-3 / 6.5e-3 / 3.4e-3 with
 * dropout 0.3 (default 'emulate' 3.3e-3 / 7.5e-3 / 6.7e-3 / 3.3e-3); tiny-model golden batch gradients 1.93e-3
 * from fp32 (default 1.95e-3); 20-step loss curve worst 4.0e-5 (default 3.1e-5) of |loss| + 1.
 *
 * bf16 q/k/v (c.variants.bf16Projections, the engine's default, SFT_BF16_PROJ=0 off, usesBf16Projections; only with c.bf16 true or
 * 'emulate'; gpt2Graph.ts attentionQKV/attentionOutput keep [N,3C], q/k/v and y bfloat16 from the c_attn Gemm to
 * the c_proj Gemm): q (already scaled: 1/√D is folded into the c_attn weights), k, v arrive as bf16 values and
 * are the MatMul operands as they are (no Casts); y is the bf16 MatMul output (no Cast back); dy arrives bf16 and
 * dq, dk, dv leave bf16 — no [B,H,T,D] tensor is cast except y and dy, up to fp32 once each for r. Works with
 * and without bf16Attention and with the autodiff core (whose MatMul/Cast rules then keep bf16 gradients).
 * Fused backward with bf16 inputs (bf16HeadsBackward):
 *   r0 = rowsum(float(dy)⊙float(y)) fp32 [B,H,Tq,1] (products of bf16 values are exact in fp32; r0 = s·r)
 *   vext = [s·v | 1 | 1 | 0…] = Gemm(v as [B·H·Tk, D], [c·I | 0], C = [0 | 1 1 0…], alpha = a)   [B,H,Tk,D+pad]
 *   M' = [dy | −r0 hi | −r0 lo | 0…]·vextᵀ = s·(dy·vᵀ − r)              [B,H,Tq,Tk]
 *   dS = P ⊙ Where(mask, M', −r0), dq = dS·k, dkᵀ = qᵀ·dS, dvᵀ = dyᵀ·Pd   (each MatMul's bf16 output as is)
 * The dropout scale s = 1/(1−p) moves from dq and dk (which would need two bf16 Muls by s rounded to bf16:
 * 1.109375 for p = 0.1, a 0.16 % bias of dq and dk) into that Gemm. A bf16 Gemm cannot take s in fp32 either
 * (ORT's CUDA Gemm<BFloat16> converts alpha to bf16: gemm.cc, ToCudaType<T>::FromFloat(alpha_)), so s is the
 * product a·c of two bf16 constants, alpha and the diagonal of the [D, D+pad] matrix (bf16ScalePair): v·c is
 * exact in fp32 and alpha·acc rounds in fp32, so the scale is a·c — within 2.4e-5 of s for p = 0.1
 * (a = 0.072265625, c = 15.375), at most 2^-11.9 off for any p = k/1000 in (0, 0.9), exact for p = 0.2 and 0.5 —
 * and s·v is rounded once (like any bf16 operand); 'emulate' runs the same Gemm in fp32 with the same constants.
 * One [B,H,Tk,D+pad] Gemm instead of the Expand + Concat and two [B,H,T,D] Muls: 28 MB instead of 40 MB per
 * layer at B8 T512 H12 (a Gemm with a 1-D C writes and reads its output once more, see mlp.ts). Without
 * dropout, s = 1: vext = [v | 1 1 | 0…] by Concat as before. 'emulate': dy is rounded where it enters (the
 * real graph's c_proj gradient Gemm rounds it), each bf16 output once; the fused and autodiff cores agree within
 * bf16 noise and the forward matches a JS model of the rounding points bit for bit
 * (test/engine/bf16Projections.test.ts). The r0 up-casts of y and dy
 * and their fp32 product are the variant's only fp32 [B,H,T,D] tensors (88 MB per layer; a bf16 product would
 * round r0, whose error M' inherits where dy·vᵀ ≈ r).
 *
 * Passes over [B,H,Tq,Tk] per layer: nodes writing such a tensor, and MB read + written in such tensors at
 * B8 T512 H12 D64 (25.2 M elements, 101 MB fp32), counted on the graphs (bench/attention-passes.ts,
 * test/engine/attentionBackward.test.ts):
 *                       forward (both)   backward autodiff → fused
 *   fp32, dropout 0.1     4, 839 MB         8, 2139 MB → 3, 931 MB   (MatMul, Where, Mul)
 *   fp32, no dropout      3, 612 MB         5, 1510 MB → 2, 705 MB   (MatMul, Mul)
 *   bf16, dropout 0.1     6, 1040 MB       10, 2139 MB → 5, 1032 MB  (MatMul, Cast, Where, Mul, Cast)
 *   bf16, no dropout      5, 814 MB         7, 1510 MB → 4, 805 MB   (MatMul, Cast, Mul, Cast)
 *   bf16Attention variant (fused only; forward MB include the per-graph bias Cast, 13 MB, shared by the layers):
 *   bf16, dropout 0.1     4, 445 MB                    3, 478 MB   (MatMul, Where, Mul)
 *   bf16, no dropout      3, 319 MB                    2, 352 MB   (MatMul, Mul)
 * Kept [B,H,Tq,Tk] forward tensors: fp32 226 / 101 MB (dropout / none), bf16 176 / 151 MB, bf16Attention
 * 126 / 50 MB.
 * Legend: B batch rows, H heads, Tq queries, Tk keys, D head width.
 */
import type { Graph, Shape, Tensor } from './graph/graph';
import type { ModelContext } from './gpt2Graph';
import { atBf16, bf16Operand, bf16Product, bf16Result, bf16ToFloat, roundBf16 } from './precision';

/** Extra GEMM depth: `cols` columns carrying −r, then zeros so that K = D + pad is a multiple of 8 (aligned bf16 GEMMs). */
function padWidth(D: number | string | undefined, cols: number): number {
  if (typeof D !== 'number') return cols;
  const p = 8 - (D % 8);
  return p >= cols ? p : p + 8;
}

/** Whether the [B,H,Tq,Tk] tensors stay bfloat16 between ops: the variant is on and c.bf16 is true or 'emulate'. */
export function usesBf16Attention(c: ModelContext): boolean {
  return !!c.bf16 && !!c.variants.bf16Attention;
}

/**
 * Whether q, k, v enter and y leaves the attention core at bf16 precision (bf16Projections variant, gpt2Graph.ts:
 * the tensors stay bfloat16 from the c_attn Gemm to the c_proj Gemm): the variant is on and c.bf16 is true or
 * 'emulate'.
 */
export function usesBf16Projections(c: ModelContext): boolean {
  return !!c.bf16 && !!c.variants.bf16Projections;
}

/** bias [B,1,Tq,Tk] at bf16 precision, cast once per graph and mode (the layers share the bias). */
function biasInBf16(c: ModelContext, g: Graph, bias: Tensor): Tensor {
  return g.memo(`attention.biasInBf16:${bias.name}:${String(c.bf16)}`, () => bf16Operand(g, bias, c.bf16));
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

const scalePairs = new Map<number, { alpha: number; diag: number; relError: number }>();
/**
 * Two bfloat16 constants whose fp32 product is closest to the fp32 value of s (searched over alpha's 8 binades
 * around 1 and the three bf16 neighbours of s/alpha): a bf16 GEMM cannot take s itself — ORT's CUDA Gemm for
 * bfloat16 converts alpha to bf16 (gemm.cc ComputeDefault: ToCudaType<T>::FromFloat(alpha_)), and one bf16
 * constant is s rounded to 8 bits (up to 2^-9 off: 1.109375 for 1/0.9, −0.16 %). In alpha·(v·diag) the product
 * v·diag is exact in fp32 and only alpha·acc rounds (in fp32), so the scale is alpha·diag: within 2^-11.9 of s for
 * every dropout rate p = k/1000 in (0, 0.9), 2.4e-5 relative for p = 0.1, exact for p = 0.2 and 0.5.
 */
export function bf16ScalePair(s: number): { alpha: number; diag: number; relError: number } {
  const target = Math.fround(s);
  let best = scalePairs.get(target);
  if (best) return best;
  best = { alpha: 1, diag: roundBf16(target), relError: Math.abs(roundBf16(target) - target) / target };
  for (let e = -4; e <= 3; e++) {
    for (let i = 0; i < 128; i++) {
      const alpha = (1 + i / 128) * 2 ** e;
      const c0 = roundBf16(target / alpha);
      const ulp = 2 ** (Math.floor(Math.log2(c0)) - 7);
      for (const diag of [c0 - ulp, c0, c0 + ulp]) {
        const relError = Math.abs(Math.fround(alpha * diag) - target) / target;
        if (relError < best.relError) best = { alpha, diag, relError };
      }
    }
  }
  scalePairs.set(target, best);
  return best;
}

/** Swaps the last two axes of a rank-4 tensor. */
function swapLast4(g: Graph, t: Tensor): Tensor {
  return g.transpose(t, [0, 1, 3, 2]);
}

/**
 * aᵀ·b over the last two axes of [B,H,·,·] tensors as one com.microsoft FusedMatMul (transA = 1): cuBLAS reads a
 * transposed, so neither operand nor the product needs a Transpose. CUDA kernels for float and bfloat16 (ORT 1.29
 * makes this op of our bf16 MatMuls itself at level 'all'); a float kernel on the CPU, for 'emulate'.
 */
function matmulTransA(g: Graph, a: Tensor, b: Tensor, shape: Tensor['shape']): Tensor {
  return g.node('FusedMatMul', [a, b], { transA: 1 }, [{ dtype: a.dtype, shape }], 'com.microsoft')[0]!;
}

/** softmax(q·kᵀ + bias) → dropout → ·v with the backward described in the header. */
export function attentionCoreFused(c: ModelContext, q: Tensor, k: Tensor, v: Tensor, bias: Tensor): Tensor {
  const g = c.g;
  const rate = c.dropout.attn;
  const keep = 1 - rate;
  const low = usesBf16Attention(c);
  // bf16Projections: q, k, v and y are bf16 values (no operand Casts, y not cast back), and so are dy and dq/dk/dv.
  const inBf16 = usesBf16Projections(c);
  const operand = (gr: Graph, t: Tensor) => (inBf16 ? atBf16(gr, t, c.bf16) : bf16Operand(gr, t, c.bf16));
  /** A [B,H,T,D] product: bf16 (rounded once under 'emulate') with bf16Projections, else back to float. */
  const headsProduct = (gr: Graph, t: Tensor) => (inBf16 ? bf16Result(gr, t, c.bf16) : bf16Product(gr, t, c.bf16));
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
      qo = operand(g, q);
      ko = operand(g, k);
      vo = operand(g, v);
      if (low) {
        // bf16 attention matrices: S, S + bias, P and Pd are bfloat16 (rounded to bf16 under 'emulate').
        const scores = bf16Result(g, g.matmul(qo, swapLast4(g, ko)), c.bf16); // [B,H,Tq,Tk]
        probs = bf16Result(g, g.softmax(bf16Result(g, g.add(scores, biasInBf16(c, g, bias)), c.bf16), -1), c.bf16);
        po = probs;
        if (rate > 0) {
          const d = g.dropoutWithMask(probs, rate, c.nextSeed());
          po = bf16Result(g, d.out, c.bf16);
          mask = d.mask;
        }
      } else {
        const scores = bf16Product(g, g.matmul(qo, swapLast4(g, ko)), c.bf16); // [B,H,Tq,Tk]
        probs = g.softmax(g.add(scores, bias), -1);
        let dropped = probs;
        if (rate > 0) ({ out: dropped, mask } = g.dropoutWithMask(probs, rate, c.nextSeed()));
        po = bf16Operand(g, dropped, c.bf16);
      }
      y = headsProduct(g, g.matmul(po, vo)); // [B,H,Tq,D]
      return [y];
    },
    (gg, gy, needs) => {
      const dy = gy[0];
      if (!dy) return [null, null, null];
      if (inBf16) return bf16HeadsBackward(gg, dy, needs);
      const D = q.shape?.[3];
      const unscale = (t: Tensor) => (rate > 0 ? gg.mul(t, gg.scalar(1 / keep)) : t);
      let dq: Tensor | null = null;
      let dk: Tensor | null = null;
      let dv: Tensor | null = null;
      /** dv = (dyᵀ·Pd)ᵀ from dy as a MatMul operand. */
      const dvOf = (dyOperand: Tensor) => swapLast4(gg, bf16Product(gg, gg.matmul(swapLast4(gg, dyOperand), po), c.bf16));
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
        const exto = bf16Operand(gg, ext, c.bf16);
        if (needs[2] && typeof D === 'number') {
          // dv first: Pd's last use, so it is freed before the [B,H,Tq,Tk] temporaries below exist.
          const dyShape: Shape | null = exto.shape ? [...exto.shape.slice(0, 3), D] : null;
          dv = dvOf(gg.op('Slice', [exto, gg.ints([0]), gg.ints([D]), gg.ints([3])], {}, { dtype: exto.dtype, shape: dyShape }));
        }
        const vext = onesExtended(gg, ones, pad); // [B,H,Tk,D+pad]
        let dSo: Tensor;
        if (low) {
          // M, Where and dS/s stay bf16; −r for the dropped entries is rounded to bf16 once ([B,H,Tq,1]).
          const m = bf16Result(gg, gg.matmul(exto, swapLast4(gg, vext)), c.bf16); // dy·vᵀ − r  [B,H,Tq,Tk]
          const w = mask ? gg.where(mask, m, bf16Operand(gg, negR, c.bf16)) : m;
          dSo = bf16Result(gg, gg.mul(probs, w), c.bf16); // dS/s [B,H,Tq,Tk]
        } else {
          const m = bf16Product(gg, gg.matmul(exto, swapLast4(gg, vext)), c.bf16); // dy·vᵀ − r  [B,H,Tq,Tk]
          const w = mask ? gg.where(mask, m, negR) : m;
          const dS = gg.mul(probs, w); // dS/s [B,H,Tq,Tk]
          dSo = bf16Operand(gg, dS, c.bf16);
        }
        if (needs[0]) dq = unscale(bf16Product(gg, gg.matmul(dSo, ko), c.bf16));
        if (needs[1]) dk = unscale(swapLast4(gg, bf16Product(gg, gg.matmul(swapLast4(gg, qo), dSo), c.bf16)));
      }
      if (needs[2] && !dv) dv = dvOf(bf16Operand(gg, dy, c.bf16));
      return [dq, dk, dv];
    },
  );

  /** [v | 1…1 (`ones` columns) | 0…] [B,H,Tk,D+pad] in v's precision: the dPd GEMM's second operand. */
  function onesExtended(gg: Graph, ones: number, pad: number): Tensor {
    const lead3 = gg.op('Shape', [vo], { start: 0, end: 3 }, { dtype: 'int64', shape: [3] });
    const onesShape = gg.concat([lead3, gg.ints([1])], 0);
    const onesConst = gg.tensorConst(vo.dtype === 'bfloat16' ? 'bfloat16' : 'float', [1, 1, 1, pad], Array.from({ length: pad }, (_, i) => (i < ones ? 1 : 0)));
    const vOnes = gg.expand(onesConst, onesShape, vo.shape ? [...vo.shape.slice(0, 3), pad] : null);
    return gg.concat([vo, vOnes], -1);
  }

  /**
   * The backward with bf16Projections: dy arrives and dq, dk, dv leave at bf16 precision. The same algorithm as
   * above, with the dropout scale s = 1/(1−p) moved off the [B,H,T,D] gradients (a bf16 Mul would have to use s
   * rounded to bf16, 1.109375 instead of 1.1111 for p = 0.1 — a 0.16 % bias of dq and dk) into the GEMM operand
   * [s·v | 1 1 | 0…], formed by one Gemm whose alpha·diag = s to 2.4e-5 for p = 0.1 (bf16ScalePair):
   *   r0 = rowsum(dy⊙y) (fp32: the bf16 values cast up, products exact, fp32 sum)  [B,H,Tq,1]
   *   M' = [dy | −r0 hi | −r0 lo | 0…]·[s·v | 1 | 1 | 0…]ᵀ = s·dPd − r0 = s·(dPd − r)   [B,H,Tq,Tk]
   *   dS = P ⊙ Where(mask, M', −r0)   (the whole dS: no unscale of dq, dk)
   *   dq = dS·k, dkᵀ = qᵀ·dS, dvᵀ = dyᵀ·Pd, each product left in bf16.
   */
  function bf16HeadsBackward(gg: Graph, dyIn: Tensor, needs: boolean[]): (Tensor | null)[] {
    const mode = c.bf16;
    const D = q.shape?.[3];
    if (typeof D !== 'number') throw new Error('attention (bf16Projections): the head width D must be static');
    // The real graph's dy is the c_proj gradient Gemm's bf16 output; 'emulate' rounds it here, where it enters.
    const dyo = bf16Operand(gg, dyIn, mode);
    let dq: Tensor | null = null;
    let dk: Tensor | null = null;
    let dv: Tensor | null = null;
    // dv first: Pd's last use, so it is freed before the [B,H,Tq,Tk] temporaries below exist.
    if (needs[2]) dv = bf16Result(gg, matmulTransA(gg, po, dyo, vo.shape), mode); // Pdᵀ·dy [B,H,Tk,D]
    if (needs[0] || needs[1]) {
      const negR0 = gg.mul(gg.reduceSum(gg.mul(bf16ToFloat(gg, dyo, mode), bf16ToFloat(gg, y, mode)), [-1], true), gg.scalar(-1)); // [B,H,Tq,1] fp32
      const { hi, lo } = bf16Split(gg, negR0);
      const pad = padWidth(D, 2);
      const rCol = (col: number) => gg.tensorConst('float', [1, 1, 1, pad], Array.from({ length: pad }, (_, i) => (i === col ? 1 : 0)));
      const rExt = bf16Operand(gg, gg.add(gg.mul(hi, rCol(0)), gg.mul(lo, rCol(1))), mode); // [B,H,Tq,pad]
      const ext = gg.concat([dyo, rExt], -1); // [B,H,Tq,D+pad]
      let vext: Tensor; // [B,H,Tk,D+pad]
      if (rate > 0) {
        // [s·v | 1 | 1 | 0…] = Gemm(v as [B·H·Tk, D], [c·I | 0], C = [0 | 1 1 0…], alpha = a) with a·c ≈ s
        // (bf16ScalePair: both bf16 constants, as ORT's bf16 Gemm takes alpha), one rounding of s·v.
        const W = D + pad;
        const dt = vo.dtype === 'bfloat16' ? 'bfloat16' : 'float';
        const { alpha, diag } = bf16ScalePair(1 / keep);
        const eye = gg.tensorConst(dt, [D, W], Array.from({ length: D * W }, (_, i) => (i % W === Math.floor(i / W) ? diag : 0)));
        const onesRow = gg.tensorConst(dt, [W], Array.from({ length: W }, (_, i) => (i === D || i === D + 1 ? 1 : 0)));
        const v2 = gg.reshape(vo, [-1, D], ['BHTk', D]);
        const scaled = bf16Result(gg, gg.op('Gemm', [v2, eye, onesRow], { alpha: { f: alpha } }, { dtype: vo.dtype, shape: ['BHTk', W] }), mode);
        const lead3 = gg.op('Shape', [vo], { start: 0, end: 3 }, { dtype: 'int64', shape: [3] });
        vext = gg.reshape(scaled, gg.concat([lead3, gg.ints([W])], 0), vo.shape ? [...vo.shape.slice(0, 3), W] : null);
      } else vext = onesExtended(gg, 2, pad);
      let dSo: Tensor;
      if (low) {
        const m = bf16Result(gg, gg.matmul(ext, swapLast4(gg, vext)), mode); // s·(dy·vᵀ − r)  [B,H,Tq,Tk]
        const w = mask ? gg.where(mask, m, bf16Operand(gg, negR0, mode)) : m;
        dSo = bf16Result(gg, gg.mul(probs, w), mode); // dS [B,H,Tq,Tk]
      } else {
        const m = bf16Product(gg, gg.matmul(ext, swapLast4(gg, vext)), mode); // s·(dy·vᵀ − r)  [B,H,Tq,Tk]
        const w = mask ? gg.where(mask, m, negR0) : m;
        dSo = bf16Operand(gg, gg.mul(probs, w), mode); // dS [B,H,Tq,Tk]
      }
      if (needs[0]) dq = bf16Result(gg, gg.matmul(dSo, ko), mode);
      if (needs[1]) dk = bf16Result(gg, matmulTransA(gg, dSo, qo, ko.shape), mode); // dSᵀ·q [B,H,Tk,D]
    }
    return [dq, dk, dv];
  }
  return out!;
}

/** The same forward with the generic autodiff backward (Dropout, Softmax, MatMul, Cast rules): the reference. */
export function attentionCoreAutodiff(c: ModelContext, q: Tensor, k: Tensor, v: Tensor, bias: Tensor): Tensor {
  const g = c.g;
  // bf16Projections: q, k, v are bf16 values already (no operand Casts) and y stays bf16 (no Cast back).
  const inBf16 = usesBf16Projections(c);
  const operand = (t: Tensor, atBf16Already: boolean) => (atBf16Already ? atBf16(g, t, c.bf16) : bf16Operand(g, t, c.bf16));
  const bmm = (a: Tensor, b: Tensor, aBf16: boolean, bBf16: boolean, keepBf16: boolean) => {
    const p = g.matmul(operand(a, aBf16), operand(b, bBf16));
    return keepBf16 ? bf16Result(g, p, c.bf16) : bf16Product(g, p, c.bf16);
  };
  const scores = bmm(q, swapLast4(g, k), inBf16, inBf16, false);
  const probs = g.softmax(g.add(scores, bias), -1);
  const rate = c.dropout.attn;
  const dropped = rate > 0 ? g.dropout(probs, rate, c.nextSeed()) : probs;
  return bmm(dropped, v, false, inBf16, inBf16);
}
