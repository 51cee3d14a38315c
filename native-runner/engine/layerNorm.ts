/**
 * LayerNormalization over the last axis with a hand-written backward (issue #8: fewer passes over [N, C]).
 *
 *   layerNormWithGrad(g, x [..., C], scale [C], bias [C], epsilon) → y [..., C]
 *     Forward: the ONNX LayerNormalization node the autodiff rule differentiates (same node, same values),
 *     keeping its Mean / InvStdDev outputs μ, inv [..., 1] (fp32) for the backward.
 *     Backward (Graph.customGradient), rows n, columns c, M rows (N, or the product of the leading dims):
 *       xhat = LayerNormalization(x, 1, 0, epsilon)        recomputed, one read of x and one write
 *       Q    = dy ⊙ xhat
 *       dγ   = Σ_n Q                dβ = Σ_n dy           (ReduceSum over the rows)
 *       g    = dy ⊙ γ
 *       s1   = Σ_c g                s2 = Σ_c Q ⊙ γ       [M, 1] (= C·mean(g), C·mean(g ⊙ xhat))
 *       dx   = g ⊙ inv  +  (xhat ⊙ (−inv·s2/C) − inv·s1/C)
 *     which is inv·(g − mean(g) − xhat·mean(g ⊙ xhat)), the exact derivative with epsilon included. dx is
 *     returned as two terms (autodiff.gradientSum): the accumulation of x's partials adds them together with
 *     the residual stream's gradient in ONE Sum (the autodiff rule needed an Add of its own before that Sum).
 *
 * Why xhat is recomputed and not avoided: without it, s2 = inv·(Σ_c γ·dy·x − μ·s1) and dγ = Σ_n inv·dy·x −
 * Σ_n μ·inv·dy subtract nearly equal sums when |μ| ≫ std (x ≈ μ). With fp32 ReduceSums that form is only
 * ~2× less accurate than the autodiff rule, but it saves bytes only if the sums weighted by per-row scalars
 * are Gemms, and ORT's CUDA EP runs fp32 Gemms in TF32 (11-bit operands) by default. Measured on ORT's CPU EP
 * with TF32 emulated (operands rounded to 11 bits by a Veltkamp split), fp32 inputs, M 64, C 96, relative L2
 * against float64 (dx / dγ):
 *                          autodiff rule      this            xhat-free, fp32 Gemm   xhat-free, TF32 Gemm
 *   N(0, 1) rows           9.6e-8 / 1.4e-7    9.2e-8 / 1.3e-7  1.0e-7 / 1.4e-7        4.2e-5 / 3.1e-4
 *   mean 100, std 1        2.1e-6 / 1.4e-5    2.1e-6 / 1.4e-5  3.9e-6 / 2.5e-5        3.0e-3 / 3.7e-2
 *   mean 1e3, std 1e-2     1.2e-3 / 1.1e-2    1.2e-3 / 1.1e-2  2.7e-3 / 2.6e-2        2.9 / 45
 * (the last row's floor is the input itself: fp32 x near 1e3 is quantized to 6e-5, 0.6 % of the std, and μ's
 * rounding shifts xhat by as much, whatever the backward). So every sum here is an fp32 ReduceSum and the
 * fp32 results equal the autodiff rule's up to summation order (test/engine/layerNorm.test.ts).
 * s2 as a MatMul Q·γ instead of Q⊙γ + ReduceSum would save 8 B per element; in TF32 its dx error is 3e-5
 * (emulated as above; 1.1e-3 on the mean-1e3 rows, their floor) — below the TF32 Gemms around it, but not
 * exact fp32: not done.
 *
 * Bytes per element of [M, C] fp32 (reads + writes, [M,1] and [C] tensors neglected), as bench/step-traffic.ts
 * counts them:
 *   autodiff rule  Sub, Mul (xhat) 16 · dy⊙γ 8 · ReduceMean 4 · Mul 12 · ReduceMean 4 · Sub 8 · Mul 8 · Sub 12 ·
 *                  Mul 8 · dy⊙xhat 12 · two ReduceSums 8                              = 100, + its own term
 *                  in the accumulation Sum(residual, dx) 12
 *   this           LayerNormalization 8 · Q 12 · dγ 4 · dβ 4 · g 8 · s1 4 · Q⊙γ 8 · s2 4 · g⊙inv 8 ·
 *                  xhat⊙k 8 · +c 8                                                      = 76, + two terms in the
 *                  accumulation Sum(residual, t1, t2) 16
 * so 112 → 92 B per element with the residual Sum; the forward is unchanged. bench/step-traffic.ts (GPT-2 124M,
 * 4 × B8 T512, 25 LayerNorms per micro-batch): 6.2 GB and 2.3 ms per step less than SFT_AUTODIFF_LAYERNORM=1, in
 * bf16 and fp32 alike.
 * (InstanceNormalization on the [1, M, C] view would form xhat ⊙ k + c from x in one pass, 8 B less; not
 * used: cuDNN-backed, unchecked on a GPU.)
 * Legend: M rows (N = B·T in the model), C the normalized width.
 */
import type { DType, Graph, Tensor } from './graph/graph';
import { gradientSum } from './graph/autodiff';

/** The [C] ones and zeros of the xhat recomputation, one pair per graph, dtype and width (shared by the layers). */
function unitScaleBias(g: Graph, dtype: DType, C: number): { ones: Tensor; zeros: Tensor } {
  return g.memo(`layerNorm.unitAffine:${dtype}:${C}`, () => ({ ones: g.tensorConst(dtype, [C], new Array<number>(C).fill(1)), zeros: g.tensorConst(dtype, [C], new Array<number>(C).fill(0)) }));
}

/** y = LayerNormalization(x, scale, bias) over the last axis, with the backward in the header. */
export function layerNormWithGrad(g: Graph, x: Tensor, scale: Tensor, bias: Tensor, epsilon: number): Tensor {
  const C = scale.shape?.length === 1 ? scale.shape[0] : undefined;
  if (typeof C !== 'number' || !x.shape || x.shape[x.shape.length - 1] !== C) {
    throw new Error(`layerNormWithGrad: scale must be a static [C] matching x's last axis (x [${x.shape}], scale [${scale.shape}])`);
  }
  const statShape = [...x.shape.slice(0, -1), 1];
  let inv!: Tensor;
  const [y] = g.customGradient(
    [x, scale, bias],
    () => {
      const [out, , s] = g.node('LayerNormalization', [x, scale, bias], { axis: -1, epsilon: { f: epsilon } }, [
        { dtype: x.dtype, shape: x.shape },
        { dtype: 'float', shape: statShape },
        { dtype: 'float', shape: statShape },
      ]);
      inv = s!;
      return [out!];
    },
    (gg, gy, needs) => {
      const dy = gy[0];
      if (!dy) return [null, null, null];
      const rowsShape = x.shape!.length === 2 ? x.shape! : null;
      // Work on [M, C] views (free Reshapes when x has more than two axes).
      const flat = (t: Tensor, last: number) => (rowsShape ? t : gg.reshape(t, [-1, last], ['M', last]));
      const x2 = flat(x, C);
      const dy2 = flat(dy, C);
      const inv2 = flat(gg.cast(inv, x.dtype), 1);
      const sumRows = (t: Tensor) => gg.reduceSum(t, [0], false); // [C]
      const sumCols = (t: Tensor) => gg.reduceSum(t, [1], true); // [M,1]
      let xhat: Tensor | null = null;
      let q: Tensor | null = null;
      if (needs[0] || needs[1]) {
        const { ones, zeros } = unitScaleBias(gg, x.dtype, C);
        xhat = gg.node('LayerNormalization', [x2, ones, zeros], { axis: -1, epsilon: { f: epsilon } }, [{ dtype: x.dtype, shape: x2.shape }])[0]!;
        q = gg.mul(dy2, xhat); // [M,C]
      }
      const dScale = needs[1] ? sumRows(q!) : null;
      const dBias = needs[2] ? sumRows(dy2) : null;
      let dx: Tensor | null = null;
      if (needs[0]) {
        const gHat = gg.mul(dy2, scale); // [M,C] dL/dxhat
        const s1 = sumCols(gHat); // [M,1]
        const s2 = sumCols(gg.mul(q!, scale)); // [M,1]
        const negInvOverC = gg.mul(inv2, gg.scalarLike(-1 / C, inv2)); // [M,1]
        const k = gg.mul(s2, negInvOverC); // −inv·mean(g ⊙ xhat)
        const c = gg.mul(s1, negInvOverC); // −inv·mean(g)
        const unflat = (t: Tensor) => (rowsShape ? t : gg.reshape(t, gg.shapeOf(x), x.shape));
        dx = gradientSum(gg, [unflat(gg.mul(gHat, inv2)), unflat(gg.add(gg.mul(xhat!, k), c))]);
      }
      return [dx, dScale, dBias];
    },
  );
  return y!;
}
