// Evaluate Checkpoint's result text (output channel + notification) for each kind, and the limit box.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { evaluationText, parseDocLimit } from '../../src/evaluateText';

test('evaluationText: benchmark metrics with stderr, eval loss and perplexity lines', () => {
  assert.equal(
    evaluationText({ kind: 'task', task: 'arc_easy', n: 2, metrics: { acc: { value: 0.5, stderr: 0.5 }, acc_norm: { value: 1, stderr: 0 } } }),
    'arc_easy: acc 0.5000 ± 0.5000, acc_norm 1.0000 ± 0.0000 over 2 documents',
  );
  assert.equal(evaluationText({ kind: 'task', task: 'truthfulqa_mc2', n: 1, metrics: { mc2: { value: 0.123456, stderr: null } } }), 'truthfulqa_mc2: mc2 0.1235 over 1 document');
  assert.equal(evaluationText({ kind: 'eval_loss', eval_loss: Math.log(10), eval_tokens: 120 }), 'eval loss 2.3026 over 120 tokens (perplexity 10.00)');
  assert.equal(evaluationText({ kind: 'perplexity', ppl: 12.34567, tokens: 300 }), 'perplexity 12.346 over 300 tokens');
});

test('parseDocLimit: empty = all documents, positive integers only', () => {
  assert.deepEqual(parseDocLimit(''), { ok: true, limit: undefined });
  assert.deepEqual(parseDocLimit('  25 '), { ok: true, limit: 25 });
  for (const bad of ['0', '-3', '2.5', 'ten', '1e3']) assert.equal(parseDocLimit(bad).ok, false, bad);
});
