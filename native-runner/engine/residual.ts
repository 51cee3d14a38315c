/**
 * The residual branch end of a block, r + Dropout(y + b), as one region: the residualBiasDropout model variant
 * (ModelVariants.residualBiasDropout, SFT_BIAS_DROPOUT=1; bf16 modes with bf16Projections and bf16Mlp, residual
 * dropout > 0). Legend: N rows (B·T), C n_embd.
 *
 *   residualBiasDropout(c, r [N,C], y [N,C], b [C]) → r + Dropout(y + b)   (all fp32)
 *     y is the branch's projection WITHOUT its bias (attention c_proj, MLP c_proj: float of the bf16 Gemm), b
 *     that projection's bias (fp32 parameter), r the residual stream.
 *     Forward, bf16 = true (CUDA): ONE node, com.microsoft BiasDropout(y, b, r, ratio, training = true) → out,
 *       mask. onnxruntime's CUDA kernel (contrib_ops/cuda/math/bias_dropout.cc: T ∈ {float16, float, double,
 *       bfloat16}, ratio and training_mode read from host memory) computes out = r + (y + b)·mask/(1−ratio) and
 *       writes the bool keep-mask; the op has no CPU kernel in onnxruntime-node.
 *     Forward, 'emulate' (CPU): Add(y, b) → ONNX Dropout → Add(r): the same values on fp32 kernels (up to the
 *       order of two fp32 roundings), so every test of the region's backward and of the whole model runs on
 *       the CPU; only the forward op differs.
 *     Backward (Graph.customGradient), dout [N,C]:
 *       dr = dout;   dy = Where(mask, dout, 0)·(1/(1−ratio));   db = Σ_N dy
 *     — what autodiff gives for the three ops (the Dropout rule's Where and scale, applied here because dy is
 *     cast to bf16 for the Gemms next, where ORT would round a Gemm alpha to bf16).
 *
 * Bytes per element of [N,C] fp32 (as bench/step-traffic.ts counts), per branch, forward:
 *   default   attention: Gemm's bias C copied into Y and read back (bf16, 4) · Dropout 8 + mask 1 · Add 12
 *             MLP:       Add bias 8 · Dropout 8 + mask 1 · Add 12
 *   this      BiasDropout: reads y and r, writes out and the mask: 12 + 1
 * i.e. 25 → 13 (attention) and 29 → 13 (MLP) B per element; the backward is unchanged but for the attention
 * bias sum, now over fp32 dy (+2). GPT-2 124M, 4 × B8 T512: ~3.9 GB less per optimizer step as step-traffic.ts
 * counts our graph. But ORT at optimisation level 'all' (the engine's default) already fuses the default MLP
 * branch's Add → Dropout → Add into a BiasDropout of its own (BiasDropoutFusion: seen in the optimized model
 * of the 124M bf16 train graph on the stub CUDA provider, 12 nodes, with 12 FusedMatMul), which the cost model
 * does not see: against 'all', what this variant adds is the attention branch and the two residual Adds (ORT's
 * fused nodes have no residual input): ~2.7 GB per step (−1.1 % modelled before the MLP region took the dropout scale, −0.8 % since, bench/stepModel.ts counting ORT's fusions). It
 * also keeps the fusion at the 'basic' and 'disabled' levels, whose session creation is shorter (stub
 * provider: 4.0 s 'all', 2.7 s 'basic', 1.0 s 'disabled').
 * Numerics: the bias is added in fp32 to the bf16-rounded product (the default rounds x·W + b once in the Gemm
 * for attention, and adds it in fp32 for the MLP, as here).
 */
import type { Tensor } from './graph/graph';
import { makeData } from './graph/graph';
import type { ModelContext } from './gpt2Graph';
import { usesBf16Projections } from './attention';
import { usesBf16Mlp } from './mlp';

/** Whether the block's two residual branches end in residualBiasDropout (see the header). */
export function usesResidualBiasDropout(c: ModelContext): boolean {
  return !!c.variants.residualBiasDropout && c.dropout.resid > 0 && usesBf16Projections(c) && usesBf16Mlp(c);
}

/** r + Dropout(y + b) with the backward of the header (one BiasDropout node on bf16 = true graphs). */
export function residualBiasDropout(c: ModelContext, r: Tensor, y: Tensor, b: Tensor): Tensor {
  const g = c.g;
  const ratio = c.dropout.resid;
  if (!(ratio > 0 && ratio < 1)) throw new Error(`residualBiasDropout: the dropout ratio must be in (0, 1), got ${ratio}`);
  let mask!: Tensor;
  const [out] = g.customGradient(
    [y, b, r],
    () => {
      const seed = c.nextSeed();
      if (c.bf16 === true) {
        const [o, m] = g.node(
          'BiasDropout',
          [y, b, r, g.scalar(ratio, 'float'), g.constant(makeData('bool', [], [1]), 'training')],
          { seed },
          [
            { dtype: y.dtype, shape: y.shape },
            { dtype: 'bool', shape: y.shape },
          ],
          'com.microsoft',
        );
        mask = m!;
        return [o!];
      }
      const d = g.dropoutWithMask(g.add(y, b), ratio, seed);
      mask = d.mask;
      return [g.add(r, d.out)];
    },
    (gg, gy, needs) => {
      const dout = gy[0];
      if (!dout) return [null, null, null];
      const needBranch = needs[0] || needs[1];
      const dy = needBranch ? gg.mul(gg.where(mask, dout, gg.scalarLike(0, dout)), gg.scalarLike(1 / (1 - ratio), dout)) : null;
      return [needs[0] ? dy : null, needs[1] ? gg.reduceSum(dy!, [0], false) : null, needs[2] ? dout : null];
    },
  );
  return out!;
}
