/**
 * GPT-2 as transformers' GPT2LMHeadModel, built with the graph builder: wte + wpe (positions from the
 * MicroBatch), pre-LayerNorm blocks (ln_1 → causal self-attention → residual, ln_2 → MLP with gelu_new →
 * residual), ln_f, lm_head tied to wte (or `lm_head.weight` when untied), dropout where configured.
 * Activations are kept flat as [N, C] (N = B·T) so every Conv1D is one Gemm; attention reshapes to
 * [B, H, T, D]. Legend: B rows, T length, C n_embd, H heads, D = C/H, V vocab, N = B·T.
 *
 * Attention mask (engine/types.ts MicroBatch.segments): query q may attend key k iff k ≤ q, segment[k] ≠ 0
 * and (segment[q] = segment[k] or segment[q] = 0); masked scores get −1e9 added, so a fully masked row is a
 * finite uniform softmax, never NaN.
 *
 * Precision of the MatMul/Gemm ops (linear, attentionCore), ModelContext.bf16 (Bf16Mode):
 *   false     fp32 throughout.
 *   true      operands cast to bfloat16, Gemm/MatMul in bf16 (fp32 accumulation on CUDA), product cast back
 *             to float; biases added in fp32. Needs bf16 kernels (CUDA; ORT's CPU provider has none).
 *   'emulate' the same values on fp32 kernels: operands and the fp32 product are rounded to bf16 and back
 *             (Cast float→bfloat16→float, round-to-nearest-even). Autodiff differentiates the Casts, so the
 *             backward's GEMM inputs and outputs are rounded where the real bf16 graph's are. Equal to the
 *             real graph up to fp32 accumulation order (a product near a bf16 rounding boundary may land
 *             one bf16 ulp apart). For checking the bf16 graph's numerics on the CPU.
 *
 * The pieces (embed, attentionBias, attentionQKV, attentionCore, attentionOutput, mlp, block, finalNorm,
 * lmHeadLogits, tokenNll) are exported so that other graphs (eval, KV-cache generation) reuse them.
 */
import { expectedParamShapes } from '../model/gpt2Params';
import { attentionCoreAutodiff, attentionCoreFused, usesBf16Projections } from './attention';
import { mlpBf16, usesBf16Mlp } from './mlp';
import { layerNormFold, layerNormWithGrad } from './layerNorm';
import { biasRowBackward, biasRowForward } from './biasRow';
import { residualBiasDropout, usesResidualBiasDropout } from './residual';
import { atBf16, bf16Operand, bf16Product, bf16Result, bf16ToFloat } from './precision';
import type { GPT2Config } from '../model/types';
import { Graph, makeData, Tensor } from './graph/graph';

export const MASKED_SCORE = -1e9;

/** MatMul/Gemm precision: false = fp32, true = bfloat16 kernels, 'emulate' = bf16 rounding on fp32 kernels. */
export type Bf16Mode = boolean | 'emulate';

/** Parameter tensors of the graph under HF names. */
export type WeightMap = Map<string, Tensor>;

export interface DropoutRates {
  embd: number;
  attn: number;
  resid: number;
}

export interface ModelContext {
  g: Graph;
  config: GPT2Config;
  w: WeightMap;
  /** int64 [2] = (B, T) of the current micro-batch. */
  bt: Tensor;
  dropout: DropoutRates;
  /** MatMul/Gemm precision (see the header): fp32, bfloat16, or bf16 emulated on fp32 kernels. */
  bf16: Bf16Mode;
  /** Next Dropout seed (each Dropout node gets its own). */
  nextSeed: () => number;
  /** Alternative formulations (an absent field is off; the engine's defaults: trainingEngine.ts modelVariantsFromEnv). */
  variants: ModelVariants;
}

/**
 * Alternative formulations of parts of the model, switched per engine (TrainingEngine reads them from SFT_*
 * environment variables, modelVariantsFromEnv) so that one device run can measure each against the others. Here an
 * absent field is off; the engine turns the four bf16 storage variants on unless SFT_BF16_*=0.
 */
export interface ModelVariants {
  /** The attention backward from the generic autodiff rules (the formulation before attention.ts): SFT_AUTODIFF_ATTENTION=1. */
  autodiffAttention?: boolean;
  /** bf16 modes: the attention matrices [B,H,T,T] stay bfloat16 between ops (attention.ts); engine default on, SFT_BF16_ATTENTION=0 off. */
  bf16Attention?: boolean;
  /** bf16 modes: the MLP's [N,4C] activations stay bfloat16 from c_fc to c_proj, hand-written backward (mlp.ts); engine default on, SFT_BF16_MLP=0 off. */
  bf16Mlp?: boolean;
  /** With bf16Mlp: how gelu'(h) is formed in the backward (mlp.ts): 'table' (a lookup table; the default when absent) or 'exp' (bf16 exp form): SFT_BF16_GELU_GRAD. */
  bf16GeluGrad?: 'exp' | 'table';
  /** bf16 modes: q/k/v and the attention output stay bfloat16 from the c_attn Gemm to the c_proj Gemm (gpt2Graph.ts); engine default on, SFT_BF16_PROJ=0 off. */
  bf16Projections?: boolean;
  /** The LayerNorm backward from the generic autodiff rule instead of the hand-written one (layerNorm.ts): SFT_AUTODIFF_LAYERNORM=1. */
  autodiffLayerNorm?: boolean;
  /** bf16 modes, training graphs' fused lm head: the softmax over the vocabulary in bfloat16 (crossEntropy.ts); engine default on, SFT_BF16_LOGITS=0 off. */
  bf16Logits?: boolean;
  /**
   * bf16 modes with bf16Projections and bf16Mlp, residual dropout > 0: each block's residual branch ends in one
   * r + Dropout(y + b) region — com.microsoft BiasDropout on CUDA (engine/residual.ts); opt-in, SFT_BIAS_DROPOUT=1.
   */
  residualBiasDropout?: boolean;
  /**
   * bf16 modes with bf16Projections (ln_1 → c_attn) / bf16Mlp (ln_2 → c_fc): the LayerNorm's γ, β folded into the
   * next Gemm's weight and bias, both Gemms with the bias as a weight row (layerNorm.ts layerNormFold); engine
   * default on, SFT_LN_FOLD=0 off.
   */
  lnFold?: boolean;
}

/** The input of a sublayer that starts with a LayerNorm: the residual stream x [N, C] and the LayerNorm's parameter prefix. */
export interface NormedInput {
  residual: Tensor;
  ln: string;
}

/** The parameter list (HF names and shapes) in named_parameters order. */
export function paramSpecs(config: GPT2Config): { name: string; shape: number[] }[] {
  return [...expectedParamShapes(config)].map(([name, shape]) => ({ name, shape }));
}

/** Whether AdamW applies weight decay (HF Trainer: no decay on biases and LayerNorm weights). */
export function usesWeightDecay(name: string): boolean {
  if (name.endsWith('.bias')) return false;
  if (/(^|\.)ln_[^.]*\.weight$/.test(name)) return false;
  return true;
}

export function dropoutRates(config: GPT2Config, override: number | null | undefined): DropoutRates {
  if (override !== null && override !== undefined) return { embd: override, attn: override, resid: override };
  return { embd: config.embd_pdrop, attn: config.attn_pdrop, resid: config.resid_pdrop };
}

function weight(c: ModelContext, name: string): Tensor {
  const t = c.w.get(name);
  if (!t) throw new Error(`graph weight ${name} missing`);
  return t;
}

function dropout(c: ModelContext, x: Tensor, rate: number): Tensor {
  return rate > 0 ? c.g.dropout(x, rate, c.nextSeed()) : x;
}

export { roundToBf16 } from './precision';

/** y = x·W (+ b) for x [N, in], W [in, out] (W [out, in] with transB); precision per c.bf16, bias in fp32. */
export function linear(c: ModelContext, x: Tensor, w: Tensor, b: Tensor | null, opts: { transB?: boolean } = {}): Tensor {
  const g = c.g;
  if (!c.bf16) return g.gemm(x, w, b, opts);
  const y = bf16Product(g, g.gemm(bf16Operand(g, x, c.bf16), bf16Operand(g, w, c.bf16), null, opts), c.bf16);
  return b ? g.add(y, b) : y;
}

/**
 * The bf16Projections form of a Conv1D (attention's c_attn and c_proj with usesBf16Projections):
 * Gemm(x̂, Ŵ, C = b̂) → [N, out] at bf16 precision — a bfloat16 tensor (true), the fp32 Gemm rounded once
 * ('emulate') — with the bias as the Gemm's C (one rounding of x·W + b, see mlp.ts). x̂ = x as is when `xAtBf16`
 * (x holds bf16 values already), else cast / rounded; Ŵ = bf16(W), b̂ = bf16(b), their columns multiplied by
 * `colScale` [out] when given: after the rounding, as a bf16 Mul, when every factor is a power of two (exact:
 * the same values as scaling the Gemm's output), else on the fp32 W and b before it (one rounding of the
 * scaled value).
 */
function linearBf16Out(c: ModelContext, x: Tensor, w: Tensor, b: Tensor, opts: { xAtBf16?: boolean; colScale?: number[]; biasRow?: boolean } = {}): Tensor {
  const g = c.g;
  const mode = c.bf16;
  const xo = opts.xAtBf16 ? atBf16(g, x, mode) : bf16Operand(g, x, mode);
  const s = opts.colScale;
  let wo: Tensor;
  let bo: Tensor;
  if (!s) {
    wo = bf16Operand(g, w, mode);
    bo = bf16Operand(g, b, mode);
  } else if (s.every((v) => v > 0 && Number.isInteger(Math.log2(v)))) {
    const sv = g.tensorConst(mode === true ? 'bfloat16' : 'float', [s.length], s);
    wo = bf16Result(g, g.mul(bf16Operand(g, w, mode), sv), mode);
    bo = bf16Result(g, g.mul(bf16Operand(g, b, mode), sv), mode);
  } else {
    const sv = g.tensorConst('float', [s.length], s);
    wo = bf16Operand(g, g.mul(w, sv), mode);
    bo = bf16Operand(g, g.mul(b, sv), mode);
  }
  return opts.biasRow ? gemmBiasRow(c, xo, wo, bo) : bf16Result(g, g.gemm(xo, wo, bo), mode);
}

/**
 * y = x̂·Ŵ + b̂ [N, M] at bf16 precision with the bias as an extra row of the weight instead of the Gemm's C
 * (engine/biasRow.ts: why, and the hand-written backward). Under 'emulate' dy is rounded where it enters (the
 * autodiff core's dq/dk/dv arrive unrounded).
 */
function gemmBiasRow(c: ModelContext, xo: Tensor, wo: Tensor, bo: Tensor): Tensor {
  const g = c.g;
  const mode = c.bf16;
  let xAug!: Tensor;
  const [y] = g.customGradient(
    [xo, wo, bo],
    () => {
      const f = biasRowForward(g, mode, xo, wo, bo);
      xAug = f.xAug;
      return [f.y];
    },
    (gg, gy, needs) => {
      const dy = gy[0];
      if (!dy) return [null, null, null];
      const dyo = bf16Operand(gg, dy, mode);
      return biasRowBackward(gg, mode, xAug, wo, dyo, needs);
    },
  );
  return y!;
}

/** int64 [2] (B, T) of an int [B, T] tensor. */
export function batchDims(g: Graph, ids: Tensor): Tensor {
  return g.shapeOf(ids);
}

/** Token + position embeddings → x [N, C] (embedding dropout applied). */
export function embed(c: ModelContext, ids: Tensor, positions: Tensor): Tensor {
  const g = c.g;
  const C = c.config.n_embd;
  const tok = g.gather(weight(c, 'transformer.wte.weight'), ids); // [B,T,C]
  const pos = g.gather(weight(c, 'transformer.wpe.weight'), positions); // [B,T,C]
  const x = g.reshape(g.add(tok, pos), [-1, C], ['N', C]);
  return dropout(c, x, c.dropout.embd);
}

/**
 * Additive attention bias [B, 1, Tq, Tk] (0 or −1e9) from segment ids. `querySegments` [B, Tq] and
 * `keySegments` [B, Tk]; `queryOffset` (int64 scalar, default 0) is the index of the first query among the
 * keys (KV-cache decoding: the queries are the last Tq of Tk keys).
 */
export function attentionBias(g: Graph, querySegments: Tensor, keySegments: Tensor, queryOffset?: Tensor): Tensor {
  const zero = g.scalar(0, querySegments.dtype === 'int64' ? 'int64' : 'int32');
  const segQ = g.unsqueeze(querySegments, [2]); // [B,Tq,1]
  const segK = g.unsqueeze(keySegments, [1]); // [B,1,Tk]
  const same = g.equal(segQ, segK); // [B,Tq,Tk]
  const qPad = g.equal(segQ, zero); // [B,Tq,1]
  const kReal = g.op('Not', [g.equal(segK, zero)]); // [B,1,Tk]
  const one64 = g.scalar(1, 'int64');
  const zero64 = g.scalar(0, 'int64');
  const tq = g.squeeze(g.op('Slice', [g.shapeOf(querySegments), g.ints([1]), g.ints([2])], {}, { dtype: 'int64', shape: [1] }), [0]);
  const tk = g.squeeze(g.op('Slice', [g.shapeOf(keySegments), g.ints([1]), g.ints([2])], {}, { dtype: 'int64', shape: [1] }), [0]);
  let qIdx = g.op('Range', [zero64, tq, one64], {}, { dtype: 'int64', shape: ['Tq'] });
  if (queryOffset) qIdx = g.add(qIdx, queryOffset);
  const kIdx = g.op('Range', [zero64, tk, one64], {}, { dtype: 'int64', shape: ['Tk'] });
  const causal = g.op('LessOrEqual', [g.unsqueeze(kIdx, [0]), g.unsqueeze(qIdx, [1])], {}, { dtype: 'bool', shape: ['Tq', 'Tk'] });
  const allowed = g.op('And', [g.op('And', [g.op('Or', [same, qPad]), kReal]), causal], {}, { dtype: 'bool', shape: ['B', 'Tq', 'Tk'] });
  const bias = g.where(allowed, g.scalar(0), g.scalar(MASKED_SCORE));
  return g.unsqueeze(bias, [1]); // [B,1,Tq,Tk]
}

/**
 * ln_1 output a [N, C] → q, k, v each [B, H, T, D]; q already scaled by 1/√D.
 * bf16Projections (usesBf16Projections): [N,3C] and the heads stay bf16 (Split, Reshape, Transpose in bf16) and
 * the 1/√D scale is folded into the q columns of bf16(W) and bf16(b) before the Gemm — a power of two for
 * D = 4^k (GPT-2: D = 64, 1/8), so bf16 Muls on [C,3C] and [3C] that are exact and give the values of the
 * Gemm's output scaled, without a pass over q [B,H,T,D] in the forward or dq in the backward. The bias enters
 * as a row of the weight (gemmBiasRow), not as the Gemm's C.
 * `input` is the ln_1 output, or { residual x, ln prefix } to apply the LayerNorm here: with lnFold (and
 * bf16Projections) its γ, β are folded into the c_attn weight and bias (layerNorm.ts layerNormFold; the q columns'
 * 1/√D goes onto the fp32 W⊙γ before its one rounding, exact for a power of two), else layerNorm() first.
 */
export function attentionQKV(c: ModelContext, layer: number, input: Tensor | NormedInput): { q: Tensor; k: Tensor; v: Tensor } {
  const g = c.g;
  const C = c.config.n_embd;
  const H = c.config.n_head;
  const D = C / H;
  const p = `transformer.h.${layer}.attn.`;
  const low = usesBf16Projections(c);
  const scale = 1 / Math.sqrt(D);
  const colScale = Array.from({ length: 3 * C }, (_, i) => (i < C ? scale : 1));
  let qkv: Tensor; // [N,3C]
  if (!(input instanceof Tensor) && low && c.variants.lnFold) {
    const f = layerNormFold(g, c.bf16, input.residual, weight(c, input.ln + '.weight'), weight(c, input.ln + '.bias'), weight(c, p + 'c_attn.weight'), weight(c, p + 'c_attn.bias'), c.config.layer_norm_epsilon, colScale);
    qkv = gemmBiasRow(c, f.xo, f.wo, f.bo);
  } else {
    const a = input instanceof Tensor ? input : layerNorm(c, input.residual, input.ln);
    qkv = low ? linearBf16Out(c, a, weight(c, p + 'c_attn.weight'), weight(c, p + 'c_attn.bias'), { colScale, biasRow: true }) : linear(c, a, weight(c, p + 'c_attn.weight'), weight(c, p + 'c_attn.bias'));
  }
  const [q0, k0, v0] = g.split(qkv, 1, [C, C, C]);
  const shape4 = g.concat([c.bt, g.ints([H, D])], 0);
  const heads = (t: Tensor) => g.transpose(g.reshape(t, shape4, ['B', 'T', H, D]), [0, 2, 1, 3]); // [B,H,T,D]
  if (low) return { q: heads(q0!), k: heads(k0!), v: heads(v0!) };
  const q = g.mul(heads(q0!), g.scalar(scale));
  return { q, k: heads(k0!), v: heads(v0!) };
}

/**
 * softmax(q·kᵀ + bias) → attention dropout → ·v: q [B,H,Tq,D], k/v [B,H,Tk,D], bias [B,1,Tq,Tk] → [B,H,Tq,D].
 * Hand-written backward with fewer [B,H,Tq,Tk] passes (engine/attention.ts); both MatMuls per c.bf16.
 */
export function attentionCore(c: ModelContext, q: Tensor, k: Tensor, v: Tensor, bias: Tensor): Tensor {
  return c.variants.autodiffAttention ? attentionCoreAutodiff(c, q, k, v, bias) : attentionCoreFused(c, q, k, v, bias);
}

/**
 * Heads [B,H,T,D] → [N,C] → c_proj. bf16Projections: y, the merge Transpose/Reshape and the Gemm (bias as its
 * C) in bf16, the [N,C] output cast to fp32 for the dropout and the residual stream.
 */
export function attentionOutput(c: ModelContext, layer: number, y: Tensor, opts: { withoutBias?: boolean } = {}): Tensor {
  const g = c.g;
  const C = c.config.n_embd;
  const p = `transformer.h.${layer}.attn.`;
  const merged = g.reshape(g.transpose(y, [0, 2, 1, 3]), [-1, C], ['N', C]);
  if (opts.withoutBias) {
    // residualBiasDropout adds the bias (engine/residual.ts): the bf16 Gemm without C, its product in fp32.
    if (!usesBf16Projections(c)) throw new Error('attentionOutput: withoutBias needs the bf16Projections path');
    return bf16Product(g, g.gemm(atBf16(g, merged, c.bf16), bf16Operand(g, weight(c, p + 'c_proj.weight'), c.bf16), null), c.bf16);
  }
  if (usesBf16Projections(c)) return bf16ToFloat(g, linearBf16Out(c, merged, weight(c, p + 'c_proj.weight'), weight(c, p + 'c_proj.bias'), { xAtBf16: true }), c.bf16);
  return linear(c, merged, weight(c, p + 'c_proj.weight'), weight(c, p + 'c_proj.bias'));
}

/** LayerNorm `prefix` on x [N, C]: hand-written backward (engine/layerNorm.ts) unless the autodiffLayerNorm variant. */
export function layerNorm(c: ModelContext, x: Tensor, prefix: string): Tensor {
  const scale = weight(c, prefix + '.weight');
  const bias = weight(c, prefix + '.bias');
  const eps = c.config.layer_norm_epsilon;
  return c.variants.autodiffLayerNorm ? c.g.layerNorm(x, scale, bias, eps) : layerNormWithGrad(c.g, x, scale, bias, eps);
}

/**
 * MLP: c_fc → gelu_new (tanh form) → c_proj; with the bf16Mlp variant in a bf16 mode, engine/mlp.ts. `input` is the
 * ln_2 output, or { residual x, ln prefix }: with lnFold and bf16Mlp, ln_2's γ, β folded into c_fc (layerNormFold).
 * `withoutProjBias` (bf16Mlp only): c_proj's bias is left out (residualBiasDropout adds it).
 */
export function mlp(c: ModelContext, layer: number, input: Tensor | NormedInput, opts: { withoutProjBias?: boolean } = {}): Tensor {
  const p = `transformer.h.${layer}.mlp.`;
  if (opts.withoutProjBias && !usesBf16Mlp(c)) throw new Error('mlp: withoutProjBias needs the bf16Mlp path');
  const bProj = opts.withoutProjBias ? null : weight(c, p + 'c_proj.bias');
  if (!(input instanceof Tensor) && usesBf16Mlp(c) && c.variants.lnFold) {
    const f = layerNormFold(c.g, c.bf16, input.residual, weight(c, input.ln + '.weight'), weight(c, input.ln + '.bias'), weight(c, p + 'c_fc.weight'), weight(c, p + 'c_fc.bias'), c.config.layer_norm_epsilon);
    return mlpBf16(c, f.xo, f.wo, f.bo, weight(c, p + 'c_proj.weight'), bProj, undefined, { fcFolded: true });
  }
  const x = input instanceof Tensor ? input : layerNorm(c, input.residual, input.ln);
  if (usesBf16Mlp(c)) return mlpBf16(c, x, weight(c, p + 'c_fc.weight'), weight(c, p + 'c_fc.bias'), weight(c, p + 'c_proj.weight'), bProj);
  const h = linear(c, x, weight(c, p + 'c_fc.weight'), weight(c, p + 'c_fc.bias'));
  const act = c.g.op('Gelu', [h], { approximate: 'tanh' });
  return linear(c, act, weight(c, p + 'c_proj.weight'), weight(c, p + 'c_proj.bias'));
}

/** One pre-LN transformer block on x [N, C]. */
export function block(c: ModelContext, layer: number, x: Tensor, bias: Tensor): Tensor {
  const g = c.g;
  const p = `transformer.h.${layer}.`;
  const { q, k, v } = attentionQKV(c, layer, { residual: x, ln: p + 'ln_1' });
  if (usesResidualBiasDropout(c)) {
    const x1 = residualBiasDropout(c, x, attentionOutput(c, layer, attentionCore(c, q, k, v, bias), { withoutBias: true }), weight(c, p + 'attn.c_proj.bias'));
    return residualBiasDropout(c, x1, mlp(c, layer, { residual: x1, ln: p + 'ln_2' }, { withoutProjBias: true }), weight(c, p + 'mlp.c_proj.bias'));
  }
  const att = attentionOutput(c, layer, attentionCore(c, q, k, v, bias));
  const x1 = g.add(x, dropout(c, att, c.dropout.resid));
  const m = mlp(c, layer, { residual: x1, ln: p + 'ln_2' });
  return g.add(x1, dropout(c, m, c.dropout.resid));
}

export function finalNorm(c: ModelContext, x: Tensor): Tensor {
  return layerNorm(c, x, 'transformer.ln_f');
}

/** h [N, C] → logits [N, V] = h·Wᵀ with W = wte (tied) or lm_head.weight. */
export function lmHeadLogits(c: ModelContext, h: Tensor): Tensor {
  const w = c.w.get('lm_head.weight') ?? weight(c, 'transformer.wte.weight');
  return linear(c, h, w, null, { transB: true });
}

/** The whole trunk: ids/positions [B,T] → final hidden states [N, C]. */
export function hiddenStates(c: ModelContext, ids: Tensor, positions: Tensor, segments: Tensor): Tensor {
  const bias = attentionBias(c.g, segments, segments);
  let x = embed(c, ids, positions);
  for (let l = 0; l < c.config.n_layer; l++) x = block(c, l, x, bias);
  return finalNorm(c, x);
}

/** Per-token NLL and logsumexp with a custom backward (logits [N, V], targets [N] → nll, lse [N, 1]): crossEntropy.ts. */
export { tokenNll } from './crossEntropy';

/** A fresh ModelContext over weights `w` in graph `g`. */
export function modelContext(g: Graph, config: GPT2Config, w: WeightMap, bt: Tensor, opts: { dropout?: DropoutRates; bf16?: Bf16Mode; seed?: number; variants?: ModelVariants } = {}): ModelContext {
  let seed = opts.seed ?? 0;
  return {
    g,
    config,
    w,
    bt,
    dropout: opts.dropout ?? { embd: 0, attn: 0, resid: 0 },
    bf16: opts.bf16 ?? false,
    nextSeed: () => seed++,
    variants: opts.variants ?? {},
  };
}

/** bool scalar constant true (Loop conditions). */
export function trueConst(g: Graph): Tensor {
  return g.constant(makeData('bool', [], [1]), 'true');
}
