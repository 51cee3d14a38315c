/**
 * Traffic over the MLP's [N, 4C] activations of one layer, default bf16 graph vs the bf16Mlp variant
 * (engine/mlp.ts, SFT_BF16_MLP=1), counted on the graphs (no session, no device):
 *   npx tsx bench/mlp-passes.ts [--batch 8] [--seq 512] [--embd 768]
 * For the real bf16 graph (and fp32 for reference; the variant with each Gelu derivative: 'exp' (its default),
 * 'table' (SFT_BF16_GELU_GRAD=table) and 'fp32', mlpBf16(…, geluGrad)): the nodes writing an [N,4C] tensor (forward, backward),
 * the bytes those nodes and the GEMMs read and write in [N,4C] tensors (an input listed twice counts twice;
 * a Gemm with a 1-D C input also writes and reads its output once more, as ORT's CUDA Gemm broadcasts C into
 * Y before the GEMM), and the bytes of forward [N,4C] tensors the backward reads. ORT's own graph rewrites
 * are not modelled. Prints a table and JSON.
 */
import { parseArgs } from 'node:util';
import { mlp, modelContext, type Bf16Mode } from '../native-runner/engine/gpt2Graph';
import { gradients } from '../native-runner/engine/graph/autodiff';
import { Graph, type DType, type Node, type Tensor } from '../native-runner/engine/graph/graph';
import { makeConfig } from '../native-runner/model/config';
import { mlpBf16, type GeluGradPrecision } from '../native-runner/engine/mlp';

const { values } = parseArgs({
  options: {
    batch: { type: 'string', default: '8' },
    seq: { type: 'string', default: '512' },
    embd: { type: 'string', default: '768' },
  },
});
const N = Number(values.batch) * Number(values.seq);
const C = Number(values.embd);
const W = 4 * C;
const BYTES: Partial<Record<DType, number>> = { float: 4, bfloat16: 2, bool: 1 };
const isWide = (t: Tensor | null): t is Tensor => !!t?.shape && t.shape.length === 2 && t.shape[0] === N && t.shape[1] === W;
const bytesOf = (t: Tensor) => N * W * (BYTES[t.dtype] ?? 4);

function tally(nodes: Node[]): { writers: string[]; bytes: number } {
  const writers: string[] = [];
  let bytes = 0;
  for (const n of nodes) {
    if (n.virtual) continue;
    const ins = n.inputs.filter(isWide);
    const outs = n.outputs.filter(isWide);
    if (outs.length) writers.push(n.opType);
    for (const t of [...ins, ...outs]) bytes += bytesOf(t);
    if (n.opType === 'Gemm' && n.inputs[2] && outs.length) bytes += 2 * bytesOf(outs[0]!); // C broadcast into Y, read back
  }
  return { writers, bytes };
}

/** One layer's MLP, forward + backward: inputs x [N,C], dy [N,C] and the four parameters; outputs y and all gradients. */
function layerGraph(bf16: Bf16Mode, bf16Mlp: boolean, geluGrad?: GeluGradPrecision): { g: Graph; n0: number } {
  const config = makeConfig({ n_layer: 1, n_head: 12, n_embd: C, n_positions: 1024, vocab_size: 16 });
  const g = new Graph('mlp');
  const x = g.input('x', 'float', [N, C]);
  const w = new Map<string, Tensor>([
    ['transformer.h.0.mlp.c_fc.weight', g.input('wfc', 'float', [C, W])],
    ['transformer.h.0.mlp.c_fc.bias', g.input('bfc', 'float', [W])],
    ['transformer.h.0.mlp.c_proj.weight', g.input('wproj', 'float', [W, C])],
    ['transformer.h.0.mlp.c_proj.bias', g.input('bproj', 'float', [C])],
  ]);
  const c = modelContext(g, config, w, g.ints([N, 1]), { bf16, variants: { bf16Mlp } });
  const [wfc, bfc, wproj, bproj] = [...w.values()] as [Tensor, Tensor, Tensor, Tensor];
  const y = geluGrad ? mlpBf16(c, x, wfc, bfc, wproj, bproj, geluGrad) : mlp(c, 0, x);
  const n0 = g.nodes.length;
  const wrt = [x, ...w.values()];
  const grads = gradients(g, [y], [g.input('dy', 'float', [N, C])], wrt);
  g.output(y, 'y');
  grads.forEach((t, i) => g.output(t!, `d${i}`));
  return { g, n0 };
}

function measure(bf16: Bf16Mode, bf16Mlp: boolean, geluGrad?: GeluGradPrecision) {
  const { g, n0 } = layerGraph(bf16, bf16Mlp, geluGrad);
  const fwd = tally(g.nodes.slice(0, n0));
  const bwd = tally(g.nodes.slice(n0));
  const produced = new Set(g.nodes.slice(0, n0).flatMap((n) => n.outputs.filter(isWide)));
  const kept = new Set<Tensor>();
  for (const n of g.nodes.slice(n0)) for (const t of n.inputs) if (t && produced.has(t)) kept.add(t);
  return { fwd, bwd, kept: [...kept].map((t) => t.dtype), keptBytes: [...kept].reduce((a, t) => a + bytesOf(t), 0) };
}

const MB = (b: number) => (b / 1e6).toFixed(0);
console.log(`one MLP layer, N ${N} × 4C ${W} = ${(N * W / 1e6).toFixed(1)} M values (${MB(N * W * 4)} MB fp32)`);
console.log('mode      graph              fwd writers  fwd MB  bwd writers  bwd MB  kept MB  kept            forward writers | backward writers');
const results: Record<string, unknown>[] = [];
for (const [mode, bf16, variant, geluGrad] of [
  ['fp32', false, false, undefined],
  ['bf16', true, false, undefined],
  ['bf16', true, true, 'exp'],
  ['bf16', true, true, 'table'],
  ['bf16', true, true, 'fp32'],
] as const) {
  const m = measure(bf16, variant, geluGrad);
  const name = variant ? `bf16Mlp/${geluGrad} gelu'` : 'default';
  console.log(`${mode.padEnd(10)}${name.padEnd(19)}${String(m.fwd.writers.length).padStart(11)}${MB(m.fwd.bytes).padStart(8)}${String(m.bwd.writers.length).padStart(13)}${MB(m.bwd.bytes).padStart(8)}${MB(m.keptBytes).padStart(9)}  ${m.kept.join('+').padEnd(18)}${m.fwd.writers.join(' ')} | ${m.bwd.writers.join(' ')}`);
  results.push({ mode, variant: name, forwardWriters: m.fwd.writers, forwardBytes: m.fwd.bytes, backwardWriters: m.bwd.writers, backwardBytes: m.bwd.bytes, kept: m.kept, keptBytes: m.keptBytes });
}
console.log(JSON.stringify({ N, C, results }));
