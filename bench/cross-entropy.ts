/**
 * Token cross-entropy, forward + backward, on the CPU EP: engine/crossEntropy.ts (ArgMax + Softmax forward)
 * against the formulation it replaced (ReduceMax, Sub, Exp, ReduceSum forward; kept below as
 * `previousTokenNll` for this comparison only).
 *   npx tsx bench/cross-entropy.ts [--n 512] [--v 50257] [--runs 7] [--variant all|new|previous|fused] [--head]
 *        [--c 768] [--threads 0]
 * Without --head the graph is logits [N, V] → nll, lse and d(Σ w·nll)/dlogits (variants new, previous).
 * With --head it starts at h [N, C] and a tied W [V, C]: the lm_head Gemm, the NLL and dh, dW — variants
 * previous and new (lmHeadLogits then tokenNll) and fused (lmHeadNll), fp32.
 * Prints the median and min run time per variant, the peak RSS when one variant runs alone, and the largest
 * relative differences of each variant's outputs from the first one's.
 */
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { Graph, type Tensor } from '../native-runner/engine/graph/graph';
import { gradients } from '../native-runner/engine/graph/autodiff';
import { lmHeadNll, tokenNll } from '../native-runner/engine/crossEntropy';
import { lmHeadLogits, modelContext } from '../native-runner/engine/gpt2Graph';
import { makeConfig } from '../native-runner/model/config';
import { Rng } from '../native-runner/util/rng';

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '512' },
    v: { type: 'string', default: '50257' },
    runs: { type: 'string', default: '7' },
    variant: { type: 'string', default: 'all' },
    head: { type: 'boolean', default: false },
    c: { type: 'string', default: '768' },
    threads: { type: 'string', default: '0' },
  },
});

/** The formulation before crossEntropy.ts (6 full [N, V] passes for forward + backward instead of 4). */
function previousTokenNll(g: Graph, logits: Tensor, targets: Tensor): { nll: Tensor; lse: Tensor } {
  const tgt = g.unsqueeze(g.cast(targets, 'int64'), [1]);
  let e!: Tensor;
  let s!: Tensor;
  const [nll, lse] = g.customGradient(
    [logits],
    () => {
      const m = g.reduce('ReduceMax', logits, [-1], true);
      e = g.exp(g.sub(logits, m));
      s = g.reduceSum(e, [-1], true);
      const lseT = g.add(g.log(s), m);
      return [g.sub(lseT, g.gatherElements(logits, tgt, 1)), lseT];
    },
    (gg, gy) => {
      const gNll = gy[0]!;
      const d = gg.mul(e, gg.div(gNll, s));
      return [gg.op('ScatterElements', [d, tgt, gg.neg(gNll)], { axis: 1, reduction: 'add' }, { dtype: d.dtype, shape: d.shape })];
    },
  );
  return { nll: nll!, lse: lse! };
}

type Impl = typeof tokenNll;
type Variant = 'new' | 'previous' | 'fused';
const IMPL: Record<Exclude<Variant, 'fused'>, Impl> = { new: tokenNll, previous: previousTokenNll };
const LABEL: Record<Variant, string> = {
  new: 'new (ArgMax, Softmax)',
  previous: 'previous (ReduceMax, Sub, Exp, ReduceSum)',
  fused: 'fused lm_head + NLL (lmHeadNll)',
};

/** The graph of one variant: nll, lse and the gradients of Σ w·nll (dlogits, or dh and dW with --head). */
function buildGraph(variant: Variant, V: number, C: number, head: boolean): Graph {
  const g = new Graph();
  const targets = g.input('targets', 'int32', ['N']);
  const w = g.input('w', 'float', ['N', 1]);
  let wrt: Tensor[];
  let out: { nll: Tensor; lse: Tensor };
  if (head) {
    const h = g.input('h', 'float', ['N', C]);
    const wte = g.input('wte', 'float', [V, C]);
    const config = makeConfig({ n_layer: 1, n_head: 1, n_embd: C, n_positions: 8, vocab_size: V });
    const c = modelContext(g, config, new Map([['transformer.wte.weight', wte]]), g.ints([1, 1]));
    out = variant === 'fused' ? lmHeadNll(c, h, targets) : IMPL[variant](g, lmHeadLogits(c, h), targets);
    wrt = [h, wte];
  } else {
    if (variant === 'fused') throw new Error('variant fused needs --head');
    const logits = g.input('logits', 'float', ['N', V]);
    out = IMPL[variant](g, logits, targets);
    wrt = [logits];
  }
  const loss = g.reduceSum(g.mul(out.nll, w), null, false);
  const grads = gradients(g, [loss], [g.scalar(1)], wrt);
  g.output(out.nll, 'nll');
  g.output(out.lse, 'lse');
  grads.forEach((t, i) => g.output(t!, `grad${i}`));
  return g;
}

async function runVariant(variant: Variant, N: number, V: number, C: number, feeds: Record<string, ort.Tensor>, runs: number) {
  const g = buildGraph(variant, V, C, values.head);
  const threads = Number(values.threads);
  const session = await ort.InferenceSession.create(g.toModelBytes(), { executionProviders: ['cpu'], ...(threads ? { intraOpNumThreads: threads } : {}) });
  let out = await session.run(feeds); // warm-up
  const ms: number[] = [];
  const cpuMs: number[] = []; // process CPU time (all ORT threads): less sensitive to other load than wall time
  for (let r = 0; r < runs; r++) {
    const t = performance.now();
    const c0 = process.cpuUsage();
    out = await session.run(feeds);
    const cu = process.cpuUsage(c0);
    ms.push(performance.now() - t);
    cpuMs.push((cu.user + cu.system) / 1000);
  }
  await session.release();
  ms.sort((a, b) => a - b);
  cpuMs.sort((a, b) => a - b);
  const median = ms[ms.length >> 1]!;
  console.log(`${LABEL[variant]}: median ${median.toFixed(1)} ms wall (min ${ms[0]!.toFixed(1)}), median ${cpuMs[cpuMs.length >> 1]!.toFixed(1)} ms CPU (min ${cpuMs[0]!.toFixed(1)}) per forward+backward at N=${N} V=${V}${values.head ? ` C=${C} (with the lm_head Gemm)` : ''} (${((N * V * 4) / 2 ** 20).toFixed(0)} MiB per fp32 [N,V])`);
  return { variant, median, out };
}

async function main() {
  const N = Number(values.n);
  const V = Number(values.v);
  const C = Number(values.c);
  const runs = Number(values.runs);
  const head = values.head;
  const rng = new Rng(11);
  const targets = Int32Array.from({ length: N }, () => rng.nextInt(V));
  const feeds: Record<string, ort.Tensor> = {
    targets: new ort.Tensor('int32', targets, [N]),
    w: new ort.Tensor('float32', Float32Array.from({ length: N }, () => 1 / N), [N, 1]),
  };
  if (head) {
    feeds.h = new ort.Tensor('float32', Float32Array.from({ length: N * C }, () => 2 * (rng.nextFloat() * 2 - 1)), [N, C]);
    feeds.wte = new ort.Tensor('float32', Float32Array.from({ length: V * C }, () => 0.1 * (rng.nextFloat() * 2 - 1)), [V, C]);
  } else feeds.logits = new ort.Tensor('float32', Float32Array.from({ length: N * V }, () => 4 * (rng.nextFloat() * 2 - 1)), [N, V]);
  let peak = process.memoryUsage().rss;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
  const all: Variant[] = head ? ['previous', 'new', 'fused'] : ['previous', 'new'];
  const variants = values.variant === 'all' ? all : [values.variant as Variant];
  const results: { variant: Variant; median: number; out: ort.InferenceSession.OnnxValueMapType }[] = [];
  for (const v of variants) results.push(await runVariant(v, N, V, C, feeds, runs));
  clearInterval(timer);
  if (results.length > 1) {
    const base = results[0]!;
    for (const r of results.slice(1)) {
      const diffs = Object.keys(base.out).map((k) => {
        const a = r.out[k]!.data as Float32Array;
        const b = base.out[k]!.data as Float32Array;
        let num = 0;
        let den = 0;
        for (let i = 0; i < a.length; i++) {
          num += (a[i]! - b[i]!) ** 2;
          den += b[i]! ** 2;
        }
        return `${k} ${Math.sqrt(num / den).toExponential(2)}`;
      });
      console.log(`${r.variant} vs ${base.variant}: relative L2 difference ${diffs.join(', ')}; time ×${(r.median / base.median).toFixed(2)}`);
    }
  } else {
    const inputMiB = (N * (head ? C : V) * 4 + (head ? V * C * 4 : 0)) / 2 ** 20;
    console.log(`peak RSS ${(peak / 2 ** 20).toFixed(0)} MiB (inputs held by JS: ${inputMiB.toFixed(0)} MiB)`);
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
