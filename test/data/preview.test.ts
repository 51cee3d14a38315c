// `sft preview` (run in-process with stdout captured) and the paging function the extension uses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { command as preview, defaultPreviewModel } from '../../native-runner/cli/commands/preview';
import { previewDataset, tokenPieces, clearPreviewCache } from '../../native-runner/data/preview';
import { loadTokenizer } from '../../native-runner/model/tokenizer';
import { SftError } from '../../native-runner/util/errors';
import { loadConversations } from '../../native-runner/data/dataset';
import { splitTrainEval } from '../../native-runner/data/split';
import { renderConversation } from '../../native-runner/data/render';
import { parseRunConfig } from '../../native-runner/train/config';

const ROOT = path.join(__dirname, '../..');
const FIX = path.join(__dirname, '../fixtures/data');
const tok = loadTokenizer(path.join(ROOT, 'samples/tiny-gpt2-chat'));

async function runCli(args: string[]): Promise<{ code: number; out: string }> {
  const lines: string[] = [];
  const orig = console.log;
  console.log = (...a: unknown[]) => lines.push(a.map(String).join(' '));
  try {
    const code = await preview.run(args);
    return { code, out: lines.join('\n') };
  } finally {
    console.log = orig;
  }
}

test('sft preview --json: first n examples, whole-file stats and bad lines in the last stdout line', async () => {
  const cwd = process.cwd();
  const elsewhere = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-prev-'));
  process.chdir(elsewhere); // the default model resolves from the package, not the cwd
  try {
    const { code, out } = await runCli(['--dataset', path.join(FIX, 'dolly-malformed.jsonl'), '--n', '2', '--json']);
    assert.equal(code, 0);
    const last = out.trim().split('\n').pop()!;
    const j = JSON.parse(last) as {
      examples: { text: string; input_ids: number[]; trained: number[] }[];
      stats: Record<string, number>;
      bad_lines: { line: number; reason: string }[];
      format: string;
    };
    assert.equal(j.format, 'dolly');
    assert.equal(j.examples.length, 2);
    assert.equal(j.examples[0]!.text, '<|user|>\nQuestion number 1?\n<|assistant|>\nAnswer number 1.<|endoftext|>');
    assert.deepEqual(j.examples[0]!.input_ids, [...tok.encode('<|user|>\nQuestion number 1?\n<|assistant|>\n'), ...tok.encode('Answer number 1.<|endoftext|>')]);
    assert.deepEqual(j.examples[0]!.trained, [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
    assert.equal(j.stats.examples, 18);
    assert.equal(j.stats.tokens, 18 * 14);
    assert.equal(j.stats.trained_tokens, 18 * 5);
    assert.equal(j.stats.truncated, 0);
    assert.equal(j.stats.no_trained_tokens, 0);
    assert.deepEqual(
      j.bad_lines.map((b) => b.line),
      [7, 15],
    );
    assert.equal(j.bad_lines[1]!.reason, 'missing "response"');
    assert.match(out, /^--- Example 1 ---$/m);
    assert.match(out, /\[\[Answer number 1\.<\|endoftext\|>\]\]/);
    assert.match(out, /bad lines: 2 \(skipped\)/);
  } finally {
    process.chdir(cwd);
    fs.rmSync(elsewhere, { recursive: true, force: true });
  }
  assert.equal(defaultPreviewModel(), path.join(ROOT, 'samples', 'tiny-gpt2-chat'));
});

test('sft preview: max_length and assistant_only_loss change what is trained; bad options are named', async () => {
  const { out } = await runCli(['--dataset', path.join(FIX, 'dolly-edge.jsonl'), '--dataset_format', 'dolly', '--max_length', '8', '--assistant_only_loss', 'false', '--n', '1', '--json']);
  const j = JSON.parse(out.trim().split('\n').pop()!) as { examples: { input_ids: number[]; trained: number[] }[]; stats: Record<string, number> };
  assert.equal(j.examples[0]!.input_ids.length, 8);
  assert.deepEqual(j.examples[0]!.trained, Array(8).fill(1));
  assert.equal(j.stats.truncated, 5);
  assert.equal(j.stats.trained_tokens, 40);
  const cut = await runCli(['--dataset', path.join(FIX, 'dolly-edge.jsonl'), '--max_length', '8', '--n', '0', '--json']);
  assert.equal((JSON.parse(cut.out.trim().split('\n').pop()!) as { stats: Record<string, number> }).stats.no_trained_tokens, 5);
  await assert.rejects(preview.run([]), (e: unknown) => e instanceof SftError && /--dataset is required/.test(e.message));
  await assert.rejects(preview.run(['--dataset', 'x.jsonl', '--dataset_format', 'csv']), /--dataset_format must be auto or one of/);
  await assert.rejects(preview.run(['--dataset', 'x.jsonl', '--max_length', 'ten']), /--max_length must be a number, got "ten"/);
  await assert.rejects(preview.run(['--dataset', path.join(FIX, 'nope.jsonl')]), /file not found/);
});

test('--split train shows the first examples of the recipe\'s train split (as prepare_dataset.py prints them)', async () => {
  const sample = path.join(ROOT, 'samples/dolly-sample.jsonl');
  const { out } = await runCli(['--dataset', sample, '--split', 'train', '--n', '3', '--json']);
  const j = JSON.parse(out.trim().split('\n').pop()!) as { examples: { text: string }[]; stats: Record<string, number> };
  const set = await loadConversations(sample, { format: 'dolly' });
  const expected = splitTrainEval(set.conversations, 0.05, 42).train.slice(0, 3).map((c) => renderConversation(c.turns));
  assert.deepEqual(
    j.examples.map((e) => e.text),
    expected,
  );
  assert.equal(j.stats.examples, set.conversations.length); // statistics still cover the whole file
  assert.match(out, /examples in the train split \(test_size 0\.05, seed 42\)/);
  const ev = await previewDataset({ dataset: sample, tokenizer: tok, split: 'eval', limit: 100 });
  assert.equal(ev.total, Math.ceil(0.05 * set.conversations.length));
  await assert.rejects(preview.run(['--dataset', sample, '--split', 'test']), /--split must be all, train or eval/);
});

test('previewDataset pages with offset/limit and returns per-token text that joins back to the text', async () => {
  clearPreviewCache();
  const opts = { dataset: path.join(ROOT, 'samples/dolly-sample.jsonl'), tokenizer: tok, tokenizerKey: 'tiny', max_length: 512 };
  const p1 = await previewDataset({ ...opts, offset: 0, limit: 2 });
  const p2 = await previewDataset({ ...opts, offset: 5, limit: 3 });
  assert.equal(p1.total, p2.total);
  assert.deepEqual(
    p2.examples.map((e) => e.index),
    [5, 6, 7],
  );
  assert.equal(p2.examples[0]!.source!.line, 6);
  for (const e of [...p1.examples, ...p2.examples]) {
    assert.equal(e.tokens!.length, e.input_ids.length);
    assert.equal(e.tokens!.join(''), e.text);
    assert.equal(e.full_length, e.input_ids.length);
  }
  assert.equal(p1.stats.length_histogram!.reduce((s, b) => s + b.count, 0), p1.total);
  // A token that ends inside a multi-byte character is joined with the next ones.
  const ids = tok.encode('🇯🇵 ok');
  const pieces = tokenPieces(tok, ids);
  assert.equal(pieces.length, ids.length);
  assert.equal(pieces.join(''), '🇯🇵 ok');
  assert.ok(!pieces.some((p) => p.includes('\uFFFD')));
});

test('previewDataset lists oasst1 messages whose parent is missing among the bad lines, at their line', async () => {
  clearPreviewCache();
  const p = await previewDataset({ dataset: path.join(FIX, 'oasst1.jsonl'), tokenizer: tok, tokenizerKey: 'tiny', max_length: 128, limit: 1 });
  assert.equal(p.total, 2);
  assert.equal(p.bad_line_count, 1);
  assert.deepEqual(p.bad_lines, [{ file: path.join(FIX, 'oasst1.jsonl'), line: 15, reason: 'message_id "z1": parent_id "missing" is not in the file; message skipped' }]);
});

test('sft preview on oasst1 nested trees (trees.jsonl): detected, the flat file\'s examples, bad tree lines at their line', async () => {
  const nested = path.join(FIX, 'oasst1-trees.jsonl');
  const flatRun = await runCli(['--dataset', path.join(FIX, 'oasst1.jsonl'), '--oasst_paths', 'all', '--n', '10', '--json']);
  const { code, out } = await runCli(['--dataset', nested, '--oasst_paths', 'all', '--n', '10', '--json']);
  assert.equal(code, 0);
  type Json = { format: string; examples: { text: string; input_ids: number[] }[]; stats: Record<string, number>; bad_lines: { line: number; reason: string }[] };
  const j = JSON.parse(out.trim().split('\n').pop()!) as Json;
  const flat = JSON.parse(flatRun.out.trim().split('\n').pop()!) as Json;
  assert.equal(j.format, 'oasst1');
  assert.match(out, /\(format oasst1, detected by auto; 4 examples;/);
  assert.equal(j.examples.length, 4);
  assert.deepEqual(j.examples, flat.examples);
  assert.deepEqual(j.stats, flat.stats);
  assert.deepEqual(j.bad_lines, []); // the flat file's orphan (line 15) has no counterpart in trees
  // A bad tree is listed at its line with the message it stops at; the other trees are still shown.
  const lines = fs.readFileSync(nested, 'utf8').trim().split('\n');
  const bad = JSON.parse(lines[1]!) as { prompt: { replies: { role: string }[] } };
  bad.prompt.replies[1]!.role = 'bot';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-prev-trees-'));
  try {
    const file = path.join(dir, 'bad.trees.jsonl');
    fs.writeFileSync(file, [lines[0], JSON.stringify(bad), lines[2]].join('\n') + '\n');
    clearPreviewCache();
    const p = await previewDataset({ dataset: file, tokenizer: tok, tokenizerKey: 'tiny', max_length: 128, limit: 5 });
    assert.equal(p.format_used, 'oasst1');
    assert.equal(p.total, 1);
    assert.equal(p.examples[0]!.source!.line, 1);
    assert.equal(p.bad_line_count, 1);
    assert.deepEqual(p.bad_lines, [{ file, line: 2, reason: 'prompt.replies[1] (message_id "b3"): "role" must be "prompter" or "assistant", got "bot"' }]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('max_length: sft preview and previewDataset refuse what run.json refuses, in the same words', async () => {
  const runnerMessage = (v: unknown): string => {
    try {
      parseRunConfig({ model_name_or_path: 'm', dataset: 'd.jsonl', max_length: v }, ROOT);
    } catch (e) {
      return (e as Error).message.replace(/^run\.json: max_length: /, '');
    }
    return 'accepted';
  };
  const dataset = path.join(FIX, 'dolly-edge.jsonl');
  for (const v of [1, 0, 2.5, 2 ** 20 + 1]) {
    const expected = runnerMessage(v);
    assert.match(expected, /^expected an integer >= 2 and <= 1048576, got /, `run.json refuses ${v}`);
    await assert.rejects(preview.run(['--dataset', dataset, '--max_length', String(v)]), (e: unknown) => e instanceof SftError && e.message === `--max_length: ${expected}`);
    clearPreviewCache();
    await assert.rejects(previewDataset({ dataset, tokenizer: tok, max_length: v }), (e: unknown) => e instanceof SftError && e.message === `max_length: ${expected}`);
  }
  assert.equal(runnerMessage(2), 'accepted');
  const { code } = await runCli(['--dataset', dataset, '--max_length', '2', '--n', '0', '--json']);
  assert.equal(code, 0);
});
