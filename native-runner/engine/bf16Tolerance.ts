/**
 * The loss-curve rule for comparing training runs that differ only in arithmetic (device, fp32 vs bf16):
 * step i passes when |loss_i − ref_i| ≤ tol·(|ref_i| + 1); NaN or a missing step fails, and so do two empty
 * curves (nothing was compared). Used by
 * bench/cuda-vs-cpu.ts (CUDA against the CPU) and test/engine/bf16Emulation.test.ts (emulated bf16 against
 * fp32 on the CPU), so the GPU check and the CPU check apply the same rule.
 *
 * Tolerances: fp32 2e-3 (TF32 matmuls and another summation order on the GPU); bf16 2e-2. bf16 keeps 8
 * significant bits, so one round-to-nearest has relative error ≤ 2^-8 ≈ 0.39 %; a training step puts
 * several such roundings (operands, products, backward GEMMs) on every path, and 20 steps of AdamW on
 * different gradients let the curves drift apart, so the bf16 rule allows ~5 roundings' worth (2e-2).
 */

/** Unit roundoff of bfloat16 (8 significant bits, round to nearest even): 2^-8. */
export const BF16_UNIT_ROUNDOFF = 2 ** -8;

/** Per-precision tolerance `tol` of the loss-curve rule. */
export const LOSS_CURVE_TOLERANCE = { fp32: 2e-3, bf16: 2e-2 } as const;

export interface LossCurveComparison {
  /** Every step within tolerance and the curves have the same, non-zero length. */
  pass: boolean;
  /** max over steps of |loss − ref| / (|ref| + 1) (NaN when a loss is NaN). */
  worst: number;
  /** 0-based step of `worst` (−1 for empty curves). */
  worstStep: number;
  /** 0-based steps outside the tolerance (NaN included). */
  failedSteps: number[];
}

/** Compares `test` against the reference curve `ref` step by step with tolerance `tol` (see the header). */
export function compareLossCurves(ref: readonly number[], test: readonly number[], tol: number): LossCurveComparison {
  let worst = 0;
  let worstStep = -1;
  const failedSteps: number[] = [];
  const n = Math.min(ref.length, test.length);
  for (let i = 0; i < n; i++) {
    const rel = Math.abs(test[i]! - ref[i]!) / (Math.abs(ref[i]!) + 1);
    if (worstStep < 0 || (!Number.isNaN(worst) && !(rel <= worst))) {
      worst = rel;
      worstStep = i;
    }
    if (!(rel <= tol)) failedSteps.push(i);
  }
  return { pass: n > 0 && ref.length === test.length && failedSteps.length === 0, worst, worstStep, failedSteps };
}
