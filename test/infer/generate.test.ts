// Generation driver: greedy chain, stop ids, limits, cancellation, seeded sampling, UTF-8-safe streaming.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generate, generateText, fitPrompt, maxPromptTokens } from '../../native-runner/infer/generate';
import { samplingFrom, argmax } from '../../native-runner/infer/sampling';
import type { CausalLM, GenerationSession } from '../../native-runner/infer/causalLM';
import { TokenTextStream } from '../../native-runner/infer/textStream';
import { ToyLM, byteTokenizer } from './toyModels';

/** Emits `script` one token per step regardless of input (logit 10 on the scripted id, 0 elsewhere). */
class ScriptedLM implements CausalLM {
  constructor(
    readonly script: number[],
    readonly vocabSize = 260,
    readonly nPositions = 1000,
  ) {}
  async scoreRows(): Promise<never> {
    throw new Error('not used');
  }
  private logitsFor(k: number): Float32Array {
    const l = new Float32Array(this.vocabSize);
    l[this.script[Math.min(k, this.script.length - 1)]!] = 10;
    return l;
  }
  async startGeneration(prompt: number[]): Promise<GenerationSession> {
    let k = 0;
    let length = prompt.length;
    const self = this;
    const s = {
      get length() {
        return length;
      },
      logits: self.logitsFor(0),
      async push() {
        k++;
        length++;
        s.logits = self.logitsFor(k);
        return s.logits;
      },
      dispose() {},
    };
    return s;
  }
  async dispose() {}
}

test('greedy generation follows the argmax chain of the model', async () => {
  const lm = ToyLM.random(40, 64, 3, 0.05);
  const prompt = [1, 2, 3];
  const r = await generate(lm, prompt, { maxNewTokens: 10 });
  const expected: number[] = [];
  let prev = 3;
  for (let i = 0; i < 10; i++) {
    prev = argmax(lm.logitsAt(prev, prompt.length - 1 + i));
    expected.push(prev);
  }
  assert.deepEqual(r.newIds, expected);
  assert.equal(r.stopReason, 'max_new_tokens');
  assert.deepEqual(r.promptIds, prompt);
});

test('a stop id ends generation and is not part of the output', async () => {
  const lm = new ScriptedLM([5, 6, 7, 256, 8]);
  const r = await generate(lm, [1], { maxNewTokens: 10, stopIds: [256] });
  assert.deepEqual(r.newIds, [5, 6, 7]);
  assert.equal(r.stopId, 256);
  assert.equal(r.stopReason, 'stop_token');
  const noStop = await generate(lm, [1], { maxNewTokens: 5, stopIds: [] });
  assert.deepEqual(noStop.newIds, [5, 6, 7, 256, 8]);
});

test('generation stops at the context length and the prompt is left-truncated to leave room', async () => {
  const lm = new ScriptedLM([9], 260, 8);
  const r = await generate(lm, [1, 2, 3, 4, 5, 6], { maxNewTokens: 20 });
  assert.deepEqual(r.promptIds, [3, 4, 5, 6]); // keeps half the context when the answer cannot fit anyway
  assert.equal(r.newIds.length, 5); // fills positions 4..7 and samples one more from the last logits
  assert.equal(r.stopReason, 'context_full');
  assert.deepEqual(fitPrompt([1, 2, 3, 4, 5, 6, 7], 8, 2), [2, 3, 4, 5, 6, 7]); // room for the 2 new tokens
  assert.deepEqual(fitPrompt([1, 2], 8, 4), [1, 2]);
  assert.equal(maxPromptTokens(1024, 150), 874);
  assert.equal(maxPromptTokens(128, 150), 64);
});

test('an AbortSignal cancels between tokens and keeps what was produced', async () => {
  const lm = new ScriptedLM([65, 66, 67, 68, 69, 70]);
  const ac = new AbortController();
  let n = 0;
  const r = await generate(lm, [1], {
    maxNewTokens: 6,
    tokenizer: byteTokenizer(),
    signal: ac.signal,
    onTokenId: () => {
      if (++n === 3) ac.abort();
    },
  });
  assert.equal(r.stopReason, 'aborted');
  assert.deepEqual(r.newIds, [65, 66, 67]);
  assert.equal(r.text, 'ABC');
  const pre = new AbortController();
  pre.abort();
  const r2 = await generate(lm, [1], { maxNewTokens: 6, signal: pre.signal });
  assert.equal(r2.stopReason, 'aborted');
  assert.equal(r2.newIds.length, 0);
});

test('seeded sampling is reproducible; other seeds differ; repetition penalty acts on the prompt too', async () => {
  const lm = ToyLM.random(50, 128, 9);
  const sampling = samplingFrom({ temperature: 1.5, topP: 0.95, topK: 0 });
  const a = await generate(lm, [1, 2], { maxNewTokens: 40, sampling, seed: 123 });
  const b = await generate(lm, [1, 2], { maxNewTokens: 40, sampling, seed: 123 });
  const c = await generate(lm, [1, 2], { maxNewTokens: 40, sampling, seed: 124 });
  assert.deepEqual(a.newIds, b.newIds);
  assert.notDeepEqual(a.newIds, c.newIds);
  // A huge penalty with greedy decoding never repeats a token (positive logits shrink, negatives grow).
  const shifted = new ToyLM(50, 128, lm.table.map((x) => x + 20)); // all logits positive
  const g = await generate(shifted, [7], { maxNewTokens: 30, sampling: samplingFrom({ temperature: 0, repetitionPenalty: 1e6 }) });
  const all = [7, ...g.newIds];
  assert.equal(new Set(all).size, all.length);
});

test('streamed text never splits a UTF-8 character and concatenates to the full decode', async () => {
  const tok = byteTokenizer();
  const text = 'h\u00e9llo \u20ac \ud83d\ude00 \u4e2d\u6587!';
  const bytes = tok.encode(text);
  const lm = new ScriptedLM([...bytes, 256]);
  const deltas: string[] = [];
  const r = await generate(lm, [10], { maxNewTokens: 100, stopIds: [256], tokenizer: tok, onText: (d) => deltas.push(d) });
  assert.equal(r.text, text);
  assert.equal(deltas.join(''), text);
  for (const d of deltas) assert.ok(!d.includes('\uFFFD'), `delta ${JSON.stringify(d)}`);
  assert.ok(deltas.includes('\ud83d\ude00'), 'the 4-byte emoji arrives as one delta');
  assert.ok(deltas.length < bytes.length, 'multi-byte characters were held back until complete');
  // The async-iterator form yields the same deltas and returns the result.
  const it = generateText(lm, [10], { maxNewTokens: 100, stopIds: [256], tokenizer: tok });
  const got: string[] = [];
  let res = await it.next();
  while (!res.done) {
    got.push(res.value);
    res = await it.next();
  }
  assert.deepEqual(got, deltas);
  assert.equal(res.value.stopReason, 'stop_token');
});

test('a truncated character at the end is flushed like decode does', () => {
  const tok = byteTokenizer();
  const s = new TokenTextStream(tok);
  const bytes = [...new TextEncoder().encode('a\u20ac')].slice(0, 3); // 'a' + 2 of 3 bytes
  const out = bytes.map((b) => s.push(b)).join('') + s.flush();
  assert.equal(out, tok.decode(bytes));
});
