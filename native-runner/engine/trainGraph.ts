/**
 * The ONNX graphs the engine runs, built from gpt2Graph + autodiff:
 *
 * - train: an ONNX Loop over K optimizer steps (K = the run's step count, symbolic) carrying every
 *   parameter p, AdamW moment m and v. Inputs (legend K steps, A micro-batches per step, B rows, T length —
 *   each micro-batch padded to the run's max B and T, its true size in `mb_dims`):
 *     ids, targets, positions, segments int32 [K,A,B,T]; weights float [K,A,B,T]; mb_dims int64 [K,A,2];
 *     n_micro int64 [K] (accumulating variant only); hyper float [K,3] = (lr/(1−β1^t), √(1−β2^t), 1−lr·wd);
 *     p:<name>, m:<name>, v:<name> float (parameter shapes); trip int64 [], cond bool [].
 *   Outputs: p_out:/m_out:/v_out:<name>, loss [K], grad_norm [K] (pre-clip), tokens [K].
 *   Per step: N = Σ weights; every micro-batch (sliced back to its true [B,T]) adds the gradient of
 *   Σ w·NLL / N (HF Trainer's num_items_in_batch normalisation; loss 0 and zero gradients when N = 0); then
 *   clip_grad_norm_ (norm of per-tensor L2 norms, coef = min(1, max/(norm+1e-6))) and torch AdamW
 *   (p ← p·(1−lr·wd) for decayed params; m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
 *   p ← p − stepSize · m / (√v / √(1−β2^t) + eps), stepSize = lr/(1−β1^t)), with the scalars folded (see
 *   below). With one micro-batch per step the inner Loop is omitted. With several, the inner (micro-batch) Loop
 *   carries one fp32 accumulator per gradient, except where a custom rule returns a gradient deferred
 *   (graph.ts DeferredGrad: linear in raw tensors with parameter-only coefficients, e.g. the folded LayerNorm's
 *   parameters): then it carries the raw tensors' sums and the gradient is finished once per step after the
 *   Loop; and its nodes that read only parameters (weight casts, folded weights) are moved into the step body
 *   before the Loop (Graph.hoistInvariantsFrom; GraphOptions.hoistInvariants).
 * - grads: one micro-batch → nll_sum, tokens and grad:<name> of inv_n·Σ w·NLL (no update).
 * - eval: one micro-batch → nll_sum, tokens, nll [B,T] (unweighted per position), lse [B,T].
 * - forward: ids/positions/segments → logits [B,T,V] or log-probabilities [B,T,V].
 */
import type { GPT2Config } from '../model/types';
import { Graph, makeData, type DeferredGrad, type Tensor } from './graph/graph';
import { gradients, gradientsDeferred } from './graph/autodiff';
import { lmHeadNll } from './crossEntropy';
import { hiddenStates, lmHeadLogits, modelContext, paramSpecs, tokenNll, trueConst, usesWeightDecay, type Bf16Mode, type DropoutRates, type ModelContext, type ModelVariants, type WeightMap } from './gpt2Graph';

export interface OptimizerHyper {
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** ≤ 0 or Infinity: no clipping (the norm is still reported). */
  maxGradNorm: number;
}

export interface GraphOptions {
  dropout: DropoutRates;
  bf16: Bf16Mode;
  seed: number;
  /**
   * Train graph only: carry the parameters and moments through the Loop as one flat vector per optimizer
   * group (decayed / not decayed) and run AdamW and the gradient norm on those vectors — ~20 nodes instead
   * of ~13 per tensor (3,916 → 2,100 nodes per step for GPT-2 124M). The per-tensor inputs/outputs are
   * unchanged; the concatenation and split happen once per run, outside the Loop.
   */
  flatState?: boolean;
  /**
   * Train graph, per-tensor state: the optimizer group without weight decay (the 98 biases and LayerNorm
   * parameters of GPT-2 124M, ~0.1M floats) updated as one flat vector: its gradient norm, AdamW and moments as
   * ~16 kernels per step instead of ~14 per tensor. The moments of that group are carried flat through the Loop
   * (concatenated once per run), the parameters per tensor (split after the update). Opt-in:
   * SFT_FLAT_NO_DECAY=1. Same arithmetic per element; only the gradient norm's summation order changes.
   */
  flatNoDecay?: boolean;
  /**
   * Train and grads graphs: the lm_head Gemm and the token NLL as one region whose backward never forms the
   * [N, V] logits gradient (crossEntropy.ts lmHeadNll). Default on; off = lm_head Gemm then tokenNll (same
   * values; kept for ablations: SFT_FUSED_LM_HEAD=0).
   */
  fusedLmHead?: boolean;
  /** Alternative formulations for ablations (gpt2Graph.ts ModelVariants); train and grads graphs. */
  variants?: ModelVariants;
  /**
   * Train graph with accumulation: the micro-batch body's loop-invariant nodes (weight casts to bf16, the bias
   * rows and scaled q columns of the projections, the lm head's bf16 wte …) run once per optimizer step, in the
   * step body, instead of once per micro-batch (Graph.hoistInvariantsFrom; same values). Default on;
   * SFT_HOIST_INVARIANTS=0 off, for ablations.
   */
  hoistInvariants?: boolean;
  /**
   * Train graph: evaluation inside the step Loop, so that an eval step does not end a run (on CUDA each run
   * boundary moves the whole state between host and device). Extra inputs: eval_ids, eval_targets,
   * eval_positions, eval_segments int32 [E,EB,ET], eval_weights float [E,EB,ET], eval_dims int64 [E,2], eval_trip
   * int64 [] (= E) — the eval set, as buildEvalLoopGraph takes it — and eval_at bool [K]. After step k's update,
   * when eval_at[k], an If runs the eval Loop (evalLoop, the eval graphs' forward and variants) on the updated
   * parameters. Extra outputs: eval_nll_sum, eval_tokens [K,E] (per eval micro-batch; zeros for steps without).
   */
  evalInRun?: boolean;
  /** With evalInRun: the eval forward's variants (the engine passes its eval graphs' choice, SFT_EVAL_VARIANTS); default `variants`. */
  evalVariants?: ModelVariants;
}

export const MB_FIELDS = ['ids', 'targets', 'positions', 'segments'] as const;

export interface MbTensors {
  ids: Tensor;
  targets: Tensor;
  weights: Tensor;
  positions: Tensor;
  segments: Tensor;
}

/** Forward of one micro-batch: Σ w·NLL, Σ w, per-position nll/lse [N,1]. `fusedHead`: see GraphOptions.fusedLmHead. */
function microBatchLoss(c: ModelContext, mb: MbTensors, fusedHead: boolean): { nllSum: Tensor; tokens: Tensor; nll: Tensor; lse: Tensor } {
  const g = c.g;
  const h = hiddenStates(c, mb.ids, mb.positions, mb.segments);
  const targets = g.reshape(mb.targets, [-1], ['N']);
  const w = g.reshape(mb.weights, [-1, 1], ['N', 1]);
  const { nll, lse } = fusedHead ? lmHeadNll(c, h, targets) : tokenNll(g, lmHeadLogits(c, h), targets);
  const nllSum = g.reduceSum(g.mul(nll, w), null, false);
  const tokens = g.reduceSum(w, null, false);
  return { nllSum, tokens, nll, lse };
}

export function paramInputs(g: Graph, config: GPT2Config, prefix: string): WeightMap {
  const w: WeightMap = new Map();
  for (const s of paramSpecs(config)) w.set(s.name, g.input(prefix + s.name, 'float', s.shape));
  return w;
}

/** The micro-batch inputs `<prefix>ids` … stacked as [...lead, rows, len] (dims named `dims`). */
export function mbInputs(g: Graph, lead: (string | number)[], prefix = '', dims: [string, string] = ['B', 'T']): MbTensors {
  const shape = [...lead, ...dims];
  return {
    ids: g.input(prefix + 'ids', 'int32', shape),
    targets: g.input(prefix + 'targets', 'int32', shape),
    weights: g.input(prefix + 'weights', 'float', shape),
    positions: g.input(prefix + 'positions', 'int32', shape),
    segments: g.input(prefix + 'segments', 'int32', shape),
  };
}

/**
 * The eval Loop as a node of `g`: micro-batch e of `stacked` [E,B,T] (true size mb_dims [E,2]) scored with the
 * weights `w` for e < trip → nll_sum [E], tokens [E]. Its nodes that read only the weights (the bf16 casts, the
 * folded LayerNorm weights) run once, in `g` (Graph.hoistInvariantsFrom). Used by deviceState.buildEvalLoopGraph and by the
 * training graph's in-run evaluation (GraphOptions.evalInRun).
 */
export function evalLoop(
  g: Graph,
  config: GPT2Config,
  w: WeightMap,
  stacked: MbTensors,
  mbDims: Tensor,
  trip: Tensor,
  opts: { bf16?: Bf16Mode; variants?: ModelVariants },
  out: { names?: [string, string]; cond?: Tensor } = {},
): { nllSum: Tensor; tokens: Tensor } {
  const { names } = out;
  const body = g.subgraph('eval_step');
  const iter = body.freshInput('iter', 'int64', []);
  body.freshInput('cond_in', 'bool', []);
  const mb = pickMicroBatch(body, stacked, iter, body.gather(mbDims, iter)); // dims [2] = (rows, len)
  const c = modelContext(body, config, w, body.shapeOf(mb.ids), { bf16: opts.bf16, variants: opts.variants });
  const logits = lmHeadLogits(c, hiddenStates(c, mb.ids, mb.positions, mb.segments)); // [N,V]
  const { nll } = tokenNll(body, logits, body.reshape(mb.targets, [-1], ['N']));
  const wN = body.reshape(mb.weights, [-1, 1], ['N', 1]);
  body.output(trueConst(body));
  body.output(body.reduceSum(body.mul(nll, wN), null, false));
  body.output(body.reduceSum(wN, null, false));
  // The weight casts (bf16) read only parameters: once per run instead of once per micro-batch (Graph.hoistInvariantsFrom).
  g.hoistInvariantsFrom(body);
  const [nllSum, tokens] = g.node('Loop', [trip, out.cond ?? trueConst(g)], { body }, [
    { dtype: 'float', shape: ['E'], ...(names ? { name: names[0] } : {}) },
    { dtype: 'float', shape: ['E'], ...(names ? { name: names[1] } : {}) },
  ]);
  return { nllSum: nllSum!, tokens: tokens! };
}

/** Picks micro-batch `idx` of stacked [A,B,T] tensors and slices it to dims [2] = (rows, len). */
export function pickMicroBatch(g: Graph, stacked: MbTensors, idx: Tensor, dims: Tensor): MbTensors {
  const pick = (t: Tensor) => g.op('Slice', [g.gather(t, idx), g.ints([0, 0]), dims, g.ints([0, 1])], {}, { dtype: t.dtype, shape: ['B', 'T'] });
  return { ids: pick(stacked.ids), targets: pick(stacked.targets), weights: pick(stacked.weights), positions: pick(stacked.positions), segments: pick(stacked.segments) };
}

function gradsOf(g: Graph, loss: Tensor, seed: Tensor, w: WeightMap, names: string[]): Tensor[] {
  const grads = gradients(g, [loss], [seed], names.map((n) => w.get(n)!));
  return grads.map((gt, i) => gt ?? g.zerosLike(w.get(names[i]!)!));
}

/**
 * The flat optimizer's parameter groups: the weight-decayed tensors (in paramSpecs order), then the rest
 * (biases, LayerNorm); a group that would be empty is left out. `offsets[i]`: where tensor i starts in the
 * group's flat vector of `total` floats.
 */
export interface FlatGroup {
  decay: boolean;
  names: string[];
  shapes: number[][];
  sizes: number[];
  offsets: number[];
  total: number;
}

export function flatGroups(config: GPT2Config): FlatGroup[] {
  const specs = paramSpecs(config);
  const groups: FlatGroup[] = [];
  for (const decay of [true, false]) {
    const members = specs.filter((s) => usesWeightDecay(s.name) === decay);
    if (members.length === 0) continue;
    const sizes = members.map((s) => s.shape.reduce((a, b) => a * b, 1));
    const offsets: number[] = [];
    let total = 0;
    for (const n of sizes) {
      offsets.push(total);
      total += n;
    }
    groups.push({ decay, names: members.map((s) => s.name), shapes: members.map((s) => s.shape), sizes, offsets, total });
  }
  return groups;
}

/** The group's tensors (taken from `get`) flattened and concatenated into one [total] vector. */
function flatten(g: Graph, group: FlatGroup, get: (name: string) => Tensor): Tensor {
  const parts = group.names.map((n, i) => g.reshape(get(n), [-1], [group.sizes[i]!]));
  return parts.length === 1 ? parts[0]! : g.concat(parts, 0);
}

/** The inverse of flatten: [total] → the group's tensors in their shapes (output names optional). */
function unflatten(g: Graph, group: FlatGroup, flat: Tensor, names?: string[]): Tensor[] {
  const parts = group.names.length === 1 ? [flat] : g.split(flat, 0, group.sizes);
  return parts.map((t, i) => {
    const shape = group.shapes[i]!;
    return g.node('Reshape', [t, g.ints(shape)], {}, [{ dtype: 'float', shape, ...(names ? { name: names[i]! } : {}) }])[0]!;
  });
}

/** Builds the K-step training Loop graph. `accumulate`: steps may have several micro-batches. */
export function buildTrainGraph(config: GPT2Config, hyper: OptimizerHyper, opts: GraphOptions & { accumulate: boolean }): Graph {
  const g = new Graph('train');
  const specs = paramSpecs(config);
  const names = specs.map((s) => s.name);
  const flat = opts.flatState ?? false;
  const fusedHead = opts.fusedLmHead ?? true;
  const groups = flatGroups(config);
  // flatNoDecay: the no-decay group's moments flat, everything else per tensor (see GraphOptions).
  const nd = !flat && opts.flatNoDecay ? groups.find((grp) => !grp.decay && grp.names.length > 1) : undefined;
  const ndNames = new Set(nd?.names ?? []);
  /** Tensors whose moments are carried one by one. */
  const mvNames = names.filter((n) => !ndNames.has(n));
  const p0 = paramInputs(g, config, 'p:');
  const m0 = paramInputs(g, config, 'm:');
  const v0 = paramInputs(g, config, 'v:');
  const stacked = mbInputs(g, ['K', 'A']);
  const mbDims = g.input('mb_dims', 'int64', ['K', 'A', 2]);
  const nMicro = opts.accumulate ? g.input('n_micro', 'int64', ['K']) : null;
  const hyperIn = g.input('hyper', 'float', ['K', 3]);
  const trip = g.input('trip', 'int64', []);
  const cond = g.input('cond', 'bool', []);
  const evalIn = opts.evalInRun
    ? { stacked: mbInputs(g, ['E'], 'eval_', ['EB', 'ET']), dims: g.input('eval_dims', 'int64', ['E', 2]), trip: g.input('eval_trip', 'int64', []), at: g.input('eval_at', 'bool', ['K']) }
    : null;

  // The Loop carries either every tensor (per-tensor state) or one flat vector per group and kind
  // (flat state: the per-tensor inputs are concatenated once per run, before the Loop).
  const carried: Tensor[] = flat
    ? [p0, m0, v0].flatMap((set) => groups.map((grp) => flatten(g, grp, (n) => set.get(n)!)))
    : [...names.map((n) => p0.get(n)!), ...[m0, v0].flatMap((set) => [...mvNames.map((n) => set.get(n)!), ...(nd ? [flatten(g, nd, (n) => set.get(n)!)] : [])])];

  const body = g.subgraph('step');
  const iter = body.freshInput('iter', 'int64', []);
  body.freshInput('cond_in', 'bool', []);
  const p = new Map<string, Tensor>();
  const m = new Map<string, Tensor>();
  const v = new Map<string, Tensor>();
  /** Flat state in the body: per kind, one vector per group. */
  const flatIn: Record<'p' | 'm' | 'v', Tensor[]> = { p: [], m: [], v: [] };
  /** flatNoDecay: the no-decay group's moments in the body. */
  const ndIn: { m?: Tensor; v?: Tensor } = {};
  if (flat) {
    for (const k of ['p', 'm', 'v'] as const) flatIn[k] = groups.map((grp, i) => body.freshInput(`${k}_in:group${i}`, 'float', [grp.total]));
    groups.forEach((grp, i) => unflatten(body, grp, flatIn.p[i]!).forEach((t, j) => p.set(grp.names[j]!, t)));
  } else {
    for (const s of specs) p.set(s.name, body.freshInput('p_in:' + s.name, 'float', s.shape));
    for (const [k, set] of [['m', m], ['v', v]] as const) {
      for (const s of specs) if (!ndNames.has(s.name)) set.set(s.name, body.freshInput(`${k}_in:` + s.name, 'float', s.shape));
      if (nd) ndIn[k] = body.freshInput(`${k}_in:nodecay`, 'float', [nd.total]);
    }
  }

  const stepMb: MbTensors = {
    ids: body.gather(stacked.ids, iter),
    targets: body.gather(stacked.targets, iter),
    weights: body.gather(stacked.weights, iter),
    positions: body.gather(stacked.positions, iter),
    segments: body.gather(stacked.segments, iter),
  };
  const stepDims = body.gather(mbDims, iter); // [A,2]
  const nTokens = body.reduceSum(stepMb.weights, null, false);
  // 1/N, or 0 when the step has no trained tokens (loss 0 and zero gradients instead of NaN).
  const invN = body.where(body.op('Greater', [nTokens, body.scalar(0)]), body.div(body.scalar(1), body.max(nTokens, body.scalar(1e-30))), body.scalar(0));
  let seedCounter = opts.seed;
  const ctxFor = (gr: Graph, mb: MbTensors) => {
    const c = modelContext(gr, config, p, gr.shapeOf(mb.ids), { dropout: opts.dropout, bf16: opts.bf16, seed: seedCounter, variants: opts.variants });
    const next = c.nextSeed;
    c.nextSeed = () => {
      const s = next();
      seedCounter = s + 1;
      return s;
    };
    return c;
  };

  // Gradients of a micro-batch loss: per tensor (names order), or per group as flat vectors.
  const lossGrads = (gr: Graph, loss: Tensor): Tensor[] => {
    const perTensor = gradsOf(gr, loss, invN, p, names);
    if (!flat) return perTensor;
    const byName = new Map(names.map((n, i) => [n, perTensor[i]!]));
    return groups.map((grp) => flatten(gr, grp, (n) => byName.get(n)!));
  };
  let grads: Tensor[];
  let nllSum: Tensor;
  if (!opts.accumulate) {
    const zero = body.scalar(0, 'int64');
    const mb = pickMicroBatch(body, stepMb, zero, body.gather(stepDims, zero));
    const c = ctxFor(body, mb);
    const out = microBatchLoss(c, mb, fusedHead);
    nllSum = out.nllSum;
    grads = lossGrads(body, out.nllSum);
  } else {
    const inner = body.subgraph('micro');
    const j = inner.freshInput('j', 'int64', []);
    inner.freshInput('cond_j', 'bool', []);
    const mb = pickMicroBatch(inner, stepMb, j, inner.gather(stepDims, j));
    const c = ctxFor(inner, mb);
    const out = microBatchLoss(c, mb, fusedHead);
    // Per micro-batch: a dense gradient per tensor (or group), or — for gradients a custom rule returns deferred
    // (DeferredGrad: linear in raw tensors, coefficients from parameters only, e.g. layerNormFold's) — the raw
    // tensors, summed over the micro-batches and finished once per step after the Loop.
    const parts: (Tensor | DeferredGrad[])[] = flat
      ? lossGrads(inner, out.nllSum)
      : gradientsDeferred(inner, [out.nllSum], [invN], names.map((n) => p.get(n)!)).map((v, i) => v ?? inner.zerosLike(p.get(names[i]!)!));
    const raws: Tensor[] = [];
    for (const v of parts) if (Array.isArray(v)) for (const d of v) for (const r of d.raw) if (!raws.includes(r)) raws.push(r);
    const staticShape = (t: Tensor): number[] => {
      if (!t.shape || !t.shape.every((d): d is number => typeof d === 'number')) throw new Error(`trainGraph: deferred gradient input ${t.name} needs a static shape`);
      return t.shape;
    };
    const denseParts = parts.flatMap((v, i) => (Array.isArray(v) ? [] : [{ i, t: v, shape: flat ? [groups[i]!.total] : specs[i]!.shape }]));
    // Loop-carried: the dense accumulators, the raw accumulators (fp32), the NLL sum.
    const acc = denseParts.map((d) => inner.freshInput(flat ? `acc:group${d.i}` : 'acc:' + names[d.i]!, 'float', d.shape));
    const rawAcc = raws.map((r, k) => inner.freshInput(`acc_raw:${k}`, 'float', staticShape(r)));
    const nllAcc = inner.freshInput('nll_acc', 'float', []);
    inner.output(trueConst(inner));
    acc.forEach((a, k) => inner.output(inner.add(a, denseParts[k]!.t)));
    rawAcc.forEach((a, k) => inner.output(inner.add(a, raws[k]!.dtype === 'float' ? raws[k]! : inner.cast(raws[k]!, 'float'))));
    inner.output(inner.add(nllAcc, out.nllSum));
    if (opts.hoistInvariants ?? true) body.hoistInvariantsFrom(inner);
    const zeros = [
      ...denseParts.map((d) => (flat ? body.zerosLike(flatIn.p[d.i]!) : body.zerosLike(p.get(names[d.i]!)!))),
      ...raws.map((r) => body.op('ConstantOfShape', [body.ints(staticShape(r))], { value: { tensor: makeData('float', [1], [0]) } }, { dtype: 'float', shape: staticShape(r) })),
    ];
    const outs = body.node(
      'Loop',
      [body.gather(nMicro!, iter), trueConst(body), ...zeros, body.scalar(0)],
      { body: inner },
      [...denseParts.map((d) => ({ dtype: 'float' as const, shape: d.shape })), ...raws.map((r) => ({ dtype: 'float' as const, shape: staticShape(r) })), { dtype: 'float' as const, shape: [] }],
    );
    const denseSum = new Map(denseParts.map((d, k) => [d.i, outs[k]!]));
    const rawSum = new Map(raws.map((r, k) => [r, outs[denseParts.length + k]!]));
    grads = parts.map((v, i) => {
      if (!Array.isArray(v)) return denseSum.get(i)!;
      const finished = v.map((d) => d.finish(body, d.raw.map((r) => rawSum.get(r)!)));
      return finished.length === 1 ? finished[0]! : body.op('Sum', finished);
    });
    nllSum = outs[outs.length - 1]!;
  }

  const loss = body.mul(nllSum, invN);
  // flatNoDecay: the no-decay group's gradients as one vector (for the norm and its AdamW).
  const gradOf = new Map(names.map((n, i) => [n, grads[i]!]));
  const ndGrad = nd ? flatten(body, nd, (n) => gradOf.get(n)!) : null;
  // clip_grad_norm_: the L2 norm over all gradients (per-tensor: the norm of the per-tensor norms; flatNoDecay:
  // the no-decay group's norm as one of them).
  const normParts = nd ? [...mvNames.map((n) => gradOf.get(n)!), ndGrad!] : grads;
  const norm = flat
    ? body.sqrt(grads.map((gt) => body.reduce('ReduceSumSquare', gt, null, false)).reduce((a, b) => body.add(a, b)))
    : body.reduce('ReduceL2', body.concat(normParts.map((gt) => body.unsqueeze(body.reduce('ReduceL2', gt, null, false), [0])), 0), null, false);
  const clip = hyper.maxGradNorm > 0 && Number.isFinite(hyper.maxGradNorm);
  const coef = clip ? body.min(body.scalar(1), body.div(body.scalar(hyper.maxGradNorm), body.add(norm, body.scalar(1e-6)))) : null;

  const h = body.gather(hyperIn, iter); // [3]
  const [stepSizeV, bc2SqrtV, decayV] = body.split(h, 0, [1, 1, 1]);
  const stepSize = body.reshape(stepSizeV!, [], []);
  const bc2Sqrt = body.reshape(bc2SqrtV!, [], []);
  const decay = body.reshape(decayV!, [], []);
  // Step scalars folded so that each parameter (or flat group) costs 13 elementwise passes (12 without decay):
  //   m' = β1·m + (coef·(1−β1))·g;  v' = β2·v + (coef²·(1−β2))·g·g     (g before clipping, coef = clip factor)
  //   p' = p·(1−lr·wd) − (stepSize·√bc2) · m' / (√v' + eps·√bc2)
  // which is torch's p − stepSize · m' / (√v'/√bc2 + eps) rearranged (bc2 = 1 − β2^t).
  const b1 = body.scalar(hyper.beta1);
  const b2 = body.scalar(hyper.beta2);
  const k1 = coef ? body.mul(coef, body.scalar(1 - hyper.beta1)) : body.scalar(1 - hyper.beta1);
  const k2 = coef ? body.mul(body.mul(coef, coef), body.scalar(1 - hyper.beta2)) : body.scalar(1 - hyper.beta2);
  const epsB = body.mul(body.scalar(hyper.eps), bc2Sqrt);
  const k3 = body.mul(stepSize, bc2Sqrt);
  const adamw = (pi: Tensor, mi0: Tensor, vi0: Tensor, gi: Tensor, decayed: boolean) => {
    if (hyper.weightDecay !== 0 && decayed) pi = body.mul(pi, decay);
    const mi = body.add(body.mul(mi0, b1), body.mul(gi, k1));
    const vi = body.add(body.mul(vi0, b2), body.mul(body.mul(gi, k2), gi));
    const denom = body.add(body.sqrt(vi), epsB);
    return { p: body.sub(pi, body.mul(body.div(mi, denom), k3)), m: mi, v: vi };
  };
  const pOut: Tensor[] = [];
  const mOut: Tensor[] = [];
  const vOut: Tensor[] = [];
  if (flat) {
    groups.forEach((grp, i) => {
      const r = adamw(flatIn.p[i]!, flatIn.m[i]!, flatIn.v[i]!, grads[i]!, grp.decay);
      pOut.push(r.p);
      mOut.push(r.m);
      vOut.push(r.v);
    });
  } else {
    // Carried order: every p per tensor; then m, v each per tensor (mvNames) followed by the flat no-decay group.
    const pBy = new Map<string, Tensor>();
    for (const n of mvNames) {
      const r = adamw(p.get(n)!, m.get(n)!, v.get(n)!, gradOf.get(n)!, usesWeightDecay(n));
      pBy.set(n, r.p);
      mOut.push(r.m);
      vOut.push(r.v);
    }
    if (nd) {
      const r = adamw(flatten(body, nd, (n) => p.get(n)!), ndIn.m!, ndIn.v!, ndGrad!, false);
      unflatten(body, nd, r.p).forEach((t, j) => pBy.set(nd.names[j]!, t));
      mOut.push(r.m);
      vOut.push(r.v);
    }
    for (const n of names) pOut.push(pBy.get(n)!);
  }
  body.output(trueConst(body));
  for (const t of [...pOut, ...mOut, ...vOut]) body.output(t);
  body.output(loss);
  body.output(norm);
  body.output(nTokens);
  if (evalIn) {
    // After the update, on the steps eval_at marks: the eval Loop over the eval set with the new parameters.
    const then = body.subgraph('eval_then');
    const wNew: WeightMap = new Map();
    if (flat) groups.forEach((grp, i) => unflatten(then, grp, pOut[i]!).forEach((t, j) => wNew.set(grp.names[j]!, t)));
    else names.forEach((n, i) => wNew.set(n, pOut[i]!));
    const r = evalLoop(then, config, wNew, evalIn.stacked, evalIn.dims, evalIn.trip, { bf16: opts.bf16, variants: 'evalVariants' in opts ? opts.evalVariants : opts.variants });
    then.output(r.nllSum);
    then.output(r.tokens);
    // Otherwise zeros [E] (two nodes: a graph output may not be listed twice).
    const skip = body.subgraph('eval_else');
    const e = skip.op('Shape', [evalIn.dims], { start: 0, end: 1 }, { dtype: 'int64', shape: [1] });
    for (let i = 0; i < 2; i++) skip.output(skip.op('ConstantOfShape', [e], { value: { tensor: makeData('float', [1], [0]) } }, { dtype: 'float', shape: ['E'] }));
    const [nll, tok] = body.node('If', [body.gather(evalIn.at, iter)], { then_branch: then, else_branch: skip }, [
      { dtype: 'float', shape: ['E'] },
      { dtype: 'float', shape: ['E'] },
    ]);
    body.output(nll!);
    body.output(tok!);
  }

  const metrics = [
    { dtype: 'float' as const, shape: ['K'], name: 'loss' },
    { dtype: 'float' as const, shape: ['K'], name: 'grad_norm' },
    { dtype: 'float' as const, shape: ['K'], name: 'tokens' },
    ...(evalIn
      ? [
          { dtype: 'float' as const, shape: ['K', 'E'], name: 'eval_nll_sum' },
          { dtype: 'float' as const, shape: ['K', 'E'], name: 'eval_tokens' },
        ]
      : []),
  ];
  const kinds = ['p_out:', 'm_out:', 'v_out:'] as const;
  const loopOuts = g.node(
    'Loop',
    [trip, cond, ...carried],
    { body },
    flat
      ? // Flat state: split back into the per-tensor graph outputs after the Loop (once per run).
        [...kinds.flatMap((k) => groups.map((grp) => ({ dtype: 'float' as const, shape: [grp.total] }))), ...metrics]
      : // Named as the graph outputs themselves (no Identity copies; the host may pre-allocate them); flatNoDecay's
        // flat moments are split after the Loop.
        [
          ...specs.map((s) => ({ dtype: 'float' as const, shape: s.shape, name: 'p_out:' + s.name })),
          ...(['m_out:', 'v_out:'] as const).flatMap((prefix) => [
            ...specs.filter((s) => !ndNames.has(s.name)).map((s) => ({ dtype: 'float' as const, shape: s.shape, name: prefix + s.name })),
            ...(nd ? [{ dtype: 'float' as const, shape: [nd.total] }] : []),
          ]),
          ...metrics,
        ],
  );
  const perKind = mvNames.length + (nd ? 1 : 0);
  const stateOuts: Tensor[] = flat
    ? kinds.flatMap((prefix, k) => groups.flatMap((grp, i) => unflatten(g, grp, loopOuts[k * groups.length + i]!, grp.names.map((n) => prefix + n))))
    : [
        ...loopOuts.slice(0, names.length),
        ...(['m_out:', 'v_out:'] as const).flatMap((prefix, k) => {
          const part = loopOuts.slice(names.length + k * perKind, names.length + (k + 1) * perKind);
          return nd ? [...part.slice(0, -1), ...unflatten(g, nd, part[part.length - 1]!, nd.names.map((n) => prefix + n))] : part;
        }),
      ];
  const byName = new Map(stateOuts.map((t) => [t.name, t]));
  const ordered = kinds.flatMap((prefix) => names.map((n) => byName.get(prefix + n)));
  for (const t of [...ordered, ...loopOuts.slice(loopOuts.length - metrics.length)]) {
    if (!t || !/^(p_out:|m_out:|v_out:|loss$|grad_norm$|tokens$|eval_nll_sum$|eval_tokens$)/.test(t.name)) throw new Error(`training graph output name ${t?.name} was taken`);
    g.output(t);
  }
  return g;
}

/** One micro-batch → nll_sum, tokens, grad:<name> = d(inv_n · Σ w·NLL)/dp. */
export function buildGradsGraph(config: GPT2Config, opts: GraphOptions): Graph {
  const g = new Graph('grads');
  const w = paramInputs(g, config, 'p:');
  const mb = mbInputs(g, []);
  const invN = g.input('inv_n', 'float', []);
  const c = modelContext(g, config, w, g.shapeOf(mb.ids), { dropout: opts.dropout, bf16: opts.bf16, seed: opts.seed, variants: opts.variants });
  const out = microBatchLoss(c, mb, opts.fusedLmHead ?? true);
  const names = paramSpecs(config).map((s) => s.name);
  const grads = gradsOf(g, out.nllSum, invN, w, names);
  g.output(out.nllSum, 'nll_sum');
  g.output(out.tokens, 'tokens');
  names.forEach((n, i) => g.output(grads[i]!, 'grad:' + n));
  return g;
}

/** One micro-batch → nll_sum, tokens, per-position nll [B,T] and lse [B,T] (no dropout, no update). */
export function buildEvalGraph(config: GPT2Config, opts: { bf16?: Bf16Mode; variants?: ModelVariants } = {}): Graph {
  const g = new Graph('eval');
  const w = paramInputs(g, config, 'p:');
  const mb = mbInputs(g, []);
  const bt = g.shapeOf(mb.ids);
  const c = modelContext(g, config, w, bt, { bf16: opts.bf16, variants: opts.variants });
  const out = microBatchLoss(c, mb, false);
  g.output(out.nllSum, 'nll_sum');
  g.output(out.tokens, 'tokens');
  g.output(g.reshape(out.nll, bt, ['B', 'T']), 'nll');
  g.output(g.reshape(out.lse, bt, ['B', 'T']), 'lse');
  return g;
}

export type ForwardOutput = 'logits' | 'logprobs';

/** ids, positions, segments [B,T] → logits or log-probabilities [B,T,V]. */
export function buildForwardGraph(config: GPT2Config, output: ForwardOutput, opts: { bf16?: Bf16Mode } = {}): Graph {
  const g = new Graph('forward');
  const w = paramInputs(g, config, 'p:');
  const ids = g.input('ids', 'int32', ['B', 'T']);
  const positions = g.input('positions', 'int32', ['B', 'T']);
  const segments = g.input('segments', 'int32', ['B', 'T']);
  const bt = g.shapeOf(ids);
  const c = modelContext(g, config, w, bt, { bf16: opts.bf16 });
  let y = lmHeadLogits(c, hiddenStates(c, ids, positions, segments)); // [N,V]
  if (output === 'logprobs') y = g.op('LogSoftmax', [y], { axis: -1 });
  const V = config.vocab_size;
  g.output(g.reshape(y, g.concat([bt, g.ints([V])], 0), ['B', 'T', V]), output);
  return g;
}
