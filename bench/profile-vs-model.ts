/**
 * ONNX Runtime's profile of a training run against the static cost model of the same graph (issue #8): which
 * kernels take longer than the bytes and FLOPs they move would need (bench/stepModel.ts, H200 rates by default).
 *
 *   npx tsx bench/profile-vs-model.ts <trace.json | folder>... [--model gpt2|smoke] [--batch 8] [--seq 512]
 *        [--accum 4] [--precision bf16|fp32] [--steps 3] [--top 15] [--bw 2.6] [--launch-us 0.7]
 *
 * The trace is the one bench/device-check.sh's profile phase writes (gpu-train.ts at B×T, SFT_ORT_PROFILE set,
 * CUDA_LAUNCH_BLOCKING=1 so that a node's time is its kernels' GPU time): a warm-up run of one optimizer step,
 * then runs of --steps steps in all (default 3: a 1-step and a 2-step run). The first model_run of the file is
 * skipped; every node event after it is matched BY NODE NAME to the graph the engine builds for the same model,
 * shapes, precision and SFT_* switches (run this with the same environment as the profiled run). `--model gpt2`
 * is gpu-train's GPT-2 124M (vocab 50,260), `smoke` its 2-layer 64-wide model.
 * Prints, per op type and output dtype, kernels and milliseconds per optimizer step as measured and as modelled
 * and their ratio; Shape/Reshape/… (free in the model) apart; nodes ORT added or renamed (Memcpy, fusions) as "not in
 * the graph"; graph nodes that never
 * ran (fused away); and the single nodes that exceed their modelled time the most. With several trace files
 * (one per session) the one with the most node events is used.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { modelVariantsFromEnv } from '../native-runner/engine/trainingEngine';
import { envSwitch } from '../native-runner/engine/ortSession';
import { gpuTrainConfig } from './benchModel';
import { readTrace, type TraceEvent } from './ort-profile';
import { H200_RATES, METADATA_OPS, modelStep, timeOf, type Rates } from './stepModel';

const { values: argv, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    model: { type: 'string', default: 'gpt2' },
    batch: { type: 'string', default: '8' },
    seq: { type: 'string', default: '512' },
    accum: { type: 'string', default: '4' },
    precision: { type: 'string', default: 'bf16' },
    steps: { type: 'string', default: '3' },
    top: { type: 'string', default: '15' },
    bw: { type: 'string', default: String(H200_RATES.bw / 1e12) },
    'launch-us': { type: 'string', default: String(H200_RATES.launch * 1e6) },
  },
});
const num = (k: keyof typeof argv): number => {
  const v = Number(argv[k]);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${k} must be a positive number, got ${String(argv[k])}`);
  return v;
};
if (positionals.length === 0) throw new Error('give the trace file(s) or folder(s) (SFT_ORT_PROFILE output)');
if (argv.precision !== 'bf16' && argv.precision !== 'fp32') throw new Error(`--precision must be bf16 or fp32, got ${argv.precision}`);
if (argv.model !== 'gpt2' && argv.model !== 'smoke') throw new Error(`--model must be gpt2 or smoke, got ${argv.model}`);
const steps = num('steps');
const rates: Rates = { ...H200_RATES, bw: num('bw') * 1e12, launch: num('launch-us') * 1e-6 };

// gpu-train.ts's models (dropout: null there → the config's rates, 0.1).
const config = gpuTrainConfig(argv.model === 'smoke');
const model = modelStep(
  {
    config,
    B: num('batch'),
    T: num('seq'),
    A: num('accum'),
    dropout: config.resid_pdrop,
    bf16: argv.precision === 'bf16',
    variants: modelVariantsFromEnv(),
    fusedLmHead: envSwitch(process.env.SFT_FUSED_LM_HEAD) ?? true,
    flatState: envSwitch(process.env.SFT_FLAT_STATE) ?? false,
    flatNoDecay: envSwitch(process.env.SFT_FLAT_NO_DECAY) ?? false,
    hoistInvariants: envSwitch(process.env.SFT_HOIST_INVARIANTS) ?? true,
  },
  rates,
);

// The trace: the file with the most node events; node events after the end of its first model_run.
const files = positionals.flatMap((p) => (fs.statSync(p).isDirectory() ? fs.readdirSync(p).filter((f) => f.endsWith('.json')).map((f) => path.join(p, f)) : [p]));
const isNode = (e: TraceEvent) => e.cat === 'Node' && e.name.endsWith('_kernel_time');
let best: { file: string; events: TraceEvent[] } | null = null;
for (const file of files) {
  const { events, note } = readTrace(file);
  if (note) console.log(`${file}: ${note}`);
  if (!best || events.filter(isNode).length > best.events.filter(isNode).length) best = { file, events };
}
if (!best) throw new Error('no trace files found');
const runs = best.events.filter((e) => e.cat === 'Session' && e.name === 'model_run').sort((a, b) => a.ts - b.ts);
if (runs.length < 2) throw new Error(`${best.file}: ${runs.length} model_run event(s); the first is a warm-up, at least one more is needed`);
const afterWarmup = runs[0]!.ts + runs[0]!.dur;
const measured = new Map<string, { us: number; count: number; op: string }>();
for (const e of best.events) {
  if (!isNode(e) || e.ts < afterWarmup) continue;
  // A node ORT rewrote keeps our name with the rewrite appended ("MatMul__1067/MatmulTransposeFusion/"): count it there.
  const name = e.name.replace(/_kernel_time$/, '').replace(/\/[A-Za-z]+Fusion\/?$/, '');
  const m = measured.get(name) ?? { us: 0, count: 0, op: String(e.args?.op_name ?? '?') };
  m.us += e.dur;
  m.count++;
  measured.set(name, m);
}

// Per op key: measured and modelled kernels and ms per optimizer step.
interface Row {
  kernelsMeasured: number;
  kernelsModel: number;
  msMeasured: number;
  msModel: number;
}
const rows = new Map<string, Row>();
const row = (k: string) => {
  let r = rows.get(k);
  if (!r) rows.set(k, (r = { kernelsMeasured: 0, kernelsModel: 0, msMeasured: 0, msModel: 0 }));
  return r;
};
const excess: { name: string; opKey: string; measured: number; model: number }[] = [];
let neverRan = 0;
for (const [name, entry] of model.nodes) {
  const r = row(entry.opKey);
  const modelMs = timeOf(entry.cost, rates) * entry.times * 1e3;
  r.kernelsModel += entry.times;
  r.msModel += modelMs;
  const m = measured.get(name);
  if (!m) {
    neverRan++;
    continue;
  }
  r.kernelsMeasured += m.count / steps;
  r.msMeasured += m.us / 1e3 / steps;
  excess.push({ name, opKey: entry.opKey, measured: m.us / 1e3 / steps, model: modelMs });
}
for (const [name, m] of measured) {
  if (model.nodes.has(name) || m.op === 'Loop') continue;
  // Shape/Reshape/… move nothing in the model (no kernel counted); anything else ORT added or renamed.
  const r = row(METADATA_OPS.has(m.op) ? `${m.op} (modelled as free)` : `${m.op} (not in the graph)`);
  r.kernelsMeasured += m.count / steps;
  r.msMeasured += m.us / 1e3 / steps;
}

const f = (v: number, d = 2) => v.toFixed(d);
const tot = [...rows.values()].reduce((a, r) => ({ kernelsMeasured: a.kernelsMeasured + r.kernelsMeasured, kernelsModel: a.kernelsModel + r.kernelsModel, msMeasured: a.msMeasured + r.msMeasured, msModel: a.msModel + r.msModel }), { kernelsMeasured: 0, kernelsModel: 0, msMeasured: 0, msModel: 0 });
console.log(`profile ${best.file}: ${runs.length} runs, ${steps} optimizer steps after the warm-up run; model: ${argv.model} ${argv.precision} ${model.setup.A} × B${model.setup.B} T${model.setup.T}, switches ${JSON.stringify(model.setup.variants)}`);
console.log(`per optimizer step: measured ${f(tot.msMeasured)} ms in ${Math.round(tot.kernelsMeasured)} kernels; modelled ${f(tot.msModel)} ms in ${Math.round(tot.kernelsModel)} (${rates.bw / 1e12} TB/s, ${rates.launch * 1e6} µs per kernel); ${neverRan} graph nodes never ran (fused or folded by ORT)`);
console.log('op → output dtype                      kernels meas / model      ms meas / model    ratio');
for (const [k, r] of [...rows.entries()].sort((a, b) => b[1].msMeasured - a[1].msMeasured)) {
  const ratio = r.msModel > 0 ? f(r.msMeasured / r.msModel) : '—';
  console.log(`${k.padEnd(38)}${f(r.kernelsMeasured, 0).padStart(9)} /${f(r.kernelsModel, 0).padStart(6)}   ${f(r.msMeasured).padStart(9)} /${f(r.msModel).padStart(8)}   ${ratio.padStart(6)}`);
}
console.log(`\nsingle nodes over their modelled time the most (ms per step, measured / modelled):`);
for (const x of excess.sort((a, b) => b.measured - b.model - (a.measured - a.model)).slice(0, num('top'))) {
  console.log(`${x.name.padEnd(28)} ${x.opKey.padEnd(26)} ${f(x.measured, 3).padStart(8)} / ${f(x.model, 3)}`);
}
