// Tokenizers: both Hugging Face layouts against the transformers golden ids, round trips, saving, errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadTokenizer, TOKENIZER_FILE_NAMES, type HfTokenizer } from '../../native-runner/model/tokenizer';
import { CHAT_TEMPLATE_JINJA, ROLE_TOKENS, renderChatText } from '../../native-runner/model/chatTemplate';
import { expectSftError, FAST_TOKENIZER_DIR, makeBaseTokenizerDir, readTokenizerGolden, SLOW_TOKENIZER_DIR, tempDir } from './helpers';

const golden = readTokenizerGolden();
const tmp = tempDir('sft-tok-');
const fast = loadTokenizer(FAST_TOKENIZER_DIR);
const slow = loadTokenizer(SLOW_TOKENIZER_DIR);

function checkGolden(tok: HfTokenizer) {
  assert.equal(golden.texts.length, 30);
  for (let i = 0; i < golden.texts.length; i++) {
    assert.deepEqual(tok.encode(golden.texts[i]!), golden.ids[i], `text ${i}: ${JSON.stringify(golden.texts[i]).slice(0, 60)}`);
    assert.equal(tok.decode(golden.ids[i]!), golden.decoded[i], `decode ${i}`);
    assert.equal(tok.decode(tok.encode(golden.texts[i]!)), golden.texts[i], `round trip ${i}`);
  }
  assert.equal(tok.vocabSize, golden.vocab_size);
  assert.deepEqual(tok.specialTokens, golden.special);
  assert.equal(tok.eosId, 50256);
  assert.equal(tok.padId, 50256);
}

test('fast layout (tokenizer.json) gives the golden ids for all 30 texts and round-trips', () => {
  assert.equal(fast.layout, 'tokenizer.json');
  checkGolden(fast);
});

test('slow layout (vocab.json + merges.txt + added tokens) gives the same golden ids', () => {
  assert.equal(slow.layout, 'vocab.json+merges.txt');
  checkGolden(slow);
});

test('special tokens: recognised in text, skipped on request, looked up by name', () => {
  const ids = fast.encode('<|user|>\nHi\n<|assistant|>\nYo<|endoftext|>');
  assert.deepEqual(ids.filter((i) => i >= 50256), [50257, 50258, 50256]);
  assert.equal(fast.decode(ids, { skipSpecialTokens: true }), '\nHi\n\nYo');
  assert.equal(fast.tokenToId('<|system|>'), 50259);
  assert.equal(fast.tokenToId('Ġthe'), 262);
  assert.equal(fast.tokenToId('no-such-token'), undefined);
  assert.equal(fast.decode([]), '');
  assert.deepEqual(fast.encode(''), []);
  expectSftError(() => fast.decode([50260]), 'token id 50260 is outside the vocabulary');
});

test('base GPT-2 tokenizer (no role tokens): role tokens are split as text; withSpecialTokens adds 50257..50259', () => {
  const base = loadTokenizer(makeBaseTokenizerDir(path.join(tmp, 'base')));
  assert.equal(base.vocabSize, 50257);
  assert.deepEqual(base.specialTokens, { '<|endoftext|>': 50256 });
  assert.equal(base.tokenToId('<|user|>'), undefined);
  assert.ok(base.encode('<|user|>').length > 1);
  const chat = base.withSpecialTokens(ROLE_TOKENS);
  assert.equal(chat.vocabSize, 50260);
  assert.deepEqual(chat.specialTokens, golden.special);
  for (let i = 0; i < golden.texts.length; i++) assert.deepEqual(chat.encode(golden.texts[i]!), golden.ids[i], `text ${i}`);
  // Adding again is a no-op.
  assert.equal(chat.withSpecialTokens(ROLE_TOKENS).vocabSize, 50260);
  // The original is untouched.
  assert.equal(base.vocabSize, 50257);
});

test('files(): saved tokenizer reloads in both layouts with identical ids, with the chat template', () => {
  const files = fast.files();
  assert.deepEqual(Object.keys(files).sort(), [...TOKENIZER_FILE_NAMES].sort());
  const cfg = JSON.parse(files['tokenizer_config.json']!);
  assert.equal(cfg.chat_template, CHAT_TEMPLATE_JINJA);
  assert.deepEqual(cfg.additional_special_tokens, ['<|user|>', '<|assistant|>', '<|system|>']);
  assert.equal(cfg.eos_token, '<|endoftext|>');
  assert.equal(cfg.pad_token, '<|endoftext|>');
  assert.equal(cfg.added_tokens_decoder['50258'].content, '<|assistant|>');
  assert.equal(cfg.added_tokens_decoder['50258'].special, true);
  assert.deepEqual(JSON.parse(files['added_tokens.json']!), { '<|user|>': 50257, '<|assistant|>': 50258, '<|system|>': 50259 });
  assert.equal(files['merges.txt']!.split('\n')[1], 'Ġ t');
  const both = path.join(tmp, 'saved');
  fs.mkdirSync(both);
  for (const [n, c] of Object.entries(files)) fs.writeFileSync(path.join(both, n), c);
  const onlySlow = path.join(tmp, 'saved-slow');
  fs.mkdirSync(onlySlow);
  for (const [n, c] of Object.entries(files)) if (n !== 'tokenizer.json') fs.writeFileSync(path.join(onlySlow, n), c);
  for (const dir of [both, onlySlow]) {
    const t = loadTokenizer(dir);
    for (let i = 0; i < golden.texts.length; i++) assert.deepEqual(t.encode(golden.texts[i]!), golden.ids[i], `${dir} text ${i}`);
    assert.deepEqual(t.specialTokens, golden.special);
  }
});

test('renderChatText produces the recipe format', () => {
  const text = renderChatText(
    [
      { role: 'system', content: 'S' },
      { role: 'user', content: 'Q' },
      { role: 'assistant', content: 'A' },
    ],
    false,
  );
  assert.equal(text, '<|system|>\nS\n<|user|>\nQ\n<|assistant|>\nA<|endoftext|>');
  assert.equal(renderChatText([{ role: 'user', content: 'Q' }], true), '<|user|>\nQ\n<|assistant|>\n');
  assert.deepEqual(fast.encode(golden.texts[1]!), golden.ids[1]);
});

test('tokenizer errors: merges without vocab, vocab without merges, unknown layout, bad JSON, bad merges line', () => {
  const d1 = path.join(tmp, 'merges-only');
  fs.mkdirSync(d1);
  fs.copyFileSync(path.join(SLOW_TOKENIZER_DIR, 'merges.txt'), path.join(d1, 'merges.txt'));
  expectSftError(() => loadTokenizer(d1), path.join(d1, 'merges.txt'), 'vocab.json is missing');

  const d2 = path.join(tmp, 'vocab-only');
  fs.mkdirSync(d2);
  fs.writeFileSync(path.join(d2, 'vocab.json'), '{"a": 0}');
  expectSftError(() => loadTokenizer(d2), 'vocab.json', 'merges.txt is missing');

  const d3 = path.join(tmp, 'empty');
  fs.mkdirSync(d3);
  expectSftError(() => loadTokenizer(d3), d3, 'no tokenizer found', 'tokenizer.json', 'vocab.json + merges.txt');

  const d4 = path.join(tmp, 'badjson');
  fs.mkdirSync(d4);
  fs.writeFileSync(path.join(d4, 'tokenizer.json'), '{"model": {"type": "BPE",\n  "vocab": {"a": 0,}}}');
  expectSftError(() => loadTokenizer(d4), path.join(d4, 'tokenizer.json'), 'invalid JSON', 'line 2');

  const d5 = path.join(tmp, 'badcfg');
  fs.mkdirSync(d5);
  fs.copyFileSync(path.join(FAST_TOKENIZER_DIR, 'tokenizer.json'), path.join(d5, 'tokenizer.json'));
  fs.writeFileSync(path.join(d5, 'tokenizer_config.json'), '{"eos_token": ');
  expectSftError(() => loadTokenizer(d5), path.join(d5, 'tokenizer_config.json'), 'invalid JSON');

  const d6 = path.join(tmp, 'badmerges');
  fs.mkdirSync(d6);
  fs.writeFileSync(path.join(d6, 'vocab.json'), '{"a": 0, "b": 1, "ab": 2, "<|endoftext|>": 3}');
  fs.writeFileSync(path.join(d6, 'merges.txt'), '#version: 0.2\na b\nab\n');
  expectSftError(() => loadTokenizer(d6), 'merges.txt:3', 'two tokens');

  const d7 = path.join(tmp, 'wordpiece');
  fs.mkdirSync(d7);
  fs.writeFileSync(path.join(d7, 'tokenizer.json'), JSON.stringify({ model: { type: 'WordPiece', vocab: {} } }));
  expectSftError(() => loadTokenizer(d7), 'tokenizer.json', 'WordPiece', 'BPE');

  const d8 = path.join(tmp, 'dupid');
  fs.mkdirSync(d8);
  fs.writeFileSync(path.join(d8, 'vocab.json'), '{"a": 0, "b": 0}');
  fs.writeFileSync(path.join(d8, 'merges.txt'), '#version: 0.2\n');
  expectSftError(() => loadTokenizer(d8), 'vocab.json', 'id 0 is used by both "a" and "b"');
});

test('a tiny slow-layout BPE works end to end', () => {
  const d = path.join(tmp, 'mini');
  fs.mkdirSync(d);
  fs.writeFileSync(path.join(d, 'vocab.json'), JSON.stringify({ a: 0, b: 1, ab: 2, '<|endoftext|>': 3 }));
  fs.writeFileSync(path.join(d, 'merges.txt'), '#version: 0.2\na b\n');
  const t = loadTokenizer(d);
  assert.deepEqual(t.encode('abab<|endoftext|>a'), [2, 2, 3, 0]);
  assert.equal(t.eosId, 3);
  assert.equal(t.vocabSize, 4);
});
