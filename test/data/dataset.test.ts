// loadTrainingData end to end (split, tokenisation, statistics, notes) on the shipped Dolly sample and
// on fixtures; oasst1 from Parquet; statistics arithmetic.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadTokenizer } from '../../native-runner/model/tokenizer';
import { loadConversations, loadTrainingData } from '../../native-runner/data/dataset';
import { computeStats, lengthHistogram, paddingEfficiency } from '../../native-runner/data/stats';
import { splitTrainEval } from '../../native-runner/data/split';
import { trainedCount } from '../../native-runner/data/tokenize';
import { epochMicroBatches, trainedTargets } from '../../native-runner/data/batching';
import { SftError } from '../../native-runner/util/errors';
import { OASST_COLUMNS, writeParquet } from '../helpers/parquet';

const ROOT = path.join(__dirname, '../..');
const tok = loadTokenizer(path.join(ROOT, 'samples/tiny-gpt2-chat'));
const FIX = path.join(__dirname, '../fixtures/data');
const SAMPLE = path.join(ROOT, 'samples/dolly-sample.jsonl');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-data-ds-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

test('the shipped Dolly sample: ~80 valid records of every category, including the recipe test topics', async () => {
  const set = await loadConversations(SAMPLE, { format: 'dolly' });
  assert.equal(set.badLineCount, 0);
  assert.ok(set.conversations.length >= 75 && set.conversations.length <= 90, `${set.conversations.length} records`);
  const recs = fs.readFileSync(SAMPLE, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { category: string; instruction: string; context: string });
  const cats = new Set(recs.map((r) => r.category));
  for (const c of ['open_qa', 'closed_qa', 'brainstorming', 'summarization', 'creative_writing', 'classification', 'information_extraction']) assert.ok(cats.has(c), c);
  assert.ok(recs.filter((r) => r.category === 'closed_qa').every((r) => r.context.trim() !== ''));
  const all = recs.map((r) => r.instruction.toLowerCase()).join('\n');
  for (const topic of ['capital of france', 'photosynthesis', 'sandwich', 'learning a new language']) assert.ok(all.includes(topic), topic);
});

test('loadTrainingData: HF-identical 5 % split, tokenised examples, statistics and notes', async () => {
  const data = await loadTrainingData({ dataset: SAMPLE, max_length: 512, tokenizer: tok });
  const set = await loadConversations(SAMPLE, { format: 'dolly' });
  const split = splitTrainEval(set.conversations, 0.05, 42);
  assert.equal(data.train.length, split.train.length);
  assert.equal(data.eval.length, Math.ceil(0.05 * set.conversations.length));
  assert.deepEqual(
    data.train.map((e) => e.source.line),
    split.train.map((c) => c.source.line),
  );
  assert.equal(data.formatUsed, 'dolly');
  assert.ok(data.notes.some((n) => n.includes('auto: using "dolly"')));
  assert.equal(data.stats.examples, data.train.length);
  assert.equal(data.stats.tokens, data.train.reduce((s, e) => s + e.inputIds.length, 0));
  assert.equal(data.stats.trainedTokens, data.train.reduce((s, e) => s + trainedCount(e), 0));
  assert.equal(data.stats.truncated, 0);
  assert.equal(data.stats.noTrainedTokens, 0);
  assert.ok(data.stats.paddingEfficiency! > 0 && data.stats.paddingEfficiency! < 1);
  assert.equal(data.evalStats!.examples, data.eval.length);
  // Every training example starts with <|user|> and ends with a trained <|endoftext|>.
  for (const e of data.train) {
    assert.equal(e.inputIds[0], tok.tokenToId('<|user|>'));
    assert.equal(e.inputIds[e.inputIds.length - 1], tok.eosId);
    assert.equal(e.trained[e.trained.length - 1], 1);
  }
});

test('loadTrainingData: small max_length truncates, some examples train nothing, batches stay finite', async () => {
  const data = await loadTrainingData({ dataset: SAMPLE, max_length: 24, tokenizer: tok, test_size: 0 });
  assert.equal(data.eval.length, 0);
  assert.ok(data.stats.truncated > 0);
  assert.ok(data.stats.noTrainedTokens > 0);
  assert.equal(data.stats.maxLength, 24);
  assert.ok(data.notes.some((n) => /have nothing trained/.test(n)));
  const mbs = epochMicroBatches(data.train, 42, 0, { batchSize: 8, padId: tok.padId });
  const total = mbs.reduce((s, m) => s + trainedTargets(m), 0);
  assert.equal(total, data.train.reduce((s, e) => s + trainedCount(e) - e.trained[0]!, 0));
  for (const m of mbs) for (const w of m.weights) assert.ok(w === 0 || w === 1);
});

test('loadTrainingData: eval_dataset, on_bad_line, and errors before training', async () => {
  const data = await loadTrainingData({
    dataset: path.join(FIX, 'dolly-malformed.jsonl'),
    eval_dataset: path.join(FIX, 'dolly-edge.jsonl'),
    max_length: 128,
    tokenizer: tok,
    on_bad_line: 'skip',
  });
  assert.equal(data.train.length, 18);
  assert.equal(data.eval.length, 5);
  assert.equal(data.badLineCount, 2);
  await assert.rejects(loadTrainingData({ dataset: path.join(FIX, 'dolly-malformed.jsonl'), max_length: 128, tokenizer: tok }), /dolly-malformed\.jsonl:7: invalid JSON/);
  await assert.rejects(loadTrainingData({ dataset: 'no/such-file.jsonl', max_length: 128, tokenizer: tok }), (e: unknown) => e instanceof SftError && /dataset: file not found: no\/such-file\.jsonl/.test(e.message));
  await assert.rejects(loadTrainingData({ dataset: 'someone/unknown-dataset', max_length: 128, tokenizer: tok }), /unknown hub dataset "someone\/unknown-dataset" \(known: databricks\/databricks-dolly-15k/);
  const empty = path.join(tmp, 'empty.jsonl');
  fs.writeFileSync(empty, '\n\n');
  await assert.rejects(loadTrainingData({ dataset: empty, max_length: 128, tokenizer: tok }), /empty\.jsonl: the dataset file has no records/);
  const noAnswers = path.join(tmp, 'no-answers.jsonl');
  fs.writeFileSync(noAnswers, '{"messages":[{"role":"user","content":"hi"}]}\n');
  await assert.rejects(loadTrainingData({ dataset: noAnswers, max_length: 128, tokenizer: tok, test_size: 0 }), /no usable training examples \(1 skipped, 0 bad lines\)/);
});

test('a tokenizer without the role tokens is reported in the notes', async () => {
  const plain = { encode: (s: string) => tok.encode(s), tokenToId: (t: string) => (t.startsWith('<|') && t !== '<|endoftext|>' ? undefined : tok.tokenToId(t)) };
  const data = await loadTrainingData({ dataset: path.join(FIX, 'dolly-edge.jsonl'), max_length: 128, tokenizer: plain, test_size: 0 });
  assert.ok(data.notes.includes('the tokenizer has no token <|user|>; it is tokenised as plain text'));
});

test('oasst1 from Parquet: same conversations as the JSONL rows, row numbers as lines', async () => {
  const rows = fs.readFileSync(path.join(FIX, 'oasst1.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const pq = path.join(tmp, 'oasst1-train.parquet');
  writeParquet(pq, OASST_COLUMNS, rows);
  const fromPq = await loadConversations(pq);
  const fromJsonl = await loadConversations(path.join(FIX, 'oasst1.jsonl'));
  assert.equal(fromPq.formatUsed, 'oasst1');
  assert.deepEqual(
    fromPq.conversations.map((c) => c.turns),
    fromJsonl.conversations.map((c) => c.turns),
  );
  assert.equal(fromPq.droppedMessages, 3);
  assert.equal(fromPq.conversations[1]!.source.line, 11);
  const all = await loadConversations(pq, { oasstPaths: 'all', oasstLang: 'en' });
  assert.equal(all.conversations.length, 2);
  const broken = path.join(tmp, 'broken.parquet');
  fs.writeFileSync(broken, 'PAR1 this is not parquet PAR1');
  await assert.rejects(loadConversations(broken), /broken\.parquet: not a readable Parquet file/);
});

test('loadTrainingData: oasst1 messages whose parent is missing are named in a note and do not fail the load', async () => {
  const file = path.join(tmp, 'oasst-orphans.jsonl');
  const rows = fs.readFileSync(path.join(FIX, 'oasst1.jsonl'), 'utf8').trim().split('\n');
  rows.push(
    JSON.stringify({ message_id: 'y1', parent_id: 'z1', role: 'prompter', text: 'Reply to the orphan.' }),
    JSON.stringify({ message_id: 'u1', parent_id: 'nowhere', role: 'assistant', text: 'Another orphan.' }),
  );
  fs.writeFileSync(file, rows.join('\n') + '\n');
  const data = await loadTrainingData({ dataset: file, max_length: 128, tokenizer: tok, test_size: 0 });
  assert.equal(data.badLineCount, 0);
  assert.equal(data.train.length, 2);
  assert.ok(
    data.notes.includes(`oasst1: skipped 2 messages whose parent_id is not in the file (with the replies below them): ${file}:15 (message_id "z1", parent_id "missing", 1 reply), ${file}:17 (message_id "u1", parent_id "nowhere")`),
    data.notes.join('\n'),
  );
  const clean = await loadTrainingData({ dataset: path.join(SAMPLE), max_length: 128, tokenizer: tok, test_size: 0 });
  assert.ok(!clean.notes.some((n) => n.includes('parent_id')));
});

test('statistics: histogram, padding efficiency and truncation arithmetic', () => {
  assert.deepEqual(lengthHistogram([1, 5, 8, 16], 16, 4), { edges: [0, 4, 8, 12, 16], counts: [1, 1, 1, 1] });
  assert.equal(paddingEfficiency([4, 2, 3], 2), (4 + 2 + 3) / (4 * 2 + 3));
  const mk = (n: number, full: number, trained: number) => ({
    text: '',
    inputIds: Array(n).fill(1),
    trained: Uint8Array.from({ length: n }, (_, i) => (i >= n - trained ? 1 : 0)),
    fullLength: full,
    source: { file: 'f', line: 1 },
  });
  const s = computeStats([mk(10, 10, 4), mk(16, 30, 0), mk(16, 20, 2)], { maxLength: 16, batchSize: 2, skipped: 2 });
  assert.equal(s.examples, 3);
  assert.equal(s.tokens, 42);
  assert.equal(s.trainedTokens, 6);
  assert.equal(s.truncated, 2);
  assert.equal(s.truncatedTokens, 18);
  assert.equal(s.maxTruncatedBy, 14);
  assert.equal(s.noTrainedTokens, 1);
  assert.equal(s.skipped, 2);
  assert.equal(s.paddingEfficiency, 42 / (16 * 2 + 16));
  const p = computeStats([mk(10, 10, 4), mk(6, 6, 1), mk(16, 16, 2)], { maxLength: 16, packing: true });
  assert.equal(p.packingEfficiency, 32 / 32);
});
