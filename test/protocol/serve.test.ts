// Black-box tests of the real runner process (`sft serve`): only protocol lines on stdout, garbage and
// oversized lines survive, UTF-8 split across writes, typed replies, and exit when stdin closes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RunnerProcess } from './helpers/runnerProcess';

test('sft serve: idle state first, status, garbage, unknown method, split UTF-8 and an oversized line; exits 0 when stdin closes', { timeout: 60_000 }, async () => {
  const r = new RunnerProcess();
  try {
    const first = await r.waitEvent(() => true, 20_000);
    assert.deepEqual(first, { kind: 'event', event: 'state', data: { status: 'idle', run_dir: null } });

    const st = await r.request('status', {});
    assert.ok(st.ok);
    if (st.ok) {
      assert.equal(st.result.status, 'idle');
      assert.equal(st.result.pid, r.child.pid);
    }

    r.writeRaw('this is not json\n');
    const err = await r.waitEvent((e) => e.event === 'error');
    assert.match((err.data as { message: string }).message, /invalid JSON/);

    const bad = await r.request('nope' as 'status', {});
    assert.equal(bad.ok, false);
    if (!bad.ok) assert.match(bad.message, /unknown method "nope"/);

    const badParams = await r.request('chat', { model: 'x', messages: [], temperature: -1, top_p: 0.9, max_new_tokens: 10 });
    assert.equal(badParams.ok, false);
    if (!badParams.ok) assert.match(badParams.message, /params\.temperature/);

    // a request whose bytes are split inside a multi-byte character, written in two chunks
    const name = 'données-é-東京.jsonl';
    const bytes = Buffer.from(`${JSON.stringify({ kind: 'request', id: 900, method: 'preview', params: { dataset: name, dataset_format: 'dolly', offset: 0, limit: 1 } })}\n`, 'utf8');
    const cut = bytes.indexOf(Buffer.from('東', 'utf8')) + 1;
    const reply = r.expectReply(900, 'preview');
    r.writeRaw(bytes.subarray(0, cut));
    await new Promise((res) => setTimeout(res, 50));
    r.writeRaw(bytes.subarray(cut));
    const rep = await reply;
    assert.equal(rep.ok, false);
    if (!rep.ok) assert.ok(rep.error.message.includes(name), rep.error.message);

    // an oversized line (17 MB) is rejected with an error event, and the next request still works
    const errorsBefore = r.events.filter((e) => e.event === 'error').length;
    r.writeRaw(`{"kind":"request","id":5,"method":"status","params":{"pad":"${'x'.repeat(17 * 1024 * 1024)}"}}\n`);
    const st2 = await r.request('status', {});
    assert.ok(st2.ok);
    const errs = r.events.filter((e) => e.event === 'error').slice(errorsBefore);
    assert.equal(errs.length, 1);
    assert.match((errs[0]!.data as { message: string }).message, /longer than 16777216 characters/);

    const t0 = Date.now();
    r.close();
    const ex = await r.exited;
    assert.equal(ex.code, 0, r.stderr);
    assert.ok(Date.now() - t0 < 10_000);
    assert.deepEqual(r.invalid, [], 'every stdout line is a valid protocol message');
  } finally {
    r.child.kill();
  }
});

test('sft serve: preview pages through the sample dataset; shutdown exits', { timeout: 60_000 }, async () => {
  const r = new RunnerProcess();
  try {
    const p = await r.request('preview', { dataset: 'samples/dolly-sample.jsonl', dataset_format: 'dolly', offset: 2, limit: 3 });
    assert.ok(p.ok, p.ok ? '' : p.message);
    if (p.ok) {
      assert.equal(p.result.offset, 2);
      assert.equal(p.result.examples.length, 3);
      assert.equal(p.result.examples[0]!.index, 2);
      const ex = p.result.examples[0]!;
      assert.equal(ex.trained.length, ex.input_ids.length);
      assert.ok(ex.trained.includes(1));
      assert.equal(p.result.stats.examples, p.result.total);
    }
    // the pre-flight plan of the demo config (samples/run.json, paths relative to it)
    const plan = await r.request('plan', { config: 'samples/run.json' });
    assert.ok(plan.ok, plan.ok ? '' : plan.message);
    if (plan.ok) {
      const total = plan.result.train_examples + plan.result.eval_examples;
      assert.equal(total, p.ok ? p.result.total : -1);
      assert.equal(plan.result.micro_batches_per_epoch, Math.ceil(plan.result.train_examples / 8));
      assert.equal(plan.result.steps_per_epoch, plan.result.micro_batches_per_epoch);
      assert.equal(plan.result.total_steps, 20 * plan.result.steps_per_epoch);
      assert.equal(plan.result.warmup_steps, Math.ceil(0.05 * plan.result.total_steps));
      assert.deepEqual(plan.result.kept_checkpoints, plan.result.save_at.slice(-2));
      assert.ok(plan.result.efficiency > 0 && plan.result.efficiency <= 1);
    }
    const planBad = await r.request('plan', { config: { model_name_or_path: 'samples/tiny-gpt2-chat', dataset: 'samples/dolly-sample.jsonl', warmup_ratio: 2 } });
    assert.equal(planBad.ok, false);
    if (!planBad.ok) assert.match(planBad.message, /^config: warmup_ratio: expected a number >= 0 and <= 1, got 2$/);
    const s = await r.request('shutdown', {});
    assert.ok(s.ok);
    const ex = await r.exited;
    assert.equal(ex.code, 0);
    assert.deepEqual(r.invalid, []);
  } finally {
    r.child.kill();
  }
});
