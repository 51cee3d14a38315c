// The engine's bf16 defaults (the four bf16 storage variants, on since 2026-11-28: trainingEngine.ts
// modelVariantsFromEnv) on model shapes other than the tiny sample's, where their special cases live:
// - a head size whose 1/√D is not a power of two (D = 12, 10: the q scale is applied to the fp32 weights before
//   their cast instead of folded exactly into the bf16 ones; bf16Projections);
// - a prime vocabulary (1009: no group split for the bf16 softmax's index choice, the one-fp32-pass fallback;
//   bf16Logits) and a composite one (1000 = 40 groups of 25);
// - n_embd not a multiple of 8 (the c_attn bias row pads the Gemm's inner dimension; 36, 50);
// - packed rows with several segments next to right-padded rows, dropout 0.1 (same seeds, same masks in both).
// For each: one micro-batch's loss and every gradient in bf16 'emulate' against fp32 on the CPU within the bounds
// of bf16Emulation.test.ts (loss ≤ 2^-8 relative, every gradient tensor ≤ 4·2^-8 relative L2), and the real bf16
// train and grads graphs are accepted by the CUDA kernel table (cudaKernels.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TrainingEngine, modelVariantsFromEnv } from '../../native-runner/engine/trainingEngine';
import { buildGradsGraph, buildTrainGraph } from '../../native-runner/engine/trainGraph';
import { cudaUnsupportedNodes } from '../../native-runner/engine/cudaKernels';
import type { Bf16Mode } from '../../native-runner/engine/gpt2Graph';
import { BF16_UNIT_ROUNDOFF } from '../../native-runner/engine/bf16Tolerance';
import { makeConfig } from '../../native-runner/model/config';
import { initGpt2Params } from '../../native-runner/model/gpt2Params';
import type { GPT2Config, ParamSet } from '../../native-runner/model/types';
import type { MicroBatch } from '../../native-runner/engine/types';
import { Rng } from '../../native-runner/util/rng';
import { gradStats, packedBatch, paddedBatch, type Example } from './helpers';

const u = BF16_UNIT_ROUNDOFF;
const HYPER = { weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 };

const SHAPES: { label: string; config: GPT2Config }[] = [
  { label: 'D 12, prime vocabulary 1009, n_embd 36', config: makeConfig({ n_layer: 2, n_head: 3, n_embd: 36, n_positions: 64, vocab_size: 1009 }) },
  { label: 'D 10, vocabulary 1000, n_embd 50', config: makeConfig({ n_layer: 2, n_head: 5, n_embd: 50, n_positions: 64, vocab_size: 1000 }) },
  { label: 'D 16 (exact q-scale fold), vocabulary 50', config: makeConfig({ n_layer: 1, n_head: 4, n_embd: 64, n_positions: 64, vocab_size: 50 }) },
];

function example(rng: Rng, V: number, n: number): Example {
  const ids = Array.from({ length: n }, () => rng.nextInt(V));
  return { ids, trained: ids.map((_, i) => i >= 2) };
}

/** Two micro-batches: packed rows of 24 (two and three segments) and right-padded rows of different lengths. */
function batches(V: number): MicroBatch[] {
  const rng = new Rng(5);
  return [
    packedBatch([[example(rng, V, 9), example(rng, V, 15)], [example(rng, V, 7), example(rng, V, 6), example(rng, V, 8)]], 24, 0),
    paddedBatch([example(rng, V, 19), example(rng, V, 5), example(rng, V, 12)], 0),
  ];
}

async function gradients(config: GPT2Config, params: ParamSet, bf16: Bf16Mode, mbs: MicroBatch[]) {
  const copy: ParamSet = new Map([...params].map(([k, t]) => [k, { shape: t.shape.slice(), data: t.data.slice() }]));
  const e = await TrainingEngine.create({ config, params: copy, device: 'cpu', stepsPerRun: 1, bf16, ...HYPER, dropout: 0.1, seed: 3 });
  try {
    return await e.gradients(mbs);
  } finally {
    await e.dispose();
  }
}

test('the engine defaults to the four bf16 storage variants (and leaves the earlier formulations off)', () => {
  const v = modelVariantsFromEnv({});
  assert.deepEqual([v.bf16Attention, v.bf16Mlp, v.bf16Projections, v.bf16Logits], [true, true, true, true]);
  assert.deepEqual([v.autodiffAttention, v.autodiffLayerNorm], [false, false]);
});

for (const { label, config } of SHAPES) {
  test(`${label}: bf16 'emulate' with the default variants — loss and every gradient within bf16 bounds of fp32`, async (t) => {
    for (const k of ['SFT_BF16_ATTENTION', 'SFT_BF16_MLP', 'SFT_BF16_PROJ', 'SFT_BF16_LOGITS', 'SFT_BF16_GELU_GRAD']) assert.equal(process.env[k], undefined, `${k} is set in the environment: this test checks the defaults`);
    const params = initGpt2Params(config, 7);
    const mbs = batches(config.vocab_size);
    const ref = await gradients(config, params, false, mbs);
    const low = await gradients(config, params, 'emulate', mbs);
    assert.ok(Number.isFinite(low.loss) && Math.abs(low.loss - ref.loss) <= u * ref.loss, `loss ${low.loss} vs fp32 ${ref.loss}`);
    const s = gradStats(ref, low, true); // asserts every tensor ≤ 4u
    assert.ok(s.total > u / 64, `bf16 gradients equal fp32 (${s.total}): the bf16 roundings did not happen`);
    t.diagnostic(`vs fp32: loss ${s.lossRel.toExponential(2)}, worst tensor ${s.worstTensor.toExponential(2)}, all ${s.total.toExponential(2)}`);
  });

  test(`${label}: the real bf16 train and grads graphs with the default variants have a CUDA kernel for every node`, () => {
    const variants = modelVariantsFromEnv({});
    const dropout = { embd: 0.1, attn: 0.1, resid: 0.1 };
    for (const accumulate of [false, true]) {
      const bad = cudaUnsupportedNodes(buildTrainGraph(config, HYPER, { dropout, bf16: true, seed: 3, accumulate, variants }));
      assert.deepEqual(bad, [], `train accumulate=${accumulate}: ${JSON.stringify(bad.slice(0, 3))}`);
    }
    const bad = cudaUnsupportedNodes(buildGradsGraph(config, { dropout, bf16: true, seed: 0, variants }), { singleIterationLoop: true });
    assert.deepEqual(bad, [], `grads: ${JSON.stringify(bad.slice(0, 3))}`);
  });
}
