// Black box: `sft serve` answers evaluate {kind:'task'} with exactly what infer/benchmarks' runBenchmark
// gives in-process for the same model, rows and limit; bad data files come back as errors naming the file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { RunnerProcess, ROOT } from './helpers/runnerProcess';
import { readTaskRows, runBenchmark, type TaskName } from '../../native-runner/infer/benchmarks';
import { CausalLMScorer } from '../../native-runner/infer/loglik';
import { closeInferenceModels, openInferenceModel } from '../../native-runner/infer/service';

const MODEL = 'samples/tiny-gpt2-chat';
const BENCH = 'test/fixtures/infer/bench';

test('serve: evaluate task (arc_easy, truthfulqa_mc2 with a limit) equals runBenchmark run directly', { timeout: 120_000 }, async () => {
  const cases: { task: TaskName; file: string; limit?: number; docs: number }[] = [
    { task: 'arc_easy', file: 'arc_easy.jsonl', docs: 2 },
    { task: 'truthfulqa_mc2', file: 'truthfulqa_mc2.json', limit: 2, docs: 2 },
  ];
  const m = await openInferenceModel(path.join(ROOT, MODEL));
  const r = new RunnerProcess();
  try {
    for (const c of cases) {
      const reply = await r.request('evaluate', { model: MODEL, kind: 'task', task: c.task, data: `${BENCH}/${c.file}`, ...(c.limit ? { limit: c.limit } : {}) });
      assert.ok(reply.ok, reply.ok ? '' : reply.message);
      if (!reply.ok || reply.result.kind !== 'task') continue;
      const rows = await readTaskRows(path.join(ROOT, BENCH, c.file));
      const direct = await runBenchmark(new CausalLMScorer(m.lm, m.model.tokenizer, 8), c.task, rows, { limit: c.limit });
      assert.equal(reply.result.task, c.task);
      assert.equal(reply.result.n, c.docs);
      assert.equal(direct.n, c.docs);
      assert.deepEqual(reply.result.metrics, direct.metrics);
      const names = Object.keys(reply.result.metrics).sort();
      assert.deepEqual(names, c.task === 'truthfulqa_mc2' ? ['mc2'] : ['acc', 'acc_norm']);
      for (const v of Object.values(reply.result.metrics)) {
        assert.ok(v.value >= 0 && v.value <= 1, `${c.task} ${v.value}`);
        assert.ok(v.value > 0 || c.task !== 'truthfulqa_mc2', 'mc2 is a probability mass share, never exactly 0');
        assert.notEqual(v.stderr, null); // n = 2 documents
      }
    }
    // a data file that is not the task's rows: the error names the file and line
    const bad = await r.request('evaluate', { model: MODEL, kind: 'task', task: 'piqa', data: `${BENCH}/arc_easy.jsonl` });
    assert.equal(bad.ok, false);
    if (!bad.ok) assert.match(bad.message, /arc_easy\.jsonl:1: missing "sol1"/);
    const missing = await r.request('evaluate', { model: MODEL, kind: 'task', task: 'piqa', data: `${BENCH}/nope.jsonl` });
    assert.equal(missing.ok, false);
    if (!missing.ok) assert.match(missing.message, /nope\.jsonl/);
    r.close();
    assert.equal((await r.exited).code, 0);
    assert.deepEqual(r.invalid, []);
  } finally {
    r.child.kill();
    await closeInferenceModels();
  }
});
