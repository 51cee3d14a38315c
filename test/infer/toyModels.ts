/**
 * Test doubles for infer/: a toy CausalLM whose logits are a known function of (previous token, position),
 * and a byte tokenizer (ids 0..255 = UTF-8 bytes, 256 = <|endoftext|>, 257..259 = role tokens).
 */
import type { TextTokenizer } from '../../native-runner/model/types';
import type { CausalLM, GenerationSession, RowScores } from '../../native-runner/infer/causalLM';
import { logProbAndGreedy } from '../../native-runner/infer/causalLM';

/**
 * logits(prev, pos)[v] = table[prev·V + v] + posWeight · pos · ((v % 3) − 1), pos = index of the last fed token.
 * Depends on the position so that windowing changes results (perplexity tests).
 */
export class ToyLM implements CausalLM {
  readonly calls: number[][][] = [];
  constructor(
    readonly vocabSize: number,
    readonly nPositions: number,
    readonly table: Float32Array,
    readonly posWeight = 0,
  ) {}

  static random(V: number, P: number, seed: number, posWeight = 0): ToyLM {
    let s = seed >>> 0;
    const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
    const t = new Float32Array(V * V);
    for (let i = 0; i < t.length; i++) t[i] = (next() - 0.5) * 6;
    return new ToyLM(V, P, t, posWeight);
  }

  logitsAt(prev: number, pos: number): Float32Array {
    const out = new Float32Array(this.vocabSize);
    for (let v = 0; v < this.vocabSize; v++) out[v] = this.table[prev * this.vocabSize + v]! + this.posWeight * pos * ((v % 3) - 1);
    return out;
  }

  async scoreRows(rows: number[][]): Promise<RowScores[]> {
    this.calls.push(rows.map((r) => [...r]));
    return rows.map((row) => {
      if (row.length < 2 || row.length > this.nPositions + 1) throw new Error(`bad row length ${row.length}`);
      const logprobs = new Float64Array(row.length - 1);
      const greedy = new Uint8Array(row.length - 1);
      for (let t = 0; t + 1 < row.length; t++) {
        const r = logProbAndGreedy(this.logitsAt(row[t]!, t), row[t + 1]!);
        logprobs[t] = r.logprob;
        greedy[t] = r.greedy ? 1 : 0;
      }
      return { logprobs, greedy };
    });
  }

  async startGeneration(prompt: number[]): Promise<GenerationSession> {
    if (prompt.length < 1 || prompt.length > this.nPositions) throw new Error(`bad prompt length ${prompt.length}`);
    let length = prompt.length;
    let last = prompt[prompt.length - 1]!;
    const self = this;
    const session = {
      get length() {
        return length;
      },
      logits: self.logitsAt(last, length - 1),
      async push(token: number) {
        if (length >= self.nPositions) throw new Error('context full');
        last = token;
        length++;
        session.logits = self.logitsAt(last, length - 1);
        return session.logits;
      },
      dispose() {},
    };
    return session;
  }

  async dispose(): Promise<void> {}
}

/** ids 0..255 are bytes; 256 <|endoftext|>, 257 <|user|>, 258 <|assistant|>, 259 <|system|>. */
export function byteTokenizer(withRoles = true): TextTokenizer {
  const specials: Record<string, number> = withRoles ? { '<|endoftext|>': 256, '<|user|>': 257, '<|assistant|>': 258, '<|system|>': 259 } : { '<|endoftext|>': 256 };
  const names = Object.keys(specials);
  const re = new RegExp(`(${names.map((n) => n.replace(/[|]/g, '\\|')).join('|')})`);
  return {
    vocabSize: withRoles ? 260 : 257,
    eosId: 256,
    padId: 256,
    specialTokens: specials,
    tokenToId: (t) => specials[t],
    encode(text) {
      const out: number[] = [];
      for (const part of text.split(re)) {
        if (part in specials) out.push(specials[part]!);
        else out.push(...new TextEncoder().encode(part));
      }
      return out;
    },
    decode(ids, opts) {
      let s = '';
      let bytes: number[] = [];
      const flush = () => {
        s += new TextDecoder().decode(new Uint8Array(bytes));
        bytes = [];
      };
      for (const id of Array.from(ids)) {
        if (id < 256) bytes.push(id);
        else {
          flush();
          if (!opts?.skipSpecialTokens) s += names.find((n) => specials[n] === id) ?? '';
        }
      }
      flush();
      return s;
    },
  };
}
