/**
 * The CausalLM of a loaded GPT-2 on onnxruntime (cpu or cuda): the 'generate' graph (prefill + decode with a
 * key/value cache) and the 'score' graph (teacher-forced log-probs) of generationGraph.ts, each session
 * created on first use with the weights as initialisers, so the weights are uploaded once per loaded model.
 * Sessions run one at a time (a promise chain), as onnxruntime sessions are not re-entrant from JS.
 */
import * as ort from 'onnxruntime-node';
import type { GPT2Config, ParamSet } from '../model/types';
import { createSession, type Device } from '../engine/ortSession';
import { SftError } from '../util/errors';
import type { CausalLM, GenerationSession, RowScores } from './causalLM';
import { buildInferenceGraph, type InferenceGraphKind } from './generationGraph';

export interface EngineLMOptions {
  device?: Device;
  /** Intra-op threads (0 = onnxruntime's default). */
  threads?: number;
  /** Max rows × tokens per score run (splits large batches; logits take tokens × V × 4 bytes, twice). Default 2048. */
  maxScoreTokens?: number;
}

function i32(values: ArrayLike<number>, dims: number[]): ort.Tensor {
  return new ort.Tensor('int32', Int32Array.from(values), dims);
}

/** Scores plus the raw per-position statistics of the score graph (for checks against references). */
export interface EngineRowScores extends RowScores {
  /** logsumexp of the logits at each input position [T−1]. */
  lse: Float32Array;
  /** First argmax at each input position [T−1]. */
  argmax: Int32Array;
}

export class EngineLM implements CausalLM {
  readonly vocabSize: number;
  readonly nPositions: number;
  private readonly sessions = new Map<InferenceGraphKind, Promise<ort.InferenceSession>>();
  private queue: Promise<unknown> = Promise.resolve();
  private disposed = false;
  private readonly H: number;
  private readonly D: number;
  private readonly L: number;

  constructor(
    readonly config: GPT2Config,
    private readonly params: ParamSet,
    private readonly opts: EngineLMOptions = {},
  ) {
    this.vocabSize = config.vocab_size;
    this.nPositions = config.n_positions;
    this.H = config.n_head;
    this.D = config.n_embd / config.n_head;
    this.L = config.n_layer;
  }

  get device(): Device {
    return this.opts.device ?? 'cpu';
  }

  private session(kind: InferenceGraphKind): Promise<ort.InferenceSession> {
    if (this.disposed) throw new SftError('the model was closed');
    let s = this.sessions.get(kind);
    if (!s) {
      s = createSession(buildInferenceGraph(this.config, this.params, kind, this.device), { device: this.device, threads: this.opts.threads });
      this.sessions.set(kind, s);
      s.catch(() => this.sessions.delete(kind));
    }
    return s;
  }

  private checkIds(ids: readonly number[], where: string): void {
    for (const id of ids) {
      if (!(Number.isInteger(id) && id >= 0 && id < this.vocabSize)) throw new SftError(`token id ${id} is outside the vocabulary (0..${this.vocabSize - 1})`, where);
    }
  }

  /** Builds the sessions now (otherwise on first use). */
  async warmUp(kinds: InferenceGraphKind[] = ['generate']): Promise<void> {
    await Promise.all(kinds.map((k) => this.session(k)));
  }

  /** Runs `fn` after every earlier run finished. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  async scoreRows(rows: number[][]): Promise<EngineRowScores[]> {
    for (const [i, r] of rows.entries()) {
      if (r.length < 2 || r.length > this.nPositions + 1) throw new SftError(`row ${i + 1} has ${r.length} tokens; scoring needs 2..${this.nPositions + 1}`);
      this.checkIds(r, `row ${i + 1}`);
    }
    const out: EngineRowScores[] = new Array(rows.length);
    const budget = this.opts.maxScoreTokens ?? 2048;
    // Group consecutive rows under the token budget (each group padded to its longest input).
    let start = 0;
    while (start < rows.length) {
      let end = start + 1;
      let T = rows[start]!.length - 1;
      while (end < rows.length) {
        const t2 = Math.max(T, rows[end]!.length - 1);
        if (t2 * (end - start + 1) > budget) break;
        T = t2;
        end++;
      }
      const group = rows.slice(start, end);
      const res = await this.serial(() => this.scoreGroup(group, T));
      res.forEach((r, k) => (out[start + k] = r));
      start = end;
    }
    return out;
  }

  private async scoreGroup(rows: number[][], T: number): Promise<EngineRowScores[]> {
    const session = await this.session('score');
    const B = rows.length;
    const ids = new Int32Array(B * T);
    const targets = new Int32Array(B * T);
    const pos = new Int32Array(B * T);
    const seg = new Int32Array(B * T);
    rows.forEach((r, b) => {
      for (let t = 0; t < T; t++) {
        pos[b * T + t] = t;
        if (t < r.length - 1) {
          ids[b * T + t] = r[t]!;
          targets[b * T + t] = r[t + 1]!;
          seg[b * T + t] = 1;
        }
      }
    });
    const res = await session.run({
      input_ids: i32(ids, [B, T]),
      positions: i32(pos, [B, T]),
      segments: i32(seg, [B, T]),
      targets: i32(targets, [B, T]),
    });
    const lp = res.target_logprob!.data as Float32Array;
    const am = res.argmax!.data as BigInt64Array;
    const lseAll = res.lse!.data as Float32Array;
    return rows.map((r, b) => {
      const n = r.length - 1;
      const logprobs = new Float64Array(n);
      const greedy = new Uint8Array(n);
      const argmax = new Int32Array(n);
      for (let t = 0; t < n; t++) {
        logprobs[t] = lp[b * T + t]!;
        argmax[t] = Number(am[b * T + t]!);
        greedy[t] = argmax[t] === targets[b * T + t] ? 1 : 0;
      }
      return { logprobs, greedy, argmax, lse: lseAll.slice(b * T, b * T + n) };
    });
  }

  /** One generate-graph run over `tokens` after the cached ones (positions continue from the cache length). */
  private async step(tokens: number[], past: ort.Tensor[] | null): Promise<{ logits: Float32Array; present: ort.Tensor[] }> {
    this.checkIds(tokens, 'generation input');
    const session = await this.session('generate');
    const S = tokens.length;
    const feeds: Record<string, ort.Tensor> = { input_ids: i32(tokens, [1, S]) };
    const empty = new Float32Array(0);
    for (let l = 0; l < this.L; l++) {
      feeds[`past_key_${l}`] = past ? past[2 * l]! : new ort.Tensor('float32', empty, [1, this.H, 0, this.D]);
      feeds[`past_value_${l}`] = past ? past[2 * l + 1]! : new ort.Tensor('float32', empty, [1, this.H, 0, this.D]);
    }
    const res = await session.run(feeds);
    const present: ort.Tensor[] = [];
    for (let l = 0; l < this.L; l++) present.push(res[`present_key_${l}`]!, res[`present_value_${l}`]!);
    return { logits: Float32Array.from(res.logits!.data as Float32Array), present };
  }

  /** Logits after `tokens` computed without a cache (one prefill of the whole sequence). */
  async logitsWithoutCache(tokens: number[]): Promise<Float32Array> {
    return (await this.serial(() => this.step(tokens, null))).logits;
  }

  async startGeneration(prompt: number[]): Promise<GenerationSession> {
    if (prompt.length < 1 || prompt.length > this.nPositions) throw new SftError(`the prompt has ${prompt.length} tokens; the model takes 1..${this.nPositions}`);
    const first = await this.serial(() => this.step(prompt, null));
    let cache: ort.Tensor[] | null = first.present;
    let length = prompt.length;
    const self = this;
    const session = {
      logits: first.logits,
      get length() {
        return length;
      },
      async push(token: number): Promise<Float32Array> {
        if (!cache) throw new SftError('the generation session was closed');
        if (length >= self.nPositions) throw new SftError(`the context is full (${self.nPositions} tokens)`);
        const past = cache;
        const r = await self.serial(() => self.step([token], past));
        cache = r.present;
        length++;
        session.logits = r.logits;
        return r.logits;
      },
      dispose() {
        cache = null;
      },
    };
    return session;
  }

  async dispose(): Promise<void> {
    this.disposed = true;
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await this.queue.catch(() => undefined);
    for (const s of all) {
      try {
        await (await s).release();
      } catch {
        /* creation failed or already released */
      }
    }
  }
}
