/**
 * The MLP block (c_fc → gelu_new → c_proj) with its [N, 4C] activations kept in bfloat16: the bf16Mlp model
 * variant (ModelVariants.bf16Mlp, SFT_BF16_MLP=1), used by gpt2Graph.ts `mlp` only when c.bf16 is true or
 * 'emulate' (otherwise the default graph is emitted byte for byte). The [N, C] input and output stay fp32.
 *
 *   mlpBf16(c, x, wFc, bFc, wProj, bProj, geluGrad = 'bf16') → y [N, C]
 *     x [N,C] fp32 (ln_2 output), wFc [C,4C], bFc [4C], wProj [4C,C], bProj [C] (fp32 parameters).
 *     Forward:  h   = Gemm(bf16(x), bf16(wFc), C = bf16(bFc))  [N,4C] bf16 (the bias is Gemm's C input)
 *               a   = Gelu_tanh(h)                             [N,4C] bf16
 *               y   = float(Gemm(a, bf16(wProj))) + bProj      [N,C]  fp32
 *     Backward (Graph.customGradient), dy [N,C] fp32:
 *               dyb = bf16(dy); dbProj = Σ_N dy (fp32); dWProj = float(Gemm(aᵀ, dyb))
 *               g   = Gemm(dyb, bf16(wProj)ᵀ)                  [N,4C] bf16
 *               dh  = g ⊙ gelu'(h)                             [N,4C] bf16, 15 bf16 nodes (geluTanhGradBf16)
 *               dbFc = float(ΣN dh) (bf16 sum); dx = float(Gemm(dh, bf16(wFc)ᵀ)); dWFc = float(Gemm(bf16(x)ᵀ, dh))
 *     No Cast touches an [N,4C] tensor; dh feeds the two c_fc gradient GEMMs and the bias sum directly.
 *     Kept for the backward: h and a in bf16 (the default keeps h in fp32 and a's bf16 copy).
 *     geluGrad = 'fp32' (bench/tests only): dh = bf16(float(g) ⊙ gelu'(float(h))) with the default's fp32
 *     chain and an fp32 bias sum — one rounding instead of ~10, and 906 MB more traffic per layer (below).
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
 * Every op on a bf16 tensor (Gemm, Gelu, Mul, Add, Div, Exp, Min, ReduceSum, Cast) has a CUDA bfloat16
 * kernel in engine/cudaKernels.ts; test/engine/cudaKernels.test.ts checks the variant's graphs.
 * Accuracy ('emulate', tiny model golden batch): gradients 2.22e-3 relative L2 from fp32 (default 'emulate'
 * 1.93e-3); 20-step loss curve worst 3.2e-5 of |loss| + 1 (default 3.1e-5).
 *
 * Traffic over [N,4C] tensors per layer at B8 T512 C768 (N = 4096, 4C = 3072: 12.6 M values, 50 MB fp32),
 * counted on the graphs by bench/mlp-passes.ts (bytes read + written in [N,4C] tensors by the nodes and
 * GEMMs, an input read twice counted twice; a Gemm with a broadcast C also writes and reads its output once
 * more, as ORT's CUDA Gemm does):
 *                           forward           backward           kept for the backward
 *   fp32 default             2 nodes,  302 MB  14 nodes, 1862 MB  h, a fp32         101 MB
 *   bf16 default             5 nodes,  403 MB  16 nodes, 1913 MB  h fp32 + a bf16    75 MB
 *   bf16 bf16Mlp             2 nodes,  151 MB  16 nodes, 1082 MB  h, a bf16          50 MB
 *   bf16Mlp, fp32 gelu'      2 nodes,  151 MB  17 nodes, 1988 MB  h, a bf16          50 MB
 * (writers — bf16 default forward: Gemm Cast Add Gelu Cast; backward Gemm Cast + 13 fp32 nodes + Cast;
 * bf16Mlp forward Gemm Gelu; backward Gemm + 15 bf16 nodes.) Per layer the variant moves 252 MB less in
 * the forward and 831 MB less in the backward, and keeps 25 MB less: ≈ 13 GB less traffic per training
 * step of GPT-2 124M at B8 T512 (12 layers), 0.3 GB less activation memory.
 * Legend: N = B·T rows, C n_embd, 4C the MLP width.
 */
import type { Graph, Tensor } from './graph/graph';
import type { ModelContext } from './gpt2Graph';
import { geluTanhGrad } from './graph/autodiff';
import { bf16Operand, bf16Product, bf16Result, bf16ToFloat, roundToBf16 } from './precision';

/** Whether the [N,4C] MLP activations stay bfloat16: the variant is on and c.bf16 is true or 'emulate'. */
export function usesBf16Mlp(c: ModelContext): boolean {
  return !!c.bf16 && !!c.variants.bf16Mlp;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
/** x rounded to fp32, then to bfloat16 (nearest, ties to even), as a number. */
export function roundBf16(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  u32[0] = ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 0) & 0xffff0000;
  return f32[0]!;
}

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

/** How mlpBf16 forms the Gelu derivative: bf16 nodes (the variant's default) or the fp32 chain fed from bf16 values. */
export type GeluGradPrecision = 'bf16' | 'fp32';

/** The MLP with bf16 [N,4C] activations and its hand-written backward (see the header). */
export function mlpBf16(c: ModelContext, x: Tensor, wFc: Tensor, bFc: Tensor, wProj: Tensor, bProj: Tensor, geluGrad: GeluGradPrecision = 'bf16'): Tensor {
  const g = c.g;
  let xo!: Tensor;
  let wFco!: Tensor;
  let wProjo!: Tensor;
  let h!: Tensor;
  let act!: Tensor;
  const [out] = g.customGradient(
    [x, wFc, bFc, wProj, bProj],
    () => {
      xo = bf16Operand(g, x, c.bf16);
      wFco = bf16Operand(g, wFc, c.bf16);
      wProjo = bf16Operand(g, wProj, c.bf16);
      h = bf16Result(g, g.gemm(xo, wFco, bf16Operand(g, bFc, c.bf16)), c.bf16); // [N,4C], bias as Gemm's C
      act = geluBf16(c, g, h); // [N,4C]
      const y = bf16Product(g, g.gemm(act, wProjo, null), c.bf16); // [N,C]
      return [g.add(y, bProj)];
    },
    (gg, gy, needs) => {
      const dy = gy[0];
      if (!dy) return [null, null, null, null, null];
      const [nx, nwFc, nbFc, nwProj, nbProj] = needs;
      const grads: (Tensor | null)[] = [null, null, null, null, null];
      if (nbProj) grads[4] = gg.reduceSum(dy, [0], false);
      const dyo = bf16Operand(gg, dy, c.bf16); // [N,C]
      if (nwProj) grads[3] = bf16Product(gg, gg.gemm(act, dyo, null, { transA: true }), c.bf16);
      if (nx || nwFc || nbFc) {
        const gAct = bf16Result(gg, gg.gemm(dyo, wProjo, null, { transB: true }), c.bf16); // [N,4C] bf16
        let dho: Tensor; // [N,4C] bf16: both GEMMs read it
        if (geluGrad === 'fp32') {
          const dh = geluTanhGrad(gg, bf16ToFloat(gg, h, c.bf16), bf16ToFloat(gg, gAct, c.bf16)); // [N,4C] fp32
          if (nbFc) grads[2] = gg.reduceSum(dh, [0], false);
          dho = bf16Operand(gg, dh, c.bf16);
        } else {
          dho = geluTanhGradBf16(c, gg, h, gAct);
          if (nbFc) grads[2] = bf16Product(gg, gg.reduceSum(dho, [0], false), c.bf16); // [4C], rounded to bf16 once
        }
        if (nx || nwFc) {
          if (nx) grads[0] = bf16Product(gg, gg.gemm(dho, wFco, null, { transB: true }), c.bf16);
          if (nwFc) grads[1] = bf16Product(gg, gg.gemm(xo, dho, null, { transA: true }), c.bf16);
        }
      }
      return grads;
    },
  );
  return out!;
}
