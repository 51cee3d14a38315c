// `sft inspect`: human lines + a JSON last line; bad folders exit 1 with a one-line error naming the file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { command as inspect } from '../../native-runner/cli/commands/inspect';
import { main } from '../../native-runner/cli/main';
import { makeConfig } from '../../native-runner/model/config';
import { initGpt2Params } from '../../native-runner/model/gpt2Params';
import { loadTokenizer } from '../../native-runner/model/tokenizer';
import { saveModel } from '../../native-runner/model/modelFolder';
import { makeBaseTokenizerDir, tempDir, TINY_DIR } from './helpers';

const tmp = tempDir('sft-inspect-');

async function capture(fn: () => Promise<number>): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = console.log;
  const error = console.error;
  console.log = (...a: unknown[]) => void out.push(a.join(' '));
  console.error = (...a: unknown[]) => void err.push(a.join(' '));
  try {
    const code = await fn();
    return { code, out: out.join('\n'), err: err.join('\n') };
  } finally {
    console.log = log;
    console.error = error;
  }
}

test('inspect --json on the tiny fixture', async () => {
  const r = await capture(() => inspect.run(['--model', TINY_DIR, '--json']));
  assert.equal(r.code, 0);
  const lines = r.out.trim().split('\n');
  const j = JSON.parse(lines[lines.length - 1]!);
  assert.deepEqual(
    { ...j, notes: undefined, weights_file: undefined, eos_token_id: undefined, pad_token_id: undefined },
    {
      model_type: 'gpt2',
      n_layer: 2,
      n_head: 2,
      n_embd: 32,
      n_positions: 128,
      vocab_size: 50260,
      parameters: 1637888,
      tokenizer_vocab_size: 50260,
      special_tokens: { '<|endoftext|>': 50256, '<|user|>': 50257, '<|assistant|>': 50258, '<|system|>': 50259 },
      chat_ready: true,
      missing_role_tokens: [],
      notes: undefined,
      weights_file: undefined,
      eos_token_id: undefined,
      pad_token_id: undefined,
    },
  );
  assert.match(r.out, /parameters\s+1,637,888/);
  assert.match(r.out, /chat ready\s+yes/);
});

test('inspect reports a base model as not chat-ready', async () => {
  const dir = path.join(tmp, 'base');
  makeBaseTokenizerDir(dir);
  const config = makeConfig({ n_layer: 1, n_head: 1, n_embd: 8, n_positions: 16, vocab_size: 50257 });
  await saveModel(dir, { config, params: initGpt2Params(config, 1), tokenizer: loadTokenizer(dir) });
  const r = await capture(() => inspect.run(['--model', dir, '--json']));
  const j = JSON.parse(r.out.trim().split('\n').pop()!);
  assert.equal(j.chat_ready, false);
  assert.deepEqual(j.missing_role_tokens, ['<|user|>', '<|assistant|>', '<|system|>']);
  assert.equal(j.tokenizer_vocab_size, 50257);
  assert.equal(j.parameters, 50257 * 8 + 16 * 8 + (4 * 8 + 8 * 24 + 24 + 64 + 8 + 8 * 32 + 32 + 32 * 8 + 8) + 16);
  assert.match(r.out, /missing role tokens/);
});

test('bad folders: exit 1 with one error line naming the file', async () => {
  const noCfg = path.join(tmp, 'empty');
  fs.mkdirSync(noCfg);
  let r = await capture(() => main(['inspect', '--model', noCfg]));
  assert.equal(r.code, 1);
  assert.equal(r.err.split('\n').length, 1);
  assert.ok(r.err.startsWith(`error: ${path.join(noCfg, 'config.json')}`), r.err);

  const broken = path.join(tmp, 'broken');
  fs.cpSync(TINY_DIR, broken, { recursive: true });
  const f = path.join(broken, 'model.safetensors');
  const buf = fs.readFileSync(f);
  buf.writeBigUInt64LE(10n ** 12n, 0);
  fs.writeFileSync(f, buf);
  r = await capture(() => main(['inspect', '--model', broken, '--json']));
  assert.equal(r.code, 1);
  assert.equal(r.out, '');
  assert.match(r.err, /^error: .*model\.safetensors: header length 1000000000000 exceeds/);

  r = await capture(() => main(['inspect', '--model', broken, '--bogus']));
  assert.equal(r.code, 1);
  assert.match(r.err, /bogus/);
});
