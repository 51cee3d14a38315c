// Test helpers for the engine: HF-style batches (labels with −100, shifted inside the model) → MicroBatch,
// and small MicroBatch builders. The real batcher is data/batching.ts; these exist so engine tests stand alone.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { makeConfig, readConfig } from '../../native-runner/model/config';
import { readSafetensors } from '../../native-runner/model/safetensors';
import type { MicroBatch } from '../../native-runner/engine/types';
import type { GPT2Config, ParamSet } from '../../native-runner/model/types';
import { BF16_UNIT_ROUNDOFF } from '../../native-runner/engine/bf16Tolerance';
import { roundBf16 } from '../../native-runner/engine/mlp';
import type { GraphProtoObj, NodeProtoObj } from '../../native-runner/engine/graph/onnxProto';
import * as ort from 'onnxruntime-node';
import { Graph } from '../../native-runner/engine/graph/graph';
import { gradients } from '../../native-runner/engine/graph/autodiff';
import { lmHeadNll, tokenNll } from '../../native-runner/engine/crossEntropy';
import { lmHeadLogits, modelContext, type Bf16Mode, type DropoutRates, type ModelVariants } from '../../native-runner/engine/gpt2Graph';
import { buildGradsGraph, buildTrainGraph, type OptimizerHyper } from '../../native-runner/engine/trainGraph';
import { cudaUnsupportedNodes } from '../../native-runner/engine/cudaKernels';

/**
 * HF right-padded batch → MicroBatch: targets[b,t] = labels[b,t+1] (weight 1 unless −100), positions
 * 0..T-1 on every row (HF with attention_mask and no position_ids), segment 1 on real tokens, 0 on padding.
 */
export function goldenMicroBatch(inputIds: number[][], attentionMask: number[][], labels: number[][]): MicroBatch {
  const B = inputIds.length;
  const T = inputIds[0]!.length;
  const mb: MicroBatch = {
    B,
    T,
    inputIds: new Int32Array(B * T),
    targets: new Int32Array(B * T),
    weights: new Float32Array(B * T),
    positions: new Int32Array(B * T),
    segments: new Int32Array(B * T),
  };
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const i = b * T + t;
      mb.inputIds[i] = inputIds[b]![t]!;
      mb.positions[i] = t;
      mb.segments[i] = attentionMask[b]![t] ? 1 : 0;
      const next = t + 1 < T ? labels[b]![t + 1]! : -100;
      if (next !== -100) {
        mb.targets[i] = next;
        mb.weights[i] = 1;
      }
    }
  }
  return mb;
}

/** One example: ids and a per-id trained flag (label positions before the shift). */
export interface Example {
  ids: number[];
  trained: boolean[];
}

/** Examples padded one per row (right padding with `padId`, segment 0 on padding). */
export function paddedBatch(examples: Example[], padId: number): MicroBatch {
  const B = examples.length;
  const T = Math.max(...examples.map((e) => e.ids.length));
  const mb = emptyBatch(B, T);
  examples.forEach((e, b) => {
    for (let t = 0; t < T; t++) {
      const i = b * T + t;
      const real = t < e.ids.length;
      mb.inputIds[i] = real ? e.ids[t]! : padId;
      mb.positions[i] = t;
      mb.segments[i] = real ? 1 : 0;
      if (t + 1 < e.ids.length && e.trained[t + 1]) {
        mb.targets[i] = e.ids[t + 1]!;
        mb.weights[i] = 1;
      }
    }
  });
  return mb;
}

/** Examples packed into rows of length T (segments 1, 2, …; positions restart per example). */
export function packedBatch(rows: Example[][], T: number, padId: number): MicroBatch {
  const B = rows.length;
  const mb = emptyBatch(B, T);
  rows.forEach((row, b) => {
    let t0 = 0;
    mb.inputIds.fill(padId, b * T, (b + 1) * T);
    row.forEach((e, s) => {
      for (let t = 0; t < e.ids.length; t++) {
        const i = b * T + t0 + t;
        mb.inputIds[i] = e.ids[t]!;
        mb.positions[i] = t;
        mb.segments[i] = s + 1;
        if (t + 1 < e.ids.length && e.trained[t + 1]) {
          mb.targets[i] = e.ids[t + 1]!;
          mb.weights[i] = 1;
        }
      }
      t0 += e.ids.length;
    });
    if (t0 > T) throw new Error('row overflows T');
  });
  return mb;
}

export function emptyBatch(B: number, T: number): MicroBatch {
  const n = B * T;
  return { B, T, inputIds: new Int32Array(n), targets: new Int32Array(n), weights: new Float32Array(n), positions: new Int32Array(n), segments: new Int32Array(n) };
}

// --- bf16 and graph-structure helpers shared by the bf16 / attention / MLP tests ---------------------------

/** x rounded to fp32, then to bfloat16 (round to nearest, ties to even), as a number: the product's own rounding. */
export { roundBf16 as bf16 } from '../../native-runner/engine/mlp';
/** One bf16 ulp at |v| (2^(e−7) for v in [2^e, 2^(e+1))). */
export const bf16Ulp = (v: number): number => (v === 0 ? 2 ** -133 : 2 ** (Math.floor(Math.log2(Math.abs(v))) - 7));

/** Every node of a graph, its subgraphs' (Loop bodies) included. */
export function allNodes(gp: GraphProtoObj, into: NodeProtoObj[] = []): NodeProtoObj[] {
  for (const node of gp.node) {
    into.push(node);
    for (const a of node.attribute ?? []) if (a.g) allNodes(a.g, into);
  }
  return into;
}
/** A Cast node's target type code (ONNX TensorProto.DataType). */
export const castTo = (node: NodeProtoObj): number => Number(node.attribute?.find((a) => a.name === 'to')?.i ?? -1);
export const BF16 = 16;
export const FLOAT = 1;

/** ‖a − b‖ / ‖b‖. */
export function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let n = 0;
  let m = 0;
  for (let i = 0; i < b.length; i++) {
    n += (a[i]! - b[i]!) ** 2;
    m += b[i]! ** 2;
  }
  return Math.sqrt(n / m);
}

export interface GradStats {
  lossRel: number;
  worstTensor: number;
  total: number;
}

/** Loss and gradients of `b` against the reference `a` (relative loss difference, per-tensor and total relative L2). */
export function gradStats(a: { loss: number; grads: ParamSet }, b: { loss: number; grads: ParamSet }, check: boolean): GradStats {
  let num = 0;
  let den = 0;
  let worstTensor = 0;
  for (const [name, r] of a.grads) {
    const e = b.grads.get(name)!;
    let tn = 0;
    let td = 0;
    for (let i = 0; i < r.data.length; i++) {
      tn += (e.data[i]! - r.data[i]!) ** 2;
      td += r.data[i]! ** 2;
    }
    const rel = td > 0 ? Math.sqrt(tn / td) : Math.sqrt(tn);
    if (check) assert.ok(rel <= 4 * BF16_UNIT_ROUNDOFF, `${name}: relative L2 difference ${rel} > 4·2^-8`);
    worstTensor = Math.max(worstTensor, rel);
    num += tn;
    den += td;
  }
  return { lossRel: Math.abs(b.loss - a.loss) / a.loss, worstTensor, total: Math.sqrt(num / den) };
}


/** The tiny sample model (samples/tiny-gpt2-chat: config, a fresh copy of its weights) and the golden batch. */
export function tinyGoldenSetup(): { config: GPT2Config; params0: () => ParamSet; mb: MicroBatch } {
  const root = path.resolve(__dirname, '../..');
  const modelDir = path.join(root, 'samples/tiny-gpt2-chat');
  const golden = JSON.parse(fs.readFileSync(path.join(root, 'test/fixtures/golden/tiny-golden.json'), 'utf8'));
  return {
    config: readConfig(modelDir),
    params0: () => readSafetensors(path.join(modelDir, 'model.safetensors')),
    mb: goldenMicroBatch(golden.forward.input_ids, golden.forward.attention_mask, golden.forward.labels),
  };
}

/**
 * gelu_new'(x) as engine/mlp.ts geluTanhGradBf16 (the bf16Mlp variant's 'exp' form) computes it: every op rounded
 * to bf16, constants in bf16 — E·(D + w)/D² with E = exp(min(v, 40)), D = E + 1, v = x·(2k + 2ka·x²),
 * w = x·(2k + 6ka·x²), k = √(2/π), a = 0.044715.
 */
export function geluGradExpModel(x: number): number {
  const b = roundBf16;
  const k = Math.sqrt(2 / Math.PI);
  const a = 0.044715;
  const x2 = b(x * x);
  const v = b(x * b(b(x2 * b(2 * k * a)) + b(2 * k)));
  const e = b(Math.exp(Math.min(v, 40)));
  const d = b(e + 1);
  const w = b(x * b(b(x2 * b(6 * k * a)) + b(2 * k)));
  return b(b(e * b(d + w)) / b(d * d));
}

/**
 * The real-bf16 train graphs (one micro-batch per step and several, the latter with the flat optimizer state) and the
 * grads graph of `config` with `variants` pass the CUDA kernel check (engine/cudaKernels.ts); returns the grads graph
 * for further checks of what the variant emitted.
 */
export function assertBf16GraphsRunOnCuda(config: GPT2Config, variants: ModelVariants, dropout: DropoutRates): Graph {
  const hyper: OptimizerHyper = { weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 };
  const name = JSON.stringify(variants);
  for (const accumulate of [false, true]) {
    const train = buildTrainGraph(config, hyper, { dropout, bf16: true, seed: 3, accumulate, flatState: accumulate, variants });
    assert.deepEqual(cudaUnsupportedNodes(train), [], `train ${name} accumulate=${accumulate}`);
  }
  const grads = buildGradsGraph(config, { dropout, bf16: true, seed: 0, variants });
  assert.deepEqual(cudaUnsupportedNodes(grads, { singleIterationLoop: true }), [], `grads ${name}`);
  return grads;
}

/** Runs `fn` with the environment variable `name` set to `value` (engines built inside read it), then restores it. */
export async function withEnv<T>(name: string, value: string, fn: () => Promise<T>): Promise<T> {
  const before = process.env[name];
  process.env[name] = value;
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env[name];
    else process.env[name] = before;
  }
}

/**
 * The lm head on the CPU: h [N,C] against a tied wte [V,C] (lmHeadNll, or with `unfused` lmHeadLogits then tokenNll),
 * per-token nll and lse [N,1], and the gradients dh, dw of Σ a·nll + Σ b·lse (a, b [N,1]).
 */
export async function lmHeadGradients(
  o: { N: number; C: number; V: number; bf16: Bf16Mode; variants?: ModelVariants; unfused?: boolean },
  x: { h: Float32Array; wte: Float32Array; targets: Int32Array; a: Float32Array; b: Float32Array },
): Promise<{ nll: Float32Array; lse: Float32Array; dh: Float32Array; dw: Float32Array }> {
  const { N, C, V } = o;
  const g = new Graph();
  const config = makeConfig({ n_layer: 1, n_head: 1, n_embd: C, n_positions: 16, vocab_size: V });
  const hT = g.input('h', 'float', ['N', C]);
  const wT = g.input('wte', 'float', [V, C]);
  const tT = g.input('targets', 'int32', ['N']);
  const aT = g.input('a', 'float', ['N', 1]);
  const bT = g.input('b', 'float', ['N', 1]);
  const c = modelContext(g, config, new Map([['transformer.wte.weight', wT]]), g.ints([1, N]), { bf16: o.bf16, variants: o.variants });
  const { nll, lse } = o.unfused ? tokenNll(g, lmHeadLogits(c, hT), tT) : lmHeadNll(c, hT, tT);
  const loss = g.add(g.reduceSum(g.mul(nll, aT), null, false), g.reduceSum(g.mul(lse, bT), null, false));
  const [dh, dw] = gradients(g, [loss], [g.scalar(1)], [hT, wT]);
  g.output(nll, 'nll');
  g.output(lse, 'lse');
  g.output(dh!, 'dh');
  g.output(dw!, 'dw');
  const session = await ort.InferenceSession.create(g.toModelBytes(), { executionProviders: ['cpu'] });
  try {
    const out = await session.run({
      h: new ort.Tensor('float32', x.h, [N, C]),
      wte: new ort.Tensor('float32', x.wte, [V, C]),
      targets: new ort.Tensor('int32', x.targets, [N]),
      a: new ort.Tensor('float32', x.a, [N, 1]),
      b: new ort.Tensor('float32', x.b, [N, 1]),
    });
    const get = (k: string) => out[k]!.data as Float32Array;
    return { nll: get('nll'), lse: get('lse'), dh: get('dh'), dw: get('dw') };
  } finally {
    await session.release();
  }
}
