// State residency (engine/deviceState.ts + TrainingEngine): the bookkeeping of a training state that lives
// on a device between runs, exercised on the CPU with a fake device (the session really returns its state
// outputs through onnxruntime-node's IO-binding path, 'gpu-buffer' requested; the fake marks them "device"
// tensors, poisons them with NaN when disposed, and counts downloads). Also the eval Loop over several
// micro-batches, the escape hatch, the download graph and the CUDA probe's failure path.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { readSafetensors } from '../../native-runner/model/safetensors';
import { readConfig } from '../../native-runner/model/config';
import type { ParamSet } from '../../native-runner/model/types';
import { TrainingEngine, type TrainingEngineOptions } from '../../native-runner/engine/trainingEngine';
import { deviceStateWanted, downloadGraph, probeCudaDeviceState, resetDeviceProbe, type DeviceStateIo, type DeviceTensor } from '../../native-runner/engine/deviceState';
import { paramSpecs } from '../../native-runner/engine/gpt2Graph';
import { createSession } from '../../native-runner/engine/ortSession';
import type { MicroBatch, StepInput } from '../../native-runner/engine/types';
import { packedBatch, paddedBatch, type Example } from './helpers';

const root = path.resolve(__dirname, '../..');
const modelDir = path.join(root, 'samples/tiny-gpt2-chat');
const config = readConfig(modelDir);
const params0 = (): ParamSet => readSafetensors(path.join(modelDir, 'model.safetensors'));
const nParams = paramSpecs(config).length;

const ex: Example[] = [
  { ids: [50257, 198, 40, 1101, 257, 3797, 198, 50258, 198, 1212, 318, 281, 1672, 13, 50256], trained: [] },
  { ids: [50257, 198, 15496, 198, 50258, 198, 17250, 0, 50256], trained: [] },
  { ids: [50257, 198, 5195, 318, 262, 6766, 4171, 30, 198, 50258, 198, 1544, 13, 50256], trained: [] },
  { ids: [50257, 198, 17250, 198, 50258, 198, 15496, 50256], trained: [] },
].map((e, i) => ({ ids: e.ids, trained: e.ids.map((_, t) => t >= 4 + i) }));

function opts(stepsPerRun: number, extra: Partial<TrainingEngineOptions> = {}): TrainingEngineOptions {
  return { config, params: params0(), device: 'cpu', stepsPerRun, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxGradNorm: 1.0, dropout: 0, ...extra };
}

/** A pretend device: outputs are adopted as "device" tensors; disposal poisons them so a stale feed shows. */
class FakeDeviceIo implements DeviceStateIo {
  readonly name = 'fake device';
  readonly outputLocation: ort.Tensor.DataLocation = 'gpu-buffer';
  readonly live = new Set<DeviceTensor>();
  adopted = 0;
  downloadCalls = 0;
  released = false;
  failAdopt = false;

  adopt(t: ort.Tensor, what: string): DeviceTensor {
    if (this.failAdopt) throw new Error(`fake device: ${what} is not on the device`);
    if (t.location !== 'cpu') throw new Error(`unexpected location ${t.location}`);
    const live = this.live;
    const h: DeviceTensor = {
      tensor: t,
      dispose() {
        if (!live.delete(h)) throw new Error(`${what} disposed twice`);
        (t.data as Float32Array).fill(NaN);
      },
    };
    live.add(h);
    this.adopted++;
    return h;
  }

  async download(items: { tensor: DeviceTensor; shape: number[] }[]): Promise<Float32Array[]> {
    this.downloadCalls++;
    return items.map(({ tensor, shape }) => {
      if (!this.live.has(tensor)) throw new Error('download of a disposed device tensor');
      assert.deepEqual(tensor.tensor.dims, shape);
      return Float32Array.from(tensor.tensor.data as Float32Array);
    });
  }

  async release(): Promise<void> {
    this.released = true;
  }
}

function assertSetsEqual(a: ParamSet, b: ParamSet, what: string): void {
  assert.equal(a.size, b.size);
  for (const [name, t] of a) {
    const u = b.get(name)!;
    assert.deepEqual(u.shape, t.shape, `${what} ${name} shape`);
    for (let i = 0; i < t.data.length; i++) if (!Object.is(t.data[i], u.data[i])) assert.fail(`${what} ${name}[${i}]: ${t.data[i]} vs ${u.data[i]}`);
  }
}

const runs: StepInput[][] = [
  [
    { lr: 1e-3, microBatches: [paddedBatch([ex[0]!, ex[1]!], 50256)] },
    { lr: 8e-4, microBatches: [paddedBatch([ex[2]!], 50256)] },
  ],
  [{ lr: 6e-4, microBatches: [paddedBatch([ex[3]!], 50256), packedBatch([[ex[0]!, ex[1]!]], 32, 50256)] }], // A = 2
  [
    { lr: 4e-4, microBatches: [paddedBatch([ex[1]!, ex[2]!, ex[3]!], 50256)] },
    { lr: 2e-4, microBatches: [paddedBatch([ex[0]!], 50256)] },
  ],
];

test('state on a (fake) device: runs equal the host path bitwise; downloads only in syncToHost; only the current state stays alive', async () => {
  const io = new FakeDeviceIo();
  const host = await TrainingEngine.create(opts(2));
  const dev = await TrainingEngine.create(opts(2, { stateResidency: io }));
  const evalMb = paddedBatch([ex[2]!, ex[3]!], 50256);
  for (const [r, steps] of runs.entries()) {
    const mh = await host.runSteps(steps);
    const md = await dev.runSteps(steps);
    assert.equal(host.stateResidency, 'host');
    assert.equal(dev.stateResidency, 'device');
    assert.deepEqual(md, mh, `run ${r} metrics`);
    assert.equal(io.live.size, 3 * nParams, 'exactly one p, m, v per parameter alive on the device');
    assert.equal(io.adopted, 3 * nParams * (r + 1));
    // Evaluation reads the parameters where they are (the device), without a download.
    assert.deepEqual(await dev.evalBatch(evalMb), await host.evalBatch(evalMb));
  }
  assert.equal(io.downloadCalls, 0, 'no download between runs or for evaluation');
  assert.throws(() => dev.getParams(), /syncToHost/);
  assert.throws(() => dev.getOptimizerState(), /syncToHost/);
  await dev.syncToHost();
  assert.equal(io.downloadCalls, 3); // p, m, v
  assertSetsEqual(dev.getParams(), host.getParams(), 'params');
  const oh = host.getOptimizerState();
  const od = dev.getOptimizerState();
  assert.equal(od.step, oh.step);
  assertSetsEqual(od.m, oh.m, 'm');
  assertSetsEqual(od.v, oh.v, 'v');
  await dev.syncToHost();
  assert.equal(io.downloadCalls, 3, 'a second sync without a run downloads nothing');
  // Training goes on from the device copies after a sync (the downloaded host copies are not fed back).
  const mh = await host.runSteps(runs[0]!);
  const md = await dev.runSteps(runs[0]!);
  assert.deepEqual(md, mh);
  assert.throws(() => dev.getParams(), /syncToHost/);
  await dev.syncToHost();
  assertSetsEqual(dev.getParams(), host.getParams(), 'params after sync, run, sync');
  await dev.dispose();
  assert.equal(io.live.size, 0, 'dispose releases the device state');
  assert.ok(io.released);
  await host.dispose();
});

test('setParams replaces the device copy of the parameters; the moments stay on the device', async () => {
  const io = new FakeDeviceIo();
  const dev = await TrainingEngine.create(opts(2, { stateResidency: io }));
  const host = await TrainingEngine.create(opts(2));
  await dev.runSteps(runs[0]!);
  await host.runSteps(runs[0]!);
  dev.setParams(params0());
  host.setParams(params0());
  assert.equal(io.live.size, 2 * nParams);
  const mb = paddedBatch([ex[0]!, ex[3]!], 50256);
  assert.deepEqual(await dev.evalBatch(mb), await host.evalBatch(mb));
  assert.deepEqual(dev.getParams().get('transformer.wte.weight')!.data, params0().get('transformer.wte.weight')!.data);
  assert.deepEqual(await dev.runSteps(runs[2]!), await host.runSteps(runs[2]!));
  await dev.syncToHost();
  assertSetsEqual(dev.getOptimizerState().m, host.getOptimizerState().m, 'm');
  await dev.dispose();
  await host.dispose();
  assert.equal(io.live.size, 0);
});

test('a failing first device run falls back to the host path (note, same results, nothing left on the device)', async () => {
  const io = new FakeDeviceIo();
  io.failAdopt = true;
  const notes: string[] = [];
  const dev = await TrainingEngine.create(opts(2, { stateResidency: io, onNote: (m) => notes.push(m) }));
  const host = await TrainingEngine.create(opts(2));
  assert.deepEqual(await dev.runSteps(runs[0]!), await host.runSteps(runs[0]!));
  assert.equal(dev.stateResidency, 'host');
  assert.ok(io.released);
  assert.equal(io.live.size, 0);
  assert.match(notes.join('\n'), /kept on the host.*first run with the state on the device failed \(fake device: p_out:/);
  assert.deepEqual(await dev.runSteps(runs[1]!), await host.runSteps(runs[1]!));
  assertSetsEqual(dev.getParams(), host.getParams(), 'params'); // host path: no sync needed
  await dev.dispose();
  await host.dispose();
});

test('host path: repeated runs reuse buffers safely (exposed parameters stay intact across later runs)', async () => {
  const e = await TrainingEngine.create(opts(2));
  await e.runSteps(runs[0]!);
  const exposed = e.getParams();
  const snapshot = new Map([...exposed].map(([k, t]) => [k, t.data.slice()]));
  await e.runSteps(runs[1]!);
  await e.runSteps(runs[2]!);
  await e.runSteps(runs[0]!);
  for (const [k, t] of exposed) assert.deepEqual(t.data, snapshot.get(k), `${k} changed after later runs`);
  assert.notDeepEqual(e.getParams().get('transformer.h.0.attn.c_attn.weight')!.data, snapshot.get('transformer.h.0.attn.c_attn.weight'));
  await e.dispose();
});

test('evalBatches: the eval Loop over several micro-batches equals evalBatch per micro-batch', async () => {
  const e = await TrainingEngine.create(opts(1, { evalBatchesPerRun: 3 }));
  const mbs: MicroBatch[] = [
    paddedBatch([ex[0]!, ex[1]!], 50256), // B2 T15
    paddedBatch([ex[3]!], 50256), // B1 T8
    packedBatch([[ex[0]!, ex[1]!], [ex[2]!]], 26, 50256), // B2 T26, packed
    paddedBatch([ex[2]!, ex[3]!, ex[1]!], 50256), // B3 T14
    paddedBatch([ex[1]!], 50256),
  ];
  mbs[1]!.targets[mbs[1]!.T - 1] = -100; // untrained position with an out-of-range target
  const one: { nllSum: number; tokens: number }[] = [];
  for (const mb of mbs) one.push(await e.evalBatch(mb));
  const many = await e.evalBatches(mbs); // runs of 3 and 2
  assert.equal(many.length, mbs.length);
  many.forEach((r, i) => {
    assert.equal(r.tokens, one[i]!.tokens);
    assert.ok(Math.abs(r.nllSum - one[i]!.nllSum) <= 1e-6 * Math.abs(one[i]!.nllSum), `batch ${i}: ${r.nllSum} vs ${one[i]!.nllSum}`);
  });
  const perBatch = await TrainingEngine.create(opts(1)); // CPU default: exactly evalBatch per micro-batch
  assert.deepEqual(await perBatch.evalBatches(mbs), one);
  await assert.rejects(e.evalBatches([mbs[0]!, { ...mbs[1]!, inputIds: mbs[1]!.inputIds.map(() => 99999) }]), /eval batch 1: inputIds\[0\] = 99999/);
  await assert.rejects(TrainingEngine.create(opts(1, { evalBatchesPerRun: 0 })), /evalBatchesPerRun must be a positive integer/);
  await e.dispose();
  await perBatch.dispose();
});

test('SFT_CUDA_STATE_ON_DEVICE=0 is the escape hatch; the CPU never uses device state', async () => {
  assert.equal(deviceStateWanted({}, '1.30.0'), true);
  assert.equal(deviceStateWanted({}, '1.29.0'), false, "1.29.0's binding cannot keep CUDA tensors: no probe");
  assert.equal(deviceStateWanted({ SFT_CUDA_STATE_ON_DEVICE: '1' }, '1.29.0'), true);
  for (const v of ['0', 'false', 'OFF', ' no ']) assert.equal(deviceStateWanted({ SFT_CUDA_STATE_ON_DEVICE: v }, '1.30.0'), false, v);
  const e = await TrainingEngine.create(opts(1));
  await e.runSteps(runs[0]!.slice(0, 1));
  assert.equal(e.stateResidency, 'host');
  assert.deepEqual(e.notes, []);
  await e.dispose();
});

test('the download graph returns its inputs unchanged on CPU outputs', async () => {
  const shapes = [[2, 3], [4], []];
  const s = await createSession(downloadGraph(shapes).toModelBytes(), { device: 'cpu' });
  const xs = shapes.map((sh, i) => Float32Array.from({ length: sh.reduce((a, b) => a * b, 1) }, (_, j) => i * 10 + j + 0.25));
  const out = await s.run(Object.fromEntries(xs.map((x, i) => [`x${i}`, new ort.Tensor('float32', x, shapes[i]!)])));
  xs.forEach((x, i) => {
    assert.equal(out[`y${i}`]!.location, 'cpu');
    assert.deepEqual(out[`y${i}`]!.data, x);
  });
  await s.release();
});

test('the CUDA probe runs in a child process and reports why it failed on a machine without CUDA', { timeout: 120_000 }, async (t) => {
  const binDir = path.join(root, 'node_modules/onnxruntime-node/bin');
  const hasCuda = fs.existsSync(binDir) && fs.readdirSync(binDir, { recursive: true }).some((f) => String(f).includes('providers_cuda'));
  if (hasCuda) return t.skip('CUDA provider present: bench/state-residency.ts checks the probe on the GPU');
  resetDeviceProbe();
  const r = await probeCudaDeviceState(60_000);
  assert.equal(r.ok, false);
  // The child got as far as ONNX Runtime refusing the CUDA provider (not a spawn or syntax error).
  assert.match(r.detail, /cuda|provider|shared library/i);
  assert.doesNotMatch(r.detail, /SyntaxError|Cannot find module|ReferenceError/);
  assert.equal(await probeCudaDeviceState(), r, 'cached per process');
  resetDeviceProbe();
});
