// Chat prompts: template text, piecewise ids equal to training ids, history trimming, raw prompts for base models.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadTokenizer } from '../../native-runner/model/tokenizer';
import { buildPrompt, chatStopIds, extractAnswer, hasChatTokens, renderChatPrompt } from '../../native-runner/infer/chatFormat';
import { byteTokenizer } from './toyModels';

const tok = loadTokenizer('samples/tiny-gpt2-chat');
const golden = JSON.parse(readFileSync('test/fixtures/golden/tiny-golden.json', 'utf8'));

test('the prompt text follows the template, with system and history', () => {
  assert.equal(renderChatPrompt([{ role: 'user', content: 'Hi' }]), '<|user|>\nHi\n<|assistant|>\n');
  assert.equal(
    renderChatPrompt(
      [
        { role: 'user', content: 'Q1' },
        { role: 'assistant', content: 'A1' },
        { role: 'user', content: 'Q2' },
      ],
      'Be brief.',
    ),
    '<|system|>\nBe brief.\n<|user|>\nQ1\n<|assistant|>\nA1<|endoftext|><|user|>\nQ2\n<|assistant|>\n',
  );
  // a blank system prompt is left out, a system message first is used
  assert.equal(renderChatPrompt([{ role: 'user', content: 'x' }], '  '), '<|user|>\nx\n<|assistant|>\n');
  assert.equal(renderChatPrompt([{ role: 'system', content: 'S' }, { role: 'user', content: 'x' }]), '<|system|>\nS\n<|user|>\nx\n<|assistant|>\n');
  assert.throws(() => renderChatPrompt([{ role: 'assistant', content: 'x' }]), /last message must be from the user/);
});

test('prompt ids equal the golden generation prompt and the training ids of the golden batch', () => {
  const p = buildPrompt(tok, [{ role: 'user', content: 'Hi' }], { maxPromptTokens: 100 });
  assert.equal(p.mode, 'chat');
  assert.deepEqual(p.ids, golden.generate.prompt);
  const q = buildPrompt(tok, [{ role: 'user', content: 'What is the capital of France?' }], { maxPromptTokens: 100 });
  const row0: number[] = golden.forward.input_ids[0];
  const labels0: number[] = golden.forward.labels[0];
  const promptLen = labels0.findIndex((l) => l !== -100);
  assert.deepEqual(q.ids, row0.slice(0, promptLen));
  // With the first exchange as history, the ids are the golden row's ids followed by the next prompt.
  const h = buildPrompt(
    tok,
    [
      { role: 'user', content: 'What is the capital of France?' },
      { role: 'assistant', content: 'The capital of France is Paris.' },
      { role: 'user', content: 'Hi' },
    ],
    { maxPromptTokens: 100 },
  );
  const realLen = (golden.forward.attention_mask[0] as number[]).reduce((a, b) => a + b, 0);
  assert.deepEqual(h.ids, [...row0.slice(0, realLen), ...golden.generate.prompt]);
});

test('long histories drop the oldest exchanges first, then tokens from the left', () => {
  const msgs = [
    { role: 'user' as const, content: 'one two three four five' },
    { role: 'assistant' as const, content: 'six seven eight nine ten' },
    { role: 'user' as const, content: 'Hi' },
  ];
  const full = buildPrompt(tok, msgs, { maxPromptTokens: 1000 });
  const short = buildPrompt(tok, msgs, { maxPromptTokens: 8 });
  assert.equal(short.droppedTurns, 1);
  assert.deepEqual(short.ids, golden.generate.prompt);
  assert.equal(full.droppedTurns, 0);
  const cut = buildPrompt(tok, [{ role: 'user', content: 'Hi' }], { maxPromptTokens: 4 });
  assert.deepEqual(cut.ids, golden.generate.prompt.slice(2));
  assert.equal(cut.truncatedTokens, 2);
});

test('base models (no role tokens) are prompted with the raw text of the last user message', () => {
  const base = byteTokenizer(false);
  assert.equal(hasChatTokens(base), false);
  assert.equal(hasChatTokens(tok), true);
  const p = buildPrompt(base, [{ role: 'user', content: 'Hi!' }], { maxPromptTokens: 50 });
  assert.equal(p.mode, 'raw');
  assert.deepEqual(p.ids, [72, 105, 33]);
  assert.deepEqual(chatStopIds(base, 'raw'), [256]);
  assert.deepEqual(chatStopIds(tok, 'chat'), [50256, 50257, 50258, 50259]);
  assert.throws(() => buildPrompt(base, [{ role: 'user', content: 'x' }], { maxPromptTokens: 5, mode: 'chat' }), /base model/);
});

test('the answer is the text before <|endoftext|> (or a role marker), stripped', () => {
  assert.equal(extractAnswer('  Paris.\n<|endoftext|>junk'), 'Paris.');
  assert.equal(extractAnswer('Sure<|user|>\nmore'), 'Sure');
  assert.equal(extractAnswer(' plain '), 'plain');
});
