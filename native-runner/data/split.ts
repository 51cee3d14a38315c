/**
 * Train/eval split, the same one Hugging Face datasets' `train_test_split(test_size, seed)` makes:
 *
 *   n_test  = ceil(test_size * n)   when test_size < 1 (a fraction), else test_size (a count)
 *   n_train = floor((1 - test_size) * n) for a fraction, n - n_test for a count
 *   permutation = numpy.random.default_rng(seed).permutation(n)
 *   test = items[permutation[0 : n_test]], train = items[permutation[n_test : n_test + n_train]]
 *
 * numpy's default_rng is PCG64 (128-bit LCG, XSL-RR output) seeded through SeedSequence; permutation is
 * a Fisher–Yates shuffle of arange(n) from the end, drawing j in [0, i] by masked rejection on 32-bit
 * halves of the 64-bit outputs (numpy's random_interval). All of it is re-implemented below with BigInt,
 * so the split (and its order) equals the seed recipe's `dataset.train_test_split(test_size=0.05, seed=42)`.
 */
import { SftError } from '../util/errors';

const M32 = 0xffffffff;
const MASK64 = (1n << 64n) - 1n;
const MASK128 = (1n << 128n) - 1n;

// numpy/random/bit_generator.pyx SeedSequence constants.
const INIT_A = 0x43b0d7e5;
const MULT_A = 0x931e8875;
const INIT_B = 0x8b51f9dd;
const MULT_B = 0x58f38ded;
const MIX_MULT_L = 0xca01f9dd;
const MIX_MULT_R = 0x4973f715;

const mul32 = (a: number, b: number) => Math.imul(a, b) >>> 0;

/** SeedSequence(entropy).generate_state(nWords64, uint64) for a non-negative integer entropy (pool size 4). */
export function seedSequenceState(entropy: bigint, nWords64: number): bigint[] {
  // Entropy as little-endian 32-bit words ([0] for 0).
  const words: number[] = [];
  let e = entropy;
  if (e === 0n) words.push(0);
  while (e > 0n) {
    words.push(Number(e & 0xffffffffn));
    e >>= 32n;
  }
  let hashConst = INIT_A;
  const hashmix = (value: number): number => {
    value = (value ^ hashConst) >>> 0;
    hashConst = mul32(hashConst, MULT_A);
    value = mul32(value, hashConst);
    return (value ^ (value >>> 16)) >>> 0;
  };
  const mix = (x: number, y: number): number => {
    const r = (mul32(MIX_MULT_L, x) - mul32(MIX_MULT_R, y)) >>> 0;
    return (r ^ (r >>> 16)) >>> 0;
  };
  const pool = [0, 0, 0, 0];
  for (let i = 0; i < 4; i++) pool[i] = hashmix(i < words.length ? words[i]! : 0);
  for (let s = 0; s < 4; s++) for (let d = 0; d < 4; d++) if (s !== d) pool[d] = mix(pool[d]!, hashmix(pool[s]!));
  for (let s = 4; s < words.length; s++) for (let d = 0; d < 4; d++) pool[d] = mix(pool[d]!, hashmix(words[s]!));
  let hb = INIT_B;
  const out32: number[] = [];
  for (let i = 0; i < nWords64 * 2; i++) {
    let v = (pool[i % 4]! ^ hb) >>> 0;
    hb = mul32(hb, MULT_B);
    v = mul32(v, hb);
    out32.push((v ^ (v >>> 16)) >>> 0);
  }
  const out: bigint[] = [];
  for (let i = 0; i < nWords64; i++) out.push((BigInt(out32[2 * i + 1]!) << 32n) | BigInt(out32[2 * i]!));
  return out;
}

const PCG_MULT = 0x2360ed051fc65da44385df649fccf645n;

/** numpy's PCG64 bit generator (XSL-RR 128/64) with its buffered 32-bit draws. */
export class NumpyPcg64 {
  private state = 0n;
  private inc = 0n;
  private hasU32 = false;
  private u32 = 0;

  constructor(seed: number | bigint) {
    const s = BigInt(seed);
    if (s < 0n) throw new SftError(`must be a non-negative integer, got ${seed}`, 'seed');
    const [s0, s1, i0, i1] = seedSequenceState(s, 4) as [bigint, bigint, bigint, bigint];
    const initState = (s0 << 64n) | s1;
    const initSeq = (i0 << 64n) | i1;
    this.inc = ((initSeq << 1n) | 1n) & MASK128;
    this.state = 0n;
    this.step();
    this.state = (this.state + initState) & MASK128;
    this.step();
  }

  private step(): void {
    this.state = (this.state * PCG_MULT + this.inc) & MASK128;
  }

  nextU64(): bigint {
    this.step();
    const s = this.state;
    const x = ((s >> 64n) ^ s) & MASK64;
    const rot = s >> 122n;
    return ((x >> rot) | (x << ((64n - rot) & 63n))) & MASK64;
  }

  nextU32(): number {
    if (this.hasU32) {
      this.hasU32 = false;
      return this.u32;
    }
    const v = this.nextU64();
    this.hasU32 = true;
    this.u32 = Number(v >> 32n);
    return Number(v & 0xffffffffn);
  }

  /** Generator.random(): a double in [0, 1). */
  nextDouble(): number {
    return Number(this.nextU64() >> 11n) / 9007199254740992;
  }

  /** numpy random_interval(max): uniform in [0, max] by masked rejection (max < 2^32 here). */
  interval(max: number): number {
    if (max === 0) return 0;
    if (max > M32) throw new RangeError('interval bound above 2^32 is not supported');
    let mask = max;
    mask |= mask >>> 1;
    mask |= mask >>> 2;
    mask |= mask >>> 4;
    mask |= mask >>> 8;
    mask |= mask >>> 16;
    mask >>>= 0;
    for (;;) {
      const v = (this.nextU32() & mask) >>> 0;
      if (v <= max) return v;
    }
  }

  /** Generator.permutation(n). */
  permutation(n: number): number[] {
    const a = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i >= 1; i--) {
      const j = this.interval(i);
      const t = a[i]!;
      a[i] = a[j]!;
      a[j] = t;
    }
    return a;
  }
}

/** How many items go to test and to train, as HF datasets computes it. */
export function splitSizes(n: number, testSize: number): { nTest: number; nTrain: number } {
  if (!Number.isFinite(testSize) || testSize < 0) throw new SftError(`must be a fraction in (0, 1) or a count >= 1, got ${testSize}`, 'test_size');
  if (testSize === 0) return { nTest: 0, nTrain: n };
  let nTest: number;
  let nTrain: number;
  if (testSize < 1) {
    nTest = Math.ceil(testSize * n);
    nTrain = Math.floor((1 - testSize) * n);
  } else {
    if (!Number.isInteger(testSize)) throw new SftError(`a count must be an integer, got ${testSize}`, 'test_size');
    nTest = testSize;
    nTrain = n - nTest;
  }
  if (nTest >= n || nTrain <= 0) throw new SftError(`leaves no training examples (${n} examples, ${nTest} for eval)`, 'test_size');
  return { nTest, nTrain };
}

/**
 * Splits items into train and test like `datasets.train_test_split(test_size, seed=seed)` (shuffled).
 * test_size 0 gives every item to train, in order. Both parts come out in the permutation's order.
 */
export function splitTrainEval<T>(items: readonly T[], testSize = 0.05, seed = 42): { train: T[]; test: T[] } {
  const n = items.length;
  const { nTest, nTrain } = splitSizes(n, testSize);
  if (nTest === 0) return { train: items.slice(), test: [] };
  const perm = new NumpyPcg64(seed).permutation(n);
  return {
    test: perm.slice(0, nTest).map((i) => items[i]!),
    train: perm.slice(nTest, nTest + nTrain).map((i) => items[i]!),
  };
}
