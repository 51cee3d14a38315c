/**
 * The MLP block (c_fc → gelu_new → c_proj) with its [N, 4C] activations kept in bfloat16: the bf16Mlp model
 * variant (ModelVariants.bf16Mlp, the engine's default, SFT_BF16_MLP=0 off), used by gpt2Graph.ts `mlp` only when c.bf16 is true or
 * 'emulate' (otherwise the default graph is emitted byte for byte). The [N, C] input and output stay fp32.
 *
 *   mlpBf16(c, x, wFc, bFc, wProj, bProj, geluGrad = c.variants.bf16GeluGrad ?? 'table') → y [N, C]
 *     x [N,C] fp32 (ln_2 output), wFc [C,4C], bFc [4C], wProj [4C,C], bProj [C] (fp32 parameters); bProj null:
 *     y without the c_proj bias (the residualBiasDropout variant adds it, engine/residual.ts).
 *     Forward:  h   = Gemm(bf16(x), bf16(wFc), C = bf16(bFc))  [N,4C] bf16 (the bias is Gemm's C input)
 *               a   = Gelu_tanh(h)                             [N,4C] bf16
 *               y   = float(Gemm(a, bf16(wProj))) + bProj      [N,C]  fp32
 *     Backward (Graph.customGradient), dy [N,C] fp32 — with the 'table' derivative the region accepts dy without the
 *     residual dropout's pending 1/(1−p) = s (autodiff ScaledGrad; Graph.customGradient acceptsScale): s goes into
 *     dbProj ([C]), into dWProj (a deferred gradient: once per step after accumulation) and into the table (entries
 *     s·gelu'(x) rounded once), instead of a pass over dy [N,C] fp32:
 *               dyb = bf16(dy); dbProj = Σ_N dy (fp32); dWProj = float(Gemm(aᵀ, dyb))
 *               g   = Gemm(dyb, bf16(wProj)ᵀ)                  [N,4C] bf16
 *               dh  = g ⊙ gelu'(h)                             [N,4C] bf16: 'table' (the default) 6 nodes, a lookup
 *                                                              (geluTanhGradTable, below); 'exp' 15 bf16 nodes
 *                                                              (geluTanhGradBf16; SFT_BF16_GELU_GRAD=exp)
 *               dbFc = float(ΣN dh) (bf16 sum); dx = float(Gemm(dh, bf16(wFc)ᵀ)); dWFc = float(Gemm(bf16(x)ᵀ, dh))
 *     No Cast to or from float touches an [N,4C] tensor; dh feeds the two c_fc gradient GEMMs and the bias sum directly.
 *     Kept for the backward: h and a in bf16 (the default keeps h in fp32 and a's bf16 copy).
 *     geluGrad = 'fp32' (bench/tests only): dh = bf16(float(g) ⊙ gelu'(float(h))) with the default's fp32
 *     chain and an fp32 bias sum — one rounding instead of ~10, and 906 MB more traffic per layer (below).
 *
 * With lnFold (gpt2Graph.ts mlp, opts.fcFolded): x, wFc, bFc are the folded bf16 operands x̂, W', b' of
 * layerNorm.ts layerNormFold; the c_fc Gemm takes the bias as a weight row (biasRow.ts) and the backward returns
 * dx̂, dW', db' at bf16 precision (db' from the weight-gradient Gemm's row C, no ReduceSum over [N,4C]).
 *
 * Bias: Gemm's C input (bf16) rather than a bf16 Add after the Gemm. Both cost the same traffic (ORT's CUDA
 * Gemm first broadcasts a 1-D C into Y with a rank-1 GEMM, then runs the GEMM with beta = 1, reading Y: one
 * extra write + read of [N,4C] bf16, as an Add's read + write), but C rounds once: cuBLAS forms
 * x·W + b in fp32 and rounds the sum to bf16, where the Add would round the product and then the sum.
 *
 * Gelu derivative in bf16 (geluTanhGradBf16): gelu'(x) = σ(v)·(1 + x·v'·σ(−v)) = E·(D + w)/D² with
 * E = exp(min(v, 40)), D = E + 1, w = x·v'. Chosen over the sigmoid form because ORT's CUDA Sigmoid
 * evaluates 1 − 1/(1 + e^{−|v|}) in the tensor type for v ≤ 0: in bf16 that is 0.0078 for σ(−5.1) = 0.0061
 * and 0 below v ≈ −5.5, and 1 − σ / 1 − tanh² cancel likewise; the exp form has no such subtraction
 * except D + w near gelu's minimum (x ≈ −0.75), where the error stays absolute (~2^-9 of E·D). On
 * bf16-rounded N(0, 2²) inputs its relative L2 error is 0.92·2^-8 (the fp32 chain rounded once: 0.52·2^-8).
 *
 * Gelu derivative from a table (ModelVariants.bf16GeluGrad = 'table', SFT_BF16_GELU_GRAD=table; geluTanhGradTable):
 *   j  = Cast<int32>(Min(Max(h, −8), 8) · 2^10)   bf16 Max, Min (selects) and Mul by 2^10: all exact; Cast truncates
 *   dh = g ⊙ Gather(table, j)                      table bf16 [16385], one initializer per graph; Mul rounds once
 * Bucket j holds the bf16 values x with trunc(x·2^10) = j (j < 0 gathered from the end: Gather's negative indices);
 * its entry is the midpoint of the largest and smallest float64 gelu_new'(x) over those values, rounded once to bf16
 * (geluGradTable). For 1/8 ≤ |x| < 8 a bucket holds one bf16 value, so d is gelu_new'(x) correctly rounded; below
 * 1/8 up to 16 values share a bucket (gelu' changes by < 2^-10 over it); beyond ±8 gelu' is 0 / 1 to within 5e-20.
 * Measured (test/engine/geluTable.test.ts), on all 33346 bf16 values in [−10, 10]: worst absolute error 3.90e-3 =
 * that of rounding the exact value once (exp form: 1.29e-2), ≤ 0.65 ulp where |gelu'| > 1e-3 (exp: 219), 217
 * values not correctly rounded (all |x| < 1/8); on bf16-rounded N(0, 2²): relative L2 of gelu' 0.51·2^-8 (exp 0.95,
 * rounded once 0.51) and of g ⊙ gelu' 0.65·2^-8 (exp 1.03, the exact product rounded once 0.41). 'emulate' runs the
 * same ops on fp32 (the table's values are bf16 already; the Mul rounded once): bit-identical to the bf16 graph.
 * Cast float/bf16 → int32 truncates toward zero on both providers (CUDA OP_Cast: (int)(float)bf16 in
 * core/providers/cuda/math/unary_elementwise_ops_impl.cu; CPU: static_cast); the clamp keeps it in range. CUDA Gather
 * (core/providers/cuda/tensor/gather_impl.cu) adds the size to a negative index as ONNX specifies; the CPU does too.
 * NaN h: the real graph gets a finite index (the CUDA Max either drops the NaN, → bucket −8, or passes it to the Cast,
 * → 0); 'emulate' maps NaN to 0 first (Where(h = h, h, 0)) because the CPU Cast makes int32 min of it and the CPU
 * Gather would fail. Either way a NaN h already makes a = Gelu(h), the loss and dWProj NaN: nothing is hidden.
 * Ops checked on the 1.29.0 CUDA 13 provider (bench/cuda-placement set-up, one-node sessions, fallback disabled):
 * bf16 Max, Min, Mul, Cast bf16→int32 and Gather(bf16 table, int32) are created; Clip on bf16 is not (ORT expands
 * it into a function body and fails), and HardSigmoid has no bf16 at opset 21 — hence Max + Min, on bf16 (the
 * HardSigmoid form, Cast to float, HardSigmoid, ·S, Cast, would move 150 MB more per layer).
 *
 * Precision, and what 'emulate' does per op ('emulate' mirrors the real graph on fp32 kernels; every op the
 * real graph runs on bf16 tensors is the fp32 op followed by round-to-nearest-even to bf16 at the same point,
 * constants rounded to bf16 as the real graph holds them). ORT's CUDA kernels for bfloat16, as read in
 * onnxruntime (core/framework/float16.h BFloat16 operators; cuda/cu_inc/common.cuh; not yet measured on a GPU):
 *   Gemm     cuBLAS, fp32 accumulation, alpha·AB + beta·C in fp32, rounded once to bf16: 'emulate' = fp32
 *            Gemm (C added in fp32) + one rounding; equal up to accumulation order.
 *   Add, Mul, Div  BFloat16 operators convert both operands to float, compute in float and round the float
 *            result to bf16: exactly the fp32 op + one rounding ('emulate' bit-identical).
 *   Exp      _Exp(BFloat16) = expf(float(a)), rounded once; CPU and CUDA expf may differ in the last fp32
 *            bit, which moves a value across a bf16 boundary rarely (one ulp).
 *   Min      selects (v or the constant 40, exact in bf16): no rounding.
 *   ReduceSum (bias gradient, over N) assumed float accumulation and one rounding of the sum to bf16.
 *   Cast     float → bf16 rounds to nearest even (x, dy, the weights, the bias).
 *   Gelu     Gelu-20 (approximate = "tanh") runs FastGeluKernel<BFloat16>
 *            (onnxruntime/core/providers/cuda/tensor/gelu_approximate_impl.cu): every step in the tensor type,
 *            constants converted to bf16 — cdf = a + a·tanh(x·((c·x)·x + b)), y = x·cdf with a = 0.5,
 *            b = bf16(√(2/π)) = 0.796875, c = bf16(0.044715·√(2/π)) = 0.03564453; each product, sum and the
 *            tanh (tanhf of the float value) rounded to bf16. 'emulate' runs exactly these 8 steps as fp32
 *            ops, each followed by one rounding. So the forward is gelu_new with constants 0.13 % / 0.09 %
 *            off and 8 roundings, not the fp32 Gelu rounded once: ≤ 1.2 bf16 ulps for x ≥ 0, ≤ 8 ulps on
 *            [−2, 0), and for x < −2 the 0.5 + 0.5·tanh cancellation leaves only absolute accuracy (the
 *            worst absolute error on [−8, 8] is 9e-3) — test/engine/bf16Mlp.test.ts measures the model.
 *   The fp32 parts (bProj's sum, the [N,C] tensors, the residual) are the same ops in both modes.
 * Every op on a bf16 tensor (Gemm, Gelu, Mul, Add, Div, Exp, Min, Max, Gather, ReduceSum, Cast) has a CUDA
 * bfloat16 kernel in engine/cudaKernels.ts; test/engine/cudaKernels.test.ts checks the variant's graphs, and
 * test/engine/geluTable.test.ts those with the table.
 * Accuracy ('emulate', tiny model golden batch, dropout 0): gradients relative L2 from fp32 'exp' 2.22e-3, 'table'
 * 1.98e-3 (default 'emulate' 1.93e-3); worst tensor 'exp' 6.88e-3, 'table' 4.92e-3 (default 6.24e-3). 20-step
 * loss curve, worst |Δloss|/(|loss| + 1): 'exp' 3.7e-5, 'table' 4.1e-5, default 3.9e-5 (bound u/8 = 4.9e-4).
 *
 * Traffic over [N,4C] tensors per layer at B8 T512 C768 (N = 4096, 4C = 3072: 12.6 M values, 50 MB fp32),
 * counted on the graphs by bench/mlp-passes.ts (bytes read + written in [N,4C] tensors by the nodes and
 * GEMMs, an input read twice counted twice; a Gemm with a broadcast C also writes and reads its output once
 * more, as ORT's CUDA Gemm does):
 *                           forward           backward           kept for the backward
 *   fp32 default             2 nodes,  302 MB  14 nodes, 1862 MB  h, a fp32         101 MB
 *   bf16 default             5 nodes,  403 MB  16 nodes, 1913 MB  h fp32 + a bf16    75 MB
 *   bf16Mlp, 'exp' gelu'     2 nodes,  151 MB  16 nodes, 1082 MB  h, a bf16          50 MB
 *   bf16Mlp, 'table' gelu'   2 nodes,  151 MB   7 nodes,  503 MB  h, a bf16          50 MB
 *   bf16Mlp, fp32 gelu'      2 nodes,  151 MB  17 nodes, 1988 MB  h, a bf16          50 MB
 * (writers — bf16 default forward: Gemm Cast Add Gelu Cast; backward Gemm Cast + 13 fp32 nodes + Cast;
 * bf16Mlp forward Gemm Gelu; backward Gemm + 15 bf16 nodes, or with the table Gemm Max Min Mul Cast Gather Mul
 * (the int32 index counts 4 bytes).) Per layer the variant moves 252 MB less in the forward and 831 MB less in
 * the backward, and keeps 25 MB less: ≈ 13 GB less traffic per training step of GPT-2 124M at B8 T512 (12 layers),
 * 0.3 GB less activation memory; the table takes another 579 MB per layer off the backward. bench/step-traffic.ts,
 * GPT-2 124M, 4 × B8 T512 bf16: SFT_BF16_MLP=1 163.1 ms / 348.0 GB per step with 'exp', 152.5 ms / 321.4 GB with
 * 'table'; with SFT_BF16_ATTENTION=1 too: 141.5 ms / 292.3 GB → 131.0 ms / 265.7 GB.
 * Legend: N = B·T rows, C n_embd, 4C the MLP width.
 */
import type { DeferredGrad, Graph, Tensor } from './graph/graph';
import type { ModelContext } from './gpt2Graph';
import { geluTanhGrad } from './graph/autodiff';
import { biasRowBackward, biasRowForward } from './biasRow';
import { bf16Operand, bf16Product, bf16Result, bf16ToFloat, roundBf16, roundToBf16 } from './precision';
import { makeData } from './graph/graph';

/** Whether the [N,4C] MLP activations stay bfloat16: the variant is on and c.bf16 is true or 'emulate'. */
export function usesBf16Mlp(c: ModelContext): boolean {
  return !!c.bf16 && !!c.variants.bf16Mlp;
}

export { roundBf16 };

/** FastGeluKernel's constants as the bf16 kernel holds them: a = 0.5, b = √(2/π), c = 0.044715·√(2/π), each in bf16. */
export const GELU_BF16_CONSTANTS = {
  a: 0.5,
  b: roundBf16(Math.fround(0.7978845608028654)),
  c: roundBf16(Math.fround(0.035677408136300125)),
} as const;

/**
 * Gelu(tanh) on bf16 h: the ONNX op on bfloat16 (true), or FastGeluKernel<BFloat16>'s 8 steps as fp32 ops each
 * rounded to bf16 ('emulate'; see the header).
 */
function geluBf16(c: ModelContext, g: Graph, h: Tensor): Tensor {
  if (c.bf16 !== 'emulate') return g.op('Gelu', [h], { approximate: 'tanh' });
  const { a, b, c: k } = GELU_BF16_CONSTANTS;
  const r = (t: Tensor) => roundToBf16(g, t);
  const inner = r(g.add(r(g.mul(r(g.mul(h, g.scalar(k))), h)), g.scalar(b))); // (c·x)·x + b
  const t = r(g.op('Tanh', [r(g.mul(h, inner))]));
  const cdf = r(g.add(r(g.mul(t, g.scalar(a))), g.scalar(a)));
  return r(g.mul(h, cdf));
}

/**
 * gy ⊙ gelu_new'(x) on bf16 tensors x, gy, every node a bf16 op (true) or the fp32 op rounded once ('emulate'),
 * constants in bf16. Exp-based, free of the cancellations of a bf16 σ(v) / 1 − σ(v) / 1 − tanh²:
 *   v = x·(A·x² + B), E = exp(min(v, 40)), D = E + 1, w = x·(3A·x² + B)  (A = 2k·a, B = 2k, w = x·v')
 *   gelu'(x) = σ(v)·(1 + x·v'·σ(−v)) = E·(D + w) / D²
 * 15 nodes (x², ·A, +B, ·x, Min, Exp, +1, ·3A, +B, ·x, D + w, E·, D·D, ÷, ·gy). The clamp keeps D² finite
 * (σ(40) = 1 in fp32); for v → −∞, E = 0 and the result is 0.
 */
export function geluTanhGradBf16(c: ModelContext, g: Graph, x: Tensor, gy: Tensor): Tensor {
  const k = Math.sqrt(2 / Math.PI);
  const a = 0.044715;
  const real = c.bf16 !== 'emulate';
  const K = (v: number) => (real ? g.scalar(v, 'bfloat16') : g.scalar(roundBf16(v)));
  const R = (t: Tensor) => bf16Result(g, t, c.bf16);
  const x2 = R(g.mul(x, x));
  const v = R(g.mul(x, R(g.add(R(g.mul(x2, K(2 * k * a))), K(2 * k)))));
  const e = R(g.op('Exp', [g.min(v, K(40))]));
  const d = R(g.add(e, K(1)));
  const w = R(g.mul(x, R(g.add(R(g.mul(x2, K(6 * k * a))), K(2 * k)))));
  const num = R(g.mul(e, R(g.add(d, w))));
  return R(g.mul(gy, R(g.div(num, R(g.mul(d, d))))));
}

// --- the Gelu derivative from a lookup table (bf16GeluGrad 'table') ------------------------------------------

/** Range of the table: h is clamped to [−R, R] (|x| ≥ 8: gelu_new' is 0 or 1 to within 5e-20). */
export const GELU_TABLE_RANGE = 8;
/** log2 of the buckets per unit of x: bucket j holds the x with trunc(x·2^k) = j (k = 10: 16385 entries, 32 KB bf16). */
export const GELU_TABLE_SCALE_LOG2 = 10;

/** gelu_new'(x) in float64: 0.5·(1 + t) + 0.5·x·(1 − t²)·u', t = tanh(u), u = √(2/π)(x + 0.044715x³); exact in the tails (no cancellation). */
export function geluNewGrad(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x === Infinity) return 1;
  if (x === -Infinity) return 0;
  const k = Math.sqrt(2 / Math.PI);
  const u = k * (x + 0.044715 * x * x * x);
  const du = k * (1 + 3 * 0.044715 * x * x);
  if (Math.abs(u) > 350) return u > 0 ? 1 : 0; // sech² underflows; the terms are below 1e-300
  const e = Math.exp(-2 * Math.abs(u)); // (0, 1]
  const onePlusT = u >= 0 ? 2 / (1 + e) : (2 * e) / (1 + e); // 1 + tanh(u) without cancellation
  const sech2 = (4 * e) / ((1 + e) * (1 + e)); // 1 − tanh²(u)
  return 0.5 * onePlusT + 0.5 * x * sech2 * du;
}

/** x (float64) rounded once to the nearest bfloat16 (ties to even), as a number; ±Infinity beyond bf16's range. */
export function bf16Nearest(x: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  const ulp = 2 ** (Math.max(e, -126) - 7); // 8 significant bits; subnormals below 2^-126
  const q = a / ulp;
  let r = Math.floor(q);
  const frac = q - r;
  if (frac > 0.5 || (frac === 0.5 && r % 2 === 1)) r++;
  const v = r * ulp;
  return Math.sign(x) * (v >= 2 ** 128 ? Infinity : v); // rounded up past the largest bf16 (2^128 − 2^120) → inf
}

/** The table's bucket of one bf16 value x: trunc(clamp(x, −R, R)·2^k), in [−M, M] with M = R·2^k (NaN: null). */
export function geluTableBucket(x: number): number | null {
  if (Number.isNaN(x)) return null;
  return Math.trunc(Math.min(Math.max(x, -GELU_TABLE_RANGE), GELU_TABLE_RANGE) * 2 ** GELU_TABLE_SCALE_LOG2);
}

const tableCache = new Map<number, Float32Array>();
/**
 * The table, in Gather order: entry p (0 ≤ p ≤ M) is bucket p, entry 2M + 1 + j is bucket j < 0 (Gather's
 * negative indices count from the end). Each entry is the midpoint of the smallest and largest gelu_new' (float64)
 * over the bf16 values (±inf included) that fall into the bucket, rounded once to bf16: for |x| ≥ 2^(7−k) a bucket
 * holds at most one bf16 value, so there the entry is gelu_new'(x) correctly rounded (buckets no bf16 value falls
 * into hold gelu_new' at their centre; they are never gathered). Values are bf16-exact floats. `scale` ≠ 1: every
 * entry is scale × that float64 value, rounded once (the residual dropout's 1/(1−p) taken into the table: mlpBf16).
 */
export function geluGradTable(scale = 1): Float32Array {
  const cached = tableCache.get(scale);
  if (cached) return cached;
  const M = GELU_TABLE_RANGE * 2 ** GELU_TABLE_SCALE_LOG2;
  const lo = new Float64Array(2 * M + 1).fill(Infinity);
  const hi = new Float64Array(2 * M + 1).fill(-Infinity);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let bits = 0; bits < 0x10000; bits++) {
    u[0] = bits << 16;
    const x = f[0]!;
    const j = geluTableBucket(x);
    if (j === null) continue;
    const d = geluNewGrad(x);
    const p = j >= 0 ? j : 2 * M + 1 + j;
    if (d < lo[p]!) lo[p] = d;
    if (d > hi[p]!) hi[p] = d;
  }
  const table = new Float32Array(2 * M + 1);
  for (let p = 0; p < table.length; p++) {
    if (lo[p] === Infinity) {
      // No bf16 value falls here (bf16 is sparser than the buckets for |x| > 2^(7−k)): never gathered; the
      // bucket's centre keeps the table smooth.
      const j = p <= M ? p : p - (2 * M + 1);
      table[p] = bf16Nearest(scale * geluNewGrad((j + (j >= 0 ? 0.5 : -0.5)) * 2 ** -GELU_TABLE_SCALE_LOG2));
    } else table[p] = bf16Nearest(scale * (0.5 * (lo[p]! + hi[p]!)));
  }
  tableCache.set(scale, table);
  return table;
}

/** One table constant per graph and mode (every layer's backward gathers from the same initializer). */
function geluTableTensor(g: Graph, dtype: 'bfloat16' | 'float', scale = 1): Tensor {
  return g.memo(`mlp.geluGradTable:${dtype}${scale === 1 ? '' : `:${scale}`}`, () => {
    const values = geluGradTable(scale);
    return g.constant(makeData(dtype, [values.length], values), 'gelu_grad_table');
  });
}

/**
 * gy ⊙ gelu_new'(x) on bf16 tensors x, gy [N,4C] by table lookup (see the header), 6 nodes:
 *   c = Min(Max(x, −R), R)            bf16 selects, exact
 *   s = c · 2^k                        bf16 Mul by a power of two, exact (|s| ≤ M = 8192)
 *   j = Cast<int32>(s)                 truncation toward zero
 *   d = Gather(table, j)               table bf16 [2M+1], negative j from the end
 *   dh = gy ⊙ d                        bf16 Mul, rounded once
 * 'emulate': the same ops on fp32 (table values already bf16, dh rounded once), bit-identical to the bf16 graph;
 * plus Where(x = x, x, 0) first, so that a NaN h gives index 0 instead of int32 min (the CPU Gather would fail).
 */
export function geluTanhGradTable(c: ModelContext, g: Graph, x: Tensor, gy: Tensor, scale = 1): Tensor {
  const real = c.bf16 !== 'emulate';
  const dtype = real ? 'bfloat16' : 'float';
  const K = (v: number) => g.scalar(v, dtype);
  const xs = real ? x : g.where(g.equal(x, x), x, K(0));
  const clamped = g.min(g.max(xs, K(-GELU_TABLE_RANGE)), K(GELU_TABLE_RANGE));
  const idx = g.cast(g.mul(clamped, K(2 ** GELU_TABLE_SCALE_LOG2)), 'int32');
  const d = g.gather(geluTableTensor(g, dtype, scale), idx); // [N,4C] (scale·gelu' when scale ≠ 1)
  return bf16Result(g, g.mul(gy, d), c.bf16);
}

/**
 * How mlpBf16 forms the Gelu derivative: 'exp' (15 bf16 nodes, geluTanhGradBf16), 'table' (lookup,
 * geluTanhGradTable), or 'fp32' (bench/tests only: the fp32 chain fed from bf16 values).
 */
export type GeluGradPrecision = 'exp' | 'table' | 'fp32';

/** The MLP with bf16 [N,4C] activations and its hand-written backward (see the header). */
export function mlpBf16(c: ModelContext, x: Tensor, wFc: Tensor, bFc: Tensor, wProj: Tensor, bProj: Tensor | null, geluGrad: GeluGradPrecision = c.variants.bf16GeluGrad ?? 'table', opts: { fcFolded?: boolean } = {}): Tensor {
  const g = c.g;
  const folded = !!opts.fcFolded;
  let xo!: Tensor;
  let wFco!: Tensor;
  let wProjo!: Tensor;
  let h!: Tensor;
  let act!: Tensor;
  let xAug: Tensor | null = null;
  const [out] = g.customGradient(
    bProj ? [x, wFc, bFc, wProj, bProj] : [x, wFc, bFc, wProj],
    () => {
      xo = folded ? x : bf16Operand(g, x, c.bf16);
      wFco = folded ? wFc : bf16Operand(g, wFc, c.bf16);
      wProjo = bf16Operand(g, wProj, c.bf16);
      if (folded) {
        const f = biasRowForward(g, c.bf16, xo, wFco, bFc); // [N,4C], bias as a weight row
        h = f.y;
        xAug = f.xAug;
      } else h = bf16Result(g, g.gemm(xo, wFco, bf16Operand(g, bFc, c.bf16)), c.bf16); // [N,4C], bias as Gemm's C
      act = geluBf16(c, g, h); // [N,4C]
      const y = bf16Product(g, g.gemm(act, wProjo, null), c.bf16); // [N,C]
      return [bProj ? g.add(y, bProj) : y];
    },
    (gg, gy, needs, gyScale) => {
      const dy = gy[0];
      if (!dy) return bProj ? [null, null, null, null, null] : [null, null, null, null];
      // s ≠ 1: dy still owes the residual dropout's 1/(1−p) (accepted below for the table form): it goes into the
      // bias sum ([C]), the c_proj weight gradient (deferred: once per step after accumulation) and the Gelu table.
      const s = gyScale[0] ?? 1;
      const [nx, nwFc, nbFc, nwProj, nbProj] = needs;
      const grads: (Tensor | DeferredGrad | null)[] = [null, null, null, null, null];
      if (nbProj) grads[4] = s === 1 ? gg.reduceSum(dy, [0], false) : gg.mul(gg.reduceSum(dy, [0], false), gg.scalar(s));
      const dyo = bf16Operand(gg, dy, c.bf16); // [N,C]
      if (nwProj) {
        const dw = bf16Product(gg, gg.gemm(act, dyo, null, { transA: true }), c.bf16); // [4C,C] float
        grads[3] = s === 1 ? dw : { kind: 'deferred', raw: [dw], finish: (g2, r) => g2.mul(r[0]!, g2.scalar(s)) };
      }
      if (nx || nwFc || nbFc) {
        const gAct = bf16Result(gg, gg.gemm(dyo, wProjo, null, { transB: true }), c.bf16); // [N,4C] bf16
        let dho: Tensor; // [N,4C] bf16: both GEMMs read it
        if (geluGrad === 'fp32') {
          const dh = geluTanhGrad(gg, bf16ToFloat(gg, h, c.bf16), bf16ToFloat(gg, gAct, c.bf16)); // [N,4C] fp32
          if (nbFc && !folded) grads[2] = gg.reduceSum(dh, [0], false);
          dho = bf16Operand(gg, dh, c.bf16);
        } else {
          dho = geluGrad === 'table' ? geluTanhGradTable(c, gg, h, gAct, s) : geluTanhGradBf16(c, gg, h, gAct);
          if (nbFc && !folded) grads[2] = bf16Product(gg, gg.reduceSum(dho, [0], false), c.bf16); // [4C], rounded to bf16 once
        }
        if (folded) {
          // dx̂, dW', db' at bf16 precision for layerNormFold (db' is row C of the [C+8,4C] weight-gradient Gemm).
          const [dxo, dwo, dbo] = biasRowBackward(gg, c.bf16, xAug!, wFco, dho, [!!nx, !!nwFc, !!nbFc]);
          grads[0] = dxo;
          grads[1] = dwo;
          grads[2] = dbo;
        } else if (nx || nwFc) {
          if (nx) grads[0] = bf16Product(gg, gg.gemm(dho, wFco, null, { transB: true }), c.bf16);
          if (nwFc) grads[1] = bf16Product(gg, gg.gemm(xo, dho, null, { transA: true }), c.bf16);
        }
      }
      return bProj ? grads : grads.slice(0, 4);
    },
    // The table form takes the dropout scale into its table; the others get dy scaled by autodiff.
    { acceptsScale: geluGrad === 'table' },
  );
  return out!;
}
