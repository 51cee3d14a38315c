// Protocol: evaluate {kind:'task'} params and result are validated like the other evaluate kinds; the
// task list matches the runner's benchmark tasks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BENCHMARK_TASKS, checkResult, makeRequest, parseHostMessage, parseRequest, type RequestParams, type RequestResult } from '../../protocol/runner';
import { TASKS } from '../../native-runner/infer/benchmarks';

test('evaluate task: the protocol offers exactly the runner benchmark tasks', () => {
  assert.deepEqual([...BENCHMARK_TASKS], [...TASKS]);
});

test('evaluate task: valid params parse (with and without limit); eval_loss and perplexity params still do', () => {
  const good: RequestParams<'evaluate'>[] = [
    { model: 'out', kind: 'task', task: 'hellaswag', data: 'hs.jsonl' },
    { model: 'out', kind: 'task', task: 'truthfulqa_mc2', data: 'tqa.parquet', limit: 5, batch_size: 4, device: 'cpu' },
    { model: 'out', kind: 'perplexity', file: 'a.txt', window: 64 },
    { model: 'out', kind: 'eval_loss', dataset: 'd.jsonl', dataset_format: 'auto' },
  ];
  for (const params of good) {
    const r = parseRequest(JSON.parse(JSON.stringify(makeRequest(3, 'evaluate', params))));
    assert.equal(r.ok, true, r.ok ? '' : r.reason);
    if (r.ok) assert.deepEqual(r.message.params, params);
  }
});

test('evaluate task: bad params are rejected with a reason naming the field', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ model: 'm', kind: 'task', task: 'mmlu', data: 'x.jsonl' }, /params\.task: expected one of hellaswag\|arc_easy\|arc_challenge\|piqa\|winogrande\|truthfulqa_mc2, got "mmlu"/],
    [{ model: 'm', kind: 'task', task: 'piqa' }, /params\.data: missing/],
    [{ model: 'm', kind: 'task', task: 'piqa', data: 'p.jsonl', limit: 0 }, /params\.limit: expected integer >= 1, got 0/],
    [{ model: 'm', kind: 'task', task: 'piqa', data: 'p.jsonl', limit: 2.5 }, /params\.limit: expected integer >= 1/],
    [{ model: 'm', kind: 'task', task: 'piqa', data: 'p.jsonl', file: 'a.txt' }, /params\.file: unknown field/],
    [{ model: 'm', kind: 'perplexity', file: 'a.txt', task: 'piqa' }, /params\.task: unknown field/],
    [{ model: 'm', kind: 'bleu', data: 'x' }, /params\.kind: expected one of eval_loss\|perplexity\|task, got "bleu"/],
    [{ model: 'm', task: 'piqa', data: 'x' }, /params\.kind: expected one of eval_loss\|perplexity\|task, got nothing/],
  ];
  for (const [params, reason] of cases) {
    const r = parseRequest({ kind: 'request', id: 4, method: 'evaluate', params });
    assert.equal(r.ok, false, JSON.stringify(params));
    if (!r.ok) {
      assert.match(r.reason, reason);
      assert.equal(r.id, 4);
    }
  }
});

test('evaluate task: results carry task, n and each metric with its stderr; malformed ones are caught', () => {
  const good: RequestResult<'evaluate'>[] = [
    { kind: 'task', task: 'arc_easy', n: 2, metrics: { acc: { value: 0.5, stderr: 0.5 }, acc_norm: { value: 1, stderr: 0 } } },
    { kind: 'task', task: 'truthfulqa_mc2', n: 1, metrics: { mc2: { value: 0.42, stderr: null } } },
    { kind: 'perplexity', ppl: 12.5, tokens: 30 },
  ];
  for (const result of good) assert.equal(checkResult('evaluate', result), null, JSON.stringify(result));
  const bad: [unknown, RegExp][] = [
    [{ kind: 'task', task: 'arc_easy', n: 0, metrics: {} }, /result\.n: expected integer >= 1, got 0/],
    [{ kind: 'task', task: 'arc_easy', n: 2, metrics: { acc: { value: 0.5 } } }, /result\.metrics\.acc\.stderr: missing/],
    [{ kind: 'task', task: 'arc_easy', n: 2, metrics: { acc: 0.5 } }, /result\.metrics\.acc: expected object, got number/],
    [{ kind: 'task', task: 'arc_easy', n: 2, metrics: { f1: { value: 1, stderr: null } } }, /result\.metrics\.f1: unknown field/],
    [{ kind: 'task', n: 2, metrics: {} }, /result\.task: missing/],
  ];
  for (const [result, reason] of bad) {
    const err = checkResult('evaluate', result);
    assert.ok(err, JSON.stringify(result));
    assert.match(err, reason);
  }
  // the host side checks a reply against the pending evaluate request
  const parsed = parseHostMessage({ kind: 'reply', id: 1, ok: true, result: { kind: 'task', task: 'piqa', n: 2, metrics: { acc: { value: 'high', stderr: null } } } }, () => 'evaluate');
  assert.equal(parsed.ok, false);
  if (!parsed.ok) assert.match(parsed.reason, /evaluate reply: result\.metrics\.acc\.value: expected finite number, got string/);
});
