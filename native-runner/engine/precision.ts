/**
 * Where a graph changes precision, per Bf16Mode (gpt2Graph.ts header): false = fp32 throughout; true = real
 * bfloat16 tensors (CUDA); 'emulate' = the same roundings on fp32 kernels (a Cast to bfloat16 and back at the
 * point where the real graph rounds). One place for linear (gpt2Graph.ts), attention.ts, mlp.ts and
 * crossEntropy.ts, so that the real and emulated graphs round at exactly the same points everywhere.
 */
import type { Graph, Tensor } from './graph/graph';
import type { Bf16Mode } from './gpt2Graph';

/** t rounded to bfloat16 and back to float (same shape; round-to-nearest-even). */
export function roundToBf16(g: Graph, t: Tensor): Tensor {
  return g.cast(g.cast(t, 'bfloat16'), 'float');
}

/** A GEMM operand (or any value entering bf16 ops) at the mode's precision: as is, cast to bfloat16, or rounded. */
export function bf16Operand(g: Graph, t: Tensor, mode: Bf16Mode): Tensor {
  if (!mode) return t;
  return mode === 'emulate' ? roundToBf16(g, t) : g.cast(t, 'bfloat16');
}

/** A bf16 GEMM's product back to float: as is (fp32 mode), cast from bfloat16, or rounded ('emulate'). */
export function bf16Product(g: Graph, t: Tensor, mode: Bf16Mode): Tensor {
  if (!mode) return t;
  return mode === 'emulate' ? roundToBf16(g, t) : g.cast(t, 'float');
}

/** The result of an op the real graph runs on bfloat16 tensors: as is (true, already bf16), rounded once ('emulate'). */
export function bf16Result(g: Graph, t: Tensor, mode: Bf16Mode): Tensor {
  return mode === 'emulate' ? roundToBf16(g, t) : t;
}

/**
 * A value that the real graph already holds in bfloat16, as a bf16 operand: a bfloat16 tensor as is (true; a
 * float tensor is cast), the fp32 tensor as is under 'emulate' (its values are bf16 already, rounding again would
 * change nothing).
 */
export function atBf16(g: Graph, t: Tensor, mode: Bf16Mode): Tensor {
  return mode === true ? g.cast(t, 'bfloat16') : t;
}

/** A value already at bf16 precision as float: Cast (true) or as is ('emulate': it is an fp32 tensor already). */
export function bf16ToFloat(g: Graph, t: Tensor, mode: Bf16Mode): Tensor {
  return mode === 'emulate' ? t : g.cast(t, 'float');
}

const f32Cell = new Float32Array(1);
const u32Cell = new Uint32Array(f32Cell.buffer);
/** x rounded to fp32, then to bfloat16 (nearest, ties to even), as a number: what a Cast to bfloat16 stores. */
export function roundBf16(x: number): number {
  f32Cell[0] = x;
  const bits = u32Cell[0]!;
  u32Cell[0] = ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 0) & 0xffff0000;
  return f32Cell[0]!;
}
