// The chat panel's runner request: what the user set in the panel is what the runner samples with.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chatRequestParams, DEFAULT_SAMPLING } from '../../src/chatRequest';
import { makeRequest, parseRequest } from '../../protocol/runner';
import { ChatFromWebview } from '../../protocol/webview';
import { samplingFrom } from '../../native-runner/infer/sampling';

const generate = (top_k: number, system = '') => {
  const r = ChatFromWebview.parse({ type: 'generate', pane: 0, model: '/m', system, messages: [{ role: 'user', content: 'Hi' }], params: { ...DEFAULT_SAMPLING, top_k } });
  assert.ok(r.ok);
  assert.equal(r.message.type, 'generate');
  return r.message as Extract<typeof r.message, { type: 'generate' }>;
};

test('top_k 0 ("off" in the panel) reaches the runner as 0, not as a missing key (which means top_k 50)', () => {
  const p = chatRequestParams(generate(0), 'cpu');
  assert.equal(p.top_k, 0);
  assert.equal(samplingFrom({ temperature: p.temperature, topP: p.top_p, topK: p.top_k }).topK, 0);
  assert.equal(samplingFrom({ temperature: p.temperature, topP: p.top_p }).topK, 50, 'a missing top_k is the runner default');
  assert.equal(chatRequestParams(generate(7), 'cuda').top_k, 7);
  assert.ok(parseRequest(makeRequest(1, 'chat', p)).ok, 'the request passes the runner protocol');
});

test('panel defaults are the seed test_sft.py settings; a blank system prompt is left out', () => {
  assert.deepEqual(DEFAULT_SAMPLING, { temperature: 0.7, top_p: 0.9, top_k: 50, max_new_tokens: 150, seed: 42 });
  const p = chatRequestParams(generate(50, '  '), 'cuda');
  assert.equal('system' in p, false);
  assert.equal(p.device, 'cuda');
  assert.equal(chatRequestParams(generate(50, 'Be brief.'), 'cpu').system, 'Be brief.');
});
