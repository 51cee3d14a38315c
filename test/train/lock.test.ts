// One trainer per output_dir (train/lock.ts through Trainer.prepare/run/discard): a second trainer is refused
// before its start-up clean-up touches anything; the lock goes when a run ends however it ends; a lock whose
// holder is gone (a pid that does not exist, a reused pid, a SIGKILLed child) is taken over with a warning.
// The trainers use a stub engine (helpers/stubTrainer): no ONNX Runtime here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { JsonLineDecoder } from '../../protocol/jsonLines';
import { makeRequest } from '../../protocol/runner';
import { runConfigToJson } from '../../native-runner/train/config';
import { RunnerServer, type ServiceHandlers } from '../../native-runner/train/server';
import { LOCK_FILE, processStartTime, readLockHolder } from '../../native-runner/train/lock';
import { Trainer } from '../../native-runner/train/trainer';
import { SftError } from '../../native-runner/util/errors';
import { stubConfig, stubDeps } from './helpers/stubTrainer';

const tmp = (p: string) => fs.mkdtempSync(path.join(os.tmpdir(), p));

function writeLock(out: string, holder: Record<string, unknown>): void {
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, LOCK_FILE), JSON.stringify({ hostname: os.hostname(), started: '2026-01-02T03:04:05.000Z', token: 'abc', ...holder }));
}

test('a second trainer on the same output_dir is refused naming the holder, and deletes nothing of the first', async () => {
  const root = tmp('sft-lock-two-');
  try {
    const out = path.join(root, 'out');
    const first = await Trainer.prepare(stubConfig(out), stubDeps());
    const holder = readLockHolder(out)!;
    assert.equal(holder.pid, process.pid);
    assert.equal(holder.hostname, os.hostname());
    // what the first run has in flight: a final-model staging folder and a checkpoint
    const staging = path.join(out, `.save-${process.pid}-1`);
    fs.mkdirSync(staging);
    fs.mkdirSync(path.join(out, 'checkpoint-1'));
    for (const overwrite of [false, true]) {
      await assert.rejects(Trainer.prepare(stubConfig(out, { overwrite_output_dir: overwrite }), stubDeps()), (e: unknown) => {
        assert.ok(e instanceof SftError);
        assert.equal(e.where, `output_dir ${out}`);
        assert.equal(
          e.message,
          `output_dir ${out} is in use by pid ${process.pid} on host ${os.hostname()} since ${holder.started}: wait for it, stop it, or choose another output_dir`,
        );
        return true;
      });
    }
    assert.ok(fs.existsSync(staging), 'the first run\'s staging folder survives');
    assert.ok(fs.existsSync(path.join(out, 'checkpoint-1')), 'overwrite_output_dir did not delete the first run\'s checkpoint');
    assert.equal(readLockHolder(out)!.token, holder.token, 'the refused trainer left the lock alone');
    await first.discard();
    assert.equal(fs.existsSync(path.join(out, LOCK_FILE)), false, 'discard releases');
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('the lock is released when a run finishes, is stopped, fails, or prepare fails; the next trainer then starts', async () => {
  const root = tmp('sft-lock-release-');
  try {
    const out = path.join(root, 'out');
    const lockFile = path.join(out, LOCK_FILE);
    // finished
    const t1 = await Trainer.prepare(stubConfig(out), stubDeps());
    assert.ok(fs.existsSync(lockFile));
    const r1 = await t1.run();
    assert.equal(r1.status, 'finished');
    assert.ok(fs.existsSync(path.join(out, 'model.safetensors')));
    assert.equal(fs.existsSync(lockFile), false, 'released after a finished run');
    // stopped before its first step
    const t2 = await Trainer.prepare(stubConfig(out), stubDeps());
    t2.requestStop(false);
    assert.equal((await t2.run()).status, 'stopped');
    assert.equal(fs.existsSync(lockFile), false, 'released after a stopped run');
    // failed (non-finite loss)
    const deps = stubDeps();
    const make = deps.createEngine;
    deps.createEngine = async (o) => ({ ...(await make(o)), runSteps: async (steps) => steps.map(() => ({ loss: NaN, gradNorm: 1, tokens: 10 })) });
    const t3 = await Trainer.prepare(stubConfig(out), deps);
    await assert.rejects(t3.run(), /non-finite loss at step 1/);
    assert.equal(fs.existsSync(lockFile), false, 'released after a failed run');
    // prepare fails (no such dataset) after taking the lock
    await assert.rejects(Trainer.prepare(stubConfig(out, { dataset: path.join(root, 'missing.jsonl') }), stubDeps()), /missing\.jsonl/);
    assert.equal(fs.existsSync(lockFile), false, 'released by a failed prepare');
    // engine creation fails
    await assert.rejects(Trainer.prepare(stubConfig(out), { ...stubDeps(), createEngine: async () => { throw new Error('no session'); } }), /ONNX Runtime failed creating the training session: no session/);
    assert.equal(fs.existsSync(lockFile), false, 'released when the engine cannot be created');
    const t4 = await Trainer.prepare(stubConfig(out), stubDeps());
    assert.equal((await t4.run()).status, 'finished');
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('stale locks are taken over with a warning: dead pid, reused pid, old unreadable file; other hosts and fresh files are not', async () => {
  const root = tmp('sft-lock-stale-');
  try {
    const out = path.join(root, 'out');
    const warnings: string[] = [];
    const listener = { log: (level: string, m: string) => level === 'warn' && warnings.push(m) };
    const deadPid = 2 ** 30; // above any pid_max
    writeLock(out, { pid: deadPid });
    const t1 = await Trainer.prepare(stubConfig(out), stubDeps(), { listener });
    assert.equal(readLockHolder(out)!.pid, process.pid);
    assert.deepEqual(warnings.filter((w) => w.includes('lock')), [`took over the stale lock of output_dir (pid ${deadPid} is not running; it was taken on host ${os.hostname()} at 2026-01-02T03:04:05.000Z)`]);
    await t1.discard();

    if (processStartTime(process.pid) !== null) {
      // our own pid, recorded with another start time: the pid was reused, its trainer is gone
      warnings.length = 0;
      writeLock(out, { pid: process.pid, proc_start: '1' });
      await (await Trainer.prepare(stubConfig(out), stubDeps(), { listener })).discard();
      assert.match(warnings.join('\n'), new RegExp(`took over the stale lock of output_dir \\(pid ${process.pid} is now another process`));
    }

    // a lock of another host cannot be checked: refused, naming the file to delete
    writeLock(out, { pid: deadPid, hostname: 'elsewhere.example' });
    await assert.rejects(
      Trainer.prepare(stubConfig(out), stubDeps()),
      (e: unknown) => e instanceof SftError && e.message.includes(`in use by pid ${deadPid} on host elsewhere.example since 2026-01-02T03:04:05.000Z`) && e.message.endsWith(`(if no trainer runs there any more, delete ${path.join(out, LOCK_FILE)})`),
    );

    // an unreadable lock: fresh = a trainer writing it now (refused); old = its writer died (taken over)
    fs.writeFileSync(path.join(out, LOCK_FILE), '');
    await assert.rejects(Trainer.prepare(stubConfig(out), stubDeps()), /output_dir .* is being taken by another trainer starting now/);
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(path.join(out, LOCK_FILE), old, old);
    warnings.length = 0;
    await (await Trainer.prepare(stubConfig(out), stubDeps(), { listener })).discard();
    assert.match(warnings.join('\n'), /took over the stale lock of output_dir \(the lock file is unreadable and \d+ s old\)/);
    assert.deepEqual(fs.readdirSync(out).filter((n) => n.startsWith(LOCK_FILE)), [], 'no lock file or take-over leftover remains');
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('a trainer process killed with SIGKILL leaves a stale lock that the next run takes over', { timeout: 60_000 }, async () => {
  const root = tmp('sft-lock-kill-');
  try {
    const out = path.join(root, 'out');
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, 'helpers/holdLock.ts'), out], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const pid = await new Promise<number>((resolve, reject) => {
      let stdout = '';
      child.stdout.on('data', (d) => {
        stdout += d;
        const m = /prepared (\d+)\n/.exec(stdout);
        if (m) resolve(Number(m[1]));
      });
      child.on('exit', (code) => reject(new Error(`child exited (${code}) before preparing: ${stderr}`)));
    });
    assert.equal(readLockHolder(out)!.pid, pid);
    await assert.rejects(Trainer.prepare(stubConfig(out), stubDeps()), new RegExp(`in use by pid ${pid} on host `));
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    assert.equal(readLockHolder(out)!.pid, pid, 'SIGKILL leaves the lock behind');
    const warnings: string[] = [];
    const t = await Trainer.prepare(stubConfig(out), stubDeps(), { listener: { log: (level, m) => level === 'warn' && warnings.push(m) } });
    assert.match(warnings.join('\n'), new RegExp(`took over the stale lock of output_dir \\(pid ${pid} is not running`));
    assert.equal((await t.run()).status, 'finished');
    assert.equal(fs.existsSync(path.join(out, LOCK_FILE)), false);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('through the protocol server (the extension\'s runs): a second runner\'s train is refused; shutdown releases the lock', { timeout: 60_000 }, async () => {
  const root = tmp('sft-lock-server-');
  const out = path.join(root, 'out');
  const slow = stubDeps();
  const make = slow.createEngine;
  slow.createEngine = async (o) => {
    const e = await make(o);
    return { ...e, runSteps: async (steps) => (await new Promise((r) => setTimeout(r, 100)), e.runSteps(steps)) };
  };
  const unused = async (): Promise<never> => {
    throw new Error('not used');
  };
  const services = { plan: unused, preview: unused, chat: unused, evaluate: unused } as ServiceHandlers;
  const replies = (lines: string[]) => new JsonLineDecoder().push(lines.join('')).flatMap((i) => (i.ok && (i.value as { kind: string }).kind === 'reply' ? [i.value as { id: number; ok: boolean; error?: { message: string } }] : []));
  const train = (id: number) => JSON.stringify(makeRequest(id, 'train', { config: runConfigToJson(stubConfig(out, { max_steps: 50 })) })) + '\n';
  const lines1: string[] = [];
  const lines2: string[] = [];
  let exited!: () => void;
  const exit1 = new Promise<void>((r) => (exited = r));
  const first = new RunnerServer({ write: (l) => lines1.push(l), deps: slow, services, onExit: () => exited() });
  const second = new RunnerServer({ write: (l) => lines2.push(l), deps: stubDeps(), services });
  try {
    first.start();
    first.push(train(1));
    for (let i = 0; i < 400 && replies(lines1).length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(replies(lines1)[0]?.ok, true, lines1.join(''));
    second.push(train(1));
    for (let i = 0; i < 400 && replies(lines2).length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    const refused = replies(lines2)[0]!;
    assert.equal(refused.ok, false);
    assert.match(refused.error!.message, new RegExp(`in use by pid ${process.pid} on host `));
    first.end(); // stdin closed: the run stops at its next boundary, then onExit
    await exit1;
    assert.equal(fs.existsSync(path.join(out, LOCK_FILE)), false, 'released when the server winds down');
  } finally {
    second.end();
    await second.idle();
    fs.rmSync(root, { recursive: true, force: true });
  }
});
