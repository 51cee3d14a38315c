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
 *
 * bf16Logits variant (ModelVariants.bf16Logits, the engine's default, SFT_BF16_LOGITS=0 off; lmHeadNll only, and only when c.bf16 is true or
 * 'emulate' — otherwise, and in tokenNll / the unfused head, the graphs are emitted byte for byte as without it):
 * the softmax over V in bfloat16 straight from the Gemm's bf16 output, p kept in bf16 for the backward Gemms, and
 * nll / lse from [N, 1] values (nllFromBf16Softmax). Forward, real bf16 (u = 2^-8, bf16's unit roundoff):
 *   x    = Gemm(h, W)                        [N,V] bf16 (no Cast)
 *   x_t  = float(x[target])                  GatherElements [N,1]
 *   p    = Softmax(x)                        [N,V] bf16 — kept for the backward, read by both Gemms as is
 *   mass = ReduceSum(p as [N,G,B], axis 2)   [N,G] bf16, V = G·B consecutive groups (vocabGroups: 50257 = 1733·29)
 *   grp  = ArgMax(float(mass))               the heaviest group: mass ≥ (1 − u)/G
 *   j    = grp·B + ArgMax(float(p[grp·B + 0..B−1]))   the largest p of that group: p[j] ≥ (1 − u)/V
 *   lse  = x_j − log p[j],   nll = (x_j − x_t) − log p[j]       ([N,1] float; x_j = float(x[j]))
 * Exact for every j (p_j = exp(x_j − lse)), so no max is needed — ArgMax and ReduceMax have no bf16 CUDA kernel,
 * and a float copy of [N,V] to find the max is the pass this variant removes. j only has to make p[j] a normal
 * bf16 number, which the two small stages guarantee (p[j] ≥ ~1/V ≫ 2^-126); the target itself would not do:
 * p[target] is subnormal once x_t is ~87 below lse and 0 from ~92, where −log p[target] is +inf; this nll stays finite.
 * Error bound (against the exact lse / nll of the bf16 logits x): p[j] = bf16(p̂_j) with p̂_j ORT's float softmax
 * (CUDA blockwise kernel for V > 2048, the warp kernels below: max, Σ exp(x − max) and exp(x − max)/Σ in float,
 * rounded once to bf16 — onnxruntime core/providers/cuda/math/softmax.cc and softmax_impl.cu instantiate
 * <BFloat16, BFloat16, float>, softmax_blockwise_impl.cuh SoftMaxForwardEpilogue), so
 *   |Δlse|, |Δnll| ≤ −log(1 − u) + ε_s + 2^-23·(|lse| + |x_j| + |x_t|) ≈ 3.92e-3 + ε_s   (absolute)
 * with ε_s the float softmax's relative error (≤ 2e-5 at V = 50257 on the CPU EP). The old formulation was ~1e-6
 * relative; both share the error of the bf16 logits themselves (|x|·2^-9 each, 0.1 at |x| = 50), which is why
 * keeping the softmax in fp32 bought little. Per-token errors are roundings of unrelated values, so the mean
 * loss of a micro-batch is off by far less (bias −E[δ²]/2 ≲ 1e-5). The gradient is unchanged: the backward Gemms
 * read round(p) as before (in 'emulate' the gradients are bit-identical to the default bf16 graph's).
 * 'emulate' runs the same nodes on fp32 with a rounding after Softmax and after ReduceSum (precision.ts); the
 * Casts to float of x_t, x_j, the masses and the candidates are not needed there. The two differ only in summation
 * order inside kernels: the CUDA ReduceSum for bf16 takes the fast matrix path (ReduceSum sets
 * fast_reduction_; a reduction over the trailing axis is reduce_matrix_columns, accumulating in
 * AccumulationType_t<BFloat16> = float — core/providers/cuda/reduction/reduction_ops.{h,cc}, reduction_functions.cc),
 * i.e. the fp32 sum rounded once. Ties in an ArgMax may pick another index on the GPU than on the CPU; any index
 * of the group / any group is as exact (the bound above holds for every j with p[j] normal).
 * V without a divisor 2 ≤ B ≤ V/2 (prime): one stage, j = ArgMax(float(p)) — one fp32 [N,V] pass (10 B per logit).
 * Traffic per logit, B8 T512 V 50257, the Gemms' own reads and writes excluded (bench/step-traffic.ts counts):
 *   default bf16   Cast x→float R2W4, ArgMax R4, Softmax R4W4, Cast p→bf16 R4W2      = 24 B  (4.9 GB per micro-batch)
 *   bf16Logits     Softmax R2W2, ReduceSum R2 (+ [N,G] and [N,B] work, ~0.5 B)       ≈  6 B  (1.3 GB per micro-batch)
 * Kept from forward to backward: p in bf16, 412 MB instead of 823 MB fp32; forward peak x + p = 0.8 GB (bf16)
 * instead of x bf16 + x fp32 + p fp32 = 2.1 GB.
 * bench/step-traffic.ts, GPT-2 124M, 4 × B8 T512 bf16 (modelled): with SFT_BF16_ATTENTION=1 SFT_BF16_MLP=1 126.6 ms /
 * 254.3 GB per step → 121.1 ms / 239.9 GB; default switches 178.7 ms / 388.6 GB → 173.2 ms / 374.1 GB.
 * Measured on the H200 (2026-11-28, gpu-train.ts B8 T512 bf16, attention + MLP variants on, K = 48, two runs each,
 * interleaved): 8.61 / 8.37 s → 7.57 / 7.95 s per 48 steps (−8.6 %, ≈ −15 ms per step: more than modelled; likely
 * because ORT's CUDA ArgMax, cudnnReduceTensor with indices, is slower than its bytes — not profiled), peak GPU memory 19.2 → 17.05 GB; the 124M loss-curve
 * check (cuda-vs-cpu.ts, CUDA bf16 with SFT_BF16_LOGITS=1 against the CPU fp32 curve) passes, worst 5.1e-3 of the
 * 0.02 tolerance (default bf16, next call: 1.5e-3; both worst at step 17, after the gradient spike of step 15).
 * Measured on the CPU ('emulate', test/engine/bf16Logits.test.ts): worst |Δnll| / |Δlse| on the adversarial rows
 * 3.6e-3 (V = 50257), 3.0e-3 (50260), 3.2e-3 (509); the tiny model's golden-batch loss moves by 7.8e-5 (of 10.8).
 */
import { makeData, type Graph, type Tensor } from './graph/graph';
import type { Bf16Mode, ModelContext } from './gpt2Graph';
import { bf16Operand, bf16Product, bf16Result, bf16ToFloat } from './precision';

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

/** Whether lmHeadNll keeps the vocabulary softmax in bfloat16: the bf16Logits variant is on and c.bf16 is true or 'emulate'. */
export function usesBf16Logits(c: ModelContext): boolean {
  return !!c.bf16 && !!c.variants.bf16Logits;
}

/**
 * How nllFromBf16Softmax finds its index j: the vocabulary as G groups of B consecutive classes (G·B = V, 2 ≤ B ≤ V/2),
 * the divisor B minimising 12·G + 30·B — the bytes per row the two small stages move after the group sums
 * (per group: the bf16 sum written, its Cast to float, ArgMax; per candidate: the int64 index written and read,
 * GatherElements, Cast, ArgMax). null when V has no such divisor (V prime or < 4): one stage, ArgMax over all of p.
 * V = 50257 = 29·1733 → B 29, G 1733; 50260 → B 140, G 359; 512 → B 16, G 32.
 */
export function vocabGroups(V: number): { groups: number; size: number } | null {
  let best: { groups: number; size: number } | null = null;
  let bestCost = Infinity;
  for (let b = 2; b * 2 <= V; b++) {
    if (V % b !== 0) continue;
    const cost = 12 * (V / b) + 30 * b;
    if (cost < bestCost) {
      bestCost = cost;
      best = { groups: V / b, size: b };
    }
  }
  return best;
}

/**
 * The bf16Logits forward (see the header): logits [N, V] at bf16 precision (real: a bfloat16 tensor; 'emulate': float
 * holding bf16 values), tgt [N, 1] int64, V the vocabulary size → nll, lse [N, 1] float and p = softmax(logits) [N, V]
 * in bf16 (real: bfloat16; 'emulate': float rounded to bf16), kept for the backward. mode must be true or 'emulate'.
 *   lse = x_j − log p[j],  nll = (x_j − x_t) − log p[j]   for an index j with p[j] ≥ ~1/V (chosen from p, below).
 */
export function nllFromBf16Softmax(g: Graph, logits: Tensor, tgt: Tensor, mode: Bf16Mode, V: number): { nll: Tensor; lse: Tensor; p: Tensor } {
  if (!mode) throw new Error('nllFromBf16Softmax needs a bf16 mode (true or emulate)');
  const N = logits.shape?.[0] ?? 'N';
  const toFloat = (t: Tensor) => bf16ToFloat(g, t, mode);
  const argMax = (t: Tensor) => g.op('ArgMax', [t], { axis: 1, keepdims: 1 }, { dtype: 'int64', shape: [N, 1] }); // [N,1]
  const xt = toFloat(g.gatherElements(logits, tgt, 1)); // [N,1] logit at the target
  const p = bf16Result(g, g.softmax(logits, 1), mode); // [N,V] bf16 (float accumulation inside, rounded once)
  const split = vocabGroups(V);
  let cand: Tensor; // [N,B] (or [N,V]) float: the candidates for j
  let idx: Tensor | null = null; // [N,B] int64: their classes (null: cand is p itself)
  if (split) {
    const { groups: G, size: B } = split;
    const mass = bf16Result(g, g.reduceSum(g.reshape(p, [-1, G, B], [N, G, B]), [2], false), mode); // [N,G] Σ p per group
    const grp = argMax(toFloat(mass)); // [N,1] the heaviest group (mass ≥ ~1/G)
    const iota = g.constant(makeData('int64', [1, B], Array.from({ length: B }, (_, i) => i)), 'group_offsets');
    idx = g.op('Add', [g.mul(grp, g.scalar(B, 'int64')), iota], {}, { dtype: 'int64', shape: [N, B] }); // [N,B]
    cand = toFloat(g.gatherElements(p, idx, 1)); // [N,B] p over that group
  } else {
    cand = toFloat(p); // [N,V] (no usable divisor of V: one fp32 ArgMax pass)
  }
  const local = argMax(cand); // [N,1] the largest p of the group (≥ mass / B ≥ ~1/V)
  const pj = g.gatherElements(cand, local, 1); // [N,1] float p[j]
  const j = idx ? g.gatherElements(idx, local, 1) : local; // [N,1] int64
  const xj = toFloat(g.gatherElements(logits, j, 1)); // [N,1]
  const logPj = g.log(pj); // [N,1]
  return { nll: g.sub(g.sub(xj, xt), logPj), lse: g.sub(xj, logPj), p };
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
  const lowLogits = usesBf16Logits(c);
  const tgt = g.unsqueeze(g.cast(targets, 'int64'), [1]); // [N,1]
  let p!: Tensor;
  let hOp!: Tensor;
  let wOp!: Tensor;
  const [nll, lse] = g.customGradient(
    [h, w],
    () => {
      hOp = bf16Operand(g, h, bf16); // [N,C]
      wOp = bf16Operand(g, w, bf16); // [V,C]
      if (lowLogits) {
        // bf16Logits: the Gemm's bf16 output feeds the bf16 Softmax directly; p stays bf16 (see the header).
        const logits = bf16Result(g, g.gemm(hOp, wOp, null, { transB: true }), bf16); // [N,V] bf16
        const f = nllFromBf16Softmax(g, logits, tgt, bf16, c.config.vocab_size);
        p = f.p;
        return [f.nll, f.lse];
      }
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
      const pOp = lowLogits ? p : bf16Operand(gg, p, bf16); // [N,V] (bf16Logits: p is bf16 already, no Cast)
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
