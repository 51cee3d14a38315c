/**
 * Inference graphs of GPT-2 assembled from the engine's block builders (engine/gpt2Graph.ts: embed,
 * attentionBias, attentionQKV, attentionCore, attentionOutput, mlp, layerNorm, finalNorm, lmHeadLogits,
 * tokenNll — the same GPT-2 as training), eval mode (no dropout), with the weights embedded once as
 * initialisers (raw bytes; onnxruntime keeps them, nothing is copied per run):
 *
 *  'generate': one graph for prefill and decode with a key/value cache.
 *     inputs  input_ids int32 [1,S], past_key_l / past_value_l float [1,H,P,D] for every layer l (P = 0 for
 *             prefill); positions P..P+S−1 and the causal bias (queries offset by P) are derived in the graph
 *     outputs logits float [1,V] (last position only), present_key_l / present_value_l float [1,H,P+S,D]
 *  'decode': multi-token decoding — an ONNX Loop carrying the cache that feeds the prompt (or the last token) and
 *     then chooses up to n_steps tokens in the graph (samplingGraph.ts), stopping after a stop id; the cache
 *     crosses host ⇄ device once per run instead of once per token (see buildDecodeGraph for inputs/outputs).
 *  'score': teacher-forced scoring of right-padded rows (MicroBatch semantics: segments 1 real, 0 padding).
 *     inputs  input_ids, positions, segments, targets int32 [B,T]
 *     outputs target_logprob float [B,T] (log-softmax at the target), lse float [B,T] (logsumexp of the
 *             logits), argmax int64 [B,T] (first maximum)
 *
 * Legend: B rows, S new tokens, P cached tokens, T row length, C n_embd, H n_head, D = C/H, V vocab, N = B·T
 * (in 'decode': N uniforms, K stop ids, n tokens made by the run).
 */
import { Graph, makeData, type Tensor } from '../engine/graph/graph';
import {
  attentionBias,
  attentionCore,
  attentionOutput,
  attentionQKV,
  embed,
  finalNorm,
  hiddenStates,
  layerNorm,
  lmHeadLogits,
  mlp,
  modelContext,
  tokenNll,
  trueConst,
  type WeightMap,
} from '../engine/gpt2Graph';
import { expectedParamShapes } from '../model/gpt2Params';
import type { GPT2Config, ParamSet } from '../model/types';
import { SftError } from '../util/errors';
import { chooseTokenInGraph, samplingInputs } from './samplingGraph';

export type InferenceGraphKind = 'generate' | 'score' | 'decode';

/** Every expected parameter as an initialiser of `g` (shapes checked), plus an untied lm_head when present. */
function weightConstants(g: Graph, config: GPT2Config, params: ParamSet): WeightMap {
  const w: WeightMap = new Map();
  const names = [...expectedParamShapes(config).entries()];
  if (params.has('lm_head.weight') && !names.some(([n]) => n === 'lm_head.weight')) names.push(['lm_head.weight', [config.vocab_size, config.n_embd]]);
  for (const [name, shape] of names) {
    const p = params.get(name);
    if (!p) throw new SftError(`missing parameter ${name}`, name);
    if (p.shape.join(',') !== shape.join(',')) throw new SftError(`parameter ${name} has shape [${p.shape}], the config needs [${shape}]`, name);
    w.set(name, g.constant({ dtype: 'float', shape: p.shape.slice(), data: p.data }, name));
  }
  return w;
}

/**
 * Builds the ONNX model bytes for one graph kind. On CUDA the graph is wrapped in a single-iteration Loop:
 * ORT places shape computations on the CPU provider, which CPU-fallback-disabled sessions refuse in a main
 * graph but allow inside subgraphs (see Graph.toModelBytes).
 */
export function buildInferenceGraph(config: GPT2Config, params: ParamSet, kind: InferenceGraphKind, device: 'cpu' | 'cuda' = 'cpu'): Uint8Array {
  if (kind === 'decode') return buildDecodeGraph(config, params).toModelBytes(); // its main graph is the decode Loop
  const graph = kind === 'generate' ? buildGenerateGraph(config, params) : buildScoreGraph(config, params);
  return graph.toModelBytes({ singleIterationLoop: device === 'cuda' });
}

/** The weights as initialisers, input_ids int32 [1,S] and past_key_l / past_value_l float [1,H,P,D] per layer. */
function cachedInputs(g: Graph, config: GPT2Config, params: ParamSet): { w: WeightMap; ids: Tensor; past: { k: Tensor; v: Tensor }[] } {
  const { n_layer: L, n_head: H, n_embd: C } = config;
  const D = C / H;
  const w = weightConstants(g, config, params);
  const ids = g.input('input_ids', 'int32', [1, 'S']);
  const past = Array.from({ length: L }, (_, l) => ({
    k: g.input(`past_key_${l}`, 'float', [1, H, 'P', D]),
    v: g.input(`past_value_${l}`, 'float', [1, H, 'P', D]),
  }));
  return { w, ids, past };
}

export function buildGenerateGraph(config: GPT2Config, params: ParamSet): Graph {
  const g = new Graph('gpt2_generate');
  const { w, ids, past } = cachedInputs(g, config, params);
  const { logits, present } = cachedForward(g, config, w, ids, past);
  present.forEach((p, l) => {
    g.output(p.k, `present_key_${l}`);
    g.output(p.v, `present_value_${l}`);
  });
  g.output(logits, 'logits'); // [1,V]
  return g;
}

/**
 * GPT-2 over `ids` [1,S] after a cache `past` ([1,H,P,D] per layer) in graph `g` (a main graph or a Loop body;
 * `w` may live in an enclosing graph): next-token logits [1,V] of the last position and the grown cache
 * [1,H,P+S,D] per layer. Positions P..P+S−1 and the causal bias (queries offset by P) come from the shapes.
 */
export function cachedForward(g: Graph, config: GPT2Config, w: WeightMap, ids: Tensor, past: { k: Tensor; v: Tensor }[]): { logits: Tensor; present: { k: Tensor; v: Tensor }[] } {
  const bt = g.shapeOf(ids); // (1, S)
  const c = modelContext(g, config, w, bt);
  // P (int64 scalar) from the cache's shape; positions P..P+S−1
  const pastLen = g.squeeze(g.op('Slice', [g.shapeOf(past[0]!.k), g.ints([2]), g.ints([3])], {}, { dtype: 'int64', shape: [1] }), [0]);
  const S = g.squeeze(g.op('Slice', [bt, g.ints([1]), g.ints([2])], {}, { dtype: 'int64', shape: [1] }), [0]);
  const positions = g.unsqueeze(g.op('Range', [pastLen, g.add(pastLen, S), g.scalar(1, 'int64')], {}, { dtype: 'int64', shape: ['S'] }), [0]); // [1,S]
  // one segment: causal attention over cache + new tokens, the queries being the last S keys
  const querySeg = g.op('ConstantOfShape', [bt], { value: { tensor: { dtype: 'int32', shape: [1], data: Int32Array.of(1) } } }, { dtype: 'int32', shape: [1, 'S'] });
  const keySeg = g.op('ConstantOfShape', [g.concat([g.ints([1]), g.unsqueeze(g.add(pastLen, S), [0])], 0)], { value: { tensor: { dtype: 'int32', shape: [1], data: Int32Array.of(1) } } }, { dtype: 'int32', shape: [1, 'P+S'] });
  const bias = attentionBias(g, querySeg, keySeg, pastLen); // [1,1,S,P+S]
  let x = embed(c, ids, positions); // [S,C]
  const present: { k: Tensor; v: Tensor }[] = [];
  for (let l = 0; l < config.n_layer; l++) {
    const p = `transformer.h.${l}.`;
    const { q, k, v } = attentionQKV(c, l, layerNorm(c, x, p + 'ln_1')); // [1,H,S,D]
    const kAll = g.concat([past[l]!.k, k], 2); // [1,H,P+S,D]
    const vAll = g.concat([past[l]!.v, v], 2);
    present.push({ k: kAll, v: vAll });
    x = g.add(x, attentionOutput(c, l, attentionCore(c, q, kAll, vAll, bias)));
    x = g.add(x, mlp(c, l, layerNorm(c, x, p + 'ln_2')));
  }
  const last = g.gather(x, g.constant({ dtype: 'int64', shape: [1], data: BigInt64Array.of(-1n) }, 'last'), 0); // [1,C]
  return { logits: lmHeadLogits(c, finalNorm(c, last)), present };
}

/**
 * The multi-token decode graph ('decode'): one run feeds `input_ids` after the cache, then generates up to
 * `n_steps` tokens inside an ONNX Loop that carries the key/value cache, the next input and the presence mask,
 * choosing each token in the graph (samplingGraph.ts) with `uniforms[i]` for the i-th token of the run.
 *   inputs   input_ids int32 [1,S] (the prompt, or the last token of the previous run), past_key_l /
 *            past_value_l float [1,H,P,D], presence bool [V] (ids already in the sequence, for the repetition
 *            penalty), uniforms double [N] (N ≥ n_steps), n_steps int64 [], stop_ids int64 [K] (K ≥ 1; pad with
 *            −1), do_sample bool [], temperature double [], top_k int64 [], top_p double [],
 *            repetition_penalty double []
 *   outputs  tokens int64 [n] (n ≤ n_steps: the Loop stops after a stop id, which is included),
 *            present_key_l / present_value_l float [1,H,P+S+n−1,D] (every token but the last one fed)
 * Iteration i feeds its input (S tokens for i = 0, then the token chosen by iteration i−1) and chooses token i.
 */
export function buildDecodeGraph(config: GPT2Config, params: ParamSet): Graph {
  const { n_layer: L, n_head: H, n_embd: C, vocab_size: V } = config;
  const D = C / H;
  const g = new Graph('gpt2_decode');
  const { w, ids, past } = cachedInputs(g, config, params);
  const presence = g.input('presence', 'bool', [V]);
  const uniforms = g.input('uniforms', 'double', ['N']);
  const nSteps = g.input('n_steps', 'int64', []);
  const stopIds = g.input('stop_ids', 'int64', ['K']);
  const sampling = samplingInputs(g);

  const body = g.subgraph('decode_step');
  const iter = body.freshInput('iter', 'int64', []);
  body.freshInput('cond_in', 'bool', []);
  const idsIn = body.freshInput('ids_in', 'int32', [1, 'S']);
  const pastIn = past.map((_, l) => ({
    k: body.freshInput(`past_key_in_${l}`, 'float', [1, H, 'P', D]),
    v: body.freshInput(`past_value_in_${l}`, 'float', [1, H, 'P', D]),
  }));
  const presenceIn = body.freshInput('presence_in', 'bool', [V]);
  const { logits, present } = cachedForward(body, config, w, idsIn, pastIn);
  const token = chooseTokenInGraph(body, body.reshape(logits, [V], [V]), presenceIn, body.gather(uniforms, iter, 0), sampling, V); // int64 []
  const isStop = body.op('Greater', [body.reduceSum(body.cast(body.equal(stopIds, token), 'int64'), null, false), body.scalar(0, 'int64')]);
  body.output(body.op('Not', [isStop])); // cond
  body.output(body.reshape(body.cast(token, 'int32'), [1, 1], [1, 1])); // next input
  for (const p of present) {
    body.output(p.k);
    body.output(p.v);
  }
  body.output(body.op('ScatterElements', [presenceIn, body.reshape(token, [1], [1]), body.constant(makeData('bool', [1], [1]), 'true_1')], { axis: 0 }, { dtype: 'bool', shape: [V] }));
  body.output(body.identity(token)); // scan output

  const outs = g.node(
    'Loop',
    [nSteps, trueConst(g), ids, ...past.flatMap((p) => [p.k, p.v]), presence],
    { body },
    [
      { dtype: 'int32', shape: [1, 'S'] },
      ...past.flatMap((_, l) => [
        { dtype: 'float' as const, shape: [1, H, 'T', D], name: `present_key_${l}` },
        { dtype: 'float' as const, shape: [1, H, 'T', D], name: `present_value_${l}` },
      ]),
      { dtype: 'bool', shape: [V] },
      { dtype: 'int64', shape: ['n'], name: 'tokens' },
    ],
  );
  g.output(outs[outs.length - 1]!);
  for (const t of outs.slice(1, 1 + 2 * L)) g.output(t);
  return g;
}

export function buildScoreGraph(config: GPT2Config, params: ParamSet): Graph {
  const g = new Graph('gpt2_score');
  const w = weightConstants(g, config, params);
  const ids = g.input('input_ids', 'int32', ['B', 'T']);
  const positions = g.input('positions', 'int32', ['B', 'T']);
  const segments = g.input('segments', 'int32', ['B', 'T']);
  const targets = g.input('targets', 'int32', ['B', 'T']);
  const bt = g.shapeOf(ids);
  const c = modelContext(g, config, w, bt);
  const logits = lmHeadLogits(c, hiddenStates(c, ids, positions, segments)); // [N,V]
  const { nll, lse } = tokenNll(g, logits, g.reshape(targets, [-1], ['N'])); // [N,1] each
  g.output(g.reshape(g.neg(nll), bt, ['B', 'T']), 'target_logprob');
  g.output(g.reshape(lse, bt, ['B', 'T']), 'lse');
  g.output(g.reshape(g.op('ArgMax', [logits], { axis: 1, keepdims: 0 }, { dtype: 'int64', shape: ['N'] }), bt, ['B', 'T']), 'argmax');
  return g;
}
