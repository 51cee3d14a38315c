// Validation of every host↔webview message (protocol/webview.ts): valid messages pass; unknown types,
// missing/extra keys, wrong types, out-of-range numbers and oversized strings/arrays are rejected with a
// reason naming the field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatFromWebview, ChatToWebview, DashboardFromWebview, DashboardToWebview, PreviewFromWebview, TrainFormFromWebview, TrainFormToWebview } from '../../protocol/webview';

const params = { temperature: 0.7, top_p: 0.9, top_k: 0, max_new_tokens: 150, seed: 42 };
const generate = { type: 'generate', pane: 0, model: '/runs/a/checkpoint-10', system: '', messages: [{ role: 'user', content: 'hi <script>' }], params };

function rejects(p: { parse(v: unknown): { ok: boolean; error?: string } }, msg: unknown, reason: RegExp): void {
  const r = p.parse(msg);
  assert.equal(r.ok, false, `accepted ${JSON.stringify(msg)}`);
  assert.match(r.error!, reason);
}

test('valid webview messages are accepted as-is', () => {
  for (const [p, m] of [
    [ChatFromWebview, generate],
    [ChatFromWebview, { type: 'stop' }],
    [ChatFromWebview, { type: 'pickModel', pane: 1 }],
    [DashboardFromWebview, { type: 'openChatAt', runDir: '/r', step: 200 }],
    [PreviewFromWebview, { type: 'openLine', file: '/d.jsonl', line: 7 }],
    [PreviewFromWebview, { type: 'setOptions', max_length: 512, assistant_only_loss: true }],
    [TrainFormFromWebview, { type: 'start', config: { model_name_or_path: 'm', dataset: 'd' }, configPath: 'run.json' }],
    [TrainFormFromWebview, { type: 'browse', field: 'dataset', kind: 'file' }],
  ] as const) {
    const r = p.parse(m);
    assert.ok(r.ok, `${JSON.stringify(m)}: ${!r.ok ? r.error : ''}`);
    if (r.ok) assert.deepEqual(r.message, m);
  }
});

test('unknown and untyped messages are rejected', () => {
  rejects(ChatFromWebview, { type: 'runShell', cmd: 'rm -rf /' }, /unknown message "runShell"/);
  rejects(ChatFromWebview, { pane: 0 }, /message\.type: missing/);
  rejects(ChatFromWebview, 'ready', /expected an object/);
  rejects(ChatFromWebview, null, /expected an object/);
  rejects(ChatFromWebview, [{ type: 'ready' }], /expected an object/);
  rejects(ChatFromWebview, { type: '__proto__' }, /unknown message/);
  rejects(ChatFromWebview, { type: 'toString' }, /unknown message/);
});

test('extra, missing and mistyped fields are rejected with the field named', () => {
  rejects(ChatFromWebview, { type: 'stop', now: true }, /stop\.now: unknown field/);
  rejects(ChatFromWebview, { ...generate, model: undefined }, /generate\.model: missing/);
  rejects(ChatFromWebview, { ...generate, pane: 2 }, /generate\.pane: 2 is above 1/);
  rejects(ChatFromWebview, { ...generate, pane: 0.5 }, /generate\.pane: expected integer/);
  rejects(ChatFromWebview, { ...generate, messages: [{ role: 'root', content: 'x' }] }, /generate\.messages\[0\]\.role: expected one of system\|user\|assistant/);
  rejects(ChatFromWebview, { ...generate, params: { ...params, temperature: 'hot' } }, /generate\.params\.temperature: expected a finite number/);
  rejects(ChatFromWebview, { ...generate, params: { ...params, top_p: 1.5 } }, /generate\.params\.top_p: 1\.5 is outside \[0, 1\]/);
  rejects(ChatFromWebview, { ...generate, params: { ...params, extra: 1 } }, /generate\.params\.extra: unknown field/);
  rejects(DashboardFromWebview, { type: 'openChatAt', runDir: '/r', step: -1 }, /openChatAt\.step: expected integer >= 0/);
  rejects(PreviewFromWebview, { type: 'openLine', file: '/d.jsonl', line: 0 }, /openLine\.line: expected integer >= 1/);
  rejects(TrainFormFromWebview, { type: 'start', config: [], configPath: 'x' }, /start\.config: expected object/);
  rejects(TrainFormFromWebview, { type: 'browse', field: 'anything', kind: 'file' }, /browse\.field: expected one of/);
});

test('oversized strings and arrays are rejected', () => {
  rejects(ChatFromWebview, { ...generate, model: 'x'.repeat(5000) }, /generate\.model: longer than 4096 characters/);
  rejects(ChatFromWebview, { ...generate, messages: Array.from({ length: 1001 }, () => ({ role: 'user', content: 'a' })) }, /generate\.messages: at most 1000 items/);
  rejects(ChatFromWebview, { ...generate, messages: [{ role: 'user', content: 'a'.repeat(200_001) }] }, /content: longer than 200000/);
  rejects(TrainFormFromWebview, { type: 'plan', config: { blob: 'x'.repeat(1_000_001) } }, /plan\.config: larger than 1 MB/);
});

test('host → webview messages are validated the same way', () => {
  assert.ok(ChatToWebview.parse({ type: 'token', pane: 1, text: 'Par' }).ok);
  rejects(ChatToWebview, { type: 'token', pane: 1 }, /token\.text: missing/);
  const runs = { type: 'runs', runs: [{ runDir: '/r', name: 'r', status: 'training', totalSteps: 10, records: [{ type: 'train', step: 1, loss: 2.5, future_field: 'kept' }] }] };
  assert.ok(DashboardToWebview.parse(runs).ok, 'metrics records may carry fields this version does not know');
  rejects(DashboardToWebview, { ...runs, runs: [{ ...runs.runs[0], records: [{ type: 'train', step: 1, loss: 'NaN' }] }] }, /records\[0\]\.loss: expected a finite number/);
  rejects(TrainFormToWebview, { type: 'init', config: {}, configPath: 'x', device: 'tpu' }, /init\.device/);
  // progress as the runner reports it: no loss yet (or not finite) and no ETA yet are null, and the message still arrives
  const progress = { type: 'progress', runDir: '/r', progress: { step: 1, total: 10, loss: null, lr: 5e-5, tokens_per_second: 100, eta_s: null, epoch: 0.1 } };
  assert.ok(DashboardToWebview.parse(progress).ok);
  rejects(DashboardToWebview, { ...progress, progress: { ...progress.progress, loss: NaN } }, /progress\.loss: expected a finite number/);
});
