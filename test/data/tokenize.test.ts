// Rendering (pieces, template rules) and piece-by-piece tokenisation, checked against transformers' golden
// batch (test/fixtures/golden/tiny-golden.json) and on edge cases: system turns, multi-turn, truncation,
// role markers inside user text, the text format and a custom template.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadTokenizer } from '../../native-runner/model/tokenizer';
import { renderConversation, renderPieces, textPieces, parseTemplate, DEFAULT_TEMPLATE } from '../../native-runner/data/render';
import { tokenizeConversation, trainedCount } from '../../native-runner/data/tokenize';
import type { Conversation, Turn } from '../../native-runner/data/types';

const tok = loadTokenizer(path.join(__dirname, '../fixtures/gpt2-tokenizer'));
const golden = JSON.parse(fs.readFileSync(path.join(__dirname, '../fixtures/golden/tiny-golden.json'), 'utf8')) as {
  forward: { input_ids: number[][]; attention_mask: number[][]; labels: number[][] };
};
const src = { file: 'mem', line: 1 };
const conv = (turns: Turn[]): Conversation => ({ turns, source: src });

test('golden: the two recipe conversations give transformers input_ids and trained label positions exactly', () => {
  const pairs: [string, string][] = [
    ['What is the capital of France?', 'The capital of France is Paris.'],
    ['Write a haiku about rain.', 'Soft rain on the roof,\nquiet streets breathe in the grey,\npuddles hold the sky.'],
  ];
  pairs.forEach(([q, a], b) => {
    const ex = tokenizeConversation(tok, conv([{ role: 'user', content: q }, { role: 'assistant', content: a }]), { maxLength: 512 })!;
    const n = golden.forward.attention_mask[b]!.reduce((s, x) => s + x, 0);
    assert.deepEqual(ex.inputIds, golden.forward.input_ids[b]!.slice(0, n), `conversation ${b} ids`);
    assert.deepEqual(
      Array.from(ex.trained),
      golden.forward.labels[b]!.slice(0, n).map((l) => (l === -100 ? 0 : 1)),
      `conversation ${b} trained mask`,
    );
    // Trained labels are the ids themselves (HF shifts inside the model).
    golden.forward.labels[b]!.slice(0, n).forEach((l, i) => l !== -100 && assert.equal(l, ex.inputIds[i]));
    assert.equal(ex.fullLength, n);
  });
});

test('pieces: system + multi-turn render as the recipe, blank system dropped, turns after the last answer dropped', () => {
  const turns: Turn[] = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Capital of Italy?' },
    { role: 'assistant', content: 'Rome.' },
    { role: 'user', content: 'And Spain?' },
    { role: 'assistant', content: 'Madrid.' },
    { role: 'user', content: 'Thanks!' },
  ];
  assert.deepEqual(renderPieces(turns), [
    { text: '<|system|>\nBe brief.\n<|user|>\nCapital of Italy?\n<|assistant|>\n', answer: false },
    { text: 'Rome.<|endoftext|>', answer: true },
    { text: '<|user|>\nAnd Spain?\n<|assistant|>\n', answer: false },
    { text: 'Madrid.<|endoftext|>', answer: true },
  ]);
  assert.equal(
    renderConversation([{ role: 'system', content: ' \n ' }, ...turns.slice(1, 3)]),
    '<|user|>\nCapital of Italy?\n<|assistant|>\nRome.<|endoftext|>',
  );
  assert.equal(renderConversation([{ role: 'user', content: 'only a question' }]), null);
  assert.equal(tokenizeConversation(tok, conv([{ role: 'system', content: 'x' }, { role: 'user', content: 'q' }]), { maxLength: 64 }), null);
});

test('multi-turn tokenisation: exactly the answer pieces are trained, both closing <|endoftext|> included', () => {
  const turns: Turn[] = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Capital of Italy?' },
    { role: 'assistant', content: 'Rome.' },
    { role: 'user', content: 'And Spain?' },
    { role: 'assistant', content: 'Madrid.' },
  ];
  const ex = tokenizeConversation(tok, conv(turns), { maxLength: 512 })!;
  const pieces = renderPieces(turns)!;
  const expectIds = pieces.flatMap((p) => tok.encode(p.text));
  const expectTrained = pieces.flatMap((p) => tok.encode(p.text).map(() => (p.answer ? 1 : 0)));
  assert.deepEqual(ex.inputIds, expectIds);
  assert.deepEqual(Array.from(ex.trained), expectTrained);
  assert.equal(trainedCount(ex), tok.encode('Rome.<|endoftext|>').length + tok.encode('Madrid.<|endoftext|>').length);
  const eos = tok.eosId;
  const eosTrained = ex.inputIds.map((id, i) => (id === eos ? ex.trained[i] : -1)).filter((x) => x !== -1);
  assert.deepEqual(eosTrained, [1, 1]);
  assert.equal(ex.inputIds[0], tok.tokenToId('<|system|>'));
  const all = tokenizeConversation(tok, conv(turns), { maxLength: 512, assistantOnlyLoss: false })!;
  assert.equal(trainedCount(all), all.inputIds.length);
});

test('role markers typed inside user text stay in the prompt piece and are not trained', () => {
  const user = 'Explain <|assistant|> and <|user|> here';
  const ex = tokenizeConversation(tok, conv([{ role: 'user', content: user }, { role: 'assistant', content: 'They are markers.' }]), { maxLength: 512 })!;
  const assistantId = tok.tokenToId('<|assistant|>')!;
  const positions = ex.inputIds.flatMap((id, i) => (id === assistantId ? [i] : []));
  assert.equal(positions.length, 2); // the one in the user text and the real one
  for (const p of positions) assert.equal(ex.trained[p], 0);
  assert.equal(trainedCount(ex), tok.encode('They are markers.<|endoftext|>').length);
  assert.equal(ex.text, `<|user|>\n${user}\n<|assistant|>\nThey are markers.<|endoftext|>`);
});

test('truncation keeps the first max_length ids; an example cut before its answer trains nothing', () => {
  const c = conv([
    { role: 'user', content: 'word '.repeat(40) },
    { role: 'assistant', content: 'Short answer.' },
  ]);
  const full = tokenizeConversation(tok, c, { maxLength: 1024 })!;
  const cut = tokenizeConversation(tok, c, { maxLength: 20 })!;
  assert.equal(cut.inputIds.length, 20);
  assert.deepEqual(cut.inputIds, full.inputIds.slice(0, 20));
  assert.equal(cut.fullLength, full.inputIds.length);
  assert.equal(trainedCount(cut), 0);
  const partly = tokenizeConversation(tok, c, { maxLength: full.inputIds.length - 2 })!;
  assert.equal(trainedCount(partly), trainedCount(full) - 2);
  assert.throws(() => tokenizeConversation(tok, c, { maxLength: 1 }), /^SftError: max_length: expected an integer >= 2 and <= 1048576, got 1$/);
});

test('unicode and whitespace survive piece tokenisation (decode round trip)', () => {
  const turns: Turn[] = [
    { role: 'user', content: 'Translate «bonjour» 🇯🇵\ttabs  and  spaces' },
    { role: 'assistant', content: 'こんにちは 👋\n' },
  ];
  const ex = tokenizeConversation(tok, conv(turns), { maxLength: 512 })!;
  assert.equal(tok.decode(ex.inputIds), renderConversation(turns));
});

test('text format: eos appended unless present, every token trained even with assistant_only_loss', () => {
  assert.deepEqual(textPieces('abc'), [{ text: 'abc<|endoftext|>', answer: true }]);
  assert.deepEqual(textPieces('abc<|endoftext|>'), [{ text: 'abc<|endoftext|>', answer: true }]);
  const ex = tokenizeConversation(tok, { turns: [], source: src, rawText: 'Plain text.' }, { maxLength: 64, assistantOnlyLoss: true })!;
  assert.deepEqual(ex.inputIds, tok.encode('Plain text.<|endoftext|>'));
  assert.equal(trainedCount(ex), ex.inputIds.length);
  assert.equal(ex.inputIds[ex.inputIds.length - 1], tok.eosId);
});

test('custom template: other role markers and eos; unknown keys rejected', () => {
  const t = parseTemplate({ user_prefix: '### User:\n', assistant_prefix: '### Assistant:\n', user_suffix: '\n\n', eos: '</s>' });
  assert.equal(renderConversation([{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello' }], t), '### User:\nhi\n\n### Assistant:\nhello</s>');
  assert.deepEqual(textPieces('x', t), [{ text: 'x</s>', answer: true }]);
  assert.equal(t.system.prefix, DEFAULT_TEMPLATE.system.prefix);
  assert.throws(() => parseTemplate({ bot_prefix: 'x' }), /chat_template: unknown key "bot_prefix"/);
  assert.throws(() => parseTemplate({ eos: 3 }), /chat_template: eos must be a string/);
  const ex = tokenizeConversation(tok, conv([{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello' }]), { maxLength: 64, template: t })!;
  assert.deepEqual(ex.inputIds, [...tok.encode('### User:\nhi\n\n### Assistant:\n'), ...tok.encode('hello</s>')]);
});
