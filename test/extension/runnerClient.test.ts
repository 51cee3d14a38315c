// RunnerClient against a scripted fake runner (fixtures/fakeRunner.mjs) over real pipes: replies, token
// streaming split mid-UTF-8, malformed lines and events rejected without harm, crash → pending requests
// rejected with the stderr tail, timeouts, and dispose killing a runner that ignores stdin closing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { RunnerClient, RunnerError, describeExit, type RunnerExit } from '../../src/runnerClient';

const FAKE = join(__dirname, 'fixtures', 'fakeRunner.mjs');
const chatParams = (content: string) => ({ model: 'm', messages: [{ role: 'user' as const, content }], temperature: 0.7, top_p: 0.9, max_new_tokens: 5 });

function fake(env: Record<string, string> = {}, tuning = {}) {
  return new RunnerClient({ command: process.execPath, args: [FAKE], env: { ...process.env, ...env } }, tuning);
}

test('status round trip and state event', async () => {
  const c = fake();
  const states: string[] = [];
  c.on('state', (s) => states.push(s.status));
  const r = await c.request('status', {});
  assert.equal(r.status, 'idle');
  assert.equal(r.protocol_version, 1);
  assert.deepEqual(states, ['idle']);
  await c.dispose();
  assert.equal(c.running, false);
});

test('chat streams tokens to the requesting call, decoding UTF-8 split across chunks', async () => {
  const c = fake();
  let streamed = '';
  const r = await c.request('chat', chatParams('hi'), { onToken: (t) => (streamed += t) });
  assert.equal(streamed, 'Hello wörld 🌍');
  assert.equal(r.text, 'Hello wörld 🌍');
  await c.dispose();
});

test('malformed events, garbage lines and unknown events are reported, not fatal', async () => {
  const c = fake();
  const errors: string[] = [];
  c.onProtocolError((e) => errors.push(e));
  let progressEvents = 0;
  c.on('progress', () => progressEvents++);
  const r = await c.request('preview', { dataset: 'd', dataset_format: 'auto', offset: 0, limit: 1 });
  assert.equal(r.format_used, 'dolly');
  assert.equal(progressEvents, 0, 'a malformed progress event must not reach listeners');
  assert.equal(errors.length, 3);
  assert.match(errors[0]!, /event progress: data\.step/);
  assert.match(errors[1]!, /invalid JSON/);
  assert.match(errors[2]!, /unknown event "surprise"/);
  await c.dispose();
});

test('error replies reject with message and where; malformed results reject', async () => {
  const c = fake();
  await assert.rejects(c.request('cancel', { requestId: 1 }), (e: unknown) => e instanceof RunnerError && e.message === 'no cancel here' && e.where === 'fake');
  await assert.rejects(c.request('stop', {}), /malformed reply from the runner: stop reply: result\.stopping/);
  await c.dispose();
});

test('a crash rejects pending requests with the last stderr lines, and reports the exit', async () => {
  const c = fake();
  const exits: RunnerExit[] = [];
  c.onExit((e) => exits.push(e));
  const pendingEval = c.request('evaluate', { model: 'm', kind: 'perplexity' });
  await assert.rejects(c.request('chat', chatParams('crash')), (e: unknown) => {
    assert.ok(e instanceof RunnerError);
    assert.match(e.message, /exited with code 3 before answering "chat"/);
    assert.match(e.stderrTail ?? '', /FATAL: out of memory in MatMul\nat step 3/);
    return true;
  });
  await assert.rejects(pendingEval, /before answering "evaluate"/);
  assert.equal(exits.length, 1);
  assert.equal(exits[0]!.code, 3);
  assert.equal(exits[0]!.expected, false);
  assert.equal(describeExit(exits[0]!, true), 'The SFT runner exited with code 3 during training: loading model… | FATAL: out of memory in MatMul | at step 3');
  assert.equal(describeExit({ code: null, signal: 'SIGKILL', stderrTail: '' }, false), 'The SFT runner was killed by SIGKILL (no output on stderr)');
  // The next request starts a fresh runner.
  const r = await c.request('status', {});
  assert.equal(r.status, 'idle');
  await c.dispose();
});

test('requests time out', async () => {
  const c = fake({}, { timeouts: { evaluate: 150 } });
  await assert.rejects(c.request('evaluate', { model: 'm', kind: 'perplexity' }), /did not answer "evaluate" within 0\.1 s/);
  await c.dispose();
});

test('dispose kills a runner that ignores stdin closing', async () => {
  const c = fake({ FAKE_IGNORE_STDIN_CLOSE: '1' }, { killGraceMs: 200 });
  await c.request('status', {});
  const exits: { signal: string | null; expected: boolean }[] = [];
  c.onExit((e) => exits.push(e));
  const t0 = Date.now();
  await c.dispose();
  assert.equal(exits[0]!.signal, 'SIGKILL');
  assert.equal(exits[0]!.expected, true);
  assert.ok(Date.now() - t0 < 3000);
});
