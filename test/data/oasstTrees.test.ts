// oasst1's nested layout (OpenAssistant's *.trees.jsonl: one tree a line, replies nested): detection, the
// same conversations as the flat rows, tree_state skipping and its note, malformed trees as bad lines, and
// files that mix the layouts. Fixtures are our own: oasst1-trees.jsonl is oasst1.jsonl nested (without its orphan).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { detectFormat, expandOasstTree, oasstFileRows, type OasstPaths } from '../../native-runner/data/formats';
import { loadConversations, loadTrainingData, skippedTreesNote } from '../../native-runner/data/dataset';
import { loadTokenizer } from '../../native-runner/model/tokenizer';
import { SftError } from '../../native-runner/util/errors';
import type { Conversation } from '../../native-runner/data/types';

const ROOT = path.join(__dirname, '../..');
const FIX = path.join(__dirname, '../fixtures/data');
const FLAT = path.join(FIX, 'oasst1.jsonl');
const TREES = path.join(FIX, 'oasst1-trees.jsonl');
const tok = loadTokenizer(path.join(ROOT, 'samples/tiny-gpt2-chat'));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-data-oasst-trees-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

/** Writes one JSON value a line into the temporary folder. */
function writeJsonl(name: string, lines: unknown[]): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
  return file;
}

const turnsOf = (cs: Conversation[]) => cs.map((c) => c.turns);

/** A small valid message (flat-row fields) with nested replies. */
function msg(message_id: string, role: string, text: string, replies: unknown[] = [], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { message_id, role, text, lang: 'en', ...extra, replies };
}

function tree(id: string, prompt: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { message_tree_id: id, tree_state: 'ready_for_export', ...extra, prompt };
}

test('oasst1 trees: auto-detection picks oasst1 for a nested tree, and prompt_completion still wins for its own fields', async () => {
  const first = JSON.parse(fs.readFileSync(TREES, 'utf8').split('\n')[0]!) as Record<string, unknown>;
  assert.equal(detectFormat(first), 'oasst1');
  // A one-message tree (no replies key) is still told by its message_tree_id.
  assert.equal(detectFormat({ message_tree_id: 't', prompt: { message_id: 'p', role: 'prompter', text: 'q' } }), 'oasst1');
  assert.equal(detectFormat({ prompt: { message_id: 'p', replies: [] } }), 'oasst1');
  assert.equal(detectFormat({ prompt: 'q', completion: 'a' }), 'prompt_completion');
  assert.equal(detectFormat({ prompt: { text: 'no message_id' } }), undefined);
  const set = await loadConversations(TREES);
  assert.equal(set.formatUsed, 'oasst1');
  assert.equal(set.detected, true);
  assert.equal(set.badLineCount, 0);
});

test('oasst1 trees: the nested file gives exactly the flat file\'s conversations ("best" and "all", ranks, deleted, rejected, lang)', async () => {
  const cases: { paths: OasstPaths; lang?: string }[] = [{ paths: 'best' }, { paths: 'all' }, { paths: 'best', lang: 'de' }, { paths: 'all', lang: 'en' }, { paths: 'all', lang: 'en,de' }];
  for (const c of cases) {
    const what = JSON.stringify(c);
    const flat = await loadConversations(FLAT, { format: 'oasst1', oasstPaths: c.paths, oasstLang: c.lang });
    for (const format of ['auto', 'oasst1'] as const) {
      const nested = await loadConversations(TREES, { format, oasstPaths: c.paths, oasstLang: c.lang });
      assert.ok(nested.conversations.length > 0, what);
      assert.deepEqual(turnsOf(nested.conversations), turnsOf(flat.conversations), what);
      assert.equal(nested.skipped, flat.skipped, what);
      assert.equal(nested.droppedMessages, flat.droppedMessages, what);
      assert.deepEqual(nested.orphans, [], what); // the flat file's orphan z1 has no place in a tree
      assert.deepEqual(nested.skippedTrees, {}, what);
    }
  }
  // Spelled out once: lowest rank first, the deleted a4 (+ a5) and the rejected a10 dropped, c1 has no answer.
  const best = await loadConversations(TREES);
  assert.deepEqual(
    best.conversations.map((c) => c.turns.map((t) => t.content)),
    [
      ['How do plants make food?', 'Best answer: photosynthesis.', 'What do they need for it?', 'Light, water and carbon dioxide.'],
      ['Wie geht es dir?', 'Gut, danke!'],
    ],
  );
  assert.equal(best.droppedMessages, 3);
  assert.equal(best.skipped, 1);
  // Every conversation's source is its tree's line.
  assert.deepEqual(
    best.conversations.map((c) => c.source),
    [
      { file: TREES, line: 1 },
      { file: TREES, line: 2 },
    ],
  );
});

test('oasst1 trees: expansion gives flat rows in depth-first reply order, parent_id from the nesting, the tree\'s line as source', () => {
  const src = { file: 't.jsonl', line: 7 };
  const t = tree('q', msg('q', 'prompter', 'question', [msg('a', 'assistant', 'first', [msg('f', 'prompter', 'follow-up')]), msg('b', 'assistant', 'second')]));
  const res = expandOasstTree(t, src, new Map());
  assert.equal(res.kind, 'rows');
  if (res.kind !== 'rows') return;
  assert.deepEqual(
    res.rows.map((r) => [r.value.message_id, r.value.parent_id, 'replies' in r.value, r.src]),
    [
      ['q', null, false, src],
      ['a', 'q', false, src],
      ['f', 'a', false, src],
      ['b', 'q', false, src],
    ],
  );
  // A parent_id that agrees with the nesting ("" on the prompt reads as none, as in flat rows) is accepted.
  const agreeing = tree('q', msg('q', 'prompter', 'question', [msg('a', 'assistant', 'answer', [], { parent_id: 'q' })], { parent_id: '' }));
  assert.equal(expandOasstTree(agreeing, src, new Map()).kind, 'rows');
});

test('oasst1 trees: a tree_state other than ready_for_export skips the tree, counted by state and noted; no tree_state is used', async () => {
  const answer = (id: string) => msg(id, 'prompter', `question ${id}`, [msg(`${id}-a`, 'assistant', `answer ${id}`)]);
  const file = writeJsonl('states.trees.jsonl', [
    tree('t1', answer('t1')),
    tree('t2', answer('t2'), { tree_state: 'growing' }),
    tree('t3', answer('t3'), { tree_state: 'aborted_low_grade' }),
    tree('t4', answer('t4'), { tree_state: 'growing' }),
    { message_tree_id: 't5', prompt: answer('t5') }, // no tree_state: used
    tree('t6', answer('t6'), { tree_state: null }), // null: as if absent
    // A skipped tree is not read, so its contents cannot make it a bad line.
    tree('t7', 'not even a message', { tree_state: 'backlog_ranking' }),
  ]);
  const set = await loadConversations(file);
  assert.equal(set.badLineCount, 0);
  assert.deepEqual(
    set.conversations.map((c) => [c.turns[1]!.content, c.source.line]),
    [
      ['answer t1', 1],
      ['answer t5', 5],
      ['answer t6', 6],
    ],
  );
  assert.deepEqual(set.skippedTrees, { growing: 2, aborted_low_grade: 1, backlog_ranking: 1 });
  const note = `oasst1: skipped 4 trees of ${file} whose tree_state is not "ready_for_export" (2 "growing", 1 "aborted_low_grade", 1 "backlog_ranking")`;
  assert.equal(skippedTreesNote(set.skippedTrees, file), note);
  assert.equal(skippedTreesNote({}, file), null);
  assert.equal(skippedTreesNote({ growing: 1 }, 'x.jsonl'), 'oasst1: skipped 1 tree of x.jsonl whose tree_state is not "ready_for_export" (1 "growing")');
  const data = await loadTrainingData({ dataset: file, max_length: 128, tokenizer: tok, test_size: 0 });
  assert.equal(data.train.length, 3);
  assert.ok(data.notes.includes(note), data.notes.join('\n'));
  assert.ok(data.notes.includes('dataset_format auto: using "oasst1"'), data.notes.join('\n'));
  // The eval file's skipped trees are noted under its own name.
  const evalData = await loadTrainingData({ dataset: TREES, eval_dataset: file, max_length: 128, tokenizer: tok });
  assert.ok(evalData.notes.includes(note), evalData.notes.join('\n'));
  assert.ok(!evalData.notes.some((n) => n.includes(TREES) && n.includes('tree_state')), evalData.notes.join('\n'));
});

test('oasst1 trees: malformed trees are bad lines naming the line (and the message); "skip" skips and counts them', async () => {
  const good = tree('g', msg('g1', 'prompter', 'fine question', [msg('g2', 'assistant', 'fine answer')]));
  const file = writeJsonl('malformed.trees.jsonl', [
    good, // 1
    { message_tree_id: 'm2', tree_state: 'ready_for_export' }, // 2: no prompt
    tree('m3', 'a question as a string'), // 3
    tree('m4', { ...msg('p4', 'prompter', 'q'), replies: { not: 'a list' } }), // 4
    tree('m5', msg('p5', 'prompter', 'q', ['a reply as a string'])), // 5
    tree('m6', msg('p6', 'prompter', 'q', [msg('r6', 'assistant', 'a', [msg('x6', 'bot', 'who am I')])])), // 6
    tree('m7', msg('p7', 'prompter', 'q', [msg('r7', 'assistant', 'a', [], { parent_id: 'someone-else' })])), // 7
    tree('m8', msg('p8', 'prompter', 'q', [msg('g2', 'assistant', 'same id as line 1')])), // 8
    tree('m9', msg('p9', 'prompter', 'q', [msg('r9', 'assistant', 'a'), msg('r9', 'assistant', 'again')])), // 9
    tree('m10', msg('p10', 'prompter', 'q'), { tree_state: 5 }), // 10
    {}, // 11: shows no layout, read as the file's (a tree without a prompt)
    tree('m12', msg('p12', 'prompter', 'q', [msg('r12', 'assistant', 'a', [], { rank: 'first' })])), // 12
    tree('m13', { role: 'prompter', text: 'no id', replies: [] }), // 13
    tree('m14', msg('p14', 'prompter', 'q', [msg('r14', 'assistant', 'a')]), { message_tree_id: 'm14' }), // 14: fine
  ]);
  const expected = [
    '2: missing "prompt" (the nested tree\'s first message)',
    '3: "prompt" must be an object (the nested tree\'s first message), got string',
    '4: prompt (message_id "p4"): "replies" must be an array, got object',
    '5: prompt.replies[0] must be an object, got string',
    '6: prompt.replies[0].replies[0] (message_id "x6"): "role" must be "prompter" or "assistant", got "bot"',
    '7: prompt.replies[0] (message_id "r7"): "parent_id" is "someone-else" but the message is a reply to "p7"',
    '8: prompt.replies[0] (message_id "g2"): duplicate message_id (first at line 1)',
    '9: prompt.replies[1] (message_id "r9"): duplicate message_id (twice in this tree)',
    '10: "tree_state" must be a string, got number',
    '11: missing "prompt" (the nested tree\'s first message)',
    '12: prompt.replies[0] (message_id "r12"): "rank" must be a number or null, got string',
    '13: prompt: missing "message_id"',
  ];
  const skipped = await loadConversations(file, { onBadLine: 'skip' });
  assert.equal(skipped.formatUsed, 'oasst1');
  assert.deepEqual(
    skipped.badLines.map((b) => `${b.line}: ${b.reason}`),
    expected,
  );
  assert.ok(skipped.badLines.every((b) => b.file === file));
  assert.equal(skipped.badLineCount, expected.length);
  // A bad tree is dropped whole: only lines 1 and 14 give conversations, and no message of a bad tree is an orphan.
  assert.deepEqual(
    skipped.conversations.map((c) => c.source.line),
    [1, 14],
  );
  assert.deepEqual(skipped.orphans, []);
  // "error" (the default): an SftError naming the file and the first bad line.
  await assert.rejects(
    loadConversations(file),
    (e: unknown) =>
      e instanceof SftError &&
      e.message.startsWith(`${file}:2: missing "prompt" (the nested tree's first message) (and ${expected.length - 1} more bad lines; on_bad_line: "skip" skips them)`) &&
      e.message.includes(`${file}:6: prompt.replies[0].replies[0] (message_id "x6")`),
  );
  await assert.rejects(loadTrainingData({ dataset: file, max_length: 128, tokenizer: tok, test_size: 0 }), (e: unknown) => e instanceof SftError && e.message.startsWith(`${file}:2: `));
  const data = await loadTrainingData({ dataset: file, max_length: 128, tokenizer: tok, test_size: 0, on_bad_line: 'skip' });
  assert.equal(data.badLineCount, expected.length);
  assert.equal(data.train.length, 2);
  assert.ok(data.notes.includes(`skipped ${expected.length} bad lines`), data.notes.join('\n'));
});

test('oasst1 trees: a file that mixes nested trees and flat rows is an error at the first line of the other layout, whatever on_bad_line says', async () => {
  const flatRows = fs.readFileSync(FLAT, 'utf8').trim().split('\n');
  const treeLines = fs.readFileSync(TREES, 'utf8').trim().split('\n');
  const treesFirst = path.join(tmp, 'mixed-trees-first.jsonl');
  fs.writeFileSync(treesFirst, [treeLines[0], '{}', flatRows[10], treeLines[1]].join('\n') + '\n');
  for (const onBadLine of ['error', 'skip'] as const) {
    await assert.rejects(
      loadConversations(treesFirst, { onBadLine }),
      (e: unknown) =>
        e instanceof SftError &&
        e.message === `${treesFirst}:3: a flat message row in an oasst1 file whose line 1 is a nested tree (trees.jsonl); a file holds one layout, not both`,
    );
  }
  const rowsFirst = path.join(tmp, 'mixed-rows-first.jsonl');
  fs.writeFileSync(rowsFirst, [flatRows[0], flatRows[1], treeLines[1]].join('\n') + '\n');
  await assert.rejects(
    loadConversations(rowsFirst, { format: 'oasst1', onBadLine: 'skip' }),
    (e: unknown) =>
      e instanceof SftError &&
      e.message === `${rowsFirst}:3: a nested tree (trees.jsonl) in an oasst1 file whose line 1 is a flat message row; a file holds one layout, not both`,
  );
  // Records showing no layout follow the file's: flat rows stay flat (a "{}" row is a flat bad line, as before).
  const rows = oasstFileRows([
    { value: {}, src: { file: 'f', line: 1 } },
    { value: JSON.parse(flatRows[0]!) as Record<string, unknown>, src: { file: 'f', line: 2 } },
  ]);
  assert.ok(!('mixed' in rows));
  if ('mixed' in rows) return;
  assert.equal(rows.layout, 'rows');
  assert.equal(rows.rows.length, 2);
  assert.deepEqual(rows.bad, []);
});
