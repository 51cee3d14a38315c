// Protocol messages: envelope validation, unknown methods/events, malformed params, typed builders.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  checkEvent, checkResult, makeErrorReply, makeEvent, makeReply, makeRequest, parseHostMessage, parseRequest,
  type RequestParams, type RunnerMethod,
} from '../../protocol/runner';

test('a valid chat request parses and keeps its params', () => {
  const params: RequestParams<'chat'> = { model: 'out', messages: [{ role: 'user', content: 'hi' }], temperature: 0.7, top_p: 0.9, max_new_tokens: 20 };
  const r = parseRequest(JSON.parse(JSON.stringify(makeRequest(7, 'chat', params))));
  assert.equal(r.ok, true);
  if (r.ok) {
    assert.equal(r.message.method, 'chat');
    assert.equal(r.message.id, 7);
    assert.deepEqual(r.message.params, params);
  }
});

test('requests: unknown method, malformed params, unknown fields and missing ids are rejected with reasons', () => {
  const cases: [unknown, RegExp, number | undefined][] = [
    [{ kind: 'request', id: 1, method: 'explode', params: {} }, /unknown method "explode"/, 1],
    [{ kind: 'request', id: 2, method: 'chat', params: { model: 'x', messages: [{ role: 'robot', content: 'a' }], temperature: 1, top_p: 1, max_new_tokens: 5 } }, /params\.messages\[0\]\.role: expected one of system\|user\|assistant/, 2],
    [{ kind: 'request', id: 3, method: 'chat', params: { model: 'x', messages: [], temperature: 1, top_p: 2, max_new_tokens: 5 } }, /params\.top_p: expected number in \[0, 1\]/, 3],
    [{ kind: 'request', id: 4, method: 'preview', params: { dataset: 'd.jsonl', dataset_format: 'dolly', offset: 0 } }, /params\.limit: missing/, 4],
    [{ kind: 'request', id: 5, method: 'stop', params: { save: true, typo: 1 } }, /params\.typo: unknown field/, 5],
    [{ kind: 'request', method: 'status', params: {} }, /message\.id/, undefined],
    [{ kind: 'reply', id: 6, ok: true, result: {} }, /message\.kind: expected "request"/, 6],
    [[1, 2, 3], /expected object/, undefined],
    [{ kind: 'request', id: 8, method: 'cancel', params: { requestId: -1 } }, /params\.requestId: expected integer >= 0/, 8],
    [{ kind: 'request', id: 9, method: 'train', params: { config: 42 } }, /params\.config: expected object/, 9],
  ];
  for (const [msg, reason, id] of cases) {
    const r = parseRequest(msg);
    assert.equal(r.ok, false, JSON.stringify(msg));
    if (!r.ok) {
      assert.match(r.reason, reason);
      assert.equal(r.id, id);
    }
  }
});

test('status without params is accepted (params default to {})', () => {
  const r = parseRequest({ kind: 'request', id: 0, method: 'status' });
  assert.equal(r.ok, true);
});

test('host side: replies are checked against the pending method, events against their schema', () => {
  const pending = new Map<number, RunnerMethod>([[1, 'status'], [2, 'chat']]);
  const methodOf = (id: number) => pending.get(id);
  const good = makeReply(1, 'status', { status: 'idle', run_dir: null, step: 0, total_steps: 0, epoch: 0, loss: null, pid: 1, protocol_version: 1 });
  assert.equal(parseHostMessage(good, methodOf).ok, true);
  const wrongShape = parseHostMessage({ kind: 'reply', id: 2, ok: true, result: { text: 'x' } }, methodOf);
  assert.equal(wrongShape.ok, false);
  if (!wrongShape.ok) assert.match(wrongShape.reason, /chat reply: result\.new_tokens: missing/);
  const unknownId = parseHostMessage({ kind: 'reply', id: 99, ok: true, result: {} }, methodOf);
  assert.equal(unknownId.ok, false);
  if (!unknownId.ok) assert.match(unknownId.reason, /no such pending request/);
  assert.equal(parseHostMessage(makeErrorReply(2, 'boom', 'run.json'), methodOf).ok, true);
  const badErr = parseHostMessage({ kind: 'reply', id: 2, ok: false, error: 'boom' }, methodOf);
  assert.equal(badErr.ok, false);

  const ev = makeEvent('metrics', { type: 'eval', step: 10, eval_loss: 2.5, eval_tokens: 100 });
  assert.equal(parseHostMessage(ev, methodOf).ok, true);
  const badMetrics = parseHostMessage({ kind: 'event', event: 'metrics', data: { type: 'eval', step: 10, eval_loss: null, eval_tokens: 100 } }, methodOf);
  assert.equal(badMetrics.ok, false);
  if (!badMetrics.ok) assert.match(badMetrics.reason, /data\.eval_loss: expected finite number, got null/);
  const unknownEvent = parseHostMessage({ kind: 'event', event: 'fireworks', data: {} }, methodOf);
  assert.equal(unknownEvent.ok, false);
  if (!unknownEvent.ok) assert.match(unknownEvent.reason, /unknown event "fireworks"/);
  const unknownType = parseHostMessage({ kind: 'event', event: 'metrics', data: { type: 'gpu' } }, methodOf);
  assert.equal(unknownType.ok, false);
  if (!unknownType.ok) assert.match(unknownType.reason, /data\.type: expected one of train\|eval\|save/);
});

test('checkResult and checkEvent catch the runner own mistakes', () => {
  assert.equal(checkResult('cancel', { cancelled: true }), null);
  assert.match(checkResult('cancel', { cancelled: 'yes' }) ?? '', /result\.cancelled: expected boolean/);
  assert.equal(checkEvent('progress', { step: 3, total: 10, loss: 2.1, lr: 1e-4, tokens_per_second: 900, eta_s: 12, epoch: 0.3 }), null);
  assert.match(checkEvent('progress', { step: 3, total: 10, loss: 2.1, lr: 1e-4, tokens_per_second: 900, epoch: 0.3 }) ?? '', /data\.eta_s: missing/);
  assert.equal(checkEvent('state', { status: 'training', run_dir: '/tmp/x' }), null);
  assert.match(checkEvent('state', { status: 'sleeping', run_dir: null }) ?? '', /data\.status/);
});
