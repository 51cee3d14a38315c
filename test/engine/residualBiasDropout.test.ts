// The residualBiasDropout variant (engine/residual.ts; SFT_BIAS_DROPOUT=1): r + Dropout(y + b) as one region.
// - the region's hand-written backward equals autodiff of the three plain ops (float64, same Dropout mask);
// - structure: the real bf16 graph has one com.microsoft BiasDropout per residual branch (2 per layer), imports the
//   com.microsoft opset, has no c_proj bias in the attention Gemm and no fp32 bias Add in the MLP, and passes the CUDA
//   kernel check (tiny and GPT-2 124M); with dropout 0, in fp32, or with the variant off, the graphs are byte-identical
//   to the default;
// - accuracy under 'emulate' (the same region with ONNX Dropout on the CPU), dropout 0.1 with the Dropout masks of the
//   fp32 run: the golden batch within the bf16 bounds the other variants meet, and 20 AdamW steps within the GPU
//   check's bf16 loss-curve rule and u/8 of fp32.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { Graph, type Tensor } from '../../native-runner/engine/graph/graph';
import { gradients } from '../../native-runner/engine/graph/autodiff';
import { decodeModel } from '../../native-runner/engine/graph/onnxProto';
import { cudaUnsupportedNodes } from '../../native-runner/engine/cudaKernels';
import { buildGradsGraph, buildTrainGraph, type OptimizerHyper } from '../../native-runner/engine/trainGraph';
import { dropoutRates, modelContext, type Bf16Mode, type ModelVariants } from '../../native-runner/engine/gpt2Graph';
import { residualBiasDropout } from '../../native-runner/engine/residual';
import { modelVariantsFromEnv, TrainingEngine } from '../../native-runner/engine/trainingEngine';
import { BF16_UNIT_ROUNDOFF, compareLossCurves, LOSS_CURVE_TOLERANCE } from '../../native-runner/engine/bf16Tolerance';
import { makeConfig, readConfig } from '../../native-runner/model/config';
import type { MicroBatch } from '../../native-runner/engine/types';
import { Rng } from '../../native-runner/util/rng';
import { allNodes, gradStats, tinyGoldenSetup, withEnv } from './helpers';
import * as path from 'node:path';

const u = BF16_UNIT_ROUNDOFF;
const HYPER: OptimizerHyper = { weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 };
const ON: ModelVariants = { ...modelVariantsFromEnv({}), residualBiasDropout: true };
const OFF: ModelVariants = { ...modelVariantsFromEnv({}), residualBiasDropout: false };

// --- the region's backward -------------------------------------------------------------------------------------

test('region backward = autodiff of Add → Dropout → Add (float64, same mask): dy, db and dr', async () => {
  const N = 6;
  const C = 5;
  const rng = new Rng(4);
  const rand = (n: number) => Float64Array.from({ length: n }, () => 2 * rng.nextFloat() - 1);
  const build = (region: boolean) => {
    const g = new Graph('rbd');
    const y = g.input('y', 'double', [N, C]);
    const b = g.input('b', 'double', [C]);
    const r = g.input('r', 'double', [N, C]);
    const w = g.input('w', 'double', [N, C]);
    let seed = 11;
    const c = modelContext(g, makeConfig({ n_layer: 1, n_head: 1, n_embd: C, n_positions: 8, vocab_size: 7 }), new Map(), g.ints([1, N]), { dropout: { embd: 0, attn: 0, resid: 0.3 }, bf16: 'emulate', seed });
    const out = region ? residualBiasDropout(c, r, y, b) : g.add(r, g.dropout(g.add(y, b), 0.3, seed++));
    const loss = g.reduceSum(g.mul(out, w), null, false);
    const grads = gradients(g, [loss], [g.scalar(1, 'double')], [y, b, r]) as Tensor[];
    g.output(out, 'out');
    grads.forEach((t, i) => g.output(t, `g${i}`));
    return g;
  };
  const feeds = { y: new ort.Tensor('float64', rand(N * C), [N, C]), b: new ort.Tensor('float64', rand(C), [C]), r: new ort.Tensor('float64', rand(N * C), [N, C]), w: new ort.Tensor('float64', rand(N * C), [N, C]) };
  const run = async (g: Graph) => {
    const s = await ort.InferenceSession.create(g.toModelBytes());
    try {
      const o = await s.run(feeds);
      return ['out', 'g0', 'g1', 'g2'].map((k) => Array.from(o[k]!.data as Float64Array));
    } finally {
      await s.release();
    }
  };
  const [a, p] = [await run(build(true)), await run(build(false))];
  const dropped = a[1]!.filter((v) => v === 0).length;
  assert.ok(dropped > 0 && dropped < N * C, `the mask dropped ${dropped} of ${N * C}`);
  for (let k = 0; k < 4; k++) a[k]!.forEach((v, i) => assert.ok(Math.abs(v - p[k]![i]!) <= 1e-14 * (1 + Math.abs(p[k]![i]!)), `${['out', 'dy', 'db', 'dr'][k]}[${i}] ${v} vs ${p[k]![i]}`));
  // dr is dout itself; db is the column sum of dy.
  assert.deepEqual(a[3], Array.from(feeds.w.data as Float64Array));
  for (let j = 0; j < C; j++) {
    let s = 0;
    for (let n = 0; n < N; n++) s += a[1]![n * C + j]!;
    assert.ok(Math.abs(s - a[2]![j]!) < 1e-12);
  }
});

// --- structure ---------------------------------------------------------------------------------------------------

const tiny = readConfig(path.resolve(__dirname, '../../samples/tiny-gpt2-chat'));
const gpt2 = makeConfig({ n_layer: 12, n_head: 12, n_embd: 768, n_positions: 1024, vocab_size: 50260, embd_pdrop: 0.1, attn_pdrop: 0.1, resid_pdrop: 0.1 });

for (const [tag, config] of [
  ['tiny', tiny],
  ['GPT-2 124M', gpt2],
] as const) {
  test(`${tag}: the real bf16 train and grads graphs hold 2 BiasDropout nodes per layer, import com.microsoft, and pass the CUDA kernel check`, () => {
    const dropout = dropoutRates(config, 0.1);
    for (const accumulate of [false, true]) {
      const train = buildTrainGraph(config, HYPER, { dropout, bf16: true, seed: 3, accumulate, variants: ON });
      assert.deepEqual(cudaUnsupportedNodes(train), [], `train accumulate=${accumulate}`);
      const model = decodeModel(train.toModelBytes());
      assert.deepEqual(model.opsetImport.map((o) => o.domain).sort(), ['', 'com.microsoft']);
      const nodes = allNodes(model.graph);
      const bd = nodes.filter((n) => n.opType === 'BiasDropout');
      assert.equal(bd.length, 2 * config.n_layer);
      assert.ok(bd.every((n) => n.domain === 'com.microsoft' && n.input.length === 5 && n.output.length === 2));
    }
    const grads = buildGradsGraph(config, { dropout, bf16: true, seed: 0, variants: ON });
    assert.deepEqual(cudaUnsupportedNodes(grads, { singleIterationLoop: true }), []);
    // Off: no BiasDropout (the graph still imports com.microsoft for the attention backward's FusedMatMul).
    const off = decodeModel(buildTrainGraph(config, HYPER, { dropout, bf16: true, seed: 3, accumulate: true, variants: OFF }).toModelBytes());
    assert.ok(!allNodes(off.graph).some((n) => n.opType === 'BiasDropout'));
    assert.ok(allNodes(off.graph).every((n) => !n.domain || n.opType === 'FusedMatMul'), 'a contrib op other than FusedMatMul');
  });
}

test('the variant leaves the graph byte-identical where it does not apply: dropout 0, fp32', () => {
  for (const [label, bf16, rate] of [
    ['emulate, dropout 0', 'emulate', 0],
    ['bf16, dropout 0', true, 0],
    ['fp32, dropout 0.1', false, 0.1],
  ] as const) {
    const opts = { dropout: dropoutRates(tiny, rate), bf16, seed: 3, accumulate: true };
    assert.deepEqual(buildTrainGraph(tiny, HYPER, { ...opts, variants: ON }).toModelBytes(), buildTrainGraph(tiny, HYPER, { ...opts, variants: OFF }).toModelBytes(), label);
  }
});

test("'emulate' graph: the c_proj biases are read only by the regions' fp32 Adds (not rounded into the attention Gemm's C), one Dropout per branch", () => {
  const build = (variants: ModelVariants) => buildGradsGraph(tiny, { dropout: dropoutRates(tiny, 0.1), bf16: 'emulate', seed: 0, variants });
  const readers = (g: Graph, name: string) => g.nodes.filter((n) => !n.virtual && n.inputs.some((t) => t?.name === `p:${name}`)).map((n) => n.opType);
  const on = build(ON);
  const off = build(OFF);
  for (let l = 0; l < tiny.n_layer; l++) {
    assert.deepEqual(readers(on, `transformer.h.${l}.attn.c_proj.bias`), ['Add']);
    assert.deepEqual(readers(on, `transformer.h.${l}.mlp.c_proj.bias`), ['Add']);
    // The default rounds the attention bias to bf16 for the Gemm's C.
    assert.notDeepEqual(readers(off, `transformer.h.${l}.attn.c_proj.bias`), ['Add']);
  }
  const drops = (g: Graph) => g.nodes.filter((n) => n.opType === 'Dropout').length;
  assert.equal(drops(on), drops(off));
});

// --- accuracy ('emulate', dropout 0.1) ----------------------------------------------------------------------------

const { config, params0, mb } = tinyGoldenSetup();


async function withEngine<T>(bf16: Bf16Mode, variant: boolean, stepsPerRun: number, fn: (e: TrainingEngine) => Promise<T>): Promise<T> {
  return withEnv('SFT_BIAS_DROPOUT', variant ? '1' : '0', async () => {
    const e = await TrainingEngine.create({ config, params: params0(), device: 'cpu', stepsPerRun, bf16, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1.0, dropout: 0.1, seed: 0 });
    try {
      return await fn(e);
    } finally {
      await e.dispose();
    }
  });
}

test("golden batch, dropout 0.1: residualBiasDropout 'emulate' loss and gradients within bf16 bounds of fp32 (same masks), and not the default's", async (t) => {
  const ref = await withEngine(false, false, 1, (e) => e.gradients([mb]));
  const dflt = await withEngine('emulate', false, 1, (e) => e.gradients([mb]));
  const low = await withEngine('emulate', true, 1, (e) => e.gradients([mb]));
  const sLow = gradStats(ref, low, true);
  const sDflt = gradStats(ref, dflt, false);
  const sBetween = gradStats(dflt, low, false);
  t.diagnostic(`vs fp32: variant loss ${sLow.lossRel.toExponential(2)}, all ${sLow.total.toExponential(2)}; default emulate all ${sDflt.total.toExponential(2)}; between ${sBetween.total.toExponential(2)}`);
  assert.ok(sLow.lossRel <= u, `loss ${low.loss} vs fp32 ${ref.loss}`);
  assert.ok(sLow.worstTensor <= 4 * u, `worst gradient tensor ${sLow.worstTensor}`);
  assert.ok(sLow.total >= u / 4, `gradients only ${sLow.total} from fp32: nothing rounded`);
  assert.ok(sBetween.total > 0, 'the variant produced the default gradients bit for bit');
  assert.ok(sLow.total <= 2 * sDflt.total, `variant ${sLow.total} vs default ${sDflt.total} from fp32`);
});

function rowOf(m: MicroBatch, b: number): MicroBatch {
  const s = <A extends Int32Array | Float32Array>(a: A) => a.slice(b * m.T, (b + 1) * m.T) as A;
  return { B: 1, T: m.T, inputIds: s(m.inputIds), targets: s(m.targets), weights: s(m.weights), positions: s(m.positions), segments: s(m.segments) };
}

test("20 AdamW steps (lr 1e-3), dropout 0.1: residualBiasDropout 'emulate' follows fp32 within the GPU check's bf16 rule and u/8", async (t) => {
  const curve = (bf16: Bf16Mode, on: boolean) =>
    withEngine(bf16, on, 5, async (e) => {
      const loss: number[] = [];
      for (let s = 0; s < 20; s += 5) for (const m of await e.runSteps(Array.from({ length: 5 }, () => ({ lr: 1e-3, microBatches: [rowOf(mb, 0), rowOf(mb, 1)] })))) loss.push(m.loss);
      return loss;
    });
  const ref = await curve(false, false);
  const dflt = await curve('emulate', false);
  const low = await curve('emulate', true);
  const rule = compareLossCurves(ref, low, LOSS_CURVE_TOLERANCE.bf16);
  const tight = compareLossCurves(ref, low, u / 8);
  t.diagnostic(`worst |Δloss|/(|loss|+1): variant ${tight.worst.toExponential(2)}, default emulate ${compareLossCurves(ref, dflt, u / 8).worst.toExponential(2)}; loss ${ref[0]!.toFixed(4)} → ${ref[19]!.toFixed(4)} (fp32), ${low[19]!.toFixed(4)} (variant)`);
  assert.ok(rule.pass, `steps ${rule.failedSteps} outside the bf16 rule (worst ${rule.worst})`);
  assert.ok(tight.pass, `worst step ${tight.worstStep + 1}: ${tight.worst} > 2^-8/8`);
  assert.ok(low.some((v, i) => v !== dflt[i]), 'the variant curve equals the default emulate curve');
  assert.ok(low[0]! - low[19]! > 0.5, `loss fell only ${low[0]! - low[19]!} in 20 steps`);
});
