// Exact resume: 6 uninterrupted steps vs 3 steps + SIGKILL + `sft train --resume` to 6 give identical
// metrics (all but timing fields) and bitwise identical weights and optimizer moments (dropout 0, CPU).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { JsonLineDecoder } from '../../protocol/jsonLines';
import { readMetrics } from '../../native-runner/train/metricsLog';

const ROOT = path.join(__dirname, '../..');
const MAIN = path.join(ROOT, 'native-runner/cli/main.ts');

function writeConfig(dir: string): string {
  const file = path.join(dir, 'run.json');
  fs.writeFileSync(
    file,
    JSON.stringify({
      model_name_or_path: path.join(ROOT, 'samples/tiny-gpt2-chat'),
      dataset: path.join(ROOT, 'test/fixtures/train/dolly-small.jsonl'),
      dataset_format: 'dolly',
      output_dir: 'out',
      test_size: 4,
      per_device_train_batch_size: 2,
      gradient_accumulation_steps: 2,
      max_steps: 6,
      learning_rate: 2e-3,
      warmup_steps: 2,
      logging_steps: 2,
      eval_steps: 3,
      save_steps: 3,
      steps_per_run: 2,
      dropout: 0,
      seed: 7,
    }),
  );
  return file;
}

/** Runs `sft train`; when `killAtSave` is set, SIGKILLs it as soon as that checkpoint's save event arrives. */
function train(args: string[], killAtSave?: number): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'train', ...args, '--json-events'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    const dec = new JsonLineDecoder();
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      for (const item of dec.push(d)) {
        const v = item.ok ? (item.value as { event?: string; data?: { type?: string; step?: number } }) : null;
        if (killAtSave !== undefined && v?.event === 'metrics' && v.data?.type === 'save' && v.data.step === killAtSave) child.kill('SIGKILL');
      }
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

const strip = (records: ReturnType<typeof readMetrics>) =>
  records.map((r) => {
    const c: Record<string, unknown> = { ...r };
    delete c.tokens_per_second;
    delete c.elapsed_s;
    if (typeof c.path === 'string') c.path = path.basename(c.path);
    return c;
  });

test('resume after SIGKILL continues exactly: identical metrics and weights', { timeout: 240_000 }, async () => {
  const a = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-resume-a-'));
  const b = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-resume-b-'));
  try {
    const full = await train(['--config', writeConfig(a)]);
    assert.equal(full.code, 0, full.stderr);
    // every stdout line of --json-events is a protocol event
    for (const line of full.stdout.trim().split('\n')) assert.equal(JSON.parse(line).kind, 'event');

    const killed = await train(['--config', writeConfig(b)], 3);
    assert.equal(killed.signal, 'SIGKILL');
    assert.ok(fs.existsSync(path.join(b, 'out/checkpoint-3/COMPLETE')));
    assert.equal(fs.existsSync(path.join(b, 'out/checkpoint-6')), false, 'killed before the end');
    assert.equal(fs.existsSync(path.join(b, 'out/model.safetensors')), false);

    const resumed = await train(['--config', path.join(b, 'run.json'), '--resume']);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stdout, /resuming from [^"]*checkpoint-3/);

    const ma = readMetrics(path.join(a, 'out/metrics.jsonl'));
    const mb = readMetrics(path.join(b, 'out/metrics.jsonl'));
    assert.deepEqual(strip(mb), strip(ma));
    assert.deepEqual(ma.map((r) => `${r.type}@${r.step}`), ['train@1', 'train@2', 'eval@3', 'save@3', 'train@4', 'train@6', 'eval@6', 'save@6']);
    for (const f of ['model.safetensors', 'checkpoint-6/model.safetensors', 'checkpoint-6/optimizer.safetensors']) {
      assert.ok(fs.readFileSync(path.join(a, 'out', f)).equals(fs.readFileSync(path.join(b, 'out', f))), `${f} is bitwise identical`);
    }
  } finally {
    fs.rmSync(a, { recursive: true, force: true });
    fs.rmSync(b, { recursive: true, force: true });
  }
});
