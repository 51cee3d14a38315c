/**
 * A bf16 Gemm with the bias as an extra row of the weight instead of the Gemm's C (gpt2Graph.ts gemmBiasRow for
 * c_attn, mlp.ts mlpBf16 for c_fc when its input is folded, layerNorm.ts layerNormFold):
 *
 *   biasRowForward(g, mode, x̂ [N,K], Ŵ [K,M], b̂ [M]) → { y [N,M], xAug [N,K+8] }
 *     y = [x̂ | 1 0…0]·[Ŵ; b̂; 0…0] (K + 8 deep, aligned), one rounding of the fp32 sum as with C.
 *   biasRowBackward(g, mode, xAug, Ŵ, dŷ [N,M], needs [x, W, b]) → [dx̂ [N,K], dŴ [K,M], db̂ [M]]
 *     dx̂ = dŷ·Ŵᵀ (no [N,K+8] product to slice), [dŴ; db̂; ·] = xAugᵀ·dŷ: the bias gradient is that Gemm's row K
 *     (fp32 accumulation, one rounding), no ReduceSum over [N,M].
 * x̂, Ŵ, b̂ and dŷ are at bf16 precision already (bfloat16 tensors when mode is true, bf16-exact fp32 under
 * 'emulate'); the results are too (bfloat16, or rounded once under 'emulate').
 * ORT's CUDA Gemm writes a broadcast C into Y and reads it back (mlp.ts): 2·N·M values, against N·(K + 8) written
 * and read once by the Concat here — for c_attn (M = 3K) 38 MB against 13 MB per layer at B8 T512, for c_fc
 * (M = 4K) 50 MB against 13 MB, and the c_fc bias gradient's ReduceSum over [N,4C] goes too.
 * Legend: N rows, K the input width, M the output width.
 */
import type { Graph, Tensor } from './graph/graph';
import type { Bf16Mode } from './gpt2Graph';
import { bf16Result } from './precision';

/** [1 0…0] per row of x [N, ·], [N, 8] in x's dtype: made once per graph and row count, shared by the layers. */
function onesColumn(g: Graph, x: Tensor): Tensor {
  const N = x.shape?.[0] ?? 'N';
  return g.memo(`gemmBiasRow.onesColumn:${x.dtype}:${N}`, () => {
    const rows = g.op('Shape', [x], { start: 0, end: 1 }, { dtype: 'int64', shape: [1] });
    return g.expand(g.tensorConst(x.dtype, [1, 8], [1, 0, 0, 0, 0, 0, 0, 0]), g.concat([rows, g.ints([8])], 0), [N, 8]);
  });
}

function staticKM(wo: Tensor): [number, number] {
  const K = wo.shape?.[0];
  const M = wo.shape?.[1];
  if (typeof K !== 'number' || typeof M !== 'number') throw new Error('gemmBiasRow: the weight needs a static shape');
  return [K, M];
}

/** y = [x̂ | 1 0…]·[Ŵ; b̂; 0…] [N,M] at bf16 precision; xAug [N,K+8] is kept for the backward. */
export function biasRowForward(g: Graph, mode: Bf16Mode, xo: Tensor, wo: Tensor, bo: Tensor): { y: Tensor; xAug: Tensor } {
  const [, M] = staticKM(wo);
  const dt = xo.dtype;
  const xAug = g.concat([xo, onesColumn(g, xo)], 1); // [N, K+8]
  const wAug = g.concat([wo, g.reshape(bo, [1, M], [1, M]), g.tensorConst(dt, [7, M], new Array(7 * M).fill(0))], 0); // [K+8, M]
  return { y: bf16Result(g, g.gemm(xAug, wAug, null), mode), xAug };
}

/** dx̂ [N,K], dŴ [K,M], db̂ [M] (null where not needed) from dŷ [N,M] at bf16 precision. */
export function biasRowBackward(g: Graph, mode: Bf16Mode, xAug: Tensor, wo: Tensor, dyo: Tensor, needs: readonly boolean[]): [Tensor | null, Tensor | null, Tensor | null] {
  const [K, M] = staticKM(wo);
  const dx = needs[0] ? bf16Result(g, g.gemm(dyo, wo, null, { transB: true }), mode) : null; // [N,K]
  let dw: Tensor | null = null;
  let db: Tensor | null = null;
  if (needs[1] || needs[2]) {
    const dAug = bf16Result(g, g.gemm(xAug, dyo, null, { transA: true }), mode); // [K+8, M]
    const rowsOf = (from: number, to: number) => g.op('Slice', [dAug, g.ints([from]), g.ints([to]), g.ints([0])], {}, { dtype: dAug.dtype, shape: [to - from, M] });
    if (needs[1]) dw = rowsOf(0, K);
    if (needs[2]) db = g.reshape(rowsOf(K, K + 1), [M], [M]);
  }
  return [dx, dw, db];
}
