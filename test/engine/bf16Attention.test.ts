// The bf16Attention variant (ModelVariants.bf16Attention, SFT_BF16_ATTENTION=1; engine/attention.ts) on the
// whole tiny model, under 'emulate' on the CPU, next to the default bf16 'emulate' graph and against fp32:
// - structure: the emulated graph keeps bf16 only inside float→bfloat16→float round trips, one per node of
//   the real bf16 graph that rounds to bfloat16 (Cast to bf16, and every MatMul/Gemm/Add/Softmax/Dropout/Mul
//   with a bfloat16 output); the real graph casts the shared attention bias once, not per layer;
// - the golden batch and 20 AdamW steps: test/engine/bf16VariantChecks.ts (shared with bf16Mlp.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { readConfig } from '../../native-runner/model/config';
import { buildGradsGraph } from '../../native-runner/engine/trainGraph';
import { decodeModel, type NodeProtoObj } from '../../native-runner/engine/graph/onnxProto';
import { allNodes, BF16, castTo, FLOAT } from './helpers';
import { registerVariantAccuracyTests } from './bf16VariantChecks';

const config = readConfig(path.join(path.resolve(__dirname, '../..'), 'samples/tiny-gpt2-chat'));

// --- structure ------------------------------------------------------------------------------------------

/** Ops that only move or select values: a bfloat16 output of one of them is no new rounding. */
const NO_ROUNDING = new Set(['Transpose', 'Reshape', 'Slice', 'Concat', 'Expand', 'Where', 'Identity', 'Split', 'Squeeze', 'Unsqueeze']);

test("bf16Attention 'emulate' graph: one bf16 round trip per rounding node of the real bf16 graph; the bias cast once", () => {
  const opts = { dropout: { embd: 0.1, attn: 0.1, resid: 0.1 }, seed: 0, variants: { bf16Attention: true } };
  const emu = allNodes(decodeModel(buildGradsGraph(config, { ...opts, bf16: 'emulate' }).toModelBytes()).graph);
  const toBf16 = emu.filter((nd) => nd.opType === 'Cast' && castTo(nd) === BF16);
  const consumers = new Map<string, NodeProtoObj[]>();
  for (const nd of emu) for (const i of nd.input ?? []) consumers.set(i, [...(consumers.get(i) ?? []), nd]);
  for (const c of toBf16) {
    const users = consumers.get(c.output![0]!) ?? [];
    assert.ok(users.length >= 1 && users.every((nd) => nd.opType === 'Cast' && castTo(nd) === FLOAT), `${c.name}: bfloat16 value used by ${users.map((nd) => nd.opType)}`);
  }
  const real = buildGradsGraph(config, { ...opts, bf16: true }).nodes.filter((nd) => !nd.virtual);
  const rounding = real.filter((nd) => nd.outputs.some((t) => t.dtype === 'bfloat16') && !NO_ROUNDING.has(nd.opType) && !(nd.opType === 'Cast' && nd.inputs[0]!.dtype === 'bfloat16'));
  const byOp = (ns: { opType: string }[]) => [...new Set(ns.map((n) => n.opType))].sort();
  assert.deepEqual(byOp(rounding), ['Add', 'Cast', 'Dropout', 'Gemm', 'MatMul', 'Mul', 'Softmax']);
  assert.equal(toBf16.length, rounding.length, `'emulate' rounds ${toBf16.length} times, the real graph ${rounding.length}`);
  // Per layer one bf16 bias Add, all reading one Cast of the shared bias.
  const adds = real.filter((nd) => nd.opType === 'Add' && nd.outputs[0]!.dtype === 'bfloat16');
  assert.equal(adds.length, config.n_layer);
  assert.equal(new Set(adds.map((nd) => nd.inputs[1])).size, 1);
  // Without the variant the same graph has no bfloat16 Softmax.
  const dflt = buildGradsGraph(config, { ...opts, variants: {}, bf16: true }).nodes;
  assert.ok(!dflt.some((nd) => nd.opType === 'Softmax' && nd.outputs[0]!.dtype === 'bfloat16'));
  assert.ok(real.some((nd) => nd.opType === 'Softmax' && nd.outputs[0]!.dtype === 'bfloat16'));
});

// --- the golden batch and 20 steps (shared with bf16Mlp.test.ts) ---------------------------------------

registerVariantAccuracyTests('bf16Attention', 'SFT_BF16_ATTENTION');
