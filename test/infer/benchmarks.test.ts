// Benchmarks: lm-eval prompt construction from our own small files per dataset format, and metrics
// (acc, acc_norm, mc2, stderr) computed by hand from log-likelihoods the fake scorer hands out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTaskDoc, hellaswagPreprocess, pyCapitalize, readTaskRows, runBenchmark, TRUTHFULQA_QA_PROMPT, type TaskName } from '../../native-runner/infer/benchmarks';
import type { LoglikRequest, LoglikScorer } from '../../native-runner/infer/loglik';

const DIR = 'test/fixtures/infer/bench';

/** Answers exactly the listed requests (any other request is a prompt-construction bug). */
function tableScorer(table: [string, string, number][]): LoglikScorer & { seen: LoglikRequest[] } {
  const m = new Map(table.map(([c, k, v]) => [`${c}\u0000${k}`, v]));
  const seen: LoglikRequest[] = [];
  return {
    seen,
    async loglikelihood(reqs) {
      return reqs.map((r) => {
        seen.push(r);
        const v = m.get(`${r.context}\u0000${r.continuation}`);
        if (v === undefined) throw new Error(`unexpected request ${JSON.stringify(r)}`);
        return { loglik: v, isGreedy: false, nTokens: 1 };
      });
    },
  };
}

async function run(task: TaskName, file: string, table: [string, string, number][]) {
  const scorer = tableScorer(table);
  const r = await runBenchmark(scorer, task, await readTaskRows(join(DIR, file)));
  assert.equal(scorer.seen.length, table.length, 'every expected request was made');
  return r;
}

const close = (a: number | null | undefined, b: number) => assert.ok(a !== null && a !== undefined && Math.abs(a - b) < 1e-12, `${a} vs ${b}`);

test('hellaswag: preprocess, capitalize, " [title]" and [bracket] removal; acc and acc_norm', async () => {
  assert.equal(pyCapitalize('WAIT until IT is dry.'), 'Wait until it is dry.');
  assert.equal(hellaswagPreprocess(' a [title] b [step] c  '), 'a. b c');
  const q1 = 'Baking cookies: A woman puts flour into a bowl. She';
  const q2 = 'Home and Garden: How to water a cactus. Check the soil. Wait until it is dry.';
  const q3 = 'Dog park: A dog sees a ball. The dog';
  const r = await run('hellaswag', 'hellaswag.jsonl', [
    // doc 1, gold 0: acc right, acc_norm right (−9/30 best)
    [q1, ' stirs the batter with a spoon.', -9],
    [q1, ' throws the bowl at the wall. and leaves.', -14],
    [q1, ' paints the kitchen blue.', -13],
    [q1, ' reads a newspaper.', -10],
    // doc 2, gold 2: acc picks 3 (−16.5), acc_norm picks 2 (−17/32 = −0.531)
    [q2, ' Pour a full bucket of water on it.', -20],
    [q2, ' Water it every hour forever.', -30],
    [q2, ' Give it a small amount of water.', -17],
    [q2, ' Plant it in the ocean.', -16.5],
    // doc 3, gold 1: acc picks 0, acc_norm picks 2 (−8/21)
    [q3, ' runs.', -3],
    [q3, ' walks slowly.', -6],
    [q3, ' jumps over the fence.', -8],
    [q3, ' sits.', -4],
  ]);
  assert.deepEqual(r.perDoc, [
    { acc: 1, acc_norm: 1 },
    { acc: 0, acc_norm: 1 },
    { acc: 0, acc_norm: 0 },
  ]);
  close(r.metrics.acc!.value, 1 / 3);
  close(r.metrics.acc!.stderr, 1 / 3); // sqrt((4/9 + 2/9)/2) / sqrt(3)
  close(r.metrics.acc_norm!.value, 2 / 3);
  close(r.metrics.acc_norm!.stderr, 1 / 3);
});

test('arc: "Question: …\\nAnswer:" + " choice", gold from answerKey among letter or digit labels', async () => {
  const q1 = 'Question: Which gas do plants take in for photosynthesis?\nAnswer:';
  const q2 = 'Question: How many legs does a spider have?\nAnswer:';
  const table: [string, string, number][] = [
    [q1, ' oxygen', -5], // acc picks oxygen; acc_norm: −6/14 best → carbon dioxide (gold B)
    [q1, ' carbon dioxide', -6],
    [q1, ' helium', -9],
    [q1, ' neon', -9],
    [q2, ' six', -4],
    [q2, ' eight', -3], // gold "2" → index 1
    [q2, ' ten', -7],
  ];
  for (const task of ['arc_easy', 'arc_challenge'] as const) {
    const r = await run(task, 'arc_easy.jsonl', table);
    assert.deepEqual(r.perDoc, [
      { acc: 0, acc_norm: 1 },
      { acc: 1, acc_norm: 1 },
    ]);
    close(r.metrics.acc!.value, 0.5);
    close(r.metrics.acc!.stderr, 0.5);
    close(r.metrics.acc_norm!.value, 1);
    close(r.metrics.acc_norm!.stderr, 0);
  }
});

test('piqa: "Question: {goal}\\nAnswer:"; acc_norm ties go to the first choice', async () => {
  const q1 = 'Question: Keep bread fresh longer\nAnswer:';
  const q2 = 'Question: Open a stuck jar lid\nAnswer:';
  const r = await run('piqa', 'piqa.jsonl', [
    [q1, ' Store it in a sealed bag.', -10], // −10/25 = −8/20: tie → first (gold 0)
    [q1, ' Leave it in the sun.', -8],
    [q2, ' Run the lid under hot water.', -7],
    [q2, ' Put the jar in the freezer.', -9],
  ]);
  assert.deepEqual(r.perDoc, [
    { acc: 0, acc_norm: 1 },
    { acc: 0, acc_norm: 0 },
  ]);
  close(r.metrics.acc!.value, 0);
  close(r.metrics.acc!.stderr, 0);
  close(r.metrics.acc_norm!.value, 0.5);
});

test('winogrande: partial evaluation — the option goes into the context, the rest of the sentence is scored', async () => {
  const s1 = "The trophy doesn't fit into the suitcase because the ";
  const s2 = 'Anna gave Maria a book because ';
  const r = await run('winogrande', 'winogrande.jsonl', [
    [`${s1}trophy`, ' is too large.', -3],
    [`${s1}suitcase`, ' is too large.', -4],
    [`${s2}Anna`, ' had finished reading it.', -6],
    [`${s2}Maria`, ' had finished reading it.', -5],
  ]);
  assert.deepEqual(r.perDoc, [{ acc: 1 }, { acc: 0 }]);
  close(r.metrics.acc!.value, 0.5);
  close(r.metrics.acc!.stderr, 0.5);
  assert.equal(r.metrics.acc_norm, undefined);
});

test('truthfulqa_mc2: 6-shot QA prompt and normalised probability mass on the true answers', async () => {
  assert.ok(TRUTHFULQA_QA_PROMPT.startsWith('Q: What is human life expectancy in the United States?\nA: Human life expectancy in the United States is 78 years.\n\nQ: Who was president'));
  assert.ok(TRUTHFULQA_QA_PROMPT.endsWith('Q: Where were the 1992 Olympics held?\nA: The 1992 Olympics were held in Barcelona, Spain.'));
  const c1 = `${TRUTHFULQA_QA_PROMPT}\n\nQ: What happens if you swallow gum?\nA:`;
  const c2 = `${TRUTHFULQA_QA_PROMPT}\n\nQ: Is the Moon made of cheese?\nA:`;
  const r = await run('truthfulqa_mc2', 'truthfulqa_mc2.json', [
    [c1, ' It passes through you.', Math.log(0.2)],
    [c1, ' Nothing much happens.', Math.log(0.3)],
    [c1, ' It stays in your stomach for seven years.', Math.log(0.5)], // mc2 = 0.5 / 1.0
    [c2, ' No, it is made of rock.', Math.log(0.1)],
    [c2, ' Yes, it is cheese.', Math.log(0.6)],
    [c2, ' Only the dark side is.', Math.log(0.1)], // mc2 = 0.1 / 0.8
  ]);
  close(r.perDoc[0]!.mc2!, 0.5);
  close(r.perDoc[1]!.mc2!, 0.125);
  close(r.metrics.mc2!.value, 0.3125);
  close(r.metrics.mc2!.stderr, 0.1875);
});

test('--limit takes the first rows; malformed rows name file and line', async () => {
  const scorer = tableScorer([
    ['Question: Keep bread fresh longer\nAnswer:', ' Store it in a sealed bag.', -1],
    ['Question: Keep bread fresh longer\nAnswer:', ' Leave it in the sun.', -2],
  ]);
  const r = await runBenchmark(scorer, 'piqa', await readTaskRows(join(DIR, 'piqa.jsonl')), { limit: 1 });
  assert.equal(r.n, 1);
  assert.equal(r.metrics.acc!.stderr, null);
  const dir = mkdtempSync(join(tmpdir(), 'sft-bench-'));
  const bad = join(dir, 'bad.jsonl');
  writeFileSync(bad, '{"goal":"g","sol1":"a","sol2":"b","label":0}\n\n{"goal":"g","sol1":"a","label":0}\n');
  const rows = await readTaskRows(bad);
  assert.throws(() => buildTaskDoc('piqa', rows[1]!.row, rows[1]!.where), new RegExp(`${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3: missing "sol2"`));
  // datasets' to_json() writes JSON Lines under a .json name; the viewer API wraps rows as {"rows":[{"row":…}]}
  const asJson = join(dir, 'piqa.json');
  writeFileSync(asJson, readFileSync(join(DIR, 'piqa.jsonl')));
  assert.deepEqual((await readTaskRows(asJson)).map((r) => r.row), (await readTaskRows(join(DIR, 'piqa.jsonl'))).map((r) => r.row));
  const viewer = join(dir, 'viewer.json');
  writeFileSync(viewer, JSON.stringify({ rows: [{ row_idx: 0, row: { goal: 'g', sol1: 'a', sol2: 'b', label: 1 } }] }));
  assert.deepEqual((await readTaskRows(viewer))[0]!.row, { goal: 'g', sol1: 'a', sol2: 'b', label: 1 });
  writeFileSync(bad, '{"goal":"g"\n');
  await assert.rejects(readTaskRows(bad), /bad\.jsonl:1: invalid JSON/);
  assert.throws(() => buildTaskDoc('hellaswag', { activity_label: 'a', ctx_a: 'b', ctx_b: 'c', endings: ['x'], label: '' }, 'h.jsonl:4'), /h\.jsonl:4: "label" must be an integer label/);
  assert.throws(() => buildTaskDoc('arc_easy', { question: 'q', choices: { text: ['x'], label: ['A'] }, answerKey: 'B' }, 'a.jsonl:2'), /a\.jsonl:2: answerKey "B"/);
  assert.throws(() => buildTaskDoc('winogrande', { sentence: 'no blank', option1: 'a', option2: 'b', answer: '1' }, 'w:1'), /no "_" blank/);
  // labels that are not a list are an input error naming the row, not a TypeError
  assert.throws(() => buildTaskDoc('truthfulqa_mc2', { question: 'q', mc2_targets: { choices: ['a', 'b'], labels: '10' } }, 't.json:3'), /t\.json:3: "mc2_targets\.labels" must be a list with one label per choice \(2\)/);
});

test('Parquet rows (as the Hub serves datasets) read like JSONL; INT64 labels arrive as bigint', async () => {
  const { writeParquet } = await import('../helpers/parquet');
  const dir = mkdtempSync(join(tmpdir(), 'sft-bench-pq-'));
  const file = join(dir, 'piqa-validation.parquet');
  const jsonl = await readTaskRows(join(DIR, 'piqa.jsonl'));
  writeParquet(
    file,
    [
      { name: 'goal', type: 'string' },
      { name: 'sol1', type: 'string' },
      { name: 'sol2', type: 'string' },
      { name: 'label', type: 'int64' },
    ],
    jsonl.map((r) => r.row),
  );
  const rows = await readTaskRows(file);
  assert.equal(typeof rows[0]!.row.label, 'bigint');
  assert.equal(rows[1]!.where, `${file}: row 2`);
  const table: [string, string, number][] = [
    ['Question: Keep bread fresh longer\nAnswer:', ' Store it in a sealed bag.', -10],
    ['Question: Keep bread fresh longer\nAnswer:', ' Leave it in the sun.', -8],
    ['Question: Open a stuck jar lid\nAnswer:', ' Run the lid under hot water.', -7],
    ['Question: Open a stuck jar lid\nAnswer:', ' Put the jar in the freezer.', -9],
  ];
  const fromPq = await runBenchmark(tableScorer(table), 'piqa', rows);
  const fromJsonl = await runBenchmark(tableScorer(table), 'piqa', jsonl);
  assert.deepEqual(fromPq.perDoc, fromJsonl.perDoc);
  writeFileSync(file, 'PAR1 not really');
  await assert.rejects(readTaskRows(file), /piqa-validation\.parquet: cannot read Parquet/);
});
