/**
 * Traffic over the attention matrices of one layer, hand-written backward (engine/attention.ts) vs the
 * generic autodiff one, counted on the graphs (no session, no device):
 *   npx tsx bench/attention-passes.ts [--batch 8] [--seq 512] [--heads 12] [--dim 64]
 *        [--time [--runs 10] [--only fused|autodiff] [--dropout 0.1]]
 * For fp32 / bf16 × attention dropout 0 / 0.1 (and, for bf16, the bf16Attention variant of the fused core,
 * SFT_BF16_ATTENTION=1, whose [B,H,T,T] tensors stay bfloat16): the nodes writing a [B,H,T,T] tensor (forward, backward),
 * the bytes those nodes and the MatMuls read and write in [B,*,T,T] tensors (a broadcast [B,1,T,T] bias
 * counts its own size), and the bytes of forward [B,H,T,T] tensors kept for the backward. ORT's own graph
 * rewrites (e.g. a Transpose fused into the MatMul that reads it) are not modelled. Prints a table and JSON.
 * --time: also runs forward + backward of the layer (fp32, CPU EP, random inputs, causal bias) for both
 * formulations, interleaved, and prints the minimum and median wall time per run and the process's peak
 * RSS (use --only to measure one formulation's memory per process).
 */
import { parseArgs } from 'node:util';
import { attentionCoreAutodiff, attentionCoreFused } from '../native-runner/engine/attention';
import { modelContext, type Bf16Mode } from '../native-runner/engine/gpt2Graph';
import { gradients } from '../native-runner/engine/graph/autodiff';
import { Graph, type DType, type Node, type Tensor } from '../native-runner/engine/graph/graph';
import { makeConfig } from '../native-runner/model/config';
import { createSession, f32 } from '../native-runner/engine/ortSession';
import { Rng } from '../native-runner/util/rng';

const { values } = parseArgs({
  options: {
    batch: { type: 'string', default: '8' },
    seq: { type: 'string', default: '512' },
    heads: { type: 'string', default: '12' },
    dim: { type: 'string', default: '64' },
    time: { type: 'boolean', default: false },
    runs: { type: 'string', default: '10' },
    only: { type: 'string', default: '' },
    dropout: { type: 'string', default: '0.1' },
  },
});
const B = Number(values.batch);
const T = Number(values.seq);
const H = Number(values.heads);
const D = Number(values.dim);

const BYTES: Partial<Record<DType, number>> = { float: 4, bfloat16: 2, bool: 1 };
const isScoreShaped = (t: Tensor | null): t is Tensor => !!t?.shape && t.shape.length === 4 && t.shape[2] === T && t.shape[3] === T;
const isFull = (t: Tensor) => t.shape![0] === B && t.shape![1] === H;
const bytesOf = (t: Tensor) => (t.shape as number[]).reduce((a, b) => a * b, 1) * (BYTES[t.dtype] ?? 4);

interface Tally {
  writers: string[];
  bytes: number;
}

function tally(nodes: Node[]): Tally {
  const writers: string[] = [];
  let bytes = 0;
  for (const n of nodes) {
    if (n.virtual) continue;
    const ins = n.inputs.filter(isScoreShaped);
    const outs = n.outputs.filter(isScoreShaped);
    if (outs.some(isFull)) writers.push(n.opType);
    for (const t of [...ins, ...outs]) bytes += bytesOf(t);
  }
  return { writers, bytes };
}

/** The layer's forward and backward: inputs q, k, v, bias, dy; outputs y, dq, dk, dv. */
function layerGraph(core: typeof attentionCoreFused, bf16: Bf16Mode, attn: number, bf16Attention = false): { g: Graph; n0: number } {
  const config = makeConfig({ n_layer: 1, n_head: H, n_embd: H * D, n_positions: T, vocab_size: 16 });
  const g = new Graph('attention');
  const [q, k, v] = ['q', 'k', 'v'].map((n) => g.input(n, 'float', [B, H, T, D]));
  const bias = g.input('bias', 'float', [B, 1, T, T]);
  const c = modelContext(g, config, new Map(), g.ints([B, T]), { bf16, dropout: { embd: 0, attn, resid: 0 }, variants: { bf16Attention } });
  const y = core(c, q!, k!, v!, bias);
  const n0 = g.nodes.length;
  const grads = gradients(g, [y], [g.input('dy', 'float', [B, H, T, D])], [q!, k!, v!]);
  g.output(y, 'y');
  grads.forEach((t, i) => g.output(t!, ['dq', 'dk', 'dv'][i]));
  return { g, n0 };
}

function measure(core: typeof attentionCoreFused, bf16: Bf16Mode, attn: number, bf16Attention = false) {
  const { g, n0 } = layerGraph(core, bf16, attn, bf16Attention);
  const fwd = tally(g.nodes.slice(0, n0));
  const bwd = tally(g.nodes.slice(n0));
  const produced = new Set(g.nodes.slice(0, n0).flatMap((n) => n.outputs.filter((o) => isScoreShaped(o) && isFull(o))));
  const kept = new Set<Tensor>();
  for (const n of g.nodes.slice(n0)) for (const t of n.inputs) if (t && produced.has(t)) kept.add(t);
  return { fwd, bwd, keptBytes: [...kept].reduce((a, t) => a + bytesOf(t), 0) };
}

const MB = (b: number) => (b / 1e6).toFixed(0);
const results: Record<string, unknown>[] = [];
console.log(`one attention layer, B${B} T${T} H${H} D${D}: [B,H,T,T] = ${(B * H * T * T / 1e6).toFixed(1)} M elements (${MB(B * H * T * T * 4)} MB fp32)`);
console.log('mode              formulation    fwd writers  fwd MB  bwd writers  bwd MB  kept MB  backward writers');
for (const bf16 of [false, true] as const) {
  for (const attn of [0, 0.1]) {
    const forms: [string, typeof attentionCoreFused, boolean][] = [
      ['autodiff', attentionCoreAutodiff, false],
      ['fused', attentionCoreFused, false],
    ];
    if (bf16) forms.push(['fused bf16att', attentionCoreFused, true]);
    for (const [name, core, bf16Attention] of forms) {
      const m = measure(core, bf16, attn, bf16Attention);
      const mode = `${bf16 ? 'bf16' : 'fp32'} dropout ${attn}`;
      console.log(`${mode.padEnd(18)}${name.padEnd(15)}${String(m.fwd.writers.length).padStart(11)}${MB(m.fwd.bytes).padStart(8)}${String(m.bwd.writers.length).padStart(13)}${MB(m.bwd.bytes).padStart(8)}${MB(m.keptBytes).padStart(9)}  ${m.bwd.writers.join(' ')}`);
      results.push({ bf16, attn, formulation: name, bf16Attention, forwardWriters: m.fwd.writers.length, forwardWriterOps: m.fwd.writers, forwardBytes: m.fwd.bytes, backwardWriters: m.bwd.writers, backwardBytes: m.bwd.bytes, keptBytes: m.keptBytes });
    }
  }
}
console.log(JSON.stringify({ B, T, H, D, results }));

async function timeLayers(): Promise<void> {
  const attn = Number(values.dropout);
  const runs = Number(values.runs);
  const forms = (['autodiff', 'fused'] as const).filter((f) => !values.only || values.only === f);
  const rng = new Rng(3);
  const rand = (n: number) => Float32Array.from({ length: n }, () => 2 * rng.nextFloat() - 1);
  const n = B * H * T * D;
  const bias = new Float32Array(B * T * T);
  for (let b = 0; b < B; b++) for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) bias[(b * T + i) * T + j] = -1e9;
  const feeds = { q: f32(rand(n), [B, H, T, D]), k: f32(rand(n), [B, H, T, D]), v: f32(rand(n), [B, H, T, D]), dy: f32(rand(n), [B, H, T, D]), bias: f32(bias, [B, 1, T, T]) };
  let peak = process.memoryUsage().rss;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
  const sessions = new Map<string, Awaited<ReturnType<typeof createSession>>>();
  for (const f of forms) sessions.set(f, await createSession(layerGraph(f === 'fused' ? attentionCoreFused : attentionCoreAutodiff, false, attn).g.toModelBytes(), { device: 'cpu' }));
  const times = new Map<string, number[]>(forms.map((f) => [f, []]));
  for (let r = 0; r <= runs; r++) {
    for (const f of forms) {
      const t0 = performance.now();
      await sessions.get(f)!.run(feeds);
      if (r > 0) times.get(f)!.push(performance.now() - t0); // run 0 warms up
    }
  }
  clearInterval(timer);
  for (const f of forms) {
    const ts = times.get(f)!.sort((a, b) => a - b);
    console.log(`time fp32 dropout ${attn} ${f}: min ${ts[0]!.toFixed(1)} ms, median ${ts[Math.floor(ts.length / 2)]!.toFixed(1)} ms over ${ts.length} runs`);
    await sessions.get(f)!.release();
  }
  console.log(`peak RSS ${(peak / 2 ** 30).toFixed(2)} GiB (${forms.join(' + ')} sessions)`);
}

if (values.time) void timeLayers();
