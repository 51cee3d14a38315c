// The CLI faces of the runner: `sft train` (plain lines off a TTY, config errors as one line), `sft eval --json`,
// `sft download --json`, and the small pure helpers (--resume parsing, progress bar, error mapping).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { formatDuration, progressLine, takeResume } from '../../native-runner/cli/commands/train';
import { parseRunConfig } from '../../native-runner/train/config';
import { engineError } from '../../native-runner/train/trainer';
import { hubFiles, startStaticServer } from '../helpers/staticServer';
import { tinyRunJson } from './helpers/stubTrainer';

const ROOT = path.join(__dirname, '../..');
const MAIN = path.join(ROOT, 'native-runner/cli/main.ts');

function sft(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

test('sft train: a bad run.json is one error line naming file and key; a good one prints plain progress lines', { timeout: 120_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-cli-train-'));
  try {
    const cfg = tinyRunJson('out');
    const bad = path.join(dir, 'bad.json');
    fs.writeFileSync(bad, JSON.stringify({ ...cfg, per_device_train_batchsize: 4 }));
    const r1 = await sft(['train', '--config', bad]);
    assert.equal(r1.code, 1);
    assert.equal(r1.stderr.trim(), `error: ${bad}: per_device_train_batchsize: unknown key (did you mean "per_device_train_batch_size"?)`);
    const good = path.join(dir, 'run.json');
    fs.writeFileSync(good, JSON.stringify(cfg));
    const r2 = await sft(['train', '--config', good]);
    assert.equal(r2.code, 0, r2.stderr);
    assert.match(r2.stdout, /^step 1\/2 {2}epoch 0\.\d+ {2}loss \d+\.\d{4} {2}grad_norm/m);
    assert.match(r2.stdout, /^step 2\/2 /m);
    assert.match(r2.stdout, /done: 2 steps, model in .*out/);
    assert.ok(!r2.stdout.includes('\r'), 'no progress-bar redraws off a TTY');
    assert.ok(fs.existsSync(path.join(dir, 'out', 'model.safetensors')));
    const r3 = await sft(['train', '--config', good, '--resume']);
    assert.equal(r3.code, 1);
    assert.match(r3.stderr, /^error: resume: cannot resume: no complete checkpoint-<step> folder in /);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('sft train: SIGTERM stops at the next run boundary, saves a checkpoint and releases the output_dir lock', { timeout: 180_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-cli-term-'));
  try {
    const cfg = tinyRunJson('out', { max_steps: 100000 });
    const file = path.join(dir, 'run.json');
    fs.writeFileSync(file, JSON.stringify(cfg));
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'train', '--config', file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let signalled = false;
    child.stderr.on('data', (d) => (stderr += d));
    child.stdout.on('data', (d) => {
      stdout += d;
      if (!signalled && /^step 2\//m.test(stdout)) {
        signalled = true;
        child.kill('SIGTERM');
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    assert.ok(signalled, `never reached step 2: ${stderr}`);
    assert.equal(code, 0, stderr);
    const stopped = /stopped at step (\d+); resume with/.exec(stdout);
    assert.ok(stopped, stdout.slice(-500));
    assert.ok(Number(stopped[1]) < 100000);
    assert.ok(fs.existsSync(path.join(dir, 'out', `checkpoint-${stopped[1]}`, 'model.safetensors')), 'a checkpoint at the stop step');
    assert.ok(!fs.existsSync(path.join(dir, 'out', '.sft-lock')), 'the lock is released');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('sft train --json-events: a config that cannot be read is an error event on stdout, nothing else', { timeout: 60_000 }, async () => {
  const r = await sft(['train', '--config', 'no-such-run.json', '--json-events']);
  assert.equal(r.code, 1);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 1, r.stdout);
  const ev = JSON.parse(lines[0]!);
  assert.equal(ev.kind, 'event');
  assert.equal(ev.event, 'error');
  assert.match(ev.data.message, /no-such-run\.json: cannot read the run config \(ENOENT\)/);
  assert.equal(ev.data.where, 'no-such-run.json');
});

test('sft eval --json: last line is {"eval_loss","eval_tokens"}; equals the golden forward loss', { timeout: 60_000 }, async () => {
  const r = await sft(['eval', '--model', 'samples/tiny-gpt2-chat', '--dataset', 'test/fixtures/train/golden-pair.jsonl', '--dataset_format', 'dolly', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const last = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.deepEqual(Object.keys(last), ['eval_loss', 'eval_tokens']);
  // the two golden conversations: 9 + 25 trained label positions (answer + closing eos)
  const golden = JSON.parse(fs.readFileSync(path.join(ROOT, 'test/fixtures/golden/tiny-golden.json'), 'utf8'));
  const labels = (golden.forward.labels as number[][]).flat().filter((l) => l !== -100).length;
  assert.equal(last.eval_tokens, labels);
  // ... and its loss is the golden forward loss (the mean NLL over those labels)
  assert.ok(Math.abs(last.eval_loss - golden.forward.loss) / golden.forward.loss < 1e-5, `${last.eval_loss} vs ${golden.forward.loss}`);
  const bad = await sft(['eval', '--model', 'samples/tiny-gpt2-chat', '--dataset', 'nope.jsonl', '--dataset_format', 'dolly']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^error: .*nope\.jsonl/);
});

test('sft eval --max_length 1 names the flag, as sft preview does (the shared max_length rule)', { timeout: 60_000 }, async () => {
  const expected = 'error: --max_length: expected an integer >= 2 and <= 1048576, got 1';
  const evalRun = await sft(['eval', '--model', 'samples/tiny-gpt2-chat', '--dataset', 'test/fixtures/train/golden-pair.jsonl', '--dataset_format', 'dolly', '--max_length', '1']);
  assert.equal(evalRun.code, 1);
  assert.equal(evalRun.stderr.trim(), expected);
  const preview = await sft(['preview', '--dataset', 'test/fixtures/train/golden-pair.jsonl', '--dataset_format', 'dolly', '--max_length', '1']);
  assert.equal(preview.code, 1);
  assert.equal(preview.stderr.trim(), expected);
});

test('sft download --json fetches from $HF_ENDPOINT into --to', { timeout: 60_000 }, async () => {
  const modelDir = path.join(ROOT, 'samples/tiny-gpt2-chat');
  const server = await startStaticServer(hubFiles('org/tiny', modelDir));
  const to = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-cli-dl-'));
  try {
    const r = await sft(['download', '--model', 'org/tiny', '--to', to, '--json'], { HF_ENDPOINT: server.base });
    assert.equal(r.code, 0, r.stderr);
    const last = JSON.parse(r.stdout.trim().split('\n').pop()!);
    assert.equal(last.dir, to);
    assert.equal(last.files['model.safetensors'], fs.statSync(path.join(modelDir, 'model.safetensors')).size);
    assert.ok(fs.readFileSync(path.join(to, 'tokenizer.json')).equals(fs.readFileSync(path.join(modelDir, 'tokenizer.json'))));
  } finally {
    await server.close();
    fs.rmSync(to, { recursive: true, force: true });
  }
});

test('helpers: --resume with and without a folder, durations, progress bar, OOM message', () => {
  assert.deepEqual(takeResume(['--config', 'a.json', '--resume']), { rest: ['--config', 'a.json'], resume: true });
  assert.deepEqual(takeResume(['--resume', 'out/checkpoint-3', '--json-events']), { rest: ['--json-events'], resume: 'out/checkpoint-3' });
  assert.deepEqual(takeResume(['--resume', '--config', 'a.json']), { rest: ['--config', 'a.json'], resume: true });
  assert.deepEqual(takeResume(['--config', 'a.json']), { rest: ['--config', 'a.json'], resume: undefined });
  assert.equal(formatDuration(3725), '1:02:05');
  assert.equal(formatDuration(65), '01:05');
  assert.equal(formatDuration(null), '--:--');
  const line = progressLine({ step: 50, total: 200, loss: 2.34567, lr: 1.5e-5, tokens_per_second: 1234.4, eta_s: 90, epoch: 0.5 }, 100);
  assert.match(line, /^ 25% \[#+\.+\] 50\/200 loss 2\.3457 lr 1\.50e-5 1234 tok\/s ETA 01:30$/);
  assert.ok(line.length <= 100);
  const { config } = parseRunConfig({ model_name_or_path: '/m', dataset: '/d.jsonl' }, '/');
  const oom = engineError(new Error('Failed to allocate memory for requested buffer of size 123'), config, 8, 'at steps 1-8');
  assert.match(oom.message, /out of memory at steps 1-8: lower per_device_train_batch_size \(8\), max_length \(512\) or steps_per_run \(8\); raise gradient_accumulation_steps \(4\)/);
  assert.match(engineError(new Error('Non-zero status code returned while running Gather node'), config, 8, 'at steps 3-4').message, /ONNX Runtime failed at steps 3-4: Non-zero status/);
});
