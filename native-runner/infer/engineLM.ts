/**
 * The CausalLM of a loaded GPT-2 on onnxruntime (cpu or cuda): the 'generate' graph (prefill + decode with a
 * key/value cache), the 'decode' graph (chunked decoding, below) and the 'score' graph (teacher-forced
 * log-probs) of generationGraph.ts, each session created on first use with the weights as initialisers, so the
 * weights are uploaded once per session; generation uses either 'generate' or 'decode', not both (a 'decode'
 * session whose run failed is released, and the model decodes per token from then on).
 * Sessions run one at a time (a promise chain), as onnxruntime sessions are not re-entrant from JS.
 *
 * Chunked decoding (startChunkedGeneration, the 'decode' graph): up to `decodeChunk` tokens per run with the
 * cache kept inside the run, so the cache crosses host ⇄ device once per chunk instead of once per token. The
 * default is 16 on CUDA and off on the CPU (where the per-token path costs nothing extra); SFT_DECODE_CHUNK=N
 * sets it for either device (0 = off), EngineLMOptions.decodeChunk overrides both.
 */
import * as ort from 'onnxruntime-node';
import type { GPT2Config, ParamSet } from '../model/types';
import { createSession, type Device } from '../engine/ortSession';
import { SftError } from '../util/errors';
import type { CausalLM, ChunkedDecoding, ChunkedGeneration, GenerationSession, RowScores } from './causalLM';
import { buildInferenceGraph, type InferenceGraphKind } from './generationGraph';
import { samplingFeeds } from './samplingGraph';

export interface EngineLMOptions {
  device?: Device;
  /** Intra-op threads (0 = onnxruntime's default). */
  threads?: number;
  /** Max rows × tokens per score run (splits large batches; logits take tokens × V × 4 bytes, twice). Default 2048. */
  maxScoreTokens?: number;
  /** Tokens per chunked-decoding run (0 = one token per run). Default: SFT_DECODE_CHUNK, else 16 on CUDA, 0 on the CPU. */
  decodeChunk?: number;
}

/** The default tokens per decode run for a device (SFT_DECODE_CHUNK overrides; 0 = per token). */
export function defaultDecodeChunk(device: Device): number {
  const env = process.env.SFT_DECODE_CHUNK;
  if (env !== undefined && env !== '') {
    const n = Number(env);
    if (!(Number.isInteger(n) && n >= 0)) throw new SftError(`SFT_DECODE_CHUNK must be a non-negative integer, got ${JSON.stringify(env)}`, 'SFT_DECODE_CHUNK');
    return n;
  }
  return device === 'cuda' ? 16 : 0;
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
  private readonly chunkSetting: number;
  /** The error of a failed 'decode' graph (creation or run): chunked decoding is then off for this model. */
  private chunkedFailure: unknown = null;
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
    this.chunkSetting = opts.decodeChunk ?? defaultDecodeChunk(opts.device ?? 'cpu');
  }

  /** Tokens per chunked-decoding run; 0 after the 'decode' graph failed (generate() then decodes per token). */
  get decodeChunk(): number {
    return this.chunkedFailure ? 0 : this.chunkSetting;
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

  /** Builds the sessions now (otherwise on first use); by default the generation graph generate() will use. */
  async warmUp(kinds: InferenceGraphKind[] = [this.decodeChunk > 0 ? 'decode' : 'generate']): Promise<void> {
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

  /** past_key_l / past_value_l feeds from a cache (present_key_0, present_value_0, …), or empty [1,H,0,D] ones. */
  private pastFeeds(past: ort.Tensor[] | null, feeds: Record<string, ort.Tensor>): void {
    const empty = new Float32Array(0);
    for (let l = 0; l < this.L; l++) {
      feeds[`past_key_${l}`] = past ? past[2 * l]! : new ort.Tensor('float32', empty, [1, this.H, 0, this.D]);
      feeds[`past_value_${l}`] = past ? past[2 * l + 1]! : new ort.Tensor('float32', empty, [1, this.H, 0, this.D]);
    }
  }

  /** The prompt of a generation: 1..nPositions tokens, each in the vocabulary. */
  private checkPrompt(prompt: readonly number[]): void {
    if (prompt.length < 1 || prompt.length > this.nPositions) throw new SftError(`the prompt has ${prompt.length} tokens; the model takes 1..${this.nPositions}`);
    this.checkIds(prompt, 'generation input');
  }

  /** One generate-graph run over `tokens` after the cached ones (positions continue from the cache length). */
  private async step(tokens: number[], past: ort.Tensor[] | null): Promise<{ logits: Float32Array; present: ort.Tensor[] }> {
    this.checkIds(tokens, 'generation input');
    const session = await this.session('generate');
    const S = tokens.length;
    const feeds: Record<string, ort.Tensor> = { input_ids: i32(tokens, [1, S]) };
    this.pastFeeds(past, feeds);
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
    this.checkPrompt(prompt);
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

  /** Prefill + multi-token decoding through the 'decode' graph (see ChunkedGeneration). */
  async startChunkedGeneration(prompt: number[], decoding: ChunkedDecoding): Promise<ChunkedGeneration> {
    if (this.disposed) throw new SftError('the model was closed');
    // The graph failed before (and its session was released): fail at once; generate() then decodes per token.
    if (this.chunkedFailure) throw this.chunkedFailure;
    this.checkPrompt(prompt);
    const V = this.vocabSize;
    const presence = new Uint8Array(V);
    for (const id of prompt) presence[id] = 1;
    const stop = BigInt64Array.from([-1, ...decoding.stopIds].map((x) => BigInt(x)));
    const fixed: Record<string, ort.Tensor> = { stop_ids: new ort.Tensor('int64', stop, [stop.length]), ...samplingFeeds(decoding.sampling) };
    let pending = prompt.slice();
    let cache: ort.Tensor[] | null = [];
    let cached = 0;
    const self = this;
    return {
      get cachedLength() {
        return cached;
      },
      get pendingLength() {
        return pending.length;
      },
      async nextChunk(count: number, uniforms: Float64Array): Promise<number[]> {
        if (!cache) throw new SftError('the generation session was closed');
        const room = self.nPositions - cached - pending.length + 1;
        if (!(Number.isInteger(count) && count >= 1 && count <= room)) throw new SftError(`a decode run of ${count} tokens does not fit: 1..${room} are left in the context of ${self.nPositions}`);
        if (uniforms.length < count) throw new SftError(`a decode run of ${count} tokens needs ${count} uniforms, got ${uniforms.length}`);
        const past = cache;
        const feeds: Record<string, ort.Tensor> = {
          ...fixed,
          input_ids: i32(pending, [1, pending.length]),
          presence: new ort.Tensor('bool', presence.slice(), [V]),
          uniforms: new ort.Tensor('float64', Float64Array.from(uniforms.subarray(0, count)), [count]),
          n_steps: new ort.Tensor('int64', BigInt64Array.of(BigInt(count)), []),
        };
        self.pastFeeds(past.length ? past : null, feeds);
        let res: ort.InferenceSession.OnnxValueMapType;
        try {
          res = await self.serial(async () => (await self.session('decode')).run(feeds));
        } catch (e) {
          // A closed model is no failure of the graph: chunked decoding stays as it was, no note.
          if (!self.chunkedFailure && !self.disposed) {
            self.chunkedFailure = e;
            process.stderr.write(`note: chunked decoding failed on ${self.device} (${(e instanceof Error ? e.message : String(e)).split('\n')[0]}); this model now decodes one token per run\n`);
            self.releaseSession('decode');
          }
          throw e;
        }
        const tokens = Array.from(res.tokens!.data as BigInt64Array, (x) => Number(x));
        if (tokens.length < 1 || tokens.length > count) throw new SftError(`the decode run returned ${tokens.length} tokens for ${count} steps`);
        const present: ort.Tensor[] = [];
        for (let l = 0; l < self.L; l++) present.push(res[`present_key_${l}`]!, res[`present_value_${l}`]!);
        cache = present;
        cached += pending.length + tokens.length - 1;
        pending = [tokens[tokens.length - 1]!];
        for (const t of tokens) presence[t] = 1;
        return tokens;
      },
      dispose() {
        cache = null;
      },
    };
  }

  /**
   * Drops a session that will not be used again (the 'decode' graph after it failed: its weights and arena would
   * stay allocated — on CUDA, GPU memory — next to the 'generate' session until dispose). Released after the
   * runs queued so far; a later session(kind) builds a fresh one.
   */
  private releaseSession(kind: InferenceGraphKind): void {
    const s = this.sessions.get(kind);
    if (!s) return;
    this.sessions.delete(kind);
    void this.serial(async () => (await s).release()).catch(() => undefined);
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
