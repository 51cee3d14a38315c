// engine/cudaProvider.ts: CUDA session options, the ELF DT_NEEDED reader (on real libraries of this machine
// and on synthetic ELF images built here), the loader-style library search, and the user-facing errors.
// Runs on a CPU-only machine: the "provider absent" path is exercised for real, the "provider present" paths
// with synthetic provider files in a temporary folder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import {
  cudaMajorOf,
  cudaReport,
  cudaSessionOptions,
  diagnoseCuda,
  explainCudaFailure,
  ortBinDir,
  parseElfDynamic,
  parseLdconfig,
  readElfDynamic,
} from '../../native-runner/engine/cudaProvider';
import { Graph } from '../../native-runner/engine/graph/graph';
import { SftError } from '../../native-runner/util/errors';

const BIN = ortBinDir('linux', 'x64');

/**
 * A minimal shared-library image: ELF header, two program headers (PT_LOAD mapping the whole file at
 * `vaddrBase`, PT_DYNAMIC), a dynamic section and a string table. Enough for the loader-view parser.
 */
function makeElf(opts: { needed: string[]; soname?: string; runpath?: string; rpath?: string; bits?: 32 | 64; littleEndian?: boolean; machine?: number; vaddrBase?: number }): Buffer {
  const bits = opts.bits ?? 64;
  const le = opts.littleEndian ?? true;
  const is64 = bits === 64;
  const ehsize = is64 ? 64 : 52;
  const phentsize = is64 ? 56 : 32;
  const dynEnt = is64 ? 16 : 8;
  const base = opts.vaddrBase ?? 0x400000;
  // string table
  const strs: number[] = [0];
  const strOff = (s: string): number => {
    const off = strs.length;
    for (const b of Buffer.from(s, 'utf8')) strs.push(b);
    strs.push(0);
    return off;
  };
  const dyn: [number, number][] = [];
  for (const n of opts.needed) dyn.push([1, strOff(n)]);
  if (opts.soname) dyn.push([14, strOff(opts.soname)]);
  if (opts.rpath) dyn.push([15, strOff(opts.rpath)]);
  if (opts.runpath) dyn.push([29, strOff(opts.runpath)]);
  const phoff = ehsize;
  const dynOff = phoff + 2 * phentsize;
  const dynCount = dyn.length + 3; // + STRTAB, STRSZ, NULL
  const strtabOff = dynOff + dynCount * dynEnt;
  dyn.push([5, base + strtabOff], [10, strs.length], [0, 0]);
  const size = strtabOff + strs.length;
  const buf = Buffer.alloc(size);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  buf.set([0x7f, 0x45, 0x4c, 0x46, is64 ? 2 : 1, le ? 1 : 2, 1], 0);
  const u16 = (o: number, v: number) => dv.setUint16(o, v, le);
  const u32 = (o: number, v: number) => dv.setUint32(o, v, le);
  const word = (o: number, v: number) => (is64 ? dv.setBigUint64(o, BigInt(v), le) : dv.setUint32(o, v, le));
  u16(16, 3); // ET_DYN
  u16(18, opts.machine ?? 62);
  u32(20, 1);
  word(is64 ? 32 : 28, phoff);
  u16(is64 ? 52 : 40, ehsize);
  u16(is64 ? 54 : 42, phentsize);
  u16(is64 ? 56 : 44, 2);
  const ph = (i: number, type: number, offset: number, vaddr: number, filesz: number) => {
    const b = phoff + i * phentsize;
    u32(b, type);
    word(b + (is64 ? 8 : 4), offset);
    word(b + (is64 ? 16 : 8), vaddr);
    word(b + (is64 ? 24 : 12), vaddr);
    word(b + (is64 ? 32 : 16), filesz);
    word(b + (is64 ? 40 : 20), filesz);
  };
  ph(0, 1, 0, base, size);
  ph(1, 2, dynOff, base + dynOff, dynCount * dynEnt);
  dyn.forEach(([tag, val], i) => {
    const o = dynOff + i * dynEnt;
    if (is64) {
      dv.setBigInt64(o, BigInt(tag), le);
      dv.setBigUint64(o + 8, BigInt(val), le);
    } else {
      dv.setInt32(o, tag, le);
      dv.setUint32(o + 4, val, le);
    }
  });
  buf.set(strs, strtabOff);
  return buf;
}

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'sft-cuda-'));
}

const CUDA13_NEEDED = ['libcublasLt.so.13', 'libcublas.so.13', 'libcurand.so.10', 'libcudart.so.13', 'libcuda.so.1', 'libdl.so.2', 'libstdc++.so.6', 'libc.so.6'];

/** A fake onnxruntime-node bin folder with a provider needing `needed`. */
function fakeBin(needed: string[], extra: { runpath?: string; machine?: number } = {}): string {
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'libonnxruntime_providers_shared.so'), makeElf({ needed: ['libc.so.6'], soname: 'libonnxruntime_providers_shared.so', machine: extra.machine }));
  fs.writeFileSync(path.join(dir, 'libonnxruntime_providers_cuda.so'), makeElf({ needed, runpath: extra.runpath, machine: extra.machine }));
  return dir;
}

test('cudaSessionOptions selects the CUDA EP on the device, disables CPU fallback, optimises fully', () => {
  const so = cudaSessionOptions(1) as ort.InferenceSession.SessionOptions & { extra?: { session?: Record<string, string> } };
  assert.deepEqual(so.executionProviders, [{ name: 'cuda', deviceId: 1 }]);
  assert.equal(so.extra?.session?.disable_cpu_ep_fallback, '1');
  assert.equal(so.graphOptimizationLevel, 'all');
  assert.equal(cudaSessionOptions(0, { optimization: 'basic', threads: 2 }).graphOptimizationLevel, 'basic');
  assert.equal(cudaSessionOptions(0, { threads: 2 }).intraOpNumThreads, 2);
  assert.throws(() => cudaSessionOptions(-1), (e: unknown) => e instanceof SftError && /device id/.test(e.message));
  assert.throws(() => cudaSessionOptions(0.5), SftError);
});

test('readElfDynamic reads DT_NEEDED and SONAME of onnxruntime-node\'s real libonnxruntime.so.1', () => {
  const lib = path.join(BIN, 'libonnxruntime.so.1');
  const d = readElfDynamic(lib);
  assert.equal(d.bits, 64);
  assert.equal(d.littleEndian, true);
  assert.equal(d.machine, 62);
  assert.equal(d.soname, 'libonnxruntime.so.1');
  for (const n of ['libc.so.6', 'libm.so.6', 'libstdc++.so.6']) assert.ok(d.needed.includes(n), `${n} in ${d.needed}`);
  const binding = readElfDynamic(path.join(BIN, 'onnxruntime_binding.node'));
  assert.equal(binding.needed[0], 'libonnxruntime.so.1');
  assert.deepEqual(binding.runpath, ['$ORIGIN/']);
  // Cross-check against binutils where present (CI machines may lack it).
  let readelf: string | null = null;
  try {
    readelf = execFileSync('readelf', ['-d', lib], { encoding: 'utf8' });
  } catch {
    readelf = null;
  }
  if (readelf) {
    const expected = [...readelf.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
    assert.deepEqual(d.needed, expected);
  }
});

test('parseElfDynamic: 64-bit LE, 32-bit BE, RPATH/RUNPATH, strtab mapped through PT_LOAD', () => {
  const a = parseElfDynamic(makeElf({ needed: ['libcudart.so.12', 'libcublas.so.12'], soname: 'libx.so', runpath: '$ORIGIN:/opt/cuda/lib64', vaddrBase: 0x10000 }));
  assert.deepEqual(a.needed, ['libcudart.so.12', 'libcublas.so.12']);
  assert.equal(a.soname, 'libx.so');
  assert.deepEqual(a.runpath, ['$ORIGIN', '/opt/cuda/lib64']);
  assert.deepEqual(a.rpath, []);
  const b = parseElfDynamic(makeElf({ needed: ['libfoo.so.3'], rpath: '/r1:/r2', bits: 32, littleEndian: false, machine: 3 }));
  assert.equal(b.bits, 32);
  assert.equal(b.littleEndian, false);
  assert.equal(b.machine, 3);
  assert.deepEqual(b.needed, ['libfoo.so.3']);
  assert.deepEqual(b.rpath, ['/r1', '/r2']);
});

test('parseElfDynamic rejects non-ELF input with an SftError naming the file', () => {
  const lfs = Buffer.from('version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 229780440\n');
  assert.throws(() => parseElfDynamic(lfs, 'prov.so'), (e: unknown) => e instanceof SftError && /prov\.so/.test(e.message) && /Git LFS pointer/.test(e.message));
  assert.throws(() => parseElfDynamic(Buffer.from('hello'), 'x.so'), (e: unknown) => e instanceof SftError && /ELF magic/.test(e.message));
  const whole = makeElf({ needed: ['liba.so.1'] });
  assert.throws(() => parseElfDynamic(whole.subarray(0, 80), 'cut.so'), (e: unknown) => e instanceof SftError && /truncated/.test(e.message));
  assert.throws(() => readElfDynamic('/nonexistent/libnothing.so'), (e: unknown) => e instanceof SftError && /libnothing\.so/.test(e.message));
});

test('cudaMajorOf and parseLdconfig', () => {
  assert.equal(cudaMajorOf(CUDA13_NEEDED), 13);
  assert.equal(cudaMajorOf(['libcublas.so.12', 'libc.so.6']), 12);
  assert.equal(cudaMajorOf(['libc.so.6']), null);
  const out = [
    '812 libs found in cache `/etc/ld.so.cache\'',
    '\tlibcudart.so.13 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.13',
    '\tlibcudart.so.13 (libc6) => /usr/lib32/libcudart.so.13',
    '\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1',
  ].join('\n');
  const m = parseLdconfig(out, 'x64');
  assert.equal(m.get('libcudart.so.13'), '/usr/local/cuda/lib64/libcudart.so.13');
  assert.equal(m.get('libcuda.so.1'), '/usr/lib/x86_64-linux-gnu/libcuda.so.1');
  assert.equal(m.size, 2);
});

test('provider absent: diagnosis and error name both missing files and both install routes', () => {
  const dir = tmpDir();
  const d = diagnoseCuda({ binDir: dir, env: {}, ldconfigOutput: null, platform: 'linux', arch: 'x64' });
  assert.equal(d.ok, false);
  assert.deepEqual(
    d.providerFiles.filter((f) => !f.present).map((f) => f.name),
    ['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_cuda.so'],
  );
  assert.equal(d.cudaMajor, null);
  const e = explainCudaFailure(new Error('OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library'), { binDir: dir, env: {}, ldconfigOutput: null, platform: 'linux', arch: 'x64' });
  assert.ok(e instanceof SftError);
  for (const s of ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so', dir, 'ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node', 'com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9', 'sft doctor', '--device cpu']) {
    assert.ok(e.message.includes(s), `message lacks ${s}: ${e.message}`);
  }
  assert.equal(e.message.includes('\n'), false);
});

test('provider present: CUDA major from DT_NEEDED, libraries resolved like the loader, missing ones named', () => {
  const bin = fakeBin(CUDA13_NEEDED);
  const lib = tmpDir();
  fs.writeFileSync(path.join(lib, 'libcudart.so.13'), '');
  fs.writeFileSync(path.join(lib, 'libcublas.so.13'), '');
  const dflt = tmpDir();
  fs.writeFileSync(path.join(dflt, 'libcurand.so.10'), '');
  const opts = { binDir: bin, env: { LD_LIBRARY_PATH: `/nonexistent:${lib}` }, ldconfigOutput: '\tlibcuda.so.1 (libc6,x86-64) => /drv/libcuda.so.1\n', defaultDirs: [dflt], platform: 'linux', arch: 'x64' };
  const d = diagnoseCuda(opts);
  assert.equal(d.cudaMajor, 13);
  const by = new Map(d.libraries.map((l) => [l.name, l]));
  assert.equal(by.get('libcudart.so.13')!.via, 'LD_LIBRARY_PATH');
  assert.equal(by.get('libcudart.so.13')!.foundAt, path.join(lib, 'libcudart.so.13'));
  assert.equal(by.get('libcuda.so.1')!.via, 'ld.so.cache');
  assert.equal(by.get('libcurand.so.10')!.via, 'default dir');
  assert.equal(by.get('libcublasLt.so.13')!.foundAt, null);
  assert.equal(by.get('libcudnn.so.9')!.required, false);
  assert.equal(by.has('libc.so.6'), false, 'C runtime libraries are not reported');
  assert.equal(d.ok, false);
  const msg = explainCudaFailure(new Error('Failed to load shared library'), opts).message;
  assert.match(msg, /CUDA 13/);
  assert.match(msg, /libcublasLt\.so\.13/);
  assert.doesNotMatch(msg, /libcudart/);
  assert.match(msg, /LD_LIBRARY_PATH/);
  // The same library placed next to the provider is found through DT_RUNPATH=$ORIGIN: then nothing is missing.
  const bin2 = fakeBin(CUDA13_NEEDED, { runpath: '$ORIGIN' });
  fs.writeFileSync(path.join(bin2, 'libcublasLt.so.13'), '');
  const d2 = diagnoseCuda({ ...opts, binDir: bin2 });
  assert.equal(d2.libraries.find((l) => l.name === 'libcublasLt.so.13')!.via, 'runpath');
  assert.equal(d2.ok, true, d2.problems.join(' '));
  const ready = explainCudaFailure(new Error('CUDA failure 100: no CUDA-capable device is detected'), { ...opts, binDir: bin2 }).message;
  assert.match(ready, /no CUDA-capable device/);
  assert.match(ready, /nvidia-smi/);
  const kernel = explainCudaFailure(new Error("Could not find an implementation for Gemm(13) node with name 'Gemm'"), { ...opts, binDir: bin2 }).message;
  assert.match(kernel, /no CUDA kernel and CPU fallback is disabled/);
  assert.match(kernel, /Gemm\(13\)/);
});

test('library search order: DT_RPATH before LD_LIBRARY_PATH, ignored when DT_RUNPATH exists', () => {
  const rdir = tmpDir();
  const ldir = tmpDir();
  for (const d of [rdir, ldir]) fs.writeFileSync(path.join(d, 'libcudart.so.13'), '');
  const write = (dyn: { rpath?: string; runpath?: string }) => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'libonnxruntime_providers_shared.so'), makeElf({ needed: ['libc.so.6'] }));
    fs.writeFileSync(path.join(dir, 'libonnxruntime_providers_cuda.so'), makeElf({ needed: ['libcudart.so.13'], ...dyn }));
    return dir;
  };
  const look = (bin: string) => diagnoseCuda({ binDir: bin, env: { LD_LIBRARY_PATH: ldir }, ldconfigOutput: null, defaultDirs: [], platform: 'linux', arch: 'x64' }).libraries.find((l) => l.name === 'libcudart.so.13')!;
  const withRpath = look(write({ rpath: rdir }));
  assert.equal(withRpath.via, 'rpath');
  assert.equal(withRpath.foundAt, path.join(rdir, 'libcudart.so.13'));
  const both = look(write({ rpath: rdir, runpath: '/nonexistent' }));
  assert.equal(both.via, 'LD_LIBRARY_PATH');
  assert.equal(both.foundAt, path.join(ldir, 'libcudart.so.13'));
});

test('missing driver library and wrong-architecture provider are reported as such', () => {
  const bin = fakeBin(['libcudart.so.12', 'libcuda.so.1']);
  const lib = tmpDir();
  fs.writeFileSync(path.join(lib, 'libcudart.so.12'), '');
  const d = diagnoseCuda({ binDir: bin, env: { LD_LIBRARY_PATH: lib }, ldconfigOutput: null, defaultDirs: [], platform: 'linux', arch: 'x64' });
  assert.equal(d.cudaMajor, 12);
  assert.equal(d.problems.length, 1);
  assert.match(d.problems[0]!, /libcuda\.so\.1.*NVIDIA driver/);
  const arm = fakeBin(['libcudart.so.12'], { machine: 183 });
  const d2 = diagnoseCuda({ binDir: arm, env: {}, ldconfigOutput: null, defaultDirs: [], platform: 'linux', arch: 'x64' });
  assert.ok(d2.problems.some((p) => /aarch64, not x86-64/.test(p)), d2.problems.join(' | '));
  const mac = explainCudaFailure(new Error('x'), { binDir: tmpDir(), env: {}, ldconfigOutput: null, platform: 'darwin', arch: 'arm64' });
  assert.match(mac.message, /linux x64 only/);
});

test('cudaReport lists every check, marking missing items', () => {
  const bin = fakeBin(['libcudart.so.13', 'libcuda.so.1']);
  const lines = cudaReport({ binDir: bin, env: {}, ldconfigOutput: '\tlibcuda.so.1 (libc6,x86-64) => /drv/libcuda.so.1\n', defaultDirs: [], platform: 'linux', arch: 'x64' });
  assert.ok(lines.some((l) => l.startsWith('✓ libonnxruntime_providers_cuda.so')));
  assert.ok(lines.includes('✓ provider built for CUDA 13'));
  assert.ok(lines.includes('✗ libcudart.so.13: not found'));
  assert.ok(lines.includes('✓ libcuda.so.1: /drv/libcuda.so.1 (ld.so.cache)'));
  assert.match(lines[lines.length - 1]!, /^CUDA: not usable — .*libcudart\.so\.13/);
});

test('a real CUDA session on this machine fails with the explained error when the provider is absent', async (t) => {
  const d = diagnoseCuda();
  if (d.providerFiles.every((f) => f.present)) {
    t.skip('the CUDA provider is installed here; the absent-provider path cannot be exercised');
    return;
  }
  const g = new Graph('identity');
  g.output(g.op('Identity', [g.input('x', 'float', [2])]), 'y');
  let caught: unknown = null;
  try {
    const s = await ort.InferenceSession.create(g.toModelBytes(), cudaSessionOptions(0));
    await s.release();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught, 'session creation on CUDA must fail without the provider (no silent CPU fallback)');
  const e = explainCudaFailure(caught);
  assert.ok(e instanceof SftError);
  assert.match(e.message, /libonnxruntime_providers_cuda\.so/);
  assert.ok(e.message.includes(d.binDir));
});
