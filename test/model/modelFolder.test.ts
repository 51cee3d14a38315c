// Model folders: the tiny fixture loads/saves/reloads; chat preparation; malformed folders.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModel, saveModel, inspectModelFolder, writeModelFiles } from '../../native-runner/model/modelFolder';
import { readSafetensors, readSafetensorsHeader, writeSafetensors } from '../../native-runner/model/safetensors';
import { makeConfig } from '../../native-runner/model/config';
import { initGpt2Params } from '../../native-runner/model/gpt2Params';
import { loadTokenizer } from '../../native-runner/model/tokenizer';
import { prepareForChat } from '../../native-runner/model/chat';
import type { ParamTensor } from '../../native-runner/model/types';
import { expectSftErrorAsync, makeBaseTokenizerDir, readTokenizerGolden, tempDir, TINY_DIR } from './helpers';

const tmp = tempDir('sft-mf-');
const golden = readTokenizerGolden();

function bytesOf(t: ParamTensor): Buffer {
  return Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/** A copy of the tiny fixture folder to break. */
function tinyCopy(name: string): string {
  const d = path.join(tmp, name);
  fs.cpSync(TINY_DIR, d, { recursive: true });
  return d;
}

test('tiny fixture loads with the right shapes and 1,637,888 parameters', async () => {
  const m = await loadModel(TINY_DIR);
  assert.equal(m.params.size, 28);
  let total = 0;
  for (const t of m.params.values()) total += t.data.length;
  assert.equal(total, 1_637_888);
  assert.deepEqual(m.params.get('transformer.wte.weight')!.shape, [50260, 32]);
  assert.equal([...m.params.keys()][0], 'transformer.wte.weight');
  assert.equal([...m.params.keys()][27], 'transformer.ln_f.bias');
  assert.equal(m.tokenizer.vocabSize, 50260);
  assert.deepEqual(m.notes, []);
  const s = inspectModelFolder(TINY_DIR);
  assert.equal(s.parameters, 1_637_888);
  assert.equal(s.tensorCount, 28);
});

test('save → identical tensor set (byte-identical), reload, no tied lm_head written', async () => {
  const m = await loadModel(TINY_DIR);
  const out = path.join(tmp, 'saved');
  await saveModel(out, m);
  const files = fs.readdirSync(out).sort();
  for (const f of ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'merges.txt']) assert.ok(files.includes(f), f);
  const orig = readSafetensors(path.join(TINY_DIR, 'model.safetensors'));
  const saved = readSafetensors(path.join(out, 'model.safetensors'));
  assert.deepEqual([...saved.keys()].sort(), [...orig.keys()].sort());
  for (const [k, t] of orig) {
    assert.deepEqual(saved.get(k)!.shape, t.shape, k);
    assert.ok(bytesOf(saved.get(k)!).equals(bytesOf(t)), k);
  }
  assert.equal(saved.has('lm_head.weight'), false);
  assert.equal(readSafetensorsHeader(path.join(out, 'model.safetensors')).metadata.format, 'pt');
  const back = await loadModel(out);
  assert.deepEqual(back.config.vocab_size, 50260);
  for (let i = 0; i < golden.texts.length; i++) assert.deepEqual(back.tokenizer.encode(golden.texts[i]!), golden.ids[i]);
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
  assert.equal(cfg.summary_type, 'cls_index'); // raw keys kept
  const gen = JSON.parse(fs.readFileSync(path.join(out, 'generation_config.json'), 'utf8'));
  assert.deepEqual([gen.bos_token_id, gen.eos_token_id, gen.pad_token_id], [50256, 50256, 50256]);
  // Saving over it again replaces it atomically (no temp folders left).
  await saveModel(out, back);
  assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-')), []);
});

test('saving into a folder with other contents keeps them', async () => {
  const m = await loadModel(TINY_DIR);
  const out = path.join(tmp, 'run-out');
  fs.mkdirSync(path.join(out, 'checkpoint-10'), { recursive: true });
  fs.writeFileSync(path.join(out, 'metrics.jsonl'), '{"step":1}\n');
  await saveModel(out, m);
  assert.ok(fs.existsSync(path.join(out, 'checkpoint-10')));
  assert.equal(fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8'), '{"step":1}\n');
  assert.equal((await loadModel(out)).params.size, 28);
  assert.deepEqual(fs.readdirSync(out).filter((f) => f.startsWith('.save-')), []);
});

test('writeModelFiles writes a loadable folder into an existing directory (checkpoint use)', async () => {
  const m = await loadModel(TINY_DIR);
  const d = path.join(tmp, 'ckpt-tmp');
  fs.mkdirSync(d);
  fs.writeFileSync(path.join(d, 'optimizer.safetensors'), 'other');
  writeModelFiles(d, m);
  const back = await loadModel(d);
  assert.ok(bytesOf(back.params.get('transformer.wpe.weight')!).equals(bytesOf(m.params.get('transformer.wpe.weight')!)));
  assert.equal(fs.readFileSync(path.join(d, 'optimizer.safetensors'), 'utf8'), 'other');
});

test('older layouts: names without "transformer.", tied lm_head present, attn.bias buffers', async () => {
  const d = tinyCopy('old-names');
  const t = readSafetensors(path.join(d, 'model.safetensors'));
  const renamed = new Map<string, ParamTensor>();
  for (const [k, v] of t) renamed.set(k.replace(/^transformer\./, ''), v);
  renamed.set('lm_head.weight', t.get('transformer.wte.weight')!);
  renamed.set('h.0.attn.bias', { shape: [1, 1, 128, 128], data: new Float32Array(128 * 128) });
  renamed.set('h.1.attn.masked_bias', { shape: [], data: new Float32Array([-1e4]) });
  writeSafetensors(path.join(d, 'model.safetensors'), renamed);
  const m = await loadModel(d);
  assert.equal(m.params.size, 28);
  assert.ok(m.params.has('transformer.h.1.mlp.c_proj.weight'));
  assert.ok(!m.params.has('lm_head.weight'));
  assert.ok(bytesOf(m.params.get('transformer.wte.weight')!).equals(bytesOf(t.get('transformer.wte.weight')!)));
  assert.equal(m.notes!.length, 1);
  assert.match(m.notes![0]!, /dropped 2 attention-mask buffers/);

  // A tied lm_head that differs from wte is ignored with a note.
  const other = new Float32Array(t.get('transformer.wte.weight')!.data);
  other[0] = 42;
  renamed.set('lm_head.weight', { shape: [50260, 32], data: other });
  writeSafetensors(path.join(d, 'model.safetensors'), renamed);
  const m2 = await loadModel(d);
  assert.ok(m2.notes!.some((n) => n.includes('lm_head.weight differs')));
  assert.notEqual(m2.params.get('transformer.wte.weight')!.data[0], 42);
});

test('sharded weights load like the single file', async () => {
  const d = tinyCopy('sharded');
  const t = readSafetensors(path.join(d, 'model.safetensors'));
  fs.rmSync(path.join(d, 'model.safetensors'));
  const a = new Map([...t].filter(([k]) => k.includes('wte')));
  const b = new Map([...t].filter(([k]) => !k.includes('wte')));
  writeSafetensors(path.join(d, 'model-00001-of-00002.safetensors'), a);
  writeSafetensors(path.join(d, 'model-00002-of-00002.safetensors'), b);
  const wm: Record<string, string> = {};
  for (const k of a.keys()) wm[k] = 'model-00001-of-00002.safetensors';
  for (const k of b.keys()) wm[k] = 'model-00002-of-00002.safetensors';
  fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: wm }));
  const m = await loadModel(d);
  assert.equal(m.params.size, 28);
  assert.ok(bytesOf(m.params.get('transformer.h.1.attn.c_attn.weight')!).equals(bytesOf(t.get('transformer.h.1.attn.c_attn.weight')!)));
});

test('prepareForChat: base GPT-2 (vocab 50257) → 50260 with mean-initialised rows; saved folder reloads with the same ids', async () => {
  const dir = path.join(tmp, 'base-model');
  makeBaseTokenizerDir(dir);
  const config = makeConfig({ n_layer: 1, n_head: 2, n_embd: 16, n_positions: 64, vocab_size: 50257, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 });
  const params = initGpt2Params(config, 3);
  const tokenizer = loadTokenizer(dir);
  await saveModel(dir, { config, params, tokenizer });
  const base = await loadModel(dir);
  assert.equal(base.tokenizer.vocabSize, 50257);
  assert.equal(base.tokenizer.tokenToId('<|user|>'), undefined);

  const { model: chat, added } = prepareForChat(base);
  assert.deepEqual(added, ['<|user|>', '<|assistant|>', '<|system|>']);
  assert.equal(chat.config.vocab_size, 50260);
  assert.equal(chat.config.pad_token_id, 50256);
  assert.deepEqual(chat.tokenizer.specialTokens, golden.special);
  const wte = chat.params.get('transformer.wte.weight')!;
  assert.deepEqual(wte.shape, [50260, 16]);
  const old = base.params.get('transformer.wte.weight')!.data;
  assert.ok(Buffer.from(wte.data.buffer, 0, old.byteLength).equals(Buffer.from(old.buffer, old.byteOffset, old.byteLength)));
  for (let c = 0; c < 16; c++) {
    let s = 0;
    for (let r = 0; r < 50257; r++) s += old[r * 16 + c]!;
    const mean = Math.fround(s / 50257);
    for (const r of [50257, 50258, 50259]) assert.equal(wte.data[r * 16 + c], mean, `row ${r} col ${c}`);
  }
  // The base model is untouched.
  assert.deepEqual(base.params.get('transformer.wte.weight')!.shape, [50257, 16]);

  // Already ready → no-op.
  const again = prepareForChat(chat);
  assert.deepEqual(again.added, []);
  assert.equal(again.model, chat);

  const out = path.join(tmp, 'chat-model');
  await saveModel(out, chat);
  const re = await loadModel(out);
  assert.equal(re.config.vocab_size, 50260);
  assert.equal(re.config.pad_token_id, 50256);
  for (let i = 0; i < golden.texts.length; i++) assert.deepEqual(re.tokenizer.encode(golden.texts[i]!), golden.ids[i], `text ${i}`);
  assert.ok(bytesOf(re.params.get('transformer.wte.weight')!).equals(bytesOf(wte)));
  const tcfg = JSON.parse(fs.readFileSync(path.join(out, 'tokenizer_config.json'), 'utf8'));
  assert.ok(String(tcfg.chat_template).includes('<|assistant|>'));
  assert.deepEqual(prepareForChat(re).added, []);
});

test('untied lm_head grows with wte', () => {
  const config = makeConfig({ n_layer: 1, n_head: 1, n_embd: 4, n_positions: 8, vocab_size: 50257, tie_word_embeddings: false });
  const params = initGpt2Params(config, 1);
  const tokenizer = loadTokenizer(makeBaseTokenizerDir(path.join(tmp, 'untied-tok')));
  const { model } = prepareForChat({ dir: 'x', config, params, tokenizer });
  assert.deepEqual(model.params.get('lm_head.weight')!.shape, [50260, 4]);
  assert.deepEqual(model.params.get('transformer.wte.weight')!.shape, [50260, 4]);
});

// ---- malformed folders

test('malformed folder: missing tensor is named', async () => {
  const d = tinyCopy('missing');
  const t = readSafetensors(path.join(d, 'model.safetensors'));
  t.delete('transformer.h.1.ln_2.bias');
  writeSafetensors(path.join(d, 'model.safetensors'), t);
  await expectSftErrorAsync(() => loadModel(d), 'model.safetensors', 'missing tensor', 'transformer.h.1.ln_2.bias');
});

test('malformed folder: wrong shape is named with the expected shape', async () => {
  const d = tinyCopy('wrongshape');
  const t = readSafetensors(path.join(d, 'model.safetensors'));
  t.set('transformer.h.0.attn.c_attn.weight', { shape: [96, 32], data: t.get('transformer.h.0.attn.c_attn.weight')!.data });
  writeSafetensors(path.join(d, 'model.safetensors'), t);
  await expectSftErrorAsync(() => loadModel(d), 'model.safetensors', 'transformer.h.0.attn.c_attn.weight [96,32] (expected [32,96])');
});

test('malformed folder: extra tensor (a third layer) is named', async () => {
  const d = tinyCopy('extra');
  const t = readSafetensors(path.join(d, 'model.safetensors'));
  t.set('transformer.h.2.ln_1.weight', { shape: [32], data: new Float32Array(32) });
  writeSafetensors(path.join(d, 'model.safetensors'), t);
  await expectSftErrorAsync(() => loadModel(d), 'unexpected tensor', 'transformer.h.2.ln_1.weight');
});

test('malformed folder: config of another model type', async () => {
  const d = tinyCopy('llama');
  const cfg = JSON.parse(fs.readFileSync(path.join(d, 'config.json'), 'utf8'));
  cfg.model_type = 'llama';
  fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(cfg));
  await expectSftErrorAsync(() => loadModel(d), path.join(d, 'config.json'), 'model_type "llama" is not supported');
});

test('malformed folder: tokenizer larger than the embeddings', async () => {
  const d = tinyCopy('small-vocab');
  const cfg = JSON.parse(fs.readFileSync(path.join(d, 'config.json'), 'utf8'));
  cfg.vocab_size = 50257;
  fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(cfg));
  await expectSftErrorAsync(() => loadModel(d), 'tokenizer has 50260 tokens but the embeddings have 50257 rows');
});

test('malformed folder: no weights, pytorch_model.bin, not a folder', async () => {
  const d = tinyCopy('noweights');
  fs.rmSync(path.join(d, 'model.safetensors'));
  await expectSftErrorAsync(() => loadModel(d), 'no weights', 'model.safetensors');
  fs.writeFileSync(path.join(d, 'pytorch_model.bin'), 'x');
  await expectSftErrorAsync(() => loadModel(d), 'pytorch_model.bin', 'safetensors');
  await expectSftErrorAsync(() => loadModel(path.join(tmp, 'nothing-here')), 'model folder not found');
  await expectSftErrorAsync(() => loadModel(path.join(d, 'config.json')), 'not a folder');
});

test('malformed folder: truncated model.safetensors', async () => {
  const d = tinyCopy('truncated');
  const f = path.join(d, 'model.safetensors');
  fs.truncateSync(f, fs.statSync(f).size - 100);
  await expectSftErrorAsync(() => loadModel(d), f, 'truncated');
});
