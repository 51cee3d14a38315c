/**
 * The GPT-2 parameter set under Hugging Face names, in transformers' `named_parameters()` order:
 *   transformer.wte.weight [V,C], transformer.wpe.weight [P,C],
 *   per layer l: transformer.h.l.{ln_1.weight [C], ln_1.bias [C], attn.c_attn.weight [C,3C], attn.c_attn.bias [3C],
 *     attn.c_proj.weight [C,C], attn.c_proj.bias [C], ln_2.weight [C], ln_2.bias [C], mlp.c_fc.weight [C,I],
 *     mlp.c_fc.bias [I], mlp.c_proj.weight [I,C], mlp.c_proj.bias [C]},
 *   transformer.ln_f.weight [C], transformer.ln_f.bias [C], and lm_head.weight [V,C] only when not tied.
 * Conv1D weights are [in, out] (y = x·W + b). Legend: V vocab, C n_embd, P n_positions, I MLP width, L layers.
 *
 * `initGpt2Params` draws weights like transformers' GPT2PreTrainedModel._init_weights: normal(0, 0.02) for
 * embeddings and Conv1D weights, c_proj weights (attention and MLP) with std 0.02/sqrt(2·L), LayerNorm
 * weight 1 / bias 0, biases 0. Normals come from Box–Muller over PCG32 seeded as util/rng's Rng(seed) —
 * the same stream, computed with 32-bit arithmetic so a 124M-parameter model initialises in seconds.
 */
import { Rng } from '../util/rng';
import type { GPT2Config, ParamSet, ParamTensor } from './types';
import { innerDim } from './config';

/** Every parameter's HF name and shape, in named_parameters order. */
export function expectedParamShapes(c: GPT2Config): Map<string, number[]> {
  const C = c.n_embd;
  const I = innerDim(c);
  const m = new Map<string, number[]>();
  m.set('transformer.wte.weight', [c.vocab_size, C]);
  m.set('transformer.wpe.weight', [c.n_positions, C]);
  for (let l = 0; l < c.n_layer; l++) {
    const p = `transformer.h.${l}.`;
    m.set(p + 'ln_1.weight', [C]);
    m.set(p + 'ln_1.bias', [C]);
    m.set(p + 'attn.c_attn.weight', [C, 3 * C]);
    m.set(p + 'attn.c_attn.bias', [3 * C]);
    m.set(p + 'attn.c_proj.weight', [C, C]);
    m.set(p + 'attn.c_proj.bias', [C]);
    m.set(p + 'ln_2.weight', [C]);
    m.set(p + 'ln_2.bias', [C]);
    m.set(p + 'mlp.c_fc.weight', [C, I]);
    m.set(p + 'mlp.c_fc.bias', [I]);
    m.set(p + 'mlp.c_proj.weight', [I, C]);
    m.set(p + 'mlp.c_proj.bias', [C]);
  }
  m.set('transformer.ln_f.weight', [C]);
  m.set('transformer.ln_f.bias', [C]);
  if (!c.tie_word_embeddings) m.set('lm_head.weight', [c.vocab_size, C]);
  return m;
}

/** Number of trainable parameters (tied lm_head counted once). Tiny fixture: 1,637,888; GPT-2 124M: 124,439,808. */
export function countParameters(c: GPT2Config): number {
  let n = 0;
  for (const s of expectedParamShapes(c).values()) n += s.reduce((a, b) => a * b, 1);
  return n;
}

/** Element count of a shape. */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * PCG32 (same constants and output as util/rng) on two 32-bit halves of the 64-bit state: the BigInt
 * version runs ~8M draws/s, this one several times that, which matters for 124M normals.
 */
class Pcg32Fast {
  private hi: number;
  private lo: number;
  private readonly incHi: number;
  private readonly incLo: number;
  constructor(rng: Rng) {
    const s = rng.getState();
    const st = BigInt(s.state);
    const inc = BigInt(s.inc);
    this.hi = Number(st >> 32n) >>> 0;
    this.lo = Number(st & 0xffffffffn) >>> 0;
    this.incHi = Number(inc >> 32n) >>> 0;
    this.incLo = Number(inc & 0xffffffffn) >>> 0;
  }
  nextU32(): number {
    const hi = this.hi;
    const lo = this.lo;
    // state = state * 0x5851F42D4C957F2D + inc (mod 2^64)
    const mL = 0x4c957f2d;
    const mH = 0x5851f42d;
    const a0 = lo & 0xffff;
    const a1 = lo >>> 16;
    const b0 = mL & 0xffff;
    const b1 = mL >>> 16;
    const p00 = a0 * b0;
    const p01 = a0 * b1;
    const p10 = a1 * b0;
    const p11 = a1 * b1;
    const mid = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
    const prodLo = (((mid & 0xffff) << 16) | (p00 & 0xffff)) >>> 0;
    const prodHi = p11 + (p01 >>> 16) + (p10 >>> 16) + (mid >>> 16);
    let newHi = (prodHi + Math.imul(lo, mH) + Math.imul(hi, mL)) >>> 0;
    const sumLo = prodLo + this.incLo;
    const newLo = sumLo >>> 0;
    newHi = (newHi + this.incHi + (sumLo > 0xffffffff ? 1 : 0)) >>> 0;
    this.hi = newHi;
    this.lo = newLo;
    // XSH-RR output from the old state.
    const xlo = lo ^ ((lo >>> 18) | (hi << 14));
    const xhi = hi ^ (hi >>> 18);
    const xorshifted = ((xlo >>> 27) | (xhi << 5)) >>> 0;
    const rot = hi >>> 27;
    return ((xorshifted >>> rot) | (xorshifted << (-rot & 31))) >>> 0;
  }
}

/** Fills `out` with normal(0, std) draws (Box–Muller, both outputs used). */
function fillNormal(out: Float32Array, std: number, g: Pcg32Fast): void {
  const n = out.length;
  for (let i = 0; i < n; i += 2) {
    // One 32-bit draw per uniform: u1 in (0, 1) keeps log finite, 2^-32 resolution is plenty for init.
    const u1 = (g.nextU32() + 0.5) / 4294967296;
    const u2 = g.nextU32() / 4294967296;
    const r = Math.sqrt(-2 * Math.log(u1)) * std;
    const th = 2 * Math.PI * u2;
    out[i] = r * Math.cos(th);
    if (i + 1 < n) out[i + 1] = r * Math.sin(th);
  }
}

/** Exposed for tests: the first `n` raw draws of the fast generator seeded like `new Rng(seed)`. */
export function fastPcgDraws(seed: number, n: number): number[] {
  const g = new Pcg32Fast(new Rng(seed));
  return Array.from({ length: n }, () => g.nextU32());
}

/** Random GPT-2 weights as transformers initialises them (see header), deterministic in `seed`. */
export function initGpt2Params(c: GPT2Config, seed: number): ParamSet {
  const g = new Pcg32Fast(new Rng(seed));
  const range = typeof c.raw.initializer_range === 'number' ? c.raw.initializer_range : 0.02;
  const projStd = range / Math.sqrt(2 * c.n_layer);
  const out: ParamSet = new Map();
  for (const [name, shape] of expectedParamShapes(c)) {
    const t: ParamTensor = { shape: [...shape], data: new Float32Array(numel(shape)) };
    if (/\.ln_(1|2|f)\.weight$/.test(name)) t.data.fill(1);
    else if (name.endsWith('.bias')) {
      // zeros
    } else if (/\.c_proj\.weight$/.test(name)) fillNormal(t.data, projStd, g);
    else fillNormal(t.data, range, g);
    out.set(name, t);
  }
  return out;
}
