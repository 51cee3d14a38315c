// The chat panel's Stop, deterministically: the host side (src/panels/chatGenerations.ts, what ChatPanel runs)
// talks to the real runner server (native-runner/train/server.ts with the production services and the tiny
// model) through protocol lines encoded, validated and decoded as in the real process pipe — only in one process,
// so a Stop "clicked" when the third token reaches the webview arrives before the next token is generated
// (the tiny model answers faster than a real click). Checked: the runner's `cancel` reply, the chat reply's
// finish_reason "cancelled", the partial answer equal to the streamed text and to the start of the uncancelled
// answer with the same seed, the webview's `done` marked stopped (so it leaves its streaming state), and that
// the next Send works normally.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { encodeJsonLine } from '../../protocol/jsonLines';
import { makeRequest, parseHostMessage, type RequestParams, type RequestResult, type RunnerMethod } from '../../protocol/runner';
import type { ChatMsgFromWebview, ChatMsgToWebview } from '../../protocol/webview';
import { ChatGenerations } from '../../src/panels/chatGenerations';
import { RunnerServer } from '../../native-runner/train/server';
import { defaultDeps, defaultServices } from '../../native-runner/train/runtime';
import { closeInferenceModels } from '../../native-runner/infer/service';

const ROOT = path.join(__dirname, '../..');

/** A RunnerClient stand-in over an in-process RunnerServer: every message goes through JSON lines and the host-side validator. */
class InProcessRunner {
  readonly server: RunnerServer;
  readonly sent: { id: number; method: RunnerMethod; params: unknown }[] = [];
  readonly replies = new Map<number, unknown>();
  readonly invalid: string[] = [];
  private nextId = 1;
  private readonly pending = new Map<number, { method: RunnerMethod; resolve(v: unknown): void; reject(e: Error): void; onToken?: (t: string) => void }>();

  constructor() {
    this.server = new RunnerServer({ write: (line) => this.onLine(line), deps: defaultDeps(), services: defaultServices(ROOT), cwd: ROOT });
  }

  request<M extends RunnerMethod>(method: M, params: RequestParams<M>, opts: { onToken?: (t: string) => void; onId?: (id: number) => void } = {}): Promise<RequestResult<M>> {
    const id = this.nextId++;
    opts.onId?.(id);
    this.sent.push({ id, method, params });
    return new Promise<RequestResult<M>>((resolve, reject) => {
      this.pending.set(id, { method, resolve: resolve as (v: unknown) => void, reject, onToken: opts.onToken });
      this.server.push(encodeJsonLine(makeRequest(id, method, params)));
    });
  }

  private onLine(line: string): void {
    assert.ok(line.endsWith('\n') && !line.slice(0, -1).includes('\n'), 'one protocol message per line');
    const parsed = parseHostMessage(JSON.parse(line), (id) => this.pending.get(id)?.method);
    if (!parsed.ok) {
      this.invalid.push(parsed.reason);
      return;
    }
    const m = parsed.message;
    if (m.kind === 'event') {
      if (m.event === 'token') {
        const d = m.data as { requestId: number; text: string };
        this.pending.get(d.requestId)?.onToken?.(d.text);
      }
      return;
    }
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    this.replies.set(m.id, m.ok ? m.result : m.error);
    if (m.ok) p.resolve(m.result);
    else p.reject(new Error(m.error.message));
  }
}

function generateMsg(maxNewTokens: number): Extract<ChatMsgFromWebview, { type: 'generate' }> {
  return {
    type: 'generate',
    pane: 0,
    model: 'samples/tiny-gpt2-chat',
    system: '',
    messages: [{ role: 'user', content: 'Tell me a long story about the sea.' }],
    // top_k 0 and top_p 1: the untrained tiny model samples from its whole vocabulary, so it rarely meets a stop token.
    params: { temperature: 1, top_p: 1, top_k: 0, max_new_tokens: maxNewTokens, seed: 1234 },
  };
}

test('chat Stop: cancel during a chat request ends it with finish_reason cancelled; the panel gets done(stopped) and can send again', { timeout: 120_000 }, async () => {
  const runner = new InProcessRunner();
  try {
    // The answer without Stop (same seed): the reference the stopped answer must be the start of.
    const fullPosts: ChatMsgToWebview[] = [];
    await new ChatGenerations(runner, (m) => fullPosts.push(m)).generate(generateMsg(100), 'cpu');
    const fullDone = fullPosts.at(-1);
    assert.ok(fullDone?.type === 'done', JSON.stringify(fullDone));
    assert.equal(fullDone.stopped, false);
    const fullReply = runner.replies.get(1) as RequestResult<'chat'>;
    assert.ok(fullReply.new_tokens > 20, `the uncancelled answer is long enough to stop (${fullReply.new_tokens} tokens, ${fullReply.finish_reason})`);
    const fullTokens = fullPosts.filter((m) => m.type === 'token').length;
    assert.ok(fullTokens > 3);

    // The same request, with Stop pressed when the third token reaches the webview.
    const posts: ChatMsgToWebview[] = [];
    let gens!: ChatGenerations;
    let inFlightAtStop = -1;
    gens = new ChatGenerations(runner, (m) => {
      posts.push(m);
      if (m.type === 'token' && posts.filter((p) => p.type === 'token').length === 3) {
        inFlightAtStop = gens.inFlight;
        gens.stop();
      }
    });
    await gens.generate(generateMsg(100), 'cpu');
    assert.equal(inFlightAtStop, 1);
    assert.equal(gens.inFlight, 0, 'nothing left in flight after done');

    const chatReq = runner.sent.find((s) => s.method === 'chat' && s.id > 1)!;
    const cancelReq = runner.sent.find((s) => s.method === 'cancel')!;
    assert.deepEqual(cancelReq.params, { requestId: chatReq.id });
    assert.deepEqual(runner.replies.get(cancelReq.id), { cancelled: true });
    const reply = runner.replies.get(chatReq.id) as RequestResult<'chat'>;
    assert.equal(reply.finish_reason, 'cancelled');
    assert.ok(reply.new_tokens >= 3 && reply.new_tokens < fullReply.new_tokens, `stopped after ${reply.new_tokens} of ${fullReply.new_tokens} tokens`);

    // The webview saw three tokens and then one `done`, marked stopped, holding exactly the streamed text.
    assert.deepEqual(posts.map((p) => p.type), ['token', 'token', 'token', 'done']);
    const done = posts[3]!;
    assert.ok(done.type === 'done');
    assert.equal(done.stopped, true);
    const streamed = posts.filter((p) => p.type === 'token').map((p) => (p as { text: string }).text).join('');
    assert.equal(done.text, streamed.trim());
    assert.ok(done.text.length > 0);
    assert.ok(fullDone.text.startsWith(done.text), `same seed, same start: ${JSON.stringify(done.text)} vs ${JSON.stringify(fullDone.text.slice(0, 80))}`);
    assert.ok(done.text.length < fullDone.text.length);

    // A cancel for a request that has finished is refused, and the next Send answers in full.
    assert.deepEqual(await runner.request('cancel', { requestId: chatReq.id }), { cancelled: false });
    const again: ChatMsgToWebview[] = [];
    await new ChatGenerations(runner, (m) => again.push(m)).generate(generateMsg(10), 'cpu');
    const last = again.at(-1)!;
    assert.ok(last.type === 'done' && last.stopped === false, JSON.stringify(last));
    assert.deepEqual(runner.invalid, [], 'every runner line passed the host-side validator');
  } finally {
    await runner.server.shutdown();
    await closeInferenceModels();
  }
});

test('chat Stop with nothing in flight sends no cancel; a failed chat posts error (the panel leaves streaming too)', { timeout: 60_000 }, async () => {
  const runner = new InProcessRunner();
  try {
    const posts: ChatMsgToWebview[] = [];
    const gens = new ChatGenerations(runner, (m) => posts.push(m));
    gens.stop();
    assert.equal(runner.sent.length, 0);
    await gens.generate({ ...generateMsg(5), model: 'samples/no-such-model' }, 'cpu');
    assert.equal(posts.length, 1);
    const p = posts[0]!;
    assert.ok(p.type === 'error', JSON.stringify(p));
    assert.match(p.message, /no-such-model/);
    assert.equal(gens.inFlight, 0);
  } finally {
    await runner.server.shutdown();
    await closeInferenceModels();
  }
});
