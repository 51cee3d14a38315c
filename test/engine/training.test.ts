// Engine behaviour beyond the golden numbers: packing (segments) equals padding, gradient accumulation over
// micro-batches of different lengths equals one big batch, runs with fewer than K steps and mixed
// micro-batch counts, a step without trained tokens, dropout, bf16 graph emission, CUDA errors, bad input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readSafetensors } from '../../native-runner/model/safetensors';
import { readConfig } from '../../native-runner/model/config';
import type { ParamSet } from '../../native-runner/model/types';
import { modelVariantsFromEnv, TrainingEngine, type TrainingEngineOptions } from '../../native-runner/engine/trainingEngine';
import { envSwitch, optimizationFromEnv } from '../../native-runner/engine/ortSession';
import { buildTrainGraph } from '../../native-runner/engine/trainGraph';
import { paramSpecs } from '../../native-runner/engine/gpt2Graph';
import { decodeModel, type GraphProtoObj } from '../../native-runner/engine/graph/onnxProto';
import { SftError } from '../../native-runner/util/errors';
import type { MicroBatch, StepInput } from '../../native-runner/engine/types';
import { emptyBatch, packedBatch, paddedBatch, relL2, type Example } from './helpers';

const root = path.resolve(__dirname, '../..');
const modelDir = path.join(root, 'samples/tiny-gpt2-chat');
const config = readConfig(modelDir);
const params0 = (): ParamSet => readSafetensors(path.join(modelDir, 'model.safetensors'));
const golden = JSON.parse(fs.readFileSync(path.join(root, 'test/fixtures/golden/tiny-golden.json'), 'utf8'));

function example(ids: number[], promptLen: number): Example {
  return { ids, trained: ids.map((_, i) => i >= promptLen) };
}
// Two real chat examples (golden batch, padding stripped) and two synthetic ones.
const realLen0 = (golden.forward.attention_mask[0] as number[]).filter((x) => x === 1).length;
const ex: Example[] = [
  example((golden.forward.input_ids[0] as number[]).slice(0, realLen0), 12),
  example(golden.forward.input_ids[1] as number[], 11),
  example([50257, 198, 40, 1101, 257, 3797, 198, 50258, 198, 1212, 318, 281, 1672, 13, 50256], 9),
  example([50257, 198, 15496, 198, 50258, 198, 17250, 0, 50256], 6),
];

function opts(stepsPerRun: number, extra: Partial<TrainingEngineOptions> = {}): TrainingEngineOptions {
  return { config, params: params0(), device: 'cpu', stepsPerRun, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1.0, dropout: 0, ...extra };
}

function rowLosses(mb: MicroBatch, nll: Float32Array): { sum: number; n: number }[] {
  // Per segment (packed) or per row (padded): Σ nll·w and Σ w, in order of appearance.
  const out: { sum: number; n: number }[] = [];
  for (let b = 0; b < mb.B; b++) {
    const seen = new Map<number, { sum: number; n: number }>();
    for (let t = 0; t < mb.T; t++) {
      const i = b * mb.T + t;
      const s = mb.segments[i]!;
      if (s === 0) continue;
      let acc = seen.get(s);
      if (!acc) {
        acc = { sum: 0, n: 0 };
        seen.set(s, acc);
        out.push(acc);
      }
      acc.sum += nll[i]! * mb.weights[i]!;
      acc.n += mb.weights[i]!;
    }
  }
  return out;
}

function maxAbsDiff(a: ParamSet, b: ParamSet): number {
  let worst = 0;
  for (const [name, p] of a) {
    const q = b.get(name)!;
    for (let i = 0; i < p.data.length; i++) worst = Math.max(worst, Math.abs(p.data[i]! - q.data[i]!));
  }
  return worst;
}

test('packed rows with segments give the same per-example losses and gradients as padded rows', async () => {
  const e = await TrainingEngine.create(opts(1));
  const padded = paddedBatch(ex, 50256);
  const packed = packedBatch([[ex[0]!, ex[2]!], [ex[1]!], [ex[3]!]], 36, 50256);
  const rp = await e.evalTokens(padded);
  const rk = await e.evalTokens(packed);
  const lp = rowLosses(padded, rp.nll);
  const lk = rowLosses(packed, rk.nll);
  // packed order: ex0, ex2, ex1, ex3
  const order = [0, 2, 1, 3];
  order.forEach((exIdx, k) => {
    const a = lp[exIdx]!.sum / lp[exIdx]!.n;
    const b = lk[k]!.sum / lk[k]!.n;
    assert.equal(lp[exIdx]!.n, lk[k]!.n);
    assert.ok(Math.abs(a - b) / a < 1e-6, `example ${exIdx}: padded ${a} vs packed ${b}`);
  });
  assert.ok(Math.abs(rp.nllSum - rk.nllSum) / rp.nllSum < 1e-6);
  const gp = await e.gradients([padded]);
  const gk = await e.gradients([packed]);
  for (const [name, t] of gp.grads) {
    const d = relL2(gk.grads.get(name)!.data, t.data);
    assert.ok(d < 1e-5, `${name}: packed vs padded gradient differs by ${d}`);
  }
  await e.dispose();
});

test('training on one batch overfits it (loss falls well below its start)', async () => {
  const e = await TrainingEngine.create(opts(5));
  const mb = paddedBatch([ex[2]!, ex[3]!], 50256);
  const losses: number[] = [];
  for (let r = 0; r < 4; r++) losses.push(...(await e.runSteps(Array.from({ length: 5 }, () => ({ lr: 1e-2, microBatches: [mb] })))).map((m) => m.loss));
  assert.equal(losses.length, 20);
  assert.ok(losses[19]! < 0.5 * losses[0]!, `loss ${losses[0]} → ${losses[19]}`);
  const after = await e.evalBatch(mb);
  assert.ok(after.nllSum / after.tokens < losses[19]! + 0.5);
  await e.dispose();
});

test('a padding query with no visible key gives finite output (fully masked row, no NaN)', async () => {
  const e = await TrainingEngine.create(opts(1));
  const mb = paddedBatch([ex[3]!], 50256);
  mb.segments[0] = 0; // the first query now has no real key at or before it
  const r = await e.evalTokens(mb);
  assert.ok(Number.isFinite(r.nllSum));
  for (const x of r.lse) assert.ok(Number.isFinite(x));
  await e.dispose();
});

test('gradient accumulation over micro-batches of different T equals one batch of all rows', async () => {
  const lrs = [1e-3, 2e-3];
  const a = await TrainingEngine.create(opts(2));
  const split: StepInput[] = lrs.map((lr) => ({ lr, microBatches: [paddedBatch([ex[0]!, ex[3]!], 50256), paddedBatch([ex[1]!], 50256), paddedBatch([ex[2]!], 50256)] }));
  assert.notEqual(split[0]!.microBatches[0]!.T, split[0]!.microBatches[1]!.T);
  const ma = await a.runSteps(split);
  const b = await TrainingEngine.create(opts(2));
  const mb = await b.runSteps(lrs.map((lr) => ({ lr, microBatches: [paddedBatch(ex, 50256)] })));
  ma.forEach((m, k) => {
    assert.equal(m.tokens, mb[k]!.tokens);
    assert.ok(Math.abs(m.loss - mb[k]!.loss) / mb[k]!.loss < 1e-6, `step ${k}: ${m.loss} vs ${mb[k]!.loss}`);
    assert.ok(Math.abs(m.gradNorm - mb[k]!.gradNorm) / mb[k]!.gradNorm < 1e-5);
  });
  // HF normalisation: the step loss is Σ NLL / Σ tokens over all micro-batches, not a mean of means.
  const total = ex.reduce((s, e) => s + e.trained.slice(1).filter(Boolean).length, 0);
  assert.equal(ma[0]!.tokens, total);
  const d = maxAbsDiff(a.getParams(), b.getParams());
  assert.ok(d < 1e-5, `params differ by ${d}`);
  await a.dispose();
  await b.dispose();
});

test('runs with fewer than K steps and mixed micro-batch counts equal one-step runs', async () => {
  const steps: StepInput[] = [
    { lr: 1e-3, microBatches: [paddedBatch([ex[0]!], 50256), paddedBatch([ex[1]!, ex[2]!], 50256)] },
    { lr: 5e-4, microBatches: [paddedBatch([ex[3]!], 50256)] },
  ];
  const a = await TrainingEngine.create(opts(4));
  const ma = await a.runSteps(steps); // 2 < K = 4, A = 2 and A = 1 in one run
  const b = await TrainingEngine.create(opts(1));
  const mb = [...(await b.runSteps([steps[0]!])), ...(await b.runSteps([steps[1]!]))];
  ma.forEach((m, k) => assert.ok(Math.abs(m.loss - mb[k]!.loss) < 1e-6));
  assert.ok(maxAbsDiff(a.getParams(), b.getParams()) < 1e-6);
  assert.equal(a.getOptimizerState().step, 2);
  await assert.rejects(a.runSteps([...steps, ...steps, steps[0]!]), /runSteps takes 1\.\.4 steps, got 5/);
  await a.dispose();
  await b.dispose();
});

test('a step without trained tokens reports loss 0 and leaves finite parameters', async () => {
  const e = await TrainingEngine.create(opts(1));
  const mb = paddedBatch([ex[3]!], 50256);
  mb.weights.fill(0);
  const [m] = await e.runSteps([{ lr: 1e-3, microBatches: [mb] }]);
  assert.equal(m!.loss, 0);
  assert.equal(m!.tokens, 0);
  assert.equal(m!.gradNorm, 0);
  for (const t of e.getParams().values()) for (const x of t.data) assert.ok(Number.isFinite(x));
  await e.dispose();
});

test('loss = Σ w·NLL / Σ w: scaling every weight (even to Σ w < 1) changes neither loss nor update', async () => {
  const mb = paddedBatch([ex[3]!], 50256);
  const scaled = { ...mb, weights: mb.weights.map((w) => w * 0.05) };
  let sum = 0;
  for (const w of scaled.weights) sum += w;
  assert.ok(sum < 1);
  const a = await TrainingEngine.create(opts(1));
  const b = await TrainingEngine.create(opts(1));
  const [ma] = await a.runSteps([{ lr: 1e-3, microBatches: [mb] }]);
  const [mb2] = await b.runSteps([{ lr: 1e-3, microBatches: [scaled] }]);
  assert.ok(Math.abs(ma!.loss - mb2!.loss) / ma!.loss < 1e-6, `${ma!.loss} vs ${mb2!.loss}`);
  assert.ok(Math.abs(ma!.gradNorm - mb2!.gradNorm) / ma!.gradNorm < 1e-5);
  assert.ok(maxAbsDiff(a.getParams(), b.getParams()) < 1e-6);
  await a.dispose();
  await b.dispose();
});

test('dropout changes the training loss, keeps it finite, and leaves evaluation deterministic', async () => {
  const mb = paddedBatch(ex, 50256);
  const plain = await TrainingEngine.create(opts(1));
  const [p] = await plain.runSteps([{ lr: 0, microBatches: [mb] }]);
  const drop = await TrainingEngine.create(opts(2, { dropout: 0.3, seed: 5 }));
  const [d1, d2] = await drop.runSteps([
    { lr: 0, microBatches: [mb] },
    { lr: 0, microBatches: [mb] },
  ]);
  assert.ok(Number.isFinite(d1!.loss) && Number.isFinite(d2!.loss));
  assert.ok(Math.abs(d1!.loss - p!.loss) > 1e-4, `dropout had no effect: ${d1!.loss} vs ${p!.loss}`);
  assert.notEqual(d1!.loss, d2!.loss, 'two steps drew the same dropout masks');
  // lr 0 and the same weights: evaluation (no dropout) equals the plain engine's.
  const ea = await drop.evalBatch(mb);
  const eb = await plain.evalBatch(mb);
  assert.ok(Math.abs(ea.nllSum - eb.nllSum) / eb.nllSum < 1e-6);
  await plain.dispose();
  await drop.dispose();
});

function countOps(gp: GraphProtoObj, pred: (op: string, castTo?: number) => boolean): number {
  let n = 0;
  for (const node of gp.node) {
    const to = node.attribute?.find((a) => a.name === 'to')?.i;
    if (pred(node.opType, to === undefined ? undefined : Number(to))) n++;
    for (const a of node.attribute ?? []) if (a.g) n += countOps(a.g, pred);
  }
  return n;
}

test('bf16 option casts every MatMul/Gemm operand to bfloat16 (fp32 graph otherwise)', () => {
  const hyper = { weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 };
  const base = { dropout: { embd: 0, attn: 0, resid: 0 }, seed: 0, accumulate: false };
  const fp32 = decodeModel(buildTrainGraph(config, hyper, { ...base, bf16: false }).toModelBytes());
  const bf16 = decodeModel(buildTrainGraph(config, hyper, { ...base, bf16: true }).toModelBytes());
  assert.equal(countOps(fp32.graph, (op, to) => op === 'Cast' && to === 16), 0);
  // Forward: per layer 4 Gemms + 2 attention MatMuls, plus the lm_head: 2 operand casts each.
  const forwardMatmuls = config.n_layer * 6 + 1;
  const casts = countOps(bf16.graph, (op, to) => op === 'Cast' && to === 16);
  assert.ok(casts >= 2 * forwardMatmuls, `only ${casts} casts to bfloat16`);
  assert.equal(countOps(bf16.graph, (op) => op === 'Gemm' || op === 'MatMul'), countOps(fp32.graph, (op) => op === 'Gemm' || op === 'MatMul'));
});

test('flat optimizer state: AdamW and the norm cost a fixed handful of nodes, not ~13 per tensor', () => {
  const hyper = { weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 };
  const base = { dropout: { embd: 0, attn: 0, resid: 0 }, seed: 0, bf16: false };
  const tensors = paramSpecs(config).length;
  for (const accumulate of [false, true]) {
    const per = decodeModel(buildTrainGraph(config, hyper, { ...base, accumulate, flatState: false }).toModelBytes());
    const flat = decodeModel(buildTrainGraph(config, hyper, { ...base, accumulate, flatState: true }).toModelBytes());
    const all = () => true;
    const sqrts = (op: string) => op === 'Sqrt';
    // One Sqrt per AdamW update: per tensor vs per group (+1 for the norm).
    assert.equal(countOps(per.graph, sqrts), tensors);
    assert.equal(countOps(flat.graph, sqrts), 2 + 1);
    // Nodes run per optimizer step = the training Loop's body (the main graph runs once per K steps).
    const body = (m: typeof per) => m.graph.node.find((n) => n.opType === 'Loop')!.attribute!.find((a) => a.name === 'body')!.g!;
    const saved = countOps(body(per), all) - countOps(body(flat), all);
    assert.ok(saved >= 10 * tensors, `accumulate ${accumulate}: flat state saves only ${saved} nodes per step for ${tensors} tensors`);
  }
});

test('ablation switches reach the graphs: SFT_AUTODIFF_ATTENTION, SFT_BF16_ATTENTION, SFT_FUSED_LM_HEAD', async () => {
  // The engine's defaults: the four bf16 storage variants on, the earlier formulations off.
  const dflt = { autodiffAttention: false, bf16Attention: true, bf16Mlp: true, bf16Projections: true, autodiffLayerNorm: false, bf16Logits: true, residualBiasDropout: false, lnFold: true };
  assert.deepEqual(modelVariantsFromEnv({}), dflt);
  assert.deepEqual(modelVariantsFromEnv({ SFT_AUTODIFF_ATTENTION: '1', SFT_BF16_ATTENTION: '0' }), { ...dflt, autodiffAttention: true, bf16Attention: false });
  assert.deepEqual(modelVariantsFromEnv({ SFT_BF16_MLP: 'false', SFT_BF16_GELU_GRAD: 'exp' }), { ...dflt, bf16Mlp: false, bf16GeluGrad: 'exp' });
  assert.deepEqual(modelVariantsFromEnv({ SFT_BF16_PROJ: 'no', SFT_AUTODIFF_LAYERNORM: 'true' }), { ...dflt, bf16Projections: false, autodiffLayerNorm: true });
  assert.deepEqual(modelVariantsFromEnv({ SFT_BF16_LOGITS: '0' }), { ...dflt, bf16Logits: false });
  assert.deepEqual(modelVariantsFromEnv({ SFT_BIAS_DROPOUT: '1' }), { ...dflt, residualBiasDropout: true });
  assert.throws(() => modelVariantsFromEnv({ SFT_BF16_GELU_GRAD: 'fast' }), /SFT_BF16_GELU_GRAD must be exp or table, got "fast"/);
  const hyper = { weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 };
  const base = { dropout: { embd: 0, attn: 0.1, resid: 0 }, seed: 0, bf16: false as const, accumulate: false };
  const ops = (o: object, op: string) => countOps(decodeModel(buildTrainGraph(config, hyper, { ...base, ...o }).toModelBytes()).graph, (t) => t === op);
  // bf16Mlp: under 'emulate' the MLP's Gelu becomes the bf16 kernel's 8 rounded steps (mlp.ts), so no Gelu node is left.
  assert.equal(ops({ bf16: 'emulate' }, 'Gelu'), config.n_layer);
  assert.equal(ops({ bf16: 'emulate', variants: { bf16Mlp: true } }, 'Gelu'), 0);
  // attention.ts's backward folds −rowsum(dy⊙y) into its dPd MatMul (no Sub); the autodiff Softmax rule subtracts
  // once per layer. (Both apply the dropout mask with one Where per layer.)
  assert.equal(ops({ variants: { autodiffAttention: true } }, 'Sub') - ops({}, 'Sub'), config.n_layer);
  assert.equal(ops({ variants: { autodiffAttention: true } }, 'Where'), ops({}, 'Where'));
  // The fused head's backward gathers W[target] (the unfused one scatters into the [N,V] logits gradient instead).
  assert.equal(ops({ fusedLmHead: false }, 'Gather') + 1, ops({}, 'Gather'));
  // And the engine's results agree across the switches (tiny model, one step, dropout off so masks don't matter).
  const mb = paddedBatch([ex[0]!, ex[1]!], 50256);
  const run = async (env: Record<string, string>) => {
    const saved = { ...process.env };
    Object.assign(process.env, env);
    try {
      const e = await TrainingEngine.create(opts(1));
      const [m] = await e.runSteps([{ lr: 1e-3, microBatches: [mb] }]);
      const p = e.getParams().get('transformer.h.0.attn.c_attn.weight')!.data.slice();
      await e.dispose();
      return { loss: m!.loss, norm: m!.gradNorm, p };
    } finally {
      for (const k of Object.keys(env)) if (saved[k] === undefined) delete process.env[k];
    }
  };
  const a = await run({});
  const b = await run({ SFT_AUTODIFF_ATTENTION: '1', SFT_FUSED_LM_HEAD: '0' });
  assert.ok(Math.abs(a.loss - b.loss) < 1e-6 * Math.abs(a.loss), `loss ${a.loss} vs ${b.loss}`);
  assert.ok(Math.abs(a.norm - b.norm) < 1e-5 * a.norm, `grad norm ${a.norm} vs ${b.norm}`);
  let worst = 0;
  for (let i = 0; i < a.p.length; i++) worst = Math.max(worst, Math.abs(a.p[i]! - b.p[i]!));
  assert.ok(worst < 1e-6, `params after one step differ by ${worst}`);
  // Not bit-identical: the switches did reach the engine's graphs (other summation orders, ulp-level differences).
  assert.ok(worst > 0, 'the switched engine computed bit-identical parameters: the switches were not applied');
});

test('bf16 on the CPU is a clear SftError (no bfloat16 MatMul/Gemm kernels there)', async () => {
  await assert.rejects(TrainingEngine.create(opts(1, { bf16: true })), (e: unknown) => e instanceof SftError && /bf16 needs --device cuda/.test(e.message));
});

test('device cuda without the CUDA provider library is a clear SftError', async (t) => {
  const binDir = path.join(root, 'node_modules/onnxruntime-node/bin');
  const hasCuda = fs.existsSync(binDir) && fs.readdirSync(binDir, { recursive: true }).some((f) => String(f).includes('providers_cuda'));
  if (hasCuda) return t.skip('CUDA provider present: covered by the GPU checks');
  await assert.rejects(TrainingEngine.create(opts(1, { device: 'cuda' })), (e: unknown) => e instanceof SftError && /CUDA/.test(e.message));
});

test('bad micro-batches are SftErrors naming the step, micro-batch and field', async () => {
  const e = await TrainingEngine.create(opts(1));
  const mb = paddedBatch([ex[3]!], 50256);
  mb.inputIds[3] = 99999;
  await assert.rejects(e.runSteps([{ lr: 1e-3, microBatches: [mb] }]), (err: unknown) => err instanceof SftError && /steps\[0\]\.microBatches\[0\]: inputIds\[3\] = 99999/.test(err.message));
  const short = emptyBatch(1, 4);
  short.positions = new Int32Array(3);
  await assert.rejects(e.evalBatch(short), /positions has 3 values, expected B·T = 4/);
  const far = paddedBatch([ex[3]!], 50256);
  far.positions[2] = 128;
  await assert.rejects(e.evalBatch(far), /positions\[2\] = 128 is outside \[0, n_positions = 128\)/);
  const badParams = params0();
  badParams.get('transformer.ln_f.bias')!.shape = [31];
  await assert.rejects(TrainingEngine.create(opts(1, { params: badParams })), /tensor transformer\.ln_f\.bias: shape \[31\]/);
  await e.dispose();
});

test('SFT_ORT_OPT_LEVEL: unset or blank = the caller\'s level (all), a known level passes, anything else names the variable; sessions made at each level agree', async () => {
  assert.equal(optimizationFromEnv({}), undefined);
  assert.equal(optimizationFromEnv({ SFT_ORT_OPT_LEVEL: '  ' }), undefined);
  for (const v of ['disabled', 'basic', 'extended', 'all']) assert.equal(optimizationFromEnv({ SFT_ORT_OPT_LEVEL: ` ${v} ` }), v);
  assert.throws(() => optimizationFromEnv({ SFT_ORT_OPT_LEVEL: 'max' }), /SFT_ORT_OPT_LEVEL must be one of disabled, basic, extended, all, got "max"/);
  // The engine's sessions at two levels: same loss and gradients (the level changes kernels, not the maths).
  const saved = process.env.SFT_ORT_OPT_LEVEL;
  const run = async (level: string) => {
    process.env.SFT_ORT_OPT_LEVEL = level;
    const e = await TrainingEngine.create(opts(1));
    try {
      return await e.gradients([paddedBatch([ex[0]!, ex[1]!], 50256)]);
    } finally {
      await e.dispose();
    }
  };
  try {
    const a = await run('disabled');
    const b = await run('all');
    assert.ok(Math.abs(a.loss - b.loss) <= 1e-6 * b.loss, `loss ${a.loss} vs ${b.loss}`);
    assert.ok(relL2(a.grads.get('transformer.h.0.attn.c_attn.weight')!.data, b.grads.get('transformer.h.0.attn.c_attn.weight')!.data) < 1e-5);
  } finally {
    if (saved === undefined) delete process.env.SFT_ORT_OPT_LEVEL;
    else process.env.SFT_ORT_OPT_LEVEL = saved;
  }
});

test('SFT_FLAT_STATE / SFT_ORT_SPINNING: blank means unset (the device default), 0/off/no/false off, else on', async () => {
  assert.equal(envSwitch(undefined), undefined);
  for (const v of ['', '  ', '\t']) assert.equal(envSwitch(v), undefined, JSON.stringify(v));
  for (const v of ['0', 'off', ' No ', 'FALSE']) assert.equal(envSwitch(v), false, v);
  for (const v of ['1', 'on', 'yes', ' true ']) assert.equal(envSwitch(v), true, v);
  // The engine's choices (private; read through a cast): before, SFT_FLAT_STATE=' ' turned flat state on on the
  // CPU (the blank was tested untrimmed), while SFT_CUDA_STATE_ON_DEVICE=' ' counted as unset.
  const saved = { flat: process.env.SFT_FLAT_STATE, spin: process.env.SFT_ORT_SPINNING };
  const e = await TrainingEngine.create(opts(1));
  const choices = e as unknown as { flatState(): boolean; allowSpinning(): boolean | undefined };
  try {
    process.env.SFT_FLAT_STATE = ' ';
    process.env.SFT_ORT_SPINNING = ' ';
    assert.equal(choices.flatState(), false, 'blank SFT_FLAT_STATE: the CPU default (off)');
    assert.equal(choices.allowSpinning(), undefined, "blank SFT_ORT_SPINNING: ORT's default");
    process.env.SFT_FLAT_STATE = ' 1 ';
    process.env.SFT_ORT_SPINNING = 'off';
    assert.equal(choices.flatState(), true);
    assert.equal(choices.allowSpinning(), false);
  } finally {
    for (const [k, v] of [['SFT_FLAT_STATE', saved.flat], ['SFT_ORT_SPINNING', saved.spin]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await e.dispose();
  }
});
