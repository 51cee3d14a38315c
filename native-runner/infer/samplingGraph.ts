/**
 * The host sampler (sampling.ts: chooseToken) as ONNX nodes, for the multi-token decode Loop
 * (generationGraph.ts 'decode'): one next-token choice per call, from logits [V] and one uniform drawn on the
 * host, giving the same id as chooseToken on the same inputs. Steps and how each matches the host:
 *
 *   repetition penalty  over the presence mask [V] (ids already in the sequence): s < 0 → s·r, else s / r,
 *                       computed in double and rounded to float (the host stores double results in a Float32Array)
 *   greedy              ArgMax of the penalised scores (first maximum, like sampling.argmax)
 *   temperature         s / t in double, rounded to float
 *   top-k               the k-th largest value from a partial sort (TopK k); scores below it become −∞ (ties
 *                       kept); k ≤ 0 or k ≥ V keeps everything
 *   top-p               e = exp(s − max) in double (index order), z = Σe in index order (the last CumSum entry);
 *                       the survivors sorted descending (TopK k = #survivors, ties: lower index first, like the
 *                       host's sort), p = e / z in that order, "mass above" = exclusive CumSum of p; a token is kept
 *                       when above < top_p or above ≤ 0 (the most likely one always stays); top_p ≥ 1 keeps all
 *                       (no sort then; greedy runs sort one element)
 *   draw                w = e of the kept tokens, scattered back to index order; acc = CumSum(w) (index order),
 *                       u' = u · acc[V−1]; the pick is the first index with u' < acc (= #{acc ≤ u'}), at most the
 *                       last kept index (sampleFromScores' fallback)
 *   non-finite scores   z NaN or ∞ (s / t overflowing float): the first maximum of the top-k scores instead of
 *                       the draw (sampleFromScores does the same), never an id outside 0..V−1
 *   NaN logits          any NaN among the logits (a diverged model): the id of the first NaN, greedy or sampled
 *                       (torch.argmax ranks NaN first; chooseToken does the same)
 *   do_sample           false → the greedy pick, true → the draw
 *
 * Identity with the host: float32 steps are bit-exact; the double sums are sequential in index order on the CPU
 * provider, like the host's loops, so only the last bits of exp (ORT's vs V8's) can differ — a token changes only
 * when u' or top_p falls within ~1e-16 (relative) of a cumulative boundary. On CUDA, CumSum is a parallel scan
 * (different rounding, same ~1e-16 bound).
 *
 * Legend: V vocabulary.
 */
import * as ort from 'onnxruntime-node';
import type { Graph, Tensor } from '../engine/graph/graph';
import { makeData } from '../engine/graph/graph';
import type { SamplingOptions } from './sampling';

/** The sampling settings as graph tensors (scalars). */
export interface SamplingTensors {
  /** bool: false = greedy. */
  doSample: Tensor;
  /** double. */
  temperature: Tensor;
  /** int64; 0 = off. */
  topK: Tensor;
  /** double; ≥ 1 = off. */
  topP: Tensor;
  /** double; 1 = off. */
  repetitionPenalty: Tensor;
}

/** The settings as graph inputs do_sample, temperature, top_k, top_p, repetition_penalty (scalars) of `g`. */
export function samplingInputs(g: Graph): SamplingTensors {
  return {
    doSample: g.input('do_sample', 'bool', []),
    temperature: g.input('temperature', 'double', []),
    topK: g.input('top_k', 'int64', []),
    topP: g.input('top_p', 'double', []),
    repetitionPenalty: g.input('repetition_penalty', 'double', []),
  };
}

/** Feeds for the inputs of samplingInputs. */
export function samplingFeeds(o: SamplingOptions): Record<string, ort.Tensor> {
  return {
    do_sample: new ort.Tensor('bool', Uint8Array.of(o.doSample ? 1 : 0), []),
    temperature: new ort.Tensor('float64', Float64Array.of(o.temperature), []),
    top_k: new ort.Tensor('int64', BigInt64Array.of(BigInt(o.topK)), []),
    top_p: new ort.Tensor('float64', Float64Array.of(o.topP), []),
    repetition_penalty: new ort.Tensor('float64', Float64Array.of(o.repetitionPenalty), []),
  };
}

/**
 * logits float [V], presence bool [V], u double scalar in [0,1) → the chosen id, int64 scalar.
 * `V` is the static vocabulary size.
 */
export function chooseTokenInGraph(g: Graph, logits: Tensor, presence: Tensor, u: Tensor, s: SamplingTensors, V: number): Tensor {
  const f64 = (t: Tensor) => g.cast(t, 'double');
  const f32 = (t: Tensor) => g.cast(t, 'float');
  const negInf = g.scalar(-Infinity);
  const zero64 = g.scalar(0, 'double');

  // Repetition penalty (HF): only at ids present in the sequence.
  const l64 = f64(logits);
  const penalised = f32(g.where(g.op('Less', [l64, zero64]), g.mul(l64, s.repetitionPenalty), g.div(l64, s.repetitionPenalty)));
  const scores = g.where(presence, penalised, logits); // [V] float
  const greedy = g.op('ArgMax', [scores], { axis: 0, keepdims: 0 }, { dtype: 'int64', shape: [] });

  // Temperature.
  const scaled = f32(g.div(f64(scores), s.temperature)); // [V] float

  // Top-k: the k-th largest value from a partial sort (ties with it are kept, like the host).
  const one = g.scalar(1, 'int64');
  const kOff = g.op('Or', [g.op('LessOrEqual', [s.topK, g.scalar(0, 'int64')]), g.op('GreaterOrEqual', [s.topK, g.scalar(V, 'int64')])]);
  const pOff = g.op('GreaterOrEqual', [s.topP, g.scalar(1, 'double')]);
  // Greedy runs only need the maximum (one element sorted); the sampling outputs are then discarded.
  const k1 = g.where(g.op('And', [s.doSample, g.op('Not', [kOff])]), s.topK, one);
  const [topVals] = g.node('TopK', [scaled, g.reshape(k1, [1], [1])], { axis: 0, largest: 1, sorted: 1 }, [
    { dtype: 'float', shape: ['k'] },
    { dtype: 'int64', shape: ['k'] },
  ]) as [Tensor, Tensor];
  const max = g.gather(topVals, g.scalar(0, 'int64'), 0); // float scalar: the largest score survives top-k
  const kth = g.where(kOff, negInf, g.gather(topVals, g.sub(k1, one), 0));
  const survives = g.op('GreaterOrEqual', [scaled, kth]); // [V]
  const topKScores = g.where(survives, scaled, negInf); // [V] index order

  // Softmax weights in index order, in double (0 where −∞).
  const e = g.exp(g.sub(f64(topKScores), f64(max))); // [V]
  const axis0 = g.scalar(0, 'int64');
  const lastPos = g.scalar(V - 1, 'int64');
  const z = g.gather(g.op('CumSum', [e, axis0], {}, { dtype: 'double', shape: [V] }), lastPos, 0);

  // Top-p over the survivors in descending order (all of them, ties included: sorted with TopK k = #survivors;
  // lower index first among equals, like the host's sort). Not needed when top_p ≥ 1 or greedy: then k = 1.
  const finite = g.op('Greater', [topKScores, negInf]); // [V]
  const nSurvivors = g.reduceSum(g.cast(finite, 'int64'), null, false);
  const k2 = g.where(g.op('And', [s.doSample, g.op('Not', [pOff])]), g.max(nSurvivors, one), one);
  const [, sortedIdx] = g.node('TopK', [topKScores, g.reshape(k2, [1], [1])], { axis: 0, largest: 1, sorted: 1 }, [
    { dtype: 'float', shape: ['m'] },
    { dtype: 'int64', shape: ['m'] },
  ]) as [Tensor, Tensor];
  const eSorted = g.gather(e, sortedIdx, 0); // [m]
  const above = g.op('CumSum', [g.div(eSorted, z), axis0], { exclusive: 1 }, { dtype: 'double', shape: ['m'] });
  const keepSorted = g.op('Or', [g.op('Less', [above, s.topP]), g.op('LessOrEqual', [above, zero64])]); // [m]
  const wTopP = g.op('ScatterElements', [g.constant(makeData('double', [V], new Float64Array(V)), 'zeros_v'), sortedIdx, g.where(keepSorted, eSorted, zero64)], { axis: 0 }, { dtype: 'double', shape: [V] });
  const keptTopP = g.op('ScatterElements', [g.constant(makeData('bool', [V], new Uint8Array(V)), 'false_v'), sortedIdx, keepSorted], { axis: 0 }, { dtype: 'bool', shape: [V] });
  const w = g.where(pOff, e, wTopP); // [V] final weights in index order
  const kept = g.op('And', [finite, g.op('Or', [pOff, keptTopP])]); // [V]
  const positions = g.constant(makeData('int64', [V], Array.from({ length: V }, (_, i) => i)), 'vocab_positions');
  const lastKept = g.reduce('ReduceMax', g.where(kept, positions, g.scalar(-1, 'int64')), null, false); // int64 scalar

  // Inverse CDF in index order.
  const acc = g.op('CumSum', [w, axis0], {}, { dtype: 'double', shape: [V] });
  const target = g.mul(u, g.gather(acc, lastPos, 0));
  const below = g.reduceSum(g.cast(g.op('LessOrEqual', [acc, target]), 'int64'), null, false); // #{acc ≤ u'}
  // Non-finite scores (NaN logits of a diverged model, or a temperature so small that s / t overflows): the
  // total mass z is NaN or ∞ and there is nothing to draw from; like sampleFromScores, take the first maximum
  // of the warped scores (the draw above would give −1 or a dropped id).
  const zOk = g.op('And', [g.op('Greater', [z, zero64]), g.op('Less', [z, g.scalar(Infinity, 'double')])]);
  const drawn = g.where(zOk, g.min(below, lastKept), g.op('ArgMax', [topKScores], { axis: 0, keepdims: 0 }, { dtype: 'int64', shape: [] }));
  // NaN anywhere in the logits (a diverged model): the first NaN's id, greedy or sampled — torch.argmax's choice
  // (it ranks NaN above everything), and sampling has no distribution to draw from (like sampling.chooseToken).
  // x ≠ x marks the NaNs (Equal and Not have CUDA kernels; IsNaN is not in engine/cudaKernels.ts).
  const nanF = g.cast(g.op('Not', [g.equal(logits, logits)]), 'float'); // [V] 1 at NaN
  const firstNaN = g.op('ArgMax', [nanF], { axis: 0, keepdims: 0 }, { dtype: 'int64', shape: [] });
  const anyNaN = g.op('Greater', [g.reduce('ReduceMax', nanF, null, false), g.scalar(0)]);
  return g.where(anyNaN, firstNaN, g.where(s.doSample, drawn, greedy));
}
