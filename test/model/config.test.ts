// config.json parsing/writing and the GPT-2 parameter layout (shapes, count, initialisation).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { configToJson, makeConfig, parseConfig, readConfig } from '../../native-runner/model/config';
import { countParameters, expectedParamShapes, fastPcgDraws, initGpt2Params } from '../../native-runner/model/gpt2Params';
import { Rng } from '../../native-runner/util/rng';
import { SftError } from '../../native-runner/util/errors';

const TINY_DIR = path.join(__dirname, '../../samples/tiny-gpt2-chat');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-cfg-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

function expectError(fn: () => unknown, ...parts: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SftError, `expected SftError, got ${String(e)}`);
    for (const p of parts) assert.ok(e.message.includes(p), `"${e.message}" should contain "${p}"`);
    return true;
  });
}

test('tiny fixture config parses with its values', () => {
  const c = readConfig(TINY_DIR);
  assert.equal(c.n_layer, 2);
  assert.equal(c.n_head, 2);
  assert.equal(c.n_embd, 32);
  assert.equal(c.n_positions, 128);
  assert.equal(c.vocab_size, 50260);
  assert.equal(c.activation_function, 'gelu_new');
  assert.equal(c.resid_pdrop, 0);
  assert.equal(c.pad_token_id, 50256);
  assert.equal(c.tie_word_embeddings, true);
  assert.equal(c.raw.transformers_version, '5.17.0');
});

test('defaults are transformers GPT2Config defaults (124M, 124,439,808 parameters)', () => {
  const c = parseConfig({ model_type: 'gpt2' }, 'config.json');
  assert.deepEqual([c.n_layer, c.n_head, c.n_embd, c.n_positions, c.vocab_size], [12, 12, 768, 1024, 50257]);
  assert.deepEqual([c.resid_pdrop, c.embd_pdrop, c.attn_pdrop, c.layer_norm_epsilon], [0.1, 0.1, 0.1, 1e-5]);
  assert.deepEqual([c.bos_token_id, c.eos_token_id, c.pad_token_id, c.n_inner], [50256, 50256, null, null]);
  assert.equal(countParameters(c), 124_439_808);
  // n_ctx (old checkpoints) stands in for n_positions.
  assert.equal(parseConfig({ model_type: 'gpt2', n_ctx: 256 }, 'config.json').n_positions, 256);
  assert.equal(parseConfig({ model_type: 'gpt2', activation_function: 'gelu_pytorch_tanh' }, 'c').activation_function, 'gelu_pytorch_tanh');
});

test('configToJson keeps raw keys and writes our fields back', () => {
  const c = readConfig(TINY_DIR);
  const j = configToJson({ ...c, vocab_size: 50300, pad_token_id: 7 });
  assert.equal(j.vocab_size, 50300);
  assert.equal(j.pad_token_id, 7);
  assert.equal(j.summary_type, 'cls_index');
  assert.deepEqual(j.architectures, ['GPT2LMHeadModel']);
  const again = parseConfig(JSON.parse(JSON.stringify(j)), 'x');
  assert.equal(again.vocab_size, 50300);
});

test('config errors name the file and key', () => {
  const f = 'm/config.json';
  expectError(() => parseConfig({ model_type: 'llama' }, f), 'm/config.json: model_type', '"llama"', 'gpt2');
  expectError(() => parseConfig({ n_layer: 2 }, f), 'model_type', 'missing');
  expectError(() => parseConfig({ model_type: 'gpt2', activation_function: 'relu' }, f), 'activation_function', '"relu"', 'gelu_new');
  expectError(() => parseConfig({ model_type: 'gpt2', n_layer: '2' }, f), 'm/config.json: n_layer', 'positive integer');
  expectError(() => parseConfig({ model_type: 'gpt2', n_embd: 30, n_head: 4 }, f), 'n_embd 30 is not divisible by n_head 4');
  expectError(() => parseConfig({ model_type: 'gpt2', resid_pdrop: 1.5 }, f), 'resid_pdrop');
  expectError(() => parseConfig({ model_type: 'gpt2', eos_token_id: 'x' }, f), 'eos_token_id');
  expectError(() => parseConfig({ model_type: 'gpt2', scale_attn_by_inverse_layer_idx: true }, f), 'scale_attn_by_inverse_layer_idx');
  expectError(() => parseConfig([1], f), 'JSON object');
  const dir = path.join(tmp, 'bad');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'config.json'), '{"model_type": "gpt2",\n "n_layer": }');
  expectError(() => readConfig(dir), path.join(dir, 'config.json'), 'invalid JSON', 'line 2');
  expectError(() => readConfig(path.join(tmp, 'nowhere')), 'config.json: not found');
});

test('expected shapes: HF names, Conv1D [in,out], lm_head only when untied', () => {
  const c = readConfig(TINY_DIR);
  const s = expectedParamShapes(c);
  assert.equal(s.size, 2 + 12 * 2 + 2);
  assert.deepEqual(s.get('transformer.wte.weight'), [50260, 32]);
  assert.deepEqual(s.get('transformer.wpe.weight'), [128, 32]);
  assert.deepEqual(s.get('transformer.h.1.attn.c_attn.weight'), [32, 96]);
  assert.deepEqual(s.get('transformer.h.0.mlp.c_fc.weight'), [32, 128]);
  assert.deepEqual(s.get('transformer.h.0.mlp.c_proj.weight'), [128, 32]);
  assert.equal(s.has('lm_head.weight'), false);
  assert.equal(countParameters(c), 1_637_888);
  const untied = { ...c, tie_word_embeddings: false, n_inner: 40 };
  assert.deepEqual(expectedParamShapes(untied).get('lm_head.weight'), [50260, 32]);
  assert.deepEqual(expectedParamShapes(untied).get('transformer.h.0.mlp.c_fc.weight'), [32, 40]);
  assert.equal(countParameters(untied), 1_637_888 + 50260 * 32 - 2 * 2 * (32 * 88) - 2 * 88);
});

test('fast PCG32 reproduces util/rng exactly', () => {
  for (const seed of [0, 42, 123456789]) {
    const r = new Rng(seed);
    assert.deepEqual(fastPcgDraws(seed, 1000), Array.from({ length: 1000 }, () => r.nextU32()));
  }
});

test('initGpt2Params: deterministic, transformers-like statistics', () => {
  const c = makeConfig({ n_layer: 4, n_head: 4, n_embd: 64, n_positions: 64, vocab_size: 1000 });
  const a = initGpt2Params(c, 7);
  const b = initGpt2Params(c, 7);
  const d = initGpt2Params(c, 8);
  assert.deepEqual([...a.keys()], [...expectedParamShapes(c).keys()]);
  assert.deepEqual(a.get('transformer.wte.weight')!.data, b.get('transformer.wte.weight')!.data);
  assert.notDeepEqual(a.get('transformer.wte.weight')!.data.slice(0, 8), d.get('transformer.wte.weight')!.data.slice(0, 8));
  const stats = (x: Float32Array) => {
    let m = 0;
    for (const v of x) m += v;
    m /= x.length;
    let v2 = 0;
    for (const v of x) v2 += (v - m) ** 2;
    return { mean: m, std: Math.sqrt(v2 / x.length) };
  };
  const wte = stats(a.get('transformer.wte.weight')!.data); // 64000 draws
  assert.ok(Math.abs(wte.mean) < 0.0005, `mean ${wte.mean}`);
  assert.ok(Math.abs(wte.std - 0.02) < 0.0005, `std ${wte.std}`);
  const proj = stats(a.get('transformer.h.2.mlp.c_proj.weight')!.data); // 16384 draws, std 0.02/sqrt(8)
  assert.ok(Math.abs(proj.std - 0.02 / Math.sqrt(8)) < 0.0003, `c_proj std ${proj.std}`);
  assert.ok(a.get('transformer.h.0.ln_1.weight')!.data.every((v) => v === 1));
  assert.ok(a.get('transformer.h.0.attn.c_attn.bias')!.data.every((v) => v === 0));
  assert.ok(a.get('transformer.ln_f.bias')!.data.every((v) => v === 0));
});
