// The inference commands end to end on the tiny fixture, with captured stdin/stdout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import { runChat } from '../../native-runner/cli/commands/chat';
import { runCompare } from '../../native-runner/cli/commands/compare';
import { runPerplexity } from '../../native-runner/cli/commands/perplexity';
import { runScore } from '../../native-runner/cli/commands/score';
import { runBench } from '../../native-runner/cli/commands/bench';
import { closeInferenceModels, openInferenceModel } from '../../native-runner/infer/service';
import { generate } from '../../native-runner/infer/generate';
import { main } from '../../native-runner/cli/main';
import type { CommandIO } from '../../native-runner/infer/cliSupport';

const MODEL = 'samples/tiny-gpt2-chat';

function capture(input: string | string[] = []): CommandIO & { out: () => string; err: () => string } {
  let out = '';
  let err = '';
  const sink = (f: (s: string) => void) =>
    new Writable({
      write(chunk, _enc, cb) {
        f(String(chunk));
        cb();
      },
    });
  return {
    stdin: Readable.from(typeof input === 'string' ? [input] : input),
    stdout: sink((s) => (out += s)),
    stderr: sink((s) => (err += s)),
    out: () => out,
    err: () => err,
  };
}
const lastJson = (s: string) => JSON.parse(s.trim().split('\n').at(-1)!);

test('sft chat --prompt streams one answer; greedy equals direct generation; seeds reproduce', async () => {
  const io = capture();
  assert.equal(await runChat(['--model', MODEL, '--prompt', 'Hi', '--temperature', '0', '--max_new_tokens', '12', '--json'], io), 0);
  const j = lastJson(io.out());
  const m = await openInferenceModel(MODEL);
  const direct = await generate(m.lm, [50257, 198, 17250, 198, 50258, 198], { maxNewTokens: 12, stopIds: [50256, 50257, 50258, 50259], tokenizer: m.model.tokenizer });
  assert.equal(j.text, direct.text.trim());
  assert.equal(j.new_tokens, direct.newIds.length);
  assert.equal(io.out().split('\n')[0], j.text);
  const a = capture();
  const b = capture();
  await runChat(['--model', MODEL, '--prompt', 'Tell me a story', '--seed', '7', '--max_new_tokens', '20', '--json'], a);
  await runChat(['--model', MODEL, '--prompt', 'Tell me a story', '--seed', '7', '--max_new_tokens', '20', '--json'], b);
  assert.equal(lastJson(a.out()).text, lastJson(b.out()).text);
  assert.equal(lastJson(a.out()).seed, 7);
});

test('sft chat without --prompt reads piped stdin turn by turn, keeps history and stops at quit', async () => {
  const io = capture('Hello\n\nHow are you?\nquit\nnever read\n');
  assert.equal(await runChat(['--model', MODEL, '--seed', '1', '--max_new_tokens', '8'], io), 0);
  const answers = io.out().split('\n').filter((l) => l.startsWith('Assistant: '));
  assert.equal(answers.length, 2);
  // the second turn saw the first exchange: its prompt is longer than a fresh one would be
  const m = await openInferenceModel(MODEL);
  const { chatWith } = await import('../../native-runner/infer/service');
  const first = answers[0]!.slice('Assistant: '.length).trim();
  const withHistory = await chatWith(m, { messages: [{ role: 'user', content: 'Hello' }, { role: 'assistant', content: first }, { role: 'user', content: 'How are you?' }], seed: 2, max_new_tokens: 8 });
  assert.equal(answers[1]!.slice('Assistant: '.length).trim(), withHistory.text);
});

test('sft chat: an error during an interactive turn releases stdin (the process can exit)', async () => {
  const { PassThrough } = await import('node:stream');
  const io = capture();
  const stdin = new PassThrough(); // a terminal-like input that never ends on its own
  io.stdin = stdin;
  stdin.write('Hello\n');
  // --top_p 2 is only checked when the answer is generated, i.e. inside the chat loop
  await assert.rejects(runChat(['--model', MODEL, '--top_p', '2', '--max_new_tokens', '2'], io), /--top_p must be in \[0, 1\]/);
  assert.equal(stdin.listenerCount('data') + stdin.listenerCount('end'), 0, 'readline detached from stdin');
  stdin.destroy();
});

test('sft compare prints base (raw prompt) and SFT (template) answers with the same seed, as a grid', async () => {
  const io = capture();
  assert.equal(await runCompare(['--base', MODEL, '--model', MODEL, '--model', MODEL, '--prompts', 'test/fixtures/infer/prompts.txt', '--max_new_tokens', '10', '--json'], io), 0);
  const j = lastJson(io.out());
  assert.equal(j.results.length, 2);
  assert.equal(j.results[0].prompt, 'What is machine learning?');
  assert.equal(j.models.length, 2);
  for (const r of j.results) assert.equal(r.answers[0], r.answers[1]); // same checkpoint, same seed → same answer
  const m = await openInferenceModel(MODEL);
  const { chatWith } = await import('../../native-runner/infer/service');
  const raw = await chatWith(m, { messages: [{ role: 'user', content: 'What is machine learning?' }], mode: 'raw', seed: 42, temperature: 0.7, top_p: 1, top_k: 50, max_new_tokens: 10 });
  assert.equal(j.results[0].base, raw.text);
  assert.match(io.out(), /\[BASE MODEL\]/);
  assert.match(io.out(), /\[SFT MODEL 2\]/);
});

test('sft compare keeps the base model open while it opens more checkpoints than the model cache holds', async () => {
  const { cpSync, mkdtempSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const tmp = mkdtempSync(join((await import('node:os')).tmpdir(), 'sft-compare-'));
  try {
    const a = join(tmp, 'a');
    const b = join(tmp, 'b');
    cpSync(MODEL, a, { recursive: true });
    cpSync(MODEL, b, { recursive: true });
    const io = capture();
    // base + two distinct folders: three models, one more than the default cache of two
    assert.equal(await runCompare(['--base', MODEL, '--model', a, '--model', b, '--prompts', 'test/fixtures/infer/prompts.txt', '--max_new_tokens', '4', '--json'], io), 0);
    const j = lastJson(io.out());
    assert.equal(j.results.length, 2);
    for (const r of j.results) assert.equal(r.answers[0], r.answers[1]); // copies of one model, same seed
  } finally {
    await closeInferenceModels();
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('sft perplexity --json prints tokens, predicted, nll_sum, ppl', async () => {
  const io = capture();
  assert.equal(await runPerplexity(['--model', MODEL, '--file', 'test/fixtures/infer/ppl.txt', '--window', '64', '--stride', '32', '--json'], io), 0);
  const j = lastJson(io.out());
  assert.deepEqual(Object.keys(j), ['tokens', 'predicted', 'nll_sum', 'ppl']);
  assert.equal(j.predicted, j.tokens - 1);
  assert.ok(Math.abs(j.ppl - Math.exp(j.nll_sum / j.predicted)) < 1e-9 * j.ppl);
  // the random-ish tiny model is near-uniform over 50k tokens
  assert.ok(j.ppl > 1000, `ppl ${j.ppl}`);
});

test('sft score prints one result per request line; sft bench runs every task format end to end', async () => {
  const io = capture();
  assert.equal(await runScore(['--model', MODEL, '--requests', 'test/fixtures/infer/requests.jsonl'], io), 0);
  const lines = io.out().trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, 4);
  for (const l of lines) {
    assert.deepEqual(Object.keys(l), ['loglik', 'is_greedy', 'n_tokens']);
    assert.ok(l.loglik < 0);
  }
  assert.equal(lines[0].n_tokens, 1); // " Paris"
  const withJson = capture();
  assert.equal(await runScore(['--model', MODEL, '--requests', 'test/fixtures/infer/requests.jsonl', '--json'], withJson), 0);
  assert.deepEqual(withJson.out().trim().split('\n').map((l) => JSON.parse(l)), lines);
  for (const [task, file] of [
    ['hellaswag', 'hellaswag.jsonl'],
    ['arc_easy', 'arc_easy.jsonl'],
    ['piqa', 'piqa.jsonl'],
    ['winogrande', 'winogrande.jsonl'],
    ['truthfulqa_mc2', 'truthfulqa_mc2.json'],
  ]) {
    const b = capture();
    assert.equal(await runBench(['--model', MODEL, '--task', task!, '--data', `test/fixtures/infer/bench/${file}`, '--json'], b), 0);
    const j = lastJson(b.out());
    assert.equal(j.task, task);
    const key = task === 'truthfulqa_mc2' ? 'mc2' : 'acc';
    assert.ok(j[key] >= 0 && j[key] <= 1, `${task} ${key} = ${j[key]}`);
  }
});

test('bad input exits 1 with a one-line error naming the problem', async () => {
  const errs: string[] = [];
  const orig = console.error;
  console.error = (s: string) => errs.push(String(s));
  try {
    assert.equal(await main(['bench', '--model', MODEL, '--task', 'mmlu', '--data', 'x.jsonl']), 1);
    assert.equal(await main(['chat', '--model', MODEL, '--prompt', 'x', '--top_p', '2']), 1);
    assert.equal(await main(['score', '--model', MODEL, '--requests', 'test/fixtures/infer/ppl.txt']), 1);
    assert.equal(await main(['perplexity', '--model', 'no/such/dir', '--file', 'test/fixtures/infer/ppl.txt']), 1);
  } finally {
    console.error = orig;
  }
  assert.match(errs[0]!, /--task must be one of hellaswag/);
  assert.match(errs[1]!, /--top_p must be in \[0, 1\]/);
  assert.match(errs[2]!, /ppl\.txt:1: invalid JSON/);
  assert.match(errs[3]!, /no\/such\/dir/);
  await closeInferenceModels();
});

test('prompts files: one per line, a JSON array, or JSONL with strings or {"prompt"} objects', async () => {
  const { readPromptsFile } = await import('../../native-runner/infer/cliSupport');
  const { mkdtempSync, writeFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const dir = mkdtempSync(join((await import('node:os')).tmpdir(), 'sft-prompts-'));
  const f = (name: string, body: string) => {
    writeFileSync(join(dir, name), body);
    return join(dir, name);
  };
  assert.deepEqual(readPromptsFile(f('p.txt', '\uFEFFOne?\r\n\r\n  Two  \n')), ['One?', 'Two']);
  assert.deepEqual(readPromptsFile(f('p.json', '["a", {"prompt": "b"}, {"instruction": "c"}]')), ['a', 'b', 'c']);
  assert.deepEqual(readPromptsFile(f('p.jsonl', '"a\\nb"\n\n{"question": "q"}\n')), ['a\nb', 'q']);
  assert.throws(() => readPromptsFile(f('bad.jsonl', '{"x": 1}\n')), /bad\.jsonl:1: expected a string or an object with "prompt"/);
  assert.throws(() => readPromptsFile(f('empty.txt', '\n\n')), /empty\.txt: no prompts/);
});
