// The CUDA kernel guard (engine/cudaKernels.ts): every graph the engine and the inference code build — for the
// tiny model and GPT-2 124M, as they are emitted for a CUDA session — has a CUDA kernel for each node (op,
// opset-21 version, dtypes) and no shape computation that ORT would put on the CPU in the main graph; and the
// guard bites: a bfloat16 Log, a bfloat16 ReduceMax in a Loop body, an op missing from the table, a dtype
// clash, and an unwrapped graph's main-graph shape arithmetic are reported with the node's name.
// Graph building only (no sessions): the whole file runs in a few seconds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { CUDA_KERNELS, CUDA_TABLE_OPSET, cpuPreferredMainNodes, cudaUnsupportedNodes, type CudaUnsupportedNode } from '../../native-runner/engine/cudaKernels';
import { buildEvalLoopGraph, downloadGraph } from '../../native-runner/engine/deviceState';
import { modelVariantsFromEnv } from '../../native-runner/engine/trainingEngine';
import { dropoutRates, paramSpecs } from '../../native-runner/engine/gpt2Graph';
import { Graph, OPSET, type Tensor } from '../../native-runner/engine/graph/graph';
import { decodeModel } from '../../native-runner/engine/graph/onnxProto';
import { buildEvalGraph, buildForwardGraph, buildGradsGraph, buildTrainGraph, type OptimizerHyper } from '../../native-runner/engine/trainGraph';
import { buildGenerateGraph, buildInferenceGraph, buildScoreGraph } from '../../native-runner/infer/generationGraph';
import { makeConfig, readConfig } from '../../native-runner/model/config';
import type { GPT2Config, ParamSet } from '../../native-runner/model/types';

const root = path.resolve(__dirname, '../..');
const tiny = readConfig(path.join(root, 'samples/tiny-gpt2-chat'));
// GPT-2 124M as the benchmark trains it: the three chat tokens added, dropout 0.1.
const gpt2 = makeConfig({ n_layer: 12, n_head: 12, n_embd: 768, n_positions: 1024, vocab_size: 50260, embd_pdrop: 0.1, attn_pdrop: 0.1, resid_pdrop: 0.1 });
const HYPER: OptimizerHyper = { weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1 };

/** Zero parameters of the right shapes; all views of one buffer (the graphs only keep references). */
function zeroParams(config: GPT2Config): ParamSet {
  const specs = paramSpecs(config);
  const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);
  const buf = new Float32Array(Math.max(...specs.map((s) => numel(s.shape))));
  return new Map(specs.map((s) => [s.name, { shape: s.shape, data: buf.subarray(0, numel(s.shape)) }]));
}

function describe(found: CudaUnsupportedNode[]): string {
  return found
    .slice(0, 8)
    .map((f) => `${f.node} (${f.op}): ${f.reason}`)
    .join('\n');
}

function assertClean(name: string, found: CudaUnsupportedNode[]): void {
  assert.equal(found.length, 0, `${name}: ${found.length} node(s) without a CUDA kernel:\n${describe(found)}`);
}

test('the kernel table is written for the opset the graphs are emitted at', () => {
  assert.equal(OPSET, CUDA_TABLE_OPSET);
});

for (const [tag, config] of [
  ['tiny', tiny],
  ['GPT-2 124M', gpt2],
] as const) {
  test(`${tag}: training Loop graphs (fp32/bf16 × one/several micro-batches × flat/per-tensor state) run on CUDA`, () => {
    const dropout = dropoutRates(config, tag === 'tiny' ? 0.1 : null); // dropout on: its Dropout nodes are part of the check
    for (const bf16 of [false, true]) {
      for (const accumulate of [false, true]) {
        for (const flatState of [false, true]) {
          // TrainingEngine emits the train graph as is (its main graph is the step Loop).
          for (const evalInRun of [false, true]) {
            const opts = { dropout, bf16, seed: 3, accumulate, flatState, evalInRun };
            assertClean(`train bf16=${bf16} accumulate=${accumulate} flatState=${flatState} evalInRun=${evalInRun}`, cudaUnsupportedNodes(buildTrainGraph(config, HYPER, opts)));
          }
        }
      }
    }
  });

  test(`${tag}: grads, eval, eval Loop and forward graphs run on CUDA as the engine emits them`, () => {
    const dropout = dropoutRates(config, null);
    for (const bf16 of [false, true]) {
      // TrainingEngine.session(): grads and eval wrapped in a single-iteration Loop, the eval Loop not.
      assertClean(`grads bf16=${bf16}`, cudaUnsupportedNodes(buildGradsGraph(config, { dropout, bf16, seed: 0 }), { singleIterationLoop: true }));
      for (const variants of [undefined, modelVariantsFromEnv({})]) {
        // Plain (SFT_EVAL_VARIANTS=0) and as the engine builds them by default (the training forward's variants).
        const v = variants ? 'variants' : 'plain';
        assertClean(`eval bf16=${bf16} ${v}`, cudaUnsupportedNodes(buildEvalGraph(config, { bf16, variants }), { singleIterationLoop: true }));
        assertClean(`eval Loop bf16=${bf16} ${v}`, cudaUnsupportedNodes(buildEvalLoopGraph(config, { bf16, variants })));
      }
      // createForward(): wrapped.
      for (const output of ['logits', 'logprobs'] as const) {
        assertClean(`forward ${output} bf16=${bf16}`, cudaUnsupportedNodes(buildForwardGraph(config, output, { bf16 }), { singleIterationLoop: true }));
      }
    }
    // CudaGpuBufferIo.download: one Identity per parameter, not wrapped.
    assertClean('download', cudaUnsupportedNodes(downloadGraph(paramSpecs(config).map((s) => s.shape))));
  });

  test(`${tag}: with the bf16Attention variant (SFT_BF16_ATTENTION=1) the train and grads graphs run on CUDA, bf16 Add/Softmax/Dropout/Where/Mul included`, () => {
    const dropout = dropoutRates(config, tag === 'tiny' ? 0.1 : null);
    const variants = { bf16Attention: true };
    for (const accumulate of [false, true]) {
      assertClean(`train bf16Attention accumulate=${accumulate}`, cudaUnsupportedNodes(buildTrainGraph(config, HYPER, { dropout, bf16: true, seed: 3, accumulate, flatState: true, variants })));
    }
    const grads = buildGradsGraph(config, { dropout, bf16: true, seed: 0, variants });
    assertClean('grads bf16Attention', cudaUnsupportedNodes(grads, { singleIterationLoop: true }));
    // The check saw the variant: the attention's elementwise ops really are bfloat16 in this graph.
    const bf16Ops = new Set(grads.nodes.filter((n) => n.inputs.some((t) => t?.dtype === 'bfloat16') && n.outputs.some((t) => t.dtype === 'bfloat16')).map((n) => n.opType));
    for (const op of ['Add', 'Softmax', 'Dropout', 'Where', 'Mul', 'MatMul']) assert.ok(bf16Ops.has(op), `no bfloat16 ${op} in the variant's grads graph`);
  });

  test(`${tag}: with the bf16Mlp variant (SFT_BF16_MLP=1, with and without bf16Attention) the train and grads graphs run on CUDA, bf16 Gemm-with-bias, Gelu and the Gelu derivative's table lookup (Max/Min/Mul, Cast to int32, Gather) included`, () => {
    const dropout = dropoutRates(config, tag === 'tiny' ? 0.1 : null);
    for (const variants of [{ bf16Mlp: true }, { bf16Mlp: true, bf16Attention: true }]) {
      const name = Object.keys(variants).join('+');
      for (const accumulate of [false, true]) {
        assertClean(`train ${name} accumulate=${accumulate}`, cudaUnsupportedNodes(buildTrainGraph(config, HYPER, { dropout, bf16: true, seed: 3, accumulate, flatState: true, variants })));
      }
      const grads = buildGradsGraph(config, { dropout, bf16: true, seed: 0, variants });
      assertClean(`grads ${name}`, cudaUnsupportedNodes(grads, { singleIterationLoop: true }));
      // The check saw the variant: a bfloat16 Gelu and Gemms with a bfloat16 bias (C input) per layer.
      assert.equal(grads.nodes.filter((n) => n.opType === 'Gelu' && n.inputs[0]!.dtype === 'bfloat16').length, config.n_layer);
      assert.equal(grads.nodes.filter((n) => n.opType === 'Gemm' && n.inputs[2]?.dtype === 'bfloat16').length, config.n_layer);
      const bf16Ops = new Set(grads.nodes.filter((n) => n.outputs.some((t) => t.dtype === 'bfloat16') && n.inputs.some((t) => t?.dtype === 'bfloat16')).map((n) => n.opType));
      for (const op of ['Max', 'Min', 'Mul', 'Gather', 'ReduceSum']) assert.ok(bf16Ops.has(op), `no bfloat16 ${op} (the MLP's Gelu derivative, 'table' by default) in the variant's grads graph`);
    }
  });

  test(`${tag}: generation (KV cache) and scoring graphs run on CUDA as EngineLM emits them`, () => {
    const params = zeroParams(config);
    // buildInferenceGraph(…, 'cuda') wraps: the emitted main graph holds only the wrapper's Loop and Squeezes
    // (checked on the tiny model: the emitted bytes embed the weights, 0.5 GB for GPT-2 124M).
    if (config === tiny) {
      for (const kind of ['generate', 'score'] as const) {
        const main = decodeModel(buildInferenceGraph(config, params, kind, 'cuda')).graph!;
        assert.deepEqual([...new Set(main.node.map((n) => n.opType))].sort(), ['Loop', 'Squeeze'], `${kind}: main graph of the CUDA model`);
      }
    }
    assertClean('generate', cudaUnsupportedNodes(buildGenerateGraph(config, params), { singleIterationLoop: true }));
    assertClean('score', cudaUnsupportedNodes(buildScoreGraph(config, params), { singleIterationLoop: true }));
  });
}

test('the same graphs unwrapped: the shape arithmetic in the main graph is reported, node by node', () => {
  // Why the engine wraps: Shape(ids) is read back on the host, and the Slice/Squeeze/Concat computing the
  // attention ranges and reshape targets from it would be placed on the CPU provider (the real 1.29 provider,
  // loaded with stand-in CUDA libraries, refuses this model and forces the same op kinds onto the CPU).
  const found = cudaUnsupportedNodes(buildForwardGraph(tiny, 'logits'));
  assert.ok(found.length > 0);
  assert.deepEqual([...new Set(found.map((f) => f.op))].sort(), ['Concat', 'Slice', 'Squeeze']);
  for (const f of found) assert.match(f.reason, /CPU provider .*singleIterationLoop/);
  // Range reads its inputs from host memory itself, so it stays on CUDA; Shape runs on CUDA (host output).
  assert.ok(!found.some((f) => f.op === 'Range' || f.op === 'Shape'));
  const gen = cudaUnsupportedNodes(buildGenerateGraph(tiny, zeroParams(tiny)));
  assert.ok(gen.some((f) => f.op === 'Concat'), describe(gen));
});

/** x float [B,T] → Cast bf16 → op → Cast float → y; returns the op node's name. */
function bf16Unary(op: string, attrs: Record<string, number> = {}): { g: Graph; node: string } {
  const g = new Graph('neg');
  const x = g.input('x', 'float', ['B', 'T']);
  const y = g.op(op, [g.cast(x, 'bfloat16')], attrs);
  g.output(g.cast(y, 'float'), 'y');
  return { g, node: g.nodes.find((n) => n.opType === op)!.name };
}

test('a bfloat16 Log (CUDA Log: double, float, float16 only) is reported with its node name', () => {
  const { g, node } = bf16Unary('Log');
  const found = cudaUnsupportedNodes(g, { singleIterationLoop: true });
  assert.equal(found.length, 1, describe(found));
  assert.equal(found[0]!.node, node);
  assert.equal(found[0]!.op, 'Log');
  assert.match(found[0]!.reason, /is bfloat16; the CUDA Log-13 kernel supports T ∈ \{double, float, float16\}/);
});

test('bfloat16 Softmax, LayerNormalization, Gemm, MatMul and Gelu are not reported (CUDA has those kernels)', () => {
  for (const op of ['Softmax', 'Tanh', 'Exp', 'Sqrt']) assert.deepEqual(cudaUnsupportedNodes(bf16Unary(op).g, { singleIterationLoop: true }), [], op);
  const g = new Graph('bf16_ok');
  const x = g.cast(g.input('x', 'float', ['N', 8]), 'bfloat16');
  const w = g.cast(g.input('w', 'float', [8, 8]), 'bfloat16');
  const ln = g.layerNorm(x, g.cast(g.input('s', 'float', [8]), 'bfloat16'), g.cast(g.input('b', 'float', [8]), 'bfloat16'), 1e-5);
  const y = g.op('Gelu', [g.matmul(g.gemm(ln, w, null), w)], { approximate: 'tanh' });
  g.output(g.cast(y, 'float'), 'y');
  assert.deepEqual(cudaUnsupportedNodes(g, { singleIterationLoop: true }), []);
});

test('a bfloat16 ReduceMax inside a Loop body is found (subgraphs are walked) and says where it is', () => {
  const g = new Graph('outer');
  const trip = g.input('trip', 'int64', []);
  const cond = g.input('cond', 'bool', []);
  const x = g.input('x', 'float', [4, 16]);
  const body = g.subgraph('body');
  body.freshInput('i', 'int64', []);
  body.freshInput('c', 'bool', []);
  const acc = body.freshInput('acc', 'float', [4, 1]);
  const mx = body.reduce('ReduceMax', body.cast(x, 'bfloat16'), [-1], true);
  body.output(body.constant({ dtype: 'bool', shape: [], data: Uint8Array.of(1) }, 'true'));
  body.output(body.add(acc, body.cast(mx, 'float')));
  const [out] = g.node('Loop', [trip, cond, g.tensorConst('float', [4, 1], [0, 0, 0, 0])], { body }, [{ dtype: 'float', shape: [4, 1] }]);
  g.output(out!, 'y');
  const found = cudaUnsupportedNodes(g);
  assert.equal(found.length, 1, describe(found));
  assert.equal(found[0]!.node, body.nodes.find((n) => n.opType === 'ReduceMax')!.name);
  assert.match(found[0]!.reason, /bfloat16.*ReduceMax-20.*\(in Loop body body\)/);
  // The same reduction in fp32 is fine.
  const ok = new Graph('outer_ok');
  const okBody = ok.subgraph('body');
  okBody.freshInput('i', 'int64', []);
  okBody.freshInput('c', 'bool', []);
  okBody.output(okBody.constant({ dtype: 'bool', shape: [], data: Uint8Array.of(1) }, 'true'));
  okBody.output(okBody.reduce('ReduceMax', ok.input('x', 'float', [4, 16]), [-1], true));
  ok.output(ok.node('Loop', [ok.input('trip', 'int64', []), ok.input('cond', 'bool', [])], { body: okBody }, [{ dtype: 'float', shape: null }])[0]!, 'y');
  assert.deepEqual(cudaUnsupportedNodes(ok), []);
});

test('an op missing from the table, a non-ONNX domain and a dtype clash are reported', () => {
  assert.equal(CUDA_KERNELS.Einsum, undefined);
  const g = new Graph('unknown');
  const a = g.input('a', 'float', [2, 3]);
  const e = g.op('Einsum', [a, a], { equation: 'ij,ij->i' }, { dtype: 'float', shape: [2] });
  const f = g.node('FastGelu', [a], {}, [{ dtype: 'float', shape: null }], 'com.microsoft')[0]!;
  const clash = g.op('Add', [a, g.input('k', 'int64', [2, 3])], {}, { dtype: 'float', shape: [2, 3] });
  for (const t of [e, f, clash]) g.output(t);
  const found = cudaUnsupportedNodes(g, { singleIterationLoop: true });
  const byOp = new Map(found.map((x) => [x.op, x]));
  assert.equal(found.length, 3, describe(found));
  assert.match(byOp.get('Einsum')!.reason, /not in the CUDA kernel table/);
  assert.equal(byOp.get('Einsum')!.node, g.nodes.find((n) => n.opType === 'Einsum')!.name);
  assert.match(byOp.get('FastGelu')!.reason, /com\.microsoft\.FastGelu is not in the CUDA kernel table/);
  assert.match(byOp.get('Add')!.reason, /input 1 \(k\) is int64 but input 0 \(a\) is float: type constraint T/);
});

test('CPU placement follows ORT: small initializers and graph inputs join host tensors; host-input kernels, fp16 and GPU tensors stop it', () => {
  const g = new Graph('placement');
  const x = g.input('x', 'float', ['B', 'T']);
  const h = g.input('h', 'float16', ['B', 'T']);
  const s = g.shapeOf(x); // host output
  const b = g.gather(s, g.scalar(0, 'int64')); // host + small initializer → CPU
  const target = g.concat([g.unsqueeze(b, [0]), g.ints([-1])], 0); // Unsqueeze: axes is a host input, data is host → CPU; Concat → CPU
  const r = g.reshape(x, target, null); // data on the GPU → stays on CUDA
  const big = g.tensorConst('float', [101], new Array(101).fill(0)); // 101 elements: not "small"
  const withBig = g.add(g.cast(g.shapeOf(big), 'float'), big); // Cast: host → CPU; Add: big initializer → CUDA
  const half = g.add(g.cast(g.shapeOf(h), 'float16'), h); // Cast → CPU; Add: fp16 input → CUDA
  for (const t of [r, withBig, half]) g.output(t);
  const onCpu = (nodes: { node: { name: string } }[]) => nodes.map((p) => p.node.name);
  const nameOf = (t: Tensor) => g.nodes.find((n) => n.outputs.includes(t))!.name;
  const placed = onCpu(cpuPreferredMainNodes(g));
  assert.deepEqual(placed.sort(), [nameOf(b), nameOf(target), g.nodes.find((n) => n.opType === 'Unsqueeze')!.name, ...g.nodes.filter((n) => n.opType === 'Cast').map((n) => n.name)].sort());
  assert.deepEqual(cudaUnsupportedNodes(g).map((f) => f.node).sort(), placed.sort());
  // The same nodes inside the single-iteration wrapper are allowed.
  assert.deepEqual(cudaUnsupportedNodes(g, { singleIterationLoop: true }), []);
});
