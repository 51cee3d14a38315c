/**
 * Deterministic pseudo-random numbers for everything the runner shuffles or samples (data order,
 * train/eval split, dropout seeds, sampling). The generator is PCG32 (O'Neill, pcg32_random_r:
 * 64-bit LCG state, XSH-RR output) so its whole state is two 64-bit integers that checkpoints can store
 * exactly and resume from.
 */
const MULT = 6364136223846793005n;
const MASK64 = (1n << 64n) - 1n;

export interface RngState {
  state: string; // 64-bit state, decimal
  inc: string; // 64-bit odd increment, decimal
}

export class Rng {
  private state = 0n;
  private inc = 0n;

  constructor(seed: number | bigint = 42, stream: number | bigint = 54) {
    this.inc = ((BigInt(stream) << 1n) | 1n) & MASK64;
    this.state = 0n;
    this.nextU32();
    this.state = (this.state + (BigInt(seed) & MASK64)) & MASK64;
    this.nextU32();
  }

  static fromState(s: RngState): Rng {
    const r = new Rng(0);
    r.state = BigInt(s.state) & MASK64;
    r.inc = BigInt(s.inc) & MASK64;
    return r;
  }

  getState(): RngState {
    return { state: this.state.toString(), inc: this.inc.toString() };
  }

  /** Uniform 32-bit unsigned integer. */
  nextU32(): number {
    const old = this.state;
    this.state = (old * MULT + this.inc) & MASK64;
    const xorshifted = Number((((old >> 18n) ^ old) >> 27n) & 0xffffffffn);
    const rot = Number(old >> 59n);
    return ((xorshifted >>> rot) | (xorshifted << (-rot & 31))) >>> 0;
  }

  /** Uniform float in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n), unbiased (rejection sampling). */
  nextInt(n: number): number {
    if (!(n > 0 && n <= 0x100000000)) throw new RangeError(`nextInt bound ${n} out of range`);
    const limit = 0x100000000 - (0x100000000 % n);
    for (;;) {
      const x = this.nextU32();
      if (x < limit) return x % n;
    }
  }

  /** Fisher–Yates shuffle in place (from the end), returns the array. */
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const t = a[i]!;
      a[i] = a[j]!;
      a[j] = t;
    }
    return a;
  }

  /** A permutation of 0..n-1. */
  permutation(n: number): number[] {
    return this.shuffle(Array.from({ length: n }, (_, i) => i));
  }
}
