// The static step cost model (bench/stepModel.ts, behind bench/step-traffic.ts and bench/profile-vs-model.ts)
// counts what it says it counts, on a small GPT-2 (2 layers, C 64, V 1000, A 2 × B2 T16):
// - a node's bytes are its inputs and outputs at their dtypes (the lm-head Gemm by hand: x [N,C] + W [V,C] in,
//   logits [N,V] out, bf16), a Gemm with a C input adds one more write and read of its output, Gather reads only
//   the rows it picks, Reshape/Shape move nothing and are not counted as kernels;
// - FLOPs of a MatMul/Gemm are 2·(output elements)·(inner dimension);
// - the micro-batch body counts A times per step, the optimizer body once; forward + backward + step = total;
// - the bf16 storage variants move fewer bytes than the same graph without them, and fp32 more than bf16.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeConfig } from '../../native-runner/model/config';
import { modelVariantsFromEnv } from '../../native-runner/engine/trainingEngine';
import { modelStep, timeOf, zero, add, type Setup } from '../../bench/stepModel';

const config = makeConfig({ n_layer: 2, n_head: 4, n_embd: 64, n_positions: 64, vocab_size: 1000 });
const base: Setup = { config, B: 2, T: 16, A: 2, dropout: 0.1, bf16: true, variants: modelVariantsFromEnv({}), fusedLmHead: true, flatState: false };
const N = 2 * 16;
const C = 64;
const V = 1000;

test('per-node bytes and FLOPs: the lm-head Gemm by hand, Gemm with C, Gather, metadata ops', () => {
  const m = modelStep(base);
  const entries = [...m.nodes.values()];
  // The lm-head Gemm of the forward: bf16 [N,C] × [V,C]ᵀ → [N,V].
  const head = entries.find((e) => e.node.opType === 'Gemm' && e.part === 'forward' && e.node.outputs[0]!.shape?.[1] === V);
  assert.ok(head, 'no forward Gemm with a vocabulary-wide output');
  assert.equal(head.node.inputs.length >= 2 && !head.node.inputs[2], true, 'the head Gemm has no bias');
  assert.equal(head.cost.bytes, 2 * (N * C + V * C + N * V));
  assert.equal(head.cost.flopsBf16, 2 * N * V * C);
  assert.equal(head.times, base.A, 'micro-batch nodes run A times per step');
  // A Gemm with a C input: output written and read once more.
  const withC = entries.find((e) => e.node.opType === 'Gemm' && e.node.inputs[2]);
  assert.ok(withC, 'no Gemm with a C input in the default bf16 graph');
  const io = [...withC.node.inputs, ...withC.node.outputs].reduce((s, t) => s + (t ? sizeOf(t) : 0), 0);
  assert.equal(withC.cost.bytes, io + 2 * sizeOf(withC.node.outputs[0]!));
  // Gather: reads what it picks (output) and the indices, writes the output.
  const gather = entries.find((e) => e.node.opType === 'Gather' && e.node.outputs[0]!.shape?.length === 3);
  assert.ok(gather, 'no embedding Gather');
  assert.equal(gather.cost.bytes, 2 * sizeOf(gather.node.outputs[0]!) + sizeOf(gather.node.inputs[1]!));
  // Reshape and Shape are not kernels in the model.
  assert.ok(!entries.some((e) => e.node.opType === 'Reshape' || e.node.opType === 'Shape'));
});

test('parts add up to the total; the optimizer body counts once per step', () => {
  const m = modelStep(base);
  const sum = zero();
  for (const c of m.byPart.values()) add(sum, c, 1);
  assert.deepEqual(sum, m.total);
  const step = [...m.nodes.values()].filter((e) => e.part === 'step (norm, AdamW, accumulation)');
  assert.ok(step.length > 0 && step.every((e) => e.times === 1));
  assert.equal(m.tokens, base.A * base.B * base.T);
  // The per-node entries reproduce the total.
  const fromNodes = zero();
  for (const e of m.nodes.values()) add(fromNodes, e.cost, e.times);
  assert.deepEqual(fromNodes, m.total);
});

test('bf16 storage moves fewer bytes than the same bf16 graph without it; fp32 more than the default bf16', () => {
  // T 64 (N = 128 rows per micro-batch): at N = 32 the lnFold variant's per-micro-batch [C,M] gradient work
  // (layerNorm.ts) outweighs what it saves on [N,C], and the default bf16 step moves more bytes than fp32.
  const big = { ...base, T: 64 };
  const dflt = modelStep(big);
  const noStorage = modelStep({ ...big, variants: {} });
  const fp32 = modelStep({ ...big, bf16: false });
  assert.ok(dflt.total.bytes < noStorage.total.bytes, `${dflt.total.bytes} vs ${noStorage.total.bytes}`);
  assert.ok(dflt.total.bytes < fp32.total.bytes);
  assert.equal(fp32.total.flopsBf16, 0);
  assert.ok(timeOf(dflt.total) < timeOf(noStorage.total));
});

function sizeOf(t: { shape: (number | string)[] | null; dtype: string }): number {
  const bytes: Record<string, number> = { float: 4, bfloat16: 2, float16: 2, int64: 8, int32: 4, bool: 1, uint8: 1, double: 8 };
  const dims: Record<string, number> = { B: 2, T: 16, N, M: N, Tq: 16, Tk: 16, K: 1, A: 2 };
  return t.shape!.reduce<number>((a, d) => a * (typeof d === 'number' ? d : dims[d]!), 1) * bytes[t.dtype]!;
}

test("ORT's fusions as in its optimized 124M graph: each MLP Add(bias) → Dropout counts as one BiasDropout (the residual Add stays), fewer Transposes", () => {
  const fusedM = modelStep(base);
  const plain = modelStep({ ...base, ortFusions: false });
  const byName = (m: ReturnType<typeof modelStep>, name: string) => m.nodes.get(name);
  // The default bf16 graph: the MLP ends in Add(c_proj bias, [C]) → Dropout → residual Add, once per layer.
  const drops = [...plain.nodes.values()].filter((e) => e.node.opType === 'Dropout' && [...plain.nodes.values()].some((a) => a.node.opType === 'Add' && a.node.outputs[0] === e.node.inputs[0] && a.node.inputs.some((t) => t?.shape?.length === 1)));
  assert.equal(drops.length, config.n_layer);
  for (const d of drops) {
    // x and the output fp32 [N,C], the bias fp32 [C], the mask bool [N,C].
    assert.equal(byName(fusedM, d.node.name)!.cost.bytes, 2 * 4 * N * C + 4 * C + N * C);
    // The residual Add after it is still a kernel.
    const resAdd = [...plain.nodes.values()].find((a) => a.node.opType === 'Add' && a.node.inputs.includes(d.node.outputs[0]!))!;
    assert.ok(byName(fusedM, resAdd.node.name), 'the residual Add is counted');
    assert.equal(byName(fusedM, d.node.name)!.cost.nodes, 1);
    const biasAdd = [...plain.nodes.values()].find((a) => a.node.outputs[0] === d.node.inputs[0])!;
    assert.equal(byName(fusedM, biasAdd.node.name), undefined, 'the bias Add is not a kernel once fused');
  }
  const transposes = (m: ReturnType<typeof modelStep>) => [...m.nodes.values()].filter((e) => e.node.opType === 'Transpose').length;
  // Per layer, the attention backward's [v | 1 1 0…] operand transposed for the dPd MatMul (its second operand) goes.
  // (Calibration: on the graph before the FusedMatMul backward, the rules removed 3 of 14 Transposes per layer and
  // micro-batch, 168 → 132, as many as ORT's optimized GPT-2 124M graph had.)
  assert.equal(transposes(plain) - transposes(fusedM), config.n_layer);
  assert.ok(fusedM.total.bytes < plain.total.bytes && fusedM.total.nodes < plain.total.nodes);
});
