// Reading dataset files (JSONL, JSON arrays, BOM/CRLF, bad lines) and every dataset format, including the
// oasst1 tree rules, on small files of our own in test/fixtures/data.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readRecords, splitJsonArray } from '../../native-runner/data/readRecords';
import { detectFormat, buildOasstConversations, orphanReason, recordToConversation } from '../../native-runner/data/formats';
import { loadConversations, orphansNote } from '../../native-runner/data/dataset';
import { SftError } from '../../native-runner/util/errors';
import type { RawItem } from '../../native-runner/data/readRecords';

const FIX = path.join(__dirname, '../fixtures/data');
const fx = (name: string) => path.join(FIX, name);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-data-fmt-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

async function collect(file: string): Promise<RawItem[]> {
  const out: RawItem[] = [];
  for await (const it of readRecords(file)) out.push(it);
  return out;
}

test('JSONL with BOM and CRLF: records keep their 1-based lines, no BOM or \\r leaks into values', async () => {
  const items = await collect(fx('dolly-edge.jsonl'));
  assert.equal(items.length, 5);
  assert.deepEqual(
    items.map((i) => (i.kind === 'record' ? i.line : -1)),
    [1, 2, 3, 4, 5],
  );
  const first = items[0]!;
  assert.ok(first.kind === 'record');
  assert.deepEqual(Object.keys(first.value), ['instruction', 'context', 'response', 'category']);
  assert.equal(first.value.category, 'open_qa');
  const set = await loadConversations(fx('dolly-edge.jsonl'), { format: 'dolly' });
  assert.equal(set.conversations[3]!.turns[1]!.content, 'こんにちは (konnichiwa) 👋');
});

test('JSONL across stream chunks: a multi-byte character split between chunks survives', async () => {
  // 1 MiB chunks: put an emoji right across the first boundary.
  const pad = 'x'.repeat((1 << 20) - 40);
  const rec1 = JSON.stringify({ text: pad });
  const rec2 = JSON.stringify({ text: '🙂 split 🙂' });
  const file = path.join(tmp, 'chunks.jsonl');
  fs.writeFileSync(file, `${rec1}\n${rec2}\n${rec2}`);
  const items = await collect(file);
  assert.equal(items.length, 3);
  const [a, b, c] = items;
  assert.ok(a!.kind === 'record' && b!.kind === 'record' && c!.kind === 'record');
  assert.equal((a.value.text as string).length, pad.length);
  assert.equal(b.value.text, '🙂 split 🙂');
  assert.equal(c.line, 3);
});

test('bad lines: invalid JSON, non-objects and wrong field types are reported with their line numbers', async () => {
  const set = await loadConversations(fx('dolly-types.jsonl'), { format: 'dolly', onBadLine: 'skip' });
  assert.equal(set.conversations.length, 2);
  assert.deepEqual(
    set.conversations.map((c) => c.source.line),
    [1, 7],
  );
  assert.deepEqual(
    set.badLines.map((b) => `${path.basename(b.file)}:${b.line}: ${b.reason}`),
    [
      'dolly-types.jsonl:2: "instruction" must be a string, got number',
      'dolly-types.jsonl:3: "context" must be a string or null, got array',
      'dolly-types.jsonl:4: expected a JSON object, got an array',
    ],
  );
  assert.equal(set.badLineCount, 3);
});

test('a 10 % malformed JSONL: "error" stops naming file:line, "skip" skips and counts', async () => {
  await assert.rejects(loadConversations(fx('dolly-malformed.jsonl'), { format: 'dolly', label: 'dolly.jsonl' }), (e: unknown) => {
    assert.ok(e instanceof SftError);
    const lines = e.message.split('\n');
    assert.match(lines[0]!, /^dolly\.jsonl:7: invalid JSON \(.*\) \(and 1 more bad line; on_bad_line: "skip" skips them\)$/);
    assert.equal(lines[1], '  dolly.jsonl:15: missing "response"');
    return true;
  });
  const set = await loadConversations(fx('dolly-malformed.jsonl'), { format: 'dolly', onBadLine: 'skip', label: 'dolly.jsonl' });
  assert.equal(set.conversations.length, 18);
  assert.equal(set.badLineCount, 2);
  assert.deepEqual(
    set.badLines.map((b) => b.line),
    [7, 15],
  );
  // Records after a bad line keep their own line numbers.
  assert.equal(set.conversations[6]!.source.line, 8);
  assert.equal(set.conversations[6]!.turns[0]!.content, 'Question number 8?');
});

test('JSON array files: elements get the line they start on; brackets inside strings do not confuse the scan', async () => {
  const set = await loadConversations(fx('dolly-array.json'), { format: 'auto' });
  assert.equal(set.formatUsed, 'dolly');
  assert.equal(set.detected, true);
  assert.deepEqual(
    set.conversations.map((c) => c.source.line),
    [2, 8, 14],
  );
  assert.equal(set.conversations[2]!.turns[0]!.content, 'Give a "quoted" word, with ] and } inside.');
  const broken = splitJsonArray('[\n {"a": 1},\n {"b": "unterminated\n]', 'x.json');
  assert.equal(broken.length, 2);
  assert.ok(broken[1]!.kind === 'bad');
  assert.equal(broken[1]!.bad.line, 3);
  assert.deepEqual(splitJsonArray('  []  ', 'e.json'), []);
});

test('dolly: context appended only when not blank, unstripped; whitespace-only and null contexts are ignored', async () => {
  const set = await loadConversations(fx('dolly-edge.jsonl'), { format: 'dolly' });
  const users = set.conversations.map((c) => c.turns[0]!.content);
  assert.equal(users[0], 'What is the capital of France?');
  assert.equal(users[1], 'Name a primary colour.');
  assert.equal(users[2], 'When was the bridge finished?\n\nContext:   The bridge opened in 1932 after six years of work. ');
  assert.equal(users[3], 'Translate «bonjour» to Japanese 🇯🇵');
  assert.deepEqual(
    set.conversations.map((c) => c.turns.map((t) => t.role).join(',')),
    Array(5).fill('user,assistant'),
  );
});

test('sharegpt: roles mapped, trailing human turn kept for rendering to drop, unknown role is a bad line, no-gpt skipped', async () => {
  await assert.rejects(loadConversations(fx('sharegpt.jsonl'), { format: 'sharegpt' }), /sharegpt\.jsonl:4: conversations\[0\]\.from: unknown role "bot" \(expected system, human, gpt\)/);
  const set = await loadConversations(fx('sharegpt.jsonl'), { format: 'auto', onBadLine: 'skip' });
  assert.equal(set.formatUsed, 'sharegpt');
  assert.equal(set.conversations.length, 2);
  assert.equal(set.skipped, 1);
  assert.deepEqual(
    set.conversations[0]!.turns.map((t) => t.role),
    ['system', 'user', 'assistant', 'user', 'assistant'],
  );
});

test('messages, prompt_completion and text formats (auto-detected)', async () => {
  const m = await loadConversations(fx('messages.jsonl'));
  assert.equal(m.formatUsed, 'messages');
  assert.equal(m.conversations.length, 2);
  assert.equal(m.skipped, 1);
  const pc = await loadConversations(fx('prompt-completion.jsonl'));
  assert.equal(pc.formatUsed, 'prompt_completion');
  assert.deepEqual(pc.conversations[0]!.turns, [
    { role: 'user', content: 'Finish the sentence: The sky is' },
    { role: 'assistant', content: ' blue.' },
  ]);
  const t = await loadConversations(fx('text.jsonl'));
  assert.equal(t.formatUsed, 'text');
  assert.equal(t.conversations[1]!.rawText, 'Already ends with the marker.<|endoftext|>');
  assert.deepEqual(t.conversations[1]!.turns, []);
});

test('auto detection by fields, and a clear error when nothing fits', async () => {
  assert.equal(detectFormat({ instruction: 'a', response: 'b', context: '' }), 'dolly');
  assert.equal(detectFormat({ conversations: [] }), 'sharegpt');
  assert.equal(detectFormat({ messages: [] }), 'messages');
  assert.equal(detectFormat({ prompt: 'a', completion: 'b' }), 'prompt_completion');
  assert.equal(detectFormat({ message_id: 'x', parent_id: null, role: 'prompter', text: 't' }), 'oasst1');
  assert.equal(detectFormat({ text: 'plain' }), 'text');
  assert.equal(detectFormat({ question: 'q', answer: 'a' }), undefined);
  const file = path.join(tmp, 'unknown.jsonl');
  fs.writeFileSync(file, '{"question": "q", "answer": "a"}\n');
  await assert.rejects(loadConversations(file), /unknown\.jsonl:1: cannot tell the dataset format from the fields \{question, answer\}/);
  await assert.rejects(loadConversations(path.join(tmp, 'nope.jsonl')), /nope\.jsonl: dataset file not found/);
  await assert.rejects(loadConversations(fx('text.jsonl'), { format: 'alpaca' as never }), /dataset_format: unknown format "alpaca"/);
});

test('per-record conversion reasons name the field', () => {
  const src = { file: 'f', line: 1 };
  assert.deepEqual(recordToConversation('dolly', { instruction: 'x' }, src), { ok: false, reason: 'missing "response"' });
  assert.deepEqual(recordToConversation('messages', { messages: [{ role: 'user' }] }, src), { ok: false, reason: 'messages[0]: missing "content"' });
  assert.deepEqual(recordToConversation('messages', { messages: 'hi' }, src), { ok: false, reason: '"messages" must be an array, got string' });
  assert.deepEqual(recordToConversation('prompt_completion', { prompt: 'p', completion: 3 }, src), { ok: false, reason: '"completion" must be a string, got number' });
});

test('oasst1 "best": lowest rank at each branch, deleted and rejected replies dropped with subtrees, trailing prompter dropped', async () => {
  const set = await loadConversations(fx('oasst1.jsonl'), { format: 'auto' });
  assert.equal(set.formatUsed, 'oasst1');
  assert.equal(set.conversations.length, 2);
  assert.deepEqual(set.conversations[0]!.turns, [
    { role: 'user', content: 'How do plants make food?' },
    { role: 'assistant', content: 'Best answer: photosynthesis.' },
    { role: 'user', content: 'What do they need for it?' },
    { role: 'assistant', content: 'Light, water and carbon dioxide.' },
  ]);
  // Unranked siblings: file order decides.
  assert.deepEqual(
    set.conversations[1]!.turns.map((t) => t.content),
    ['Wie geht es dir?', 'Gut, danke!'],
  );
  assert.equal(set.skipped, 1); // tree c1 has no answer
  assert.equal(set.droppedMessages, 3); // a4 (+ a5 below it) deleted, a10 rejected
  assert.equal(set.conversations[0]!.source.line, 1);
});

test('oasst1 "all": every root-to-leaf path trimmed and de-duplicated; oasst_lang filters', async () => {
  const all = await loadConversations(fx('oasst1.jsonl'), { oasstPaths: 'all' });
  assert.deepEqual(
    all.conversations.map((c) => c.turns.map((t) => t.content.slice(0, 12)).join(' | ')),
    [
      'How do plant | Best answer: | What do they | Light, water',
      'How do plant | Second best ',
      'Wie geht es  | Gut, danke!',
      'Wie geht es  | Sehr gut.',
    ],
  );
  const rows = fs.readFileSync(fx('oasst1.jsonl'), 'utf8').trim().split('\n').map((l, i) => ({ value: JSON.parse(l) as Record<string, unknown>, src: { file: 'o', line: i + 1 } }));
  const direct = buildOasstConversations(rows, { paths: 'all' });
  assert.equal(direct.orphans, 1); // z1's parent is not in the file
  assert.equal(direct.conversations.length, 4);
  const de = await loadConversations(fx('oasst1.jsonl'), { oasstLang: 'de' });
  assert.equal(de.conversations.length, 1);
  assert.equal(de.conversations[0]!.turns[1]!.content, 'Gut, danke!');
  assert.equal(de.skipped, 0);
  const res = buildOasstConversations(
    [
      { value: { message_id: 'r', parent_id: null, role: 'prompter', text: 'q' }, src: { file: 'o', line: 1 } },
      { value: { message_id: 'r', parent_id: null, role: 'prompter', text: 'again' }, src: { file: 'o', line: 2 } },
      { value: { message_id: 's', parent_id: 'r', role: 'bot', text: 'x' }, src: { file: 'o', line: 3 } },
      { value: { message_id: 't', parent_id: 'r', role: 'assistant', text: 'a', rank: 'first' }, src: { file: 'o', line: 4 } },
    ],
    { paths: 'best' },
  );
  assert.deepEqual(
    res.bad.map((b) => `${b.src.line}: ${b.reason}`),
    ['2: duplicate message_id "r" (first at line 1)', '3: "role" must be "prompter" or "assistant", got "bot"', '4: "rank" must be a number or null, got string'],
  );
  assert.equal(res.orphans, 0);
  assert.equal(res.skipped, 1);
});

test('oasst1 orphans: a message whose parent is not in the file is listed with file, line, ids and lost replies', async () => {
  const row = (line: number, message_id: string, parent_id: string | null, role: string, text: string) => ({ value: { message_id, parent_id, role, text }, src: { file: 'o.jsonl', line } });
  const res = buildOasstConversations(
    [
      row(1, 'q', null, 'prompter', 'question'),
      row(2, 'a', 'q', 'assistant', 'answer'),
      row(3, 'x', 'gone', 'prompter', 'lost question'),
      row(4, 'y', 'x', 'assistant', 'lost answer'),
      row(5, 'w', 'y', 'prompter', 'lost follow-up'),
      row(6, 'v', 'q-typo', 'assistant', 'lone answer'),
    ],
    { paths: 'all' },
  );
  assert.equal(res.conversations.length, 1);
  assert.equal(res.orphans, 2);
  assert.deepEqual(res.orphanRows, [
    { src: { file: 'o.jsonl', line: 3 }, messageId: 'x', parentId: 'gone', replies: 2 },
    { src: { file: 'o.jsonl', line: 6 }, messageId: 'v', parentId: 'q-typo', replies: 0 },
  ]);
  assert.equal(orphanReason(res.orphanRows[0]!), 'message_id "x": parent_id "gone" is not in the file; message and its 2 replies skipped');
  assert.equal(orphanReason(res.orphanRows[1]!), 'message_id "v": parent_id "q-typo" is not in the file; message skipped');
  // Through loadConversations: reported, and no error even with on_bad_line "error" (the default).
  const set = await loadConversations(fx('oasst1.jsonl'));
  assert.equal(set.badLineCount, 0);
  assert.deepEqual(set.orphans, [{ src: { file: fx('oasst1.jsonl'), line: 15 }, messageId: 'z1', parentId: 'missing', replies: 0 }]);
});

test('oasst1 orphans: a reply whose parent row is a bad line is reported against that line, not as "not in the file"', async () => {
  const row = (line: number, value: Record<string, unknown>) => ({ value, src: { file: 'o.jsonl', line } });
  const res = buildOasstConversations(
    [
      row(1, { message_id: 'q', parent_id: null, role: 'prompter', text: 'question' }),
      row(2, { message_id: 'a', parent_id: 'q', role: 'assistant', text: 'answer' }),
      row(3, { message_id: 'p', parent_id: null, role: 'prompter' }), // bad: no text
      row(4, { message_id: 'r', parent_id: 'p', role: 'assistant', text: 'reply to a bad line' }),
      row(5, { message_id: 's', parent_id: 'elsewhere', role: 'assistant', text: 'true orphan' }),
    ],
    { paths: 'all' },
  );
  assert.deepEqual(res.bad.map((b) => b.src.line), [3]);
  assert.deepEqual(res.orphanRows, [
    { src: { file: 'o.jsonl', line: 4 }, messageId: 'r', parentId: 'p', replies: 0, parentBadLine: 3 },
    { src: { file: 'o.jsonl', line: 5 }, messageId: 's', parentId: 'elsewhere', replies: 0 },
  ]);
  assert.equal(orphanReason(res.orphanRows[0]!), 'message_id "r": parent_id "p" is the bad line 3; message skipped');
  assert.equal(orphanReason(res.orphanRows[1]!), 'message_id "s": parent_id "elsewhere" is not in the file; message skipped');
  assert.equal(
    orphansNote(res.orphanRows),
    'oasst1: skipped 2 messages whose parent_id is not in the file or is a bad line (with the replies below them): o.jsonl:4 (message_id "r", parent_id "p" at bad line 3), o.jsonl:5 (message_id "s", parent_id "elsewhere")',
  );
});
