// The webview HTML shell's Content-Security-Policy, the preview reply → view mapping, and the
// status-bar text.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { contentSecurityPolicy, makeNonce, webviewHtml } from '../../src/webviewHtml';
import { previewToView } from '../../src/previewModel';
import { finishedText, formatEta, statusBarText } from '../../src/statusText';
import { PreviewToWebview } from '../../protocol/webview';

test('CSP: nothing by default, scripts only with the nonce, styles only from the webview origin', () => {
  const nonce = makeNonce();
  assert.match(nonce, /^[A-Za-z0-9]{24}$/);
  assert.notEqual(makeNonce(), nonce);
  const csp = contentSecurityPolicy('https://x.vscode-cdn.net', nonce);
  assert.ok(csp.startsWith("default-src 'none'"));
  assert.ok(csp.includes(`script-src 'nonce-${nonce}'`));
  assert.ok(csp.includes('style-src https://x.vscode-cdn.net'));
  assert.ok(!csp.includes('unsafe-inline') && !csp.includes('unsafe-eval') && !csp.includes('*'));
  const html = webviewHtml({ cspSource: 'https://x.vscode-cdn.net', nonce, title: 'T"<x>', styleUri: 'https://x/style.css', scriptUri: 'https://x/chat.js', panel: 'chat' });
  assert.equal(html.match(/<script/g)!.length, 1);
  assert.ok(html.includes(`<script nonce="${nonce}" src="https://x/chat.js">`));
  assert.ok(html.includes('<title>T&quot;&lt;x&gt;</title>'), 'title is escaped');
  assert.ok(!/ on\w+=/.test(html), 'no inline handlers');
});

test('preview reply → view: pieces and trained flags per token, truncation, stats, bad lines', () => {
  const reply = {
    format_used: 'dolly',
    total: 81,
    offset: 5,
    examples: [
      { index: 5, text: '<|user|>\nHi\n<|assistant|>\nYo<|endoftext|>', input_ids: [50257, 198, 17250], trained: [0, 0, 1] as (0 | 1)[], tokens: ['<|user|>', '\n', 'Hi'], truncated: true, full_length: 9, source: { file: '/d.jsonl', line: 6 } },
      { index: 6, text: 'x', input_ids: [87], trained: [0] as (0 | 1)[], truncated: false, full_length: 1 },
    ],
    stats: { examples: 81, tokens: 1620, trained_tokens: 800, truncated: 3, no_trained_tokens: 1, length_histogram: [{ lo: 0, hi: 32, count: 80 }, { lo: 32, hi: 64, count: 1 }] },
    bad_lines: [{ line: 12, reason: 'missing "response"' }],
  };
  const v = previewToView(reply, { dataset: '/d.jsonl', model: '/m', maxLength: 3, assistantOnlyLoss: true, limit: 5 });
  assert.ok(PreviewToWebview.parse(v).ok, 'the mapped message passes the webview validator');
  assert.deepEqual(v.examples[0]!.tokens, ['<|user|>', '\n', 'Hi']);
  assert.deepEqual(v.examples[0]!.trained, [0, 0, 1]);
  assert.equal(v.examples[0]!.fullLength, 9);
  assert.equal(v.examples[0]!.line, 6);
  assert.deepEqual(v.examples[1]!.tokens, ['#87'], 'ids stand in when no pieces were sent');
  assert.equal(v.examples[1]!.file, '/d.jsonl');
  assert.equal(v.stats.meanLength, 20);
  assert.deepEqual(v.stats.histogram[1], { from: 32, to: 64, count: 1 });
  assert.equal(v.stats.nothingTrained, 1);
  assert.deepEqual(v.badLines, [{ file: '/d.jsonl', line: 12, reason: 'missing "response"' }]);
  assert.equal(v.badLineCount, 1, 'without bad_line_count the listed lines are all there are');
  // the runner lists the first bad lines and counts all of them: the view says how many the file has
  const many = previewToView({ ...reply, bad_lines: [reply.bad_lines[0]!], bad_line_count: 350 }, { dataset: '/d.jsonl', model: '/m', maxLength: 3, assistantOnlyLoss: true, limit: 5 });
  assert.equal(many.badLineCount, 350);
  assert.ok(PreviewToWebview.parse(many).ok);
});

test('status bar text and ETA', () => {
  assert.equal(formatEta(12.4), '12s');
  assert.equal(formatEta(75), '1m 15s');
  assert.equal(formatEta(3725), '1h 2m');
  assert.equal(formatEta(-1), '—');
  assert.equal(formatEta(null), '—');
  assert.equal(statusBarText('training', { step: 120, total: 446, loss: 2.34567, lr: 1e-5, tokens_per_second: 900, eta_s: 75, epoch: 0.3 }), '$(sync~spin) SFT 120/446 · loss 2.346 · ETA 1m 15s');
  assert.equal(statusBarText('stopping', { step: 3, total: 8, loss: null, lr: 0, tokens_per_second: 0, eta_s: null, epoch: 0 }), '$(debug-pause) SFT 3/8');
  assert.equal(statusBarText('training', null), '$(sync~spin) SFT starting…');
  assert.equal(finishedText('finished', 'finished 8 steps; model saved in /r'), '$(pass) SFT finished');
  assert.equal(finishedText('finished', 'stopped at step 6 of 30'), '$(debug-stop) SFT stopped at step 6 of 30');
  assert.equal(finishedText('failed', 'step 7: loss is NaN'), '$(error) SFT failed');
});
