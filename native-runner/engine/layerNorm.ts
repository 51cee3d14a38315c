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
 *
 * Folding (ModelVariants.lnFold, SFT_LN_FOLD, engine default on; bf16 modes with bf16Projections for ln_1 → c_attn
 * and bf16Mlp for ln_2 → c_fc; ln_f → lm head is not folded; other graphs are emitted as before):
 *   layerNormFold(g, mode, x [N,C], γ [C], β [C], W [C,M], b [M], epsilon, s? [M]) → { x̂o [N,C], W'o [C,M], b'o [M] }
 *   z = (LN(x)·W + b) ⊙ s = x̂·W' + b'   with x̂ = LayerNormalization(x; 1, 0) (fp32, kept with InvStdDev inv),
 *       W'[c,j] = γ_c·W[c,j]·s_j,  b'_j = (b_j + Σ_c β_c·W[c,j])·s_j   (fp32, each rounded ONCE to bf16)
 *   (s: attention's 1/√D on the q columns; the β·W sum is a Mul + ReduceSum, exact fp32, not a TF32 GEMV.)
 *   W', b' read parameters only, so Graph.hoistInvariantsFrom runs them once per optimizer step. The caller's
 *   Gemm takes b' as a weight row (biasRow.ts) and returns dx̂, dW', db' at bf16 precision. Backward:
 *     dx  = inv·(dx̂ − mean_c(dx̂) − x̂·mean_c(dx̂ ⊙ x̂)), as the terms dx̂⊙inv and x̂⊙k + c of the residual Sum
 *           (k = −inv·Σ_c(dx̂⊙x̂)/C, c = −inv·Σ_c dx̂/C [N,1]), from the forward's x̂ and inv: no recompute, no ⊙γ;
 *     dW  = s_j·(γ_c·dW'[c,j] + β_c·db'_j)   (b' depends on W too: the rank-1 β term),   db = s ⊙ db',
 *     dγ_c = Σ_j dW'[c,j]·W[c,j]·s_j,   dβ_c = Σ_j W[c,j]·s_j·db'_j
 *   The four parameter gradients are linear in (dW', db') with coefficients made of parameters only: they are
 *   returned as DeferredGrad (graph.ts), so the train graph's gradient-accumulation Loop sums dW', db' (fp32) over
 *   the micro-batches and forms them ONCE per step after it (trainGraph.ts); without accumulation (and in the
 *   grads graph) they are formed at once. All four in fp32 from the bf16 Gemm results (dβ as a Mul and an fp32 sum,
 *   not a TF32 GEMV); dx too. Checked in fp32 (mode false: no rounding) against the unfolded
 *   graph (≤ 1.7e-7 relative L2) and float64 central differences (test/engine/lnFold.test.ts).
 *   Numerics: the unfolded bf16 graph rounds y = x̂⊙γ + β and W, and b; the fold rounds x̂, W⊙γ (⊙s) and b + β·W.
 *   Either way each product term of the Gemm carries two bf16 roundings (≤ 2u relative, u = 2^-8 … per operand
 *   2^-9) with fp32 accumulation; the fold's β·W part is summed exactly and rounded once in b' instead of once per
 *   element of y, so the forward error bound is the same (bias part: no worse). The gradients add one rounding in
 *   dγ and dβ (bf16 sum results, like the other bf16 weight gradients). Measured ('emulate', relative L2 against
 *   fp32): one LN → c_attn sublayer, C 12, D 6: q/k/v 2.73e-3 (unfolded 2.90e-3), dx 2.47e-3 (2.75e-3), dγ 3.78e-3
 *   (2.31e-3), dβ 3.02e-3 (3.10e-3), dW 2.68e-3, db 2.56e-3; tiny model golden batch with random γ, β: gradients
 *   2.33e-3 (unfolded 2.42e-3), loss 9.2e-6 (2.5e-5); fixture (γ = 1, β = 0) dropout 0 / 0.1: 2.27e-3 / 2.41e-3,
 *   worst tensor 6.79e-3 / 6.21e-3; 20 AdamW steps: worst |Δloss|/(|loss| + 1) 5.1e-5 (unfolded 3.6e-5; bound u/8).
 *   Bytes, per element of [N,C] in the backward per LayerNorm: 92 (above) → 52 (s1 4 · Q 12 · s2 4 · dx̂⊙inv 8 ·
 *   x̂⊙k 8 · +c 8 · two Sum terms 8); c_fc loses its broadcast C (2·N·4C bf16) and the [N,4C] bias ReduceSum for one
 *   [N,C+8] Concat. Paid for with [C,M] work once per step (dW's γ/β terms, dγ, dβ: ~40 B per weight element,
 *   ~185 MB per GPT-2 layer; per micro-batch only the fp32 accumulation of dW', db', as for any weight) and one kept
 *   fp32 x̂ [N,C] per folded LayerNorm (+0.3 GB activations at B8 T512). bench/step-traffic.ts (with ORT's fusions),
 *   GPT-2 124M, 4 micro-batches of T512, SFT_LN_FOLD=0 → on: B8 105.9 → 102.4 ms (202 → 193 GB), B32 367.0 → 349.0,
 *   B4 62.4 → 61.4, B1 29.8 → 30.5 (with the [C,M] work per micro-batch, before the deferral and with the cost
 *   model's earlier count of ORT's fusions: B8 104.1 against 105.2, B1 33.2 against 29.6).
 * Legend: M rows (N = B·T in the model), C the normalized width; in the fold M is the Gemm's output width.
 */
import type { DeferredGrad, DType, Graph, Tensor } from './graph/graph';
import { gradientSum } from './graph/autodiff';
import type { Bf16Mode } from './gpt2Graph';
import { bf16Operand, bf16ToFloat } from './precision';

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

// --- the LayerNorm affine folded into the next Gemm (ModelVariants.lnFold) ---------------------------------------

/** The bf16 operands of the Gemm that follows a folded LayerNorm: x̂ [N,C], W' [C,M], b' [M] (layerNormFold). */
export interface FoldedGemmOperands {
  xo: Tensor;
  wo: Tensor;
  bo: Tensor;
}

/**
 * LayerNorm(x; γ, β) followed by a Conv1D (W [C,M], b [M], output columns scaled by `colScale` [M]) as the
 * operands of ONE bf16 Gemm, x̂·W' + b' (see "Folding" in the header). `mode` true or 'emulate' in the model;
 * false gives the same formulas in fp32 without any rounding (tests). The caller runs the Gemm (bias as a
 * weight row, biasRow.ts) and hands back dx̂, dW', db' at the mode's precision.
 */
export function layerNormFold(g: Graph, mode: Bf16Mode, x: Tensor, scale: Tensor, bias: Tensor, w: Tensor, b: Tensor, epsilon: number, colScale?: number[]): FoldedGemmOperands {
  const C = scale.shape?.length === 1 ? scale.shape[0] : undefined;
  const M = w.shape?.[1];
  if (typeof C !== 'number' || typeof M !== 'number' || x.shape?.length !== 2 || x.shape[1] !== C || w.shape?.[0] !== C) {
    throw new Error(`layerNormFold: x [N,C], scale [C] and w [C,M] need static C and M (x [${x.shape}], scale [${scale.shape}], w [${w.shape}])`);
  }
  if (colScale && colScale.length !== M) throw new Error(`layerNormFold: colScale has ${colScale.length} entries for ${M} columns`);
  let xhat!: Tensor;
  let inv!: Tensor;
  // The parameter-side factors, once per graph they are built in (the forward's, and the step body's for gradients
  // finished there): s [M] (null without a column scale), γ ⊗ s [C,M] (γ as [C,1] without one), β as [C,1];
  // W ⊙ s for the backward only.
  const factors = (gr: Graph) =>
    gr.memo(`layerNormFold:${w.name}:${scale.name}`, () => {
      const s = colScale ? gr.tensorConst('float', [M], colScale) : null;
      const gammaCol = gr.reshape(scale, [C, 1], [C, 1]);
      return { s, rowCol: s ? gr.mul(gammaCol, s) : gammaCol, betaCol: gr.reshape(bias, [C, 1], [C, 1]) };
    });
  const wScaled = (gr: Graph) =>
    gr.memo(`layerNormFold.wS:${w.name}`, () => {
      const s = factors(gr).s;
      return s ? gr.mul(w, s) : w;
    });
  const outs = g.customGradient(
    [x, scale, bias, w, b],
    () => {
      const { ones, zeros } = unitScaleBias(g, x.dtype, C);
      const [xh, , s] = g.node('LayerNormalization', [x, ones, zeros], { axis: -1, epsilon: { f: epsilon } }, [
        { dtype: x.dtype, shape: x.shape },
        { dtype: 'float', shape: [x.shape![0]!, 1] },
        { dtype: 'float', shape: [x.shape![0]!, 1] },
      ]);
      xhat = xh!;
      inv = s!;
      // Parameter side (reads parameters only: hoisted to once per optimizer step by Graph.hoistInvariantsFrom).
      const { s: sRow, rowCol, betaCol } = factors(g);
      const wFold = g.mul(w, rowCol); // W'[c,j] = γ_c·W[c,j]·s_j
      const bw = g.reduceSum(g.mul(w, betaCol), [0], false); // (β·W)_j, an exact fp32 sum (no TF32 GEMV)
      const bFold = sRow ? g.mul(g.add(b, bw), sRow) : g.add(b, bw); // b'_j = (b_j + (β·W)_j)·s_j
      return [bf16Operand(g, xhat, mode), bf16Operand(g, wFold, mode), bf16Operand(g, bFold, mode)];
    },
    (gg, gy, needs) => {
      const [dxo, dwo, dbo] = gy;
      const grads: (Tensor | DeferredGrad | null)[] = [null, null, null, null, null];
      if (needs[0] && dxo) {
        const dxh = bf16ToFloat(gg, dxo, mode); // [N,C] dL/dx̂
        const s1 = gg.reduceSum(dxh, [1], true); // [N,1] Σ_c dx̂
        const s2 = gg.reduceSum(gg.mul(dxh, xhat), [1], true); // [N,1] Σ_c dx̂ ⊙ x̂
        const negInvOverC = gg.mul(inv, gg.scalarLike(-1 / C, inv));
        grads[0] = gradientSum(gg, [gg.mul(dxh, inv), gg.add(gg.mul(xhat, gg.mul(s2, negInvOverC)), gg.mul(s1, negInvOverC))]);
      }
      // The parameter gradients are linear in (dW', db') with coefficients made of parameters only: returned
      // deferred (DeferredGrad), so a gradient-accumulation Loop sums dW', db' over its micro-batches and forms
      // them once per step after it (trainGraph.ts; without accumulation they are formed here). All in fp32.
      if ((needs[1] || needs[2] || needs[3] || needs[4]) && (!dwo || !dbo)) throw new Error('layerNormFold: the Gemm must hand back both dW\' and db\'');
      const raw = [dwo!, dbo!];
      const f32 = (g2: Graph, t: Tensor) => (t.dtype === 'float' ? t : g2.cast(t, 'float'));
      const deferred = (fin: (g2: Graph, dw: Tensor, db: Tensor, k: ReturnType<typeof factors>) => Tensor): DeferredGrad => ({
        kind: 'deferred',
        raw,
        finish: (g2, r) => fin(g2, f32(g2, r[0]!), f32(g2, r[1]!), factors(g2)),
      });
      const dbOf = (g2: Graph, db: Tensor, k: ReturnType<typeof factors>) => (k.s ? g2.mul(db, k.s) : db); // s ⊙ db' = dL/db
      // dγ_c = Σ_j dW'_cj·W_cj·s_j
      if (needs[1]) grads[1] = deferred((g2, dw) => g2.reduceSum(g2.mul(dw, wScaled(g2)), [1], false));
      // dβ_c = Σ_j W_cj·s_j·db'_j (a Mul and an fp32 sum, not a TF32 GEMV)
      if (needs[2]) grads[2] = deferred((g2, _dw, db) => g2.reduceSum(g2.mul(wScaled(g2), g2.reshape(db, [1, M], [1, M])), [1], false));
      // dW_cj = γ_c·s_j·dW'_cj + β_c·s_j·db'_j
      if (needs[3]) grads[3] = deferred((g2, dw, db, k) => g2.add(g2.mul(dw, k.rowCol), g2.mul(k.betaCol, g2.reshape(dbOf(g2, db, k), [1, M], [1, M]))));
      if (needs[4]) grads[4] = deferred((g2, _dw, db, k) => dbOf(g2, db, k));
      return grads;
    },
  );
  return { xo: outs[0]!, wo: outs[1]!, bo: outs[2]! };
}
