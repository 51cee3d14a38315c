/**
 * A static cost model of one training step (issue #8), counted on the engine's own train graph — no session,
 * no device. For GPT-2 124M (or --layers/--width/--heads/--vocab) at B×T with A micro-batches per optimizer step:
 *
 *   npx tsx bench/step-traffic.ts [--batch 8] [--seq 512] [--accum 4] [--precision bf16|fp32] [--dropout 0.1]
 *        [--bw 2.6] [--bf16-tflops 600] [--tf32-tflops 350] [--launch-us 0.7] [--top 20] [--json]
 *        [--nodes N [--class PREFIX] [--part forward|backward] [--op OPTYPE]] [--no-ort-fusions]
 *   npx tsx bench/step-traffic.ts --table     # every switch set side by side, B8 and B32 (ms, GB, tok/s)
 *
 * Per node of the micro-batch body and of the step body (gradient norm, AdamW): the bytes it reads and writes
 * (every input once, every output once, at the graph's dtypes; Shape/Reshape/Squeeze/Unsqueeze/Identity/Flatten
 * move nothing (ORT aliases them); Gather/GatherElements/Slice read only what they pick; a Gemm with a bias input
 * also writes and reads its output once more — ORT's CUDA Gemm copies C into Y before the GEMM) and, for
 * MatMul/Gemm, its FLOPs (bf16 operands → the bf16 rate, float → TF32, ORT's CUDA default). Modelled GPU time of
 * a node = bytes / bandwidth + FLOPs / rate + a fixed cost per kernel: a kernel-at-a-time executor that never
 * fuses. Forward = the nodes the micro-batch's loss depends on; backward = the rest of the micro-batch body.
 * The SFT_* switches of the environment (modelVariantsFromEnv, SFT_FUSED_LM_HEAD, SFT_FLAT_STATE, SFT_FLAT_NO_DECAY, SFT_HOIST_INVARIANTS) pick the
 * graph as they do in the engine: run it once per variant to compare them. --nodes N lists the N single nodes of
 * one micro-batch that move the most bytes (filters: --class, a prefix of the "tensors" column; --part; --op).
 *
 * Calibration: the default bandwidth (2.6 TB/s) and fixed cost per kernel (0.7 µs) are the two values that make
 * the model reproduce both steps measured on the H200 on 2026-11-28 (bf16, A = 4: B8 T512 183 ms per step, B32
 * T512 668 ms; bench/results/2026-11-28-h200-b). Two parameters fitted to two points: a fit, not a validation —
 * the next measured configuration (fp32, or a variant) tests it. What the fit says: ~84 % of the step is bytes
 * moved, kernel count matters little, so fewer bytes per step is what makes it faster.
 * ORT's rewrites at level 'all' that the optimized 124M graph shows (BiasDropoutFusion, MatMulTransposeFusion; stepModel.ts
 * Setup.ortFusions) are counted as fused; --no-ort-fusions counts the graph as we emit it. (The two calibration
 * values were fitted without them; with them the fp32 B8 prediction is 176 ms against 178 measured.)
 * Not modelled: ORT's other graph rewrites, caches, kernels slower than the bandwidth (strided transposes,
 * broadcasting), host-side dispatch.
 */
import { parseArgs } from 'node:util';
import { modelVariantsFromEnv } from '../native-runner/engine/trainingEngine';
import { envSwitch } from '../native-runner/engine/ortSession';
import type { ModelVariants } from '../native-runner/engine/gpt2Graph';
import type { Tensor } from '../native-runner/engine/graph/graph';
import { makeConfig } from '../native-runner/model/config';
import { H200_RATES, modelStep as modelStepWith, PARTS, timeOf as timeWith, type Cost, type Rates, type Setup, type StepModel, type Tally } from './stepModel';

const { values: argv } = parseArgs({
  options: {
    batch: { type: 'string', default: '8' },
    seq: { type: 'string', default: '512' },
    accum: { type: 'string', default: '4' },
    precision: { type: 'string', default: 'bf16' },
    dropout: { type: 'string', default: '0.1' },
    layers: { type: 'string', default: '12' },
    width: { type: 'string', default: '768' },
    heads: { type: 'string', default: '12' },
    vocab: { type: 'string', default: '50257' },
    bw: { type: 'string', default: String(H200_RATES.bw / 1e12) },
    'bf16-tflops': { type: 'string', default: String(H200_RATES.bf16 / 1e12) },
    'tf32-tflops': { type: 'string', default: String(H200_RATES.tf32 / 1e12) },
    'launch-us': { type: 'string', default: String(H200_RATES.launch * 1e6) },
    top: { type: 'string', default: '20' },
    json: { type: 'boolean', default: false },
    table: { type: 'boolean', default: false },
    nodes: { type: 'string', default: '0' },
    class: { type: 'string' },
    part: { type: 'string' },
    op: { type: 'string' },
    'no-ort-fusions': { type: 'boolean', default: false },
  },
});
const num = (k: keyof typeof argv) => {
  const v = Number(argv[k]);
  if (!Number.isFinite(v) || v < 0) throw new Error(`--${k} must be a non-negative number, got ${String(argv[k])}`);
  return v;
};
if (argv.precision !== 'bf16' && argv.precision !== 'fp32') throw new Error(`--precision must be bf16 or fp32, got ${argv.precision}`);
if (argv.part !== undefined && argv.part !== 'forward' && argv.part !== 'backward') throw new Error(`--part must be forward or backward, got ${argv.part}`);
const T = num('seq');
const A = num('accum');
const rate = num('dropout');
const RATES: Rates = { bw: num('bw') * 1e12, bf16: num('bf16-tflops') * 1e12, tf32: num('tf32-tflops') * 1e12, launch: num('launch-us') * 1e-6 };
const config = makeConfig({ n_layer: num('layers'), n_head: num('heads'), n_embd: num('width'), n_positions: Math.max(1024, T), vocab_size: num('vocab') });
const timeOf = (c: Cost) => timeWith(c, RATES);
/** The step at B rows with the given precision and switches (the other settings from the command line). */
const modelStep = (o: { B: number; bf16: boolean; variants: ModelVariants; fusedLmHead: boolean; flatState: boolean; flatNoDecay?: boolean; hoistInvariants?: boolean }): StepModel =>
  modelStepWith({ config, T, A, dropout: rate, ortFusions: !argv['no-ort-fusions'], ...o } satisfies Setup, RATES);

const ms = (s: number) => (s * 1e3).toFixed(2);
const GB = (b: number) => (b / 1e9).toFixed(2);
const tokS = (m: StepModel) => Math.round(m.tokens / timeOf(m.total));
const switchesOf = (s: Setup) => ({ ...s.variants, fusedLmHead: s.fusedLmHead, flatState: s.flatState, hoistInvariants: s.hoistInvariants ?? true });

function printModel(m: StepModel): void {
  const { total } = m;
  const t = timeOf(total);
  console.log(`step cost model: GPT-2 ${config.n_layer}×${config.n_embd} V ${config.vocab_size}, ${A} × B${m.setup.B} T${T} (${m.tokens} tokens), ${m.setup.bf16 ? 'bf16' : 'fp32'}, dropout ${rate}, switches ${JSON.stringify(switchesOf(m.setup))}`);
  console.log(`rates: ${num('bw')} TB/s, bf16 ${num('bf16-tflops')} TFLOP/s, fp32 (TF32) ${num('tf32-tflops')} TFLOP/s, ${num('launch-us')} µs per kernel`);
  console.log('part                                 kernels    GB moved   bf16 TFLOP  fp32 TFLOP   model ms');
  for (const [part, c] of [...m.byPart.entries(), ['total', total] as const]) {
    console.log(`${part.padEnd(36)}${String(c.nodes).padStart(8)}${GB(c.bytes).padStart(12)}${(c.flopsBf16 / 1e12).toFixed(2).padStart(13)}${(c.flopsF32 / 1e12).toFixed(2).padStart(12)}${ms(timeOf(c)).padStart(11)}`);
  }
  console.log(`modelled: ${ms(t)} ms per step → ${tokS(m).toLocaleString('en-US')} tok/s (memory ${ms(total.bytes / RATES.bw)} ms, MatMul ${ms(total.flopsBf16 / RATES.bf16 + total.flopsF32 / RATES.tf32)} ms, kernel fixed cost ${ms(total.nodes * RATES.launch)} ms)`);
  const row = (k: string, c: Tally) =>
    `${k.padEnd(30)}${String(c.nodes).padStart(9)}${GB(c.bytes).padStart(12)}${((c.flopsBf16 + c.flopsF32) / 1e12).toFixed(2).padStart(8)}${ms(timeOf(c)).padStart(11)}${((100 * timeOf(c)) / t).toFixed(1).padStart(6)} %   ${PARTS.map((p) => ms(c.part.get(p) ?? 0)).join(' / ')}`;
  console.log(`\nby what the nodes work on (the largest tensor of each node), per step:`);
  console.log('tensors                           kernels    GB moved   TFLOP   model ms  share   forward / backward / step ms');
  for (const [k, c] of [...m.byClass.entries()].sort((a, b) => timeOf(b[1]) - timeOf(a[1]))) console.log(row(k, c));
  if (num('top') > 0) {
    console.log(`\ntop op types by modelled time per step (of ${ms(t)} ms):`);
    console.log('op → output dtype                kernels    GB moved   TFLOP   model ms  share   forward / backward / step ms');
    for (const [k, c] of [...m.byOp.entries()].sort((a, b) => timeOf(b[1]) - timeOf(a[1])).slice(0, num('top'))) console.log(row(k, c));
  }
  if (num('nodes') > 0) {
    const picked = m.microBody.nodes
      .filter((n) => !n.virtual && n.opType !== 'Loop')
      .filter((n) => !argv.class || m.tensorClass(n).startsWith(argv.class))
      .filter((n) => !argv.part || (argv.part === 'forward') === m.fwdNodes.has(n))
      .filter((n) => !argv.op || n.opType === argv.op)
      .map((n) => ({ n, c: m.nodeCost(n) }))
      .sort((a, b) => b.c.bytes - a.c.bytes);
    const sig = (x: Tensor | null) => (x ? `${x.dtype}[${x.shape?.join(',')}]` : '-');
    console.log(`\nnodes of one micro-batch by bytes moved (${picked.length} match):`);
    for (const { n, c } of picked.slice(0, num('nodes'))) console.log(`${n.opType} ${n.name} ${GB(c.bytes)} GB  in ${n.inputs.map(sig).join(' ')}  out ${n.outputs.map(sig).join(' ')}`);
  }
  if (argv.json) {
    console.log(
      JSON.stringify({
        config: { n_layer: config.n_layer, n_embd: config.n_embd, vocab_size: config.vocab_size },
        B: m.setup.B,
        T,
        A,
        precision: m.setup.bf16 ? 'bf16' : 'fp32',
        dropout: rate,
        switches: switchesOf(m.setup),
        parts: Object.fromEntries(m.byPart),
        total: { ...total, model_s: t },
        ops: Object.fromEntries([...m.byOp.entries()].map(([k, c]) => [k, { nodes: c.nodes, bytes: c.bytes, flops: c.flopsBf16 + c.flopsF32, model_s: timeOf(c) }])),
      }),
    );
  }
}

/** --table: the switch sets of the device check's ablation (bench/device-check.sh), modelled at B8 and B32. */
function printTable(): void {
  const dflt = modelVariantsFromEnv({}); // the engine's defaults (the four bf16 storage variants on)
  const rows: [string, boolean, ModelVariants, boolean, boolean?][] = [
    ['fp32 (engine default)', false, dflt, true],
    ['bf16 (engine default)', true, dflt, true],
    ['bf16, SFT_BF16_ATTENTION=0', true, { ...dflt, bf16Attention: false }, true],
    ['bf16, SFT_BF16_MLP=0', true, { ...dflt, bf16Mlp: false }, true],
    ['bf16, SFT_BF16_GELU_GRAD=exp', true, { ...dflt, bf16GeluGrad: 'exp' }, true],
    ['bf16, SFT_BF16_PROJ=0', true, { ...dflt, bf16Projections: false }, true],
    ['bf16, SFT_BF16_LOGITS=0', true, { ...dflt, bf16Logits: false }, true],
    ['bf16, SFT_LN_FOLD=0', true, { ...dflt, lnFold: false }, true],
    ['bf16, SFT_HOIST_INVARIANTS=0', true, dflt, true, false],
    ['bf16 + SFT_BIAS_DROPOUT=1 (opt-in, CUDA contrib BiasDropout)', true, { ...dflt, residualBiasDropout: true }, true],
    ['bf16, no bf16 storage (the four SFT_BF16_*=0)', true, {}, true],
    ['bf16 previous (+ autodiff attention/LayerNorm, unfused head)', true, { autodiffAttention: true, autodiffLayerNorm: true }, false],
  ];
  console.log(`modelled step of GPT-2 ${config.n_layer}×${config.n_embd}, ${A} micro-batches of T${T}, dropout ${rate}; ${num('bw')} TB/s, ${num('launch-us')} µs per kernel, bf16 ${num('bf16-tflops')} / TF32 ${num('tf32-tflops')} TFLOP/s`);
  console.log(`${'switches'.padEnd(62)}${'B8 ms'.padStart(9)}${'GB'.padStart(8)}${'tok/s'.padStart(9)}${'B32 ms'.padStart(9)}${'GB'.padStart(9)}${'tok/s'.padStart(9)}`);
  for (const [label, bf16, variants, fusedLmHead, hoistInvariants] of rows) {
    const cells = [8, 32].map((B) => modelStep({ B, bf16, variants, fusedLmHead, flatState: false, hoistInvariants }));
    console.log(`${label.padEnd(62)}${cells.map((m) => `${ms(timeOf(m.total)).padStart(9)}${GB(m.total.bytes).padStart(8 + (m.setup.B === 32 ? 1 : 0))}${String(tokS(m)).padStart(9)}`).join('')}`);
  }
  // merge_micro_batches (engine/mergeMicroBatches.ts): the same step of A micro-batches computed as one of A·B rows.
  const dflt1 = modelVariantsFromEnv({});
  const merged = [8, 32].map((B) => modelStepWith({ config, T, A: 1, dropout: rate, ortFusions: !argv['no-ort-fusions'], B: B * A, bf16: true, variants: dflt1, fusedLmHead: true, flatState: false }, RATES));
  console.log(`${`bf16, merge_micro_batches=${A} (one micro-batch of ${A}·B rows)`.padEnd(62)}${merged.map((m, i) => `${ms(timeOf(m.total)).padStart(9)}${GB(m.total.bytes).padStart(8 + i)}${String(tokS(m)).padStart(9)}`).join('')}`);
}

if (argv.table) printTable();
else {
  printModel(
    modelStep({
      B: num('batch'),
      bf16: argv.precision === 'bf16',
      variants: modelVariantsFromEnv(),
      fusedLmHead: envSwitch(process.env.SFT_FUSED_LM_HEAD) ?? true,
      flatState: envSwitch(process.env.SFT_FLAT_STATE) ?? false,
      flatNoDecay: envSwitch(process.env.SFT_FLAT_NO_DECAY) ?? false,
      hoistInvariants: envSwitch(process.env.SFT_HOIST_INVARIANTS) ?? true,
    }),
  );
}
