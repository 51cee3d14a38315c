// The shared max_length rule (protocol/trainingOptions.ts maxLengthProblem) at the protocol's doors: the
// runner's `preview` and `evaluate` (eval_loss) params and the Dataset Preview's setOptions / data messages
// refuse what run.json refuses (below 2, fractions, above 2^20), in the same words with the field's path.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRequest } from '../../protocol/runner';
import { MAX_LENGTH_MAX, maxLengthProblem } from '../../protocol/trainingOptions';
import { PreviewFromWebview, PreviewToWebview } from '../../protocol/webview';
import { samplePreviewData } from '../extension/helpers/previewData';

const preview = { dataset: 'd.jsonl', dataset_format: 'dolly', offset: 0, limit: 5 };
const evalLoss = { model: 'm', kind: 'eval_loss', dataset: 'd.jsonl' };

function reason(method: string, params: Record<string, unknown>): string | null {
  const r = parseRequest({ kind: 'request', id: 1, method, params });
  return r.ok ? null : r.reason;
}

test('runner requests: preview and evaluate refuse max_length < 2 (and fractions, and > 2^20) with the shared reason', () => {
  for (const [method, base] of [['preview', preview], ['evaluate', evalLoss]] as const) {
    for (const good of [2, 3, 512, MAX_LENGTH_MAX]) assert.equal(reason(method, { ...base, max_length: good }), null, `${method} ${good}`);
    assert.equal(reason(method, base), null, `${method}: max_length may be left out`);
    for (const bad of [1, 0, -4, 2.5, MAX_LENGTH_MAX + 1, '512']) {
      const r = reason(method, { ...base, max_length: bad });
      assert.equal(r, `${method}: params.max_length: ${maxLengthProblem(bad)}`, `${method} ${JSON.stringify(bad)}`);
    }
  }
  assert.match(reason('preview', { ...preview, max_length: 1 })!, /params\.max_length: expected an integer >= 2 and <= 1048576, got 1$/);
});

test('Dataset Preview messages: setOptions and data refuse max_length 1', () => {
  assert.ok(PreviewFromWebview.parse({ type: 'setOptions', max_length: 2, assistant_only_loss: true }).ok);
  const r = PreviewFromWebview.parse({ type: 'setOptions', max_length: 1, assistant_only_loss: true });
  assert.equal(r.ok, false);
  if (!r.ok) assert.equal(r.error, `setOptions.max_length: ${maxLengthProblem(1)}`);
  assert.ok(PreviewToWebview.parse(samplePreviewData(2)).ok);
  const d = PreviewToWebview.parse(samplePreviewData(1));
  assert.equal(d.ok, false);
  if (!d.ok) assert.equal(d.error, `data.max_length: ${maxLengthProblem(1)}`);
});
