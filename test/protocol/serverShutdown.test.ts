// RunnerServer in-process: stdin closing while a `train` request is still being prepared (model and data
// loading, engine creation) must not leave a run going after onExit — the prepared run is refused and its
// engine released, and onExit waits for that.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { JsonLineDecoder } from '../../protocol/jsonLines';
import { makeRequest } from '../../protocol/runner';
import { prepareForChat } from '../../native-runner/model/chat';
import { RunnerServer, type ServiceHandlers } from '../../native-runner/train/server';
import type { StepEngine } from '../../native-runner/train/trainer';

const ROOT = path.join(__dirname, '../..');

/** A stand-in engine that records calls; `createDelayMs` keeps the train request preparing that long. */
function recordingDeps(calls: string[], createDelayMs: number) {
  const engine: StepEngine = {
    async runSteps(steps) {
      calls.push('runSteps');
      return steps.map(() => ({ loss: 1, gradNorm: 1, tokens: 1 }));
    },
    async evalBatch() {
      return { nllSum: 0, tokens: 0 };
    },
    getParams: () => new Map(),
    getOptimizerState: () => ({ m: new Map(), v: new Map(), step: 0 }),
    dispose() {
      calls.push('dispose');
    },
  };
  return {
    prepareForChat,
    createEngine: async () => {
      await new Promise((r) => setTimeout(r, createDelayMs));
      calls.push('created');
      return engine;
    },
  };
}

const unused = async (): Promise<never> => {
  throw new Error('not used');
};
const noServices = { plan: unused, preview: unused, chat: unused, evaluate: unused } as ServiceHandlers;

function trainRequest(out: string): string {
  const config = {
    model_name_or_path: 'samples/tiny-gpt2-chat',
    dataset: 'test/fixtures/train/dolly-small.jsonl',
    dataset_format: 'dolly',
    output_dir: out,
    test_size: 0,
    max_steps: 3,
    logging_steps: 1,
  };
  return JSON.stringify(makeRequest(1, 'train', { config, base_dir: ROOT })) + '\n';
}

test('input ending while train is preparing: the run never starts, its engine is released before onExit', { timeout: 60_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-server-shutdown-'));
  const calls: string[] = [];
  const lines: string[] = [];
  let exited: (code: number) => void;
  const exit = new Promise<number>((r) => (exited = r));
  const server = new RunnerServer({
    write: (l) => lines.push(l),
    deps: recordingDeps(calls, 200), // still preparing when the input ends
    services: noServices,
    onExit: (code) => {
      calls.push('exit');
      exited(code);
    },
    cwd: ROOT,
  });
  try {
    server.start();
    server.push(trainRequest(out));
    server.end();
    assert.equal(await exit, 0);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(calls, ['created', 'dispose', 'exit']);
    const msgs = new JsonLineDecoder().push(lines.join('')).map((i) => (i.ok ? i.value : i.error)) as { kind: string; id?: number; ok?: boolean; error?: { message: string } }[];
    const reply = msgs.find((m) => m.kind === 'reply' && m.id === 1);
    assert.equal(reply?.ok, false);
    assert.match(reply?.error?.message ?? '', /shutting down/);
    assert.ok(!fs.existsSync(path.join(out, 'model.safetensors')));
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test('stop while train is preparing: the reply says stopping, and the run ends before its first step', { timeout: 60_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-server-stop-'));
  const calls: string[] = [];
  const lines: string[] = [];
  const server = new RunnerServer({
    write: (l) => lines.push(l),
    deps: recordingDeps(calls, 300), // the stop arrives meanwhile
    services: noServices,
    cwd: ROOT,
  });
  try {
    server.start();
    server.push(trainRequest(out));
    await new Promise((r) => setTimeout(r, 50));
    server.push(JSON.stringify(makeRequest(2, 'stop', { save: true })) + '\n');
    for (let i = 0; i < 200 && !calls.includes('dispose'); i++) await new Promise((r) => setTimeout(r, 25));
    await server.idle();
    const msgs = new JsonLineDecoder().push(lines.join('')).map((i) => (i.ok ? i.value : i.error)) as { kind: string; id?: number; ok?: boolean; result?: { stopping?: boolean } }[];
    const stopReply = msgs.find((m) => m.kind === 'reply' && m.id === 2);
    assert.equal(stopReply?.ok, true);
    assert.equal(stopReply?.result?.stopping, true);
    assert.equal(msgs.find((m) => m.kind === 'reply' && m.id === 1)?.ok, true);
    assert.ok(!calls.includes('runSteps'), `no step may run after the stop: ${calls.join(',')}`);
    assert.ok(!fs.existsSync(path.join(out, 'model.safetensors')), 'a stopped run writes no final model');
  } finally {
    server.end();
    fs.rmSync(out, { recursive: true, force: true });
  }
});
