/**
 * Dolly-shaped example lengths for benchmarks: a fixed, seeded distribution of our own — token counts
 * round(exp(N(ln median, sigma))) clipped to [min, max], defaults median 120, sigma 0.75, [16, 512], i.e.
 * median ~120 with a tail to 512 (a few percent land exactly on 512, like truncated Dolly records).
 * Normals: Box–Muller over util/rng's PCG32 Rng(seed, stream 77); the same seed gives the same lengths on
 * every machine. `dollyExamples` turns lengths into token-id examples (random ids; the first ~35 % of each
 * example is the untrained prompt, the rest the trained answer) for data/batching.
 *
 *   npx tsx bench/dolly-lengths.ts [--n 15000] [--seed 0] [--out lengths.json]   prints the statistics
 */
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { Rng } from '../native-runner/util/rng';

export interface LengthOptions {
  median?: number;
  sigma?: number;
  min?: number;
  max?: number;
}

/** n lengths, seeded (see the file comment). */
export function dollyLengths(n: number, seed = 0, o: LengthOptions = {}): number[] {
  const median = o.median ?? 120;
  const sigma = o.sigma ?? 0.75;
  const lo = o.min ?? 16;
  const hi = o.max ?? 512;
  const rng = new Rng(seed, 77);
  const out: number[] = [];
  while (out.length < n) {
    // Box–Muller: two independent standard normals per pair of uniforms.
    const u1 = 1 - rng.nextFloat();
    const u2 = rng.nextFloat();
    const r = Math.sqrt(-2 * Math.log(u1));
    for (const z of [r * Math.cos(2 * Math.PI * u2), r * Math.sin(2 * Math.PI * u2)]) {
      if (out.length < n) out.push(Math.min(hi, Math.max(lo, Math.round(Math.exp(Math.log(median) + sigma * z)))));
    }
  }
  return out;
}

export interface LengthStats {
  n: number;
  mean: number;
  median: number;
  p95: number;
  max: number;
  fracAtMax: number;
  /** Real tokens / padded tokens when batched `batch` at a time in the given order, padded to the longest. */
  paddingEfficiency: number;
}

export function lengthStats(lengths: readonly number[], batch = 8, max = 512): LengthStats {
  const s = [...lengths].sort((a, b) => a - b);
  const n = s.length;
  const q = (p: number) => s[Math.min(n - 1, Math.floor(p * (n - 1)))]!;
  let real = 0;
  let padded = 0;
  for (let i = 0; i < n; i += batch) {
    const b = lengths.slice(i, i + batch);
    real += b.reduce((a, x) => a + x, 0);
    padded += b.length * Math.max(...b);
  }
  return {
    n,
    mean: real / n,
    median: n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2,
    p95: q(0.95),
    max: s[n - 1]!,
    fracAtMax: s.filter((x) => x === max).length / n,
    paddingEfficiency: real / padded,
  };
}

/** Token-id examples of the given lengths: random ids in [0, vocab), trained after the first ~35 %. */
export function dollyExamples(lengths: readonly number[], vocab: number, seed = 1): { inputIds: number[]; trained: Uint8Array }[] {
  const rng = new Rng(seed, 78);
  return lengths.map((len) => {
    const inputIds = Array.from({ length: len }, () => rng.nextInt(vocab));
    const trained = new Uint8Array(len);
    const prompt = Math.max(1, Math.min(len - 1, Math.round(len * 0.35)));
    trained.fill(1, prompt);
    return { inputIds, trained };
  });
}

if (require.main === module) {
  const { values } = parseArgs({ options: { n: { type: 'string', default: '15000' }, seed: { type: 'string', default: '0' }, out: { type: 'string' } } });
  const lengths = dollyLengths(Number(values.n), Number(values.seed));
  const st = lengthStats(lengths);
  console.log(`n ${st.n}  mean ${st.mean.toFixed(1)}  median ${st.median}  p95 ${st.p95}  max ${st.max}  at 512 ${(st.fracAtMax * 100).toFixed(1)} %  padding efficiency (B8, in order) ${st.paddingEfficiency.toFixed(3)}`);
  if (values.out) fs.writeFileSync(values.out, JSON.stringify(lengths));
}
