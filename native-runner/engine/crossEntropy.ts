/**
 * Token cross-entropy over the vocabulary with a custom backward and as few full [N, V] passes as standard
 * ONNX ops allow (ops the CUDA EP of ORT 1.29 and the CPU EP both have; engine/cudaKernels.ts guards it).
 * Legend: N = B·T positions, V vocabulary.
 *
 *   tokenNll(g, logits [N, V] float, targets [N] int) → nll [N, 1] = lse − logit[target],
 *                                                       lse [N, 1] = log Σ_v exp(logit_v)
 *
 * Forward (stable: every exponent is ≤ 0, no log of a probability that can underflow):
 *   k    = ArgMax(logits)                         one read of [N, V]         → m = logits[k]   (GatherElements)
 *   p    = Softmax(logits)                        one read, one write        (kept for the backward)
 *   p[k] = exp(0)/s = 1/s                         GatherElements             → log s = −log p[k] ∈ [0, log V]
 *   lse  = m + log s,   nll = (m − logit[target]) + log s
 * nll is formed as (m − x_t) + log s rather than lse − x_t: when the target is the max, m − x_t is exact and
 * nll keeps its relative accuracy instead of cancelling ~ulp(lse). A target 200 below the max gives
 * nll ≈ 200 + log s with no exp(−200) anywhere (p[target] underflows to 0 but is never logged).
 *
 * Backward: dlogits = p·(g_nll + g_lse) − onehot(target)·g_nll
 *   Mul(p, c)                                     one read, one write
 *   ScatterElements(add) of −g_nll at the targets one read, one write (ORT copies data to the output)
 *
 * Full [N, V] passes, N = 4096, V = 50260 (B8 T512), 1 fp32 pass = 823.5 MB, bytes counted per element:
 *                          before (max/sub/exp/sum)           after (argmax/softmax)
 *   forward  fp32   ReduceMax R4, Sub R4W4, Exp R4W4,   ArgMax R4, Softmax R4W4 (+2 re-reads of the
 *                   ReduceSum R4          = 24 B (4.9 GB)  201 KB row, cache-resident)  = 12 B (2.5 GB)
 *   backward fp32   Mul R4W4, ScatterElements R4W4        same                          = 16 B (3.3 GB)
 *                                         = 16 B (3.3 GB)
 *   bf16 Gemm (real bf16 mode) adds, in both: Cast bf16→fp32 R2W4 and the backward's Cast fp32→bf16 R4W2
 *                                         = 12 B (2.5 GB)
 *   total fp32 mode   40 B/elem = 8.2 GB  →  28 B/elem = 5.8 GB   (10 → 7 fp32 passes)
 *   total bf16 mode   52 B/elem = 10.7 GB →  40 B/elem = 8.2 GB   (13 → 10 fp32-pass equivalents)
 * (If Softmax's two re-reads of each row missed the cache, the forward would be 20 B: still 4 B below.)
 * [N, V] tensors alive from forward to backward: p only (fp32), as `e` before. Forward peak: logits + p
 * (before: logits + (logits − m) + e).
 *
 * lmHeadNll(c, h [N, C], targets [N]) — the lm_head Gemm and tokenNll as one region, for the training graph.
 * The backward never forms dlogits: with coef = g_nll + g_lse [N, 1] and W the head weight [V, C],
 *   dh = coef ⊙ (p·W) − g_nll ⊙ W[target]          dW = pᵀ·(coef ⊙ h) − scatter-add of g_nll ⊙ h at rows target
 * so the row scaling and the one-hot move onto [N, C] / [V, C] tensors (C = 768 ≪ V) and the two backward
 * Gemms read p directly (bf16: its Cast) where they read dlogits before. No [N, V] pass is left in the
 * backward (same counting as above, the Gemms' own reads and writes excluded):
 *   fp32 mode   ArgMax R4, Softmax R4W4                                   = 12 B/elem = 2.5 GB   (40 B before)
 *   bf16 mode   + Cast logits→fp32 R2W4, Cast p→bf16 R4W2                 = 24 B/elem = 4.9 GB   (52 B before)
 * plus [N, C] / [V, C] work: W[target] gather, coef ⊙ h, and the dW scatter's copy of [V, C] (0.3 GB fp32).
 * bf16 rounding moves: the backward Gemms get round(p) and round(coef ⊙ h) instead of round(coef·p − onehot·
 * g_nll) and round(h) — one more bf16 round trip than the unfused graph ([N, C]) — and the row scaling and
 * one-hot are exact fp32 ('emulate' mirrors it on fp32 kernels).
 */
import type { Graph, Tensor } from './graph/graph';
import type { ModelContext } from './gpt2Graph';
import { bf16Operand, bf16Product } from './precision';

/**
 * The forward shared by tokenNll and lmHeadNll: logits [N, V] float, tgt [N, 1] int64 → nll, lse [N, 1] and
 * p = softmax(logits) [N, V] for the backward.
 */
function nllForward(g: Graph, logits: Tensor, tgt: Tensor): { nll: Tensor; lse: Tensor; p: Tensor } {
  // Reads of `logits` first and Softmax last, so the fp32 logits can be freed as soon as p exists.
  const picked = g.gatherElements(logits, tgt, 1); // [N,1] logit at the target
  const k = g.op('ArgMax', [logits], { axis: 1, keepdims: 1 }, { dtype: 'int64', shape: [logits.shape?.[0] ?? 'N', 1] }); // [N,1]
  const m = g.gatherElements(logits, k, 1); // [N,1] row max
  const p = g.softmax(logits, 1); // [N,V]
  const logS = g.neg(g.log(g.gatherElements(p, k, 1))); // [N,1] log Σ exp(x − m) = −log p[k]
  return { nll: g.add(g.sub(m, picked), logS), lse: g.add(m, logS), p };
}

/** Per-token NLL and logsumexp of logits [N, V] at targets [N] (int32/int64); see the header. */
export function tokenNll(g: Graph, logits: Tensor, targets: Tensor): { nll: Tensor; lse: Tensor } {
  const tgt = g.unsqueeze(g.cast(targets, 'int64'), [1]); // [N,1]
  let p!: Tensor;
  const [nll, lse] = g.customGradient(
    [logits],
    () => {
      const f = nllForward(g, logits, tgt);
      p = f.p;
      return [f.nll, f.lse];
    },
    (gg, gy, needs) => {
      if (!needs[0]) return [null];
      const gNll = gy[0];
      const gLse = gy[1];
      if (!gNll && !gLse) return [null];
      const coef = gNll && gLse ? gg.add(gNll, gLse) : (gNll ?? gLse)!; // [N,1]
      let d = gg.mul(p, coef); // [N,V]
      if (gNll) d = gg.op('ScatterElements', [d, tgt, gg.neg(gNll)], { axis: 1, reduction: 'add' }, { dtype: d.dtype, shape: d.shape });
      return [d];
    },
  );
  return { nll: nll!, lse: lse! };
}

/**
 * logits = h·Wᵀ (W = lm_head.weight, else the tied wte; precision per c.bf16 as `linear`) and tokenNll of them
 * at targets [N], as one region whose backward goes straight to dh [N, C] and dW [V, C] (see the header).
 * Same values as tokenNll(g, lmHeadLogits(c, h), targets).
 */
export function lmHeadNll(c: ModelContext, h: Tensor, targets: Tensor): { nll: Tensor; lse: Tensor } {
  const g = c.g;
  const w = c.w.get('lm_head.weight') ?? c.w.get('transformer.wte.weight');
  if (!w) throw new Error('graph weight transformer.wte.weight missing');
  const bf16 = c.bf16;
  const tgt = g.unsqueeze(g.cast(targets, 'int64'), [1]); // [N,1]
  let p!: Tensor;
  let hOp!: Tensor;
  let wOp!: Tensor;
  const [nll, lse] = g.customGradient(
    [h, w],
    () => {
      hOp = bf16Operand(g, h, bf16); // [N,C]
      wOp = bf16Operand(g, w, bf16); // [V,C]
      const logits = bf16Product(g, g.gemm(hOp, wOp, null, { transB: true }), bf16); // [N,V] float
      const f = nllForward(g, logits, tgt);
      p = f.p;
      return [f.nll, f.lse];
    },
    (gg, gy, needs) => {
      const gNll = gy[0];
      const gLse = gy[1];
      if (!gNll && !gLse) return [null, null];
      const coef = gNll && gLse ? gg.add(gNll, gLse) : (gNll ?? gLse)!; // [N,1]
      const pOp = bf16Operand(gg, p, bf16); // [N,V]
      let dh: Tensor | null = null;
      let dw: Tensor | null = null;
      if (needs[0]) {
        dh = gg.mul(bf16Product(gg, gg.gemm(pOp, wOp, null), bf16), coef); // [N,C] coef ⊙ (p·W)
        if (gNll) dh = gg.sub(dh, gg.mul(gg.gather(w, gg.squeeze(tgt, [1])), gNll)); // − g_nll ⊙ W[target]
      }
      if (needs[1]) {
        const hc = bf16Operand(gg, gg.mul(h, coef), bf16); // [N,C]
        dw = bf16Product(gg, gg.gemm(pOp, hc, null, { transA: true }), bf16); // [V,C] pᵀ·(coef ⊙ h)
        if (gNll) {
          const rows = gg.neg(gg.mul(h, gNll)); // [N,C]
          const idx = gg.expand(tgt, gg.shapeOf(rows), rows.shape); // [N,C] target row per element
          dw = gg.op('ScatterElements', [dw, idx, rows], { axis: 0, reduction: 'add' }, { dtype: 'float', shape: w.shape });
        }
      }
      return [dh, dw];
    },
  );
  return { nll: nll!, lse: lse! };
}
