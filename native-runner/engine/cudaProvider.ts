/**
 * CUDA execution provider: session options, a diagnosis of what is missing, and the user-facing error.
 *
 * onnxruntime-node (linux x64) loads the CUDA provider from its own bin folder
 * (node_modules/onnxruntime-node/bin/napi-v6/linux/x64/): libonnxruntime_providers_shared.so and
 * libonnxruntime_providers_cuda.so. The npm package ships neither; they come from
 *   - CUDA 12: onnxruntime-node's postinstall (`ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node`,
 *     which downloads Microsoft.ML.OnnxRuntime.Gpu.Linux from NuGet), or
 *   - CUDA 13: the npm package com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9 (Plugins/Linux/x64/), a
 *     redistribution of the official 1.29.0 build that matches onnxruntime-node 1.29.0 exactly.
 * The provider library in turn needs the CUDA runtime libraries of one CUDA major (its ELF DT_NEEDED entries,
 * e.g. libcudart.so.13, libcublas.so.13, libcublasLt.so.13, libcurand.so.10) plus the driver's libcuda.so.1,
 * and may load cuDNN 9 at run time. ONNX Runtime itself only reports "Failed to load shared library", so
 * `diagnoseCuda` reads the provider's dynamic section (a small ELF reader below: program headers →
 * PT_DYNAMIC → DT_NEEDED / DT_RUNPATH strings via the PT_LOAD mapping of DT_STRTAB) and resolves each needed
 * library the way the dynamic loader would: DT_RPATH, LD_LIBRARY_PATH, DT_RUNPATH ($ORIGIN expanded), the
 * ld.so.cache (`ldconfig -p`) and the default directories.
 *
 *   cudaSessionOptions(deviceId)  → InferenceSession options: CUDA EP, CPU fallback disabled, graph opt level
 *   diagnoseCuda()                → CudaDiagnosis (files, CUDA major, libraries found/missing, problems)
 *   explainCudaFailure(error)     → SftError: what is missing, which CUDA major, how to fix, how to check
 *   cudaReport()                  → lines for `sft doctor`
 *   readElfDynamic(file)          → ElfDynamic (class, machine, DT_NEEDED, SONAME, RPATH/RUNPATH)
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as ort from 'onnxruntime-node';
import { SftError } from '../util/errors';

/** The two files that must sit next to libonnxruntime.so.1 for the CUDA EP. */
export const CUDA_PROVIDER_FILES = ['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_cuda.so'] as const;
/** The onnxruntime-node version the CUDA 13 provider package below was built for. */
export const CUDA13_PROVIDER_ORT_VERSION = '1.29.0';
export const CUDA13_PROVIDER_PACKAGE = 'com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9';
export const CUDA12_INSTALL_COMMAND = 'ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node';

// ---------------------------------------------------------------------------------------------------------
// Session options
// ---------------------------------------------------------------------------------------------------------

export interface CudaSessionOptionsExtra {
  /** Graph optimisation level; 'all' by default. */
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Intra-op threads for the (few) host-side kernels; 0/undefined = ORT's default. */
  threads?: number;
}

/**
 * onnxruntime-node session options for the CUDA EP on `deviceId`, with CPU fallback disabled so that session
 * creation fails instead of silently running a node on the CPU.
 */
export function cudaSessionOptions(deviceId = 0, extra: CudaSessionOptionsExtra = {}): ort.InferenceSession.SessionOptions {
  if (!(Number.isInteger(deviceId) && deviceId >= 0)) throw new SftError(`CUDA device id must be an integer ≥ 0, got ${deviceId}`, 'device');
  const so: ort.InferenceSession.SessionOptions = {
    executionProviders: [{ name: 'cuda', deviceId }],
    graphOptimizationLevel: extra.optimization ?? 'all',
    ...(extra.threads ? { intraOpNumThreads: extra.threads } : {}),
  };
  (so as { extra?: unknown }).extra = { session: { disable_cpu_ep_fallback: '1' } };
  return so;
}

// ---------------------------------------------------------------------------------------------------------
// ELF dynamic section reader
// ---------------------------------------------------------------------------------------------------------

export interface ElfDynamic {
  bits: 32 | 64;
  littleEndian: boolean;
  /** e_machine: 62 x86-64, 183 AArch64, 3 i386, … */
  machine: number;
  needed: string[];
  soname: string | null;
  rpath: string[];
  runpath: string[];
}

export const ELF_MACHINE_NAMES: Record<number, string> = { 3: 'i386', 40: 'arm', 62: 'x86-64', 183: 'aarch64', 243: 'riscv' };

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const DT_NULL = 0;
const DT_NEEDED = 1;
const DT_STRTAB = 5;
const DT_STRSZ = 10;
const DT_SONAME = 14;
const DT_RPATH = 15;
const DT_RUNPATH = 29;

/** Reads `length` bytes at `offset`; returns fewer at end of file. */
type ByteSource = (offset: number, length: number) => Uint8Array;

function fileSource(fd: number, size: number): ByteSource {
  return (offset, length) => {
    const n = Math.max(0, Math.min(length, size - offset));
    const buf = Buffer.alloc(n);
    let got = 0;
    while (got < n) {
      const r = fs.readSync(fd, buf, got, n - got, offset + got);
      if (r <= 0) break;
      got += r;
    }
    return buf.subarray(0, got);
  };
}

/** Parses the dynamic section of an ELF image given as bytes (tests) or through readElfDynamic (files). */
export function parseElfDynamic(bytes: Uint8Array, what = 'ELF image'): ElfDynamic {
  return parseElfFrom((o, l) => bytes.subarray(o, Math.min(bytes.length, o + l)), what);
}

/** Reads the DT_NEEDED / SONAME / RPATH / RUNPATH entries of a shared library without loading it. */
export function readElfDynamic(file: string): ElfDynamic {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new SftError(`cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, file);
  }
  try {
    return parseElfFrom(fileSource(fd, fs.fstatSync(fd).size), file);
  } finally {
    fs.closeSync(fd);
  }
}

function parseElfFrom(read: ByteSource, what: string): ElfDynamic {
  const bad = (msg: string): never => {
    throw new SftError(`not a usable ELF shared library: ${msg}`, what);
  };
  const ident = read(0, 64);
  if (ident.length < 16 || ident[0] !== 0x7f || ident[1] !== 0x45 || ident[2] !== 0x4c || ident[3] !== 0x46) {
    const head = Buffer.from(ident.subarray(0, 40)).toString('latin1');
    bad(head.startsWith('version https://git-lfs') ? 'it is a Git LFS pointer, not the library' : 'no ELF magic (\\x7fELF)');
  }
  const bits = ident[4] === 1 ? 32 : ident[4] === 2 ? 64 : bad(`unknown ELF class ${ident[4]}`);
  const le = ident[5] === 1 ? true : ident[5] === 2 ? false : bad(`unknown data encoding ${ident[5]}`);
  const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
  const word = (dv: DataView, off: number, wide: boolean): number => {
    if (!wide) return dv.getUint32(off, le);
    const v = dv.getBigUint64(off, le);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) bad(`offset ${v} too large`);
    return Number(v);
  };
  const is64 = bits === 64;
  const hdr = read(0, is64 ? 64 : 52);
  if (hdr.length < (is64 ? 64 : 52)) bad('truncated ELF header');
  const h = view(hdr);
  const machine = h.getUint16(18, le);
  const phoff = word(h, is64 ? 32 : 28, is64);
  const phentsize = h.getUint16(is64 ? 54 : 42, le);
  const phnum = h.getUint16(is64 ? 56 : 44, le);
  if (phentsize < (is64 ? 56 : 32) || phnum === 0) bad('no program headers');
  const ph = read(phoff, phentsize * phnum);
  if (ph.length < phentsize * phnum) bad('truncated program headers');
  const pv = view(ph);
  const loads: { vaddr: number; offset: number; filesz: number }[] = [];
  let dyn: { offset: number; filesz: number } | null = null;
  for (let i = 0; i < phnum; i++) {
    const b = i * phentsize;
    const type = pv.getUint32(b, le);
    const offset = word(pv, b + (is64 ? 8 : 4), is64);
    const vaddr = word(pv, b + (is64 ? 16 : 8), is64);
    const filesz = word(pv, b + (is64 ? 32 : 16), is64);
    if (type === PT_LOAD) loads.push({ vaddr, offset, filesz });
    else if (type === PT_DYNAMIC) dyn = { offset, filesz };
  }
  if (!dyn) bad('no dynamic section (PT_DYNAMIC): a static executable or an object file');
  const entSize = is64 ? 16 : 8;
  const raw = read(dyn!.offset, dyn!.filesz);
  if (raw.length < dyn!.filesz) bad('truncated dynamic section');
  const dv = view(raw);
  const entries: { tag: number; val: number }[] = [];
  for (let o = 0; o + entSize <= raw.length; o += entSize) {
    const tag = is64 ? Number(dv.getBigInt64(o, le)) : dv.getInt32(o, le);
    if (tag === DT_NULL) break;
    entries.push({ tag, val: word(dv, o + (is64 ? 8 : 4), is64) });
  }
  const strtabAddr = entries.find((e) => e.tag === DT_STRTAB)?.val;
  const strsz = entries.find((e) => e.tag === DT_STRSZ)?.val ?? 0;
  if (strtabAddr === undefined) bad('dynamic section has no DT_STRTAB');
  const seg = loads.find((l) => strtabAddr! >= l.vaddr && strtabAddr! < l.vaddr + l.filesz);
  if (!seg) bad(`DT_STRTAB address 0x${strtabAddr!.toString(16)} lies in no PT_LOAD segment`);
  const strtab = read(seg!.offset + (strtabAddr! - seg!.vaddr), strsz);
  const str = (off: number): string => {
    if (off >= strtab.length) bad(`string offset ${off} outside DT_STRTAB (${strtab.length} bytes)`);
    let end = off;
    while (end < strtab.length && strtab[end] !== 0) end++;
    return Buffer.from(strtab.subarray(off, end)).toString('utf8');
  };
  const out: ElfDynamic = { bits, littleEndian: le, machine, needed: [], soname: null, rpath: [], runpath: [] };
  for (const e of entries) {
    if (e.tag === DT_NEEDED) out.needed.push(str(e.val));
    else if (e.tag === DT_SONAME) out.soname = str(e.val);
    else if (e.tag === DT_RPATH) out.rpath.push(...str(e.val).split(':').filter(Boolean));
    else if (e.tag === DT_RUNPATH) out.runpath.push(...str(e.val).split(':').filter(Boolean));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Diagnosis
// ---------------------------------------------------------------------------------------------------------

export type FoundVia = 'rpath' | 'LD_LIBRARY_PATH' | 'runpath' | 'ld.so.cache' | 'default dir';

export interface LibraryStatus {
  /** Soname as the provider asks for it, e.g. libcublas.so.13. */
  name: string;
  /** true: a DT_NEEDED entry (loading fails without it); false: loaded on demand (cuDNN). */
  required: boolean;
  foundAt: string | null;
  via: FoundVia | null;
}

export interface ProviderFileStatus {
  name: string;
  path: string;
  present: boolean;
  /** Why the present file is unusable (not ELF, wrong machine, LFS pointer…), else null. */
  problem: string | null;
}

export interface CudaDiagnosis {
  platform: string;
  /** onnxruntime-node's CUDA EP exists on linux x64 only. */
  platformSupported: boolean;
  ortVersion: string | null;
  binDir: string;
  providerFiles: ProviderFileStatus[];
  /** CUDA major the provider was built for (from libcudart.so.N / libcublas.so.N), null when unknown. */
  cudaMajor: number | null;
  /** CUDA-related libraries (driver, runtime, cuBLAS, cuRAND, cuDNN …) and where the loader finds them. */
  libraries: LibraryStatus[];
  /** Lines, each a complete sentence saying what is wrong; empty when everything needed was found. */
  problems: string[];
  /** Where libraries were searched (for the report). */
  searched: { ldLibraryPath: string[]; ldCache: boolean };
  ok: boolean;
}

export interface DiagnoseOptions {
  /** onnxruntime-node's native folder; default: resolved from the installed package. */
  binDir?: string;
  /** Environment (LD_LIBRARY_PATH); default process.env. */
  env?: NodeJS.ProcessEnv;
  /** `ldconfig -p` output; default: run it (null when it cannot run). Pass null to skip the cache. */
  ldconfigOutput?: string | null;
  /** Default library directories; default the usual x86-64 ones. */
  defaultDirs?: string[];
  platform?: string;
  arch?: string;
}

/** Libraries of the C/C++ runtime: always present where node runs, not worth reporting. */
const SYSTEM_LIBS = /^(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+|ld-linux[-\w.]*)\.so/;
const DEFAULT_DIRS = ['/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib64', '/usr/lib64', '/lib', '/usr/lib'];

function ortPackageDir(): string | null {
  try {
    return path.dirname(require.resolve('onnxruntime-node/package.json'));
  } catch {
    return null;
  }
}

/** onnxruntime-node's native folder for this platform (where the provider files must go). */
export function ortBinDir(platform: string = process.platform, arch: string = process.arch): string {
  const pkg = ortPackageDir() ?? path.resolve('node_modules', 'onnxruntime-node');
  return path.join(pkg, 'bin', 'napi-v6', platform, arch);
}

function ortVersion(): string | null {
  const dir = ortPackageDir();
  if (!dir) return null;
  try {
    return (JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version?: string }).version ?? null;
  } catch {
    return null;
  }
}

/** `ldconfig -p` output, or null when ldconfig is not available. */
export function readLdconfigCache(): string | null {
  for (const exe of ['/sbin/ldconfig', '/usr/sbin/ldconfig', 'ldconfig']) {
    try {
      return execFileSync(exe, ['-p'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000, maxBuffer: 32 << 20 });
    } catch {
      // next candidate
    }
  }
  return null;
}

/** soname → path from `ldconfig -p` lines like "\tlibcudart.so.13 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.13". */
export function parseLdconfig(output: string, arch = 'x64'): Map<string, string> {
  const m = new Map<string, string>();
  const want = arch === 'x64' ? /x86-64/ : arch === 'arm64' ? /AArch64/i : /./;
  for (const line of output.split('\n')) {
    const r = /^\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(\S.*?)\s*$/.exec(line);
    if (!r || !want.test(r[2]!)) continue;
    if (!m.has(r[1]!)) m.set(r[1]!, r[3]!);
  }
  return m;
}

/** CUDA major from sonames like libcudart.so.13 / libcublas.so.12 (cudart first, then cuBLAS). */
export function cudaMajorOf(needed: readonly string[]): number | null {
  for (const stem of ['libcudart', 'libcublas', 'libcublasLt']) {
    for (const n of needed) {
      const r = new RegExp(`^${stem}\\.so\\.(\\d+)`).exec(n);
      if (r) return Number(r[1]);
    }
  }
  return null;
}

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Where the dynamic loader would find `name` for a library in `origin` (null when it would not). */
function resolveLibrary(
  name: string,
  origin: string,
  elf: ElfDynamic | null,
  ldPath: string[],
  cache: Map<string, string> | null,
  defaultDirs: string[],
): { foundAt: string; via: FoundVia } | null {
  const expand = (d: string) => d.replace(/\$\{?ORIGIN\}?/g, origin);
  const tryDirs = (dirs: string[], via: FoundVia) => {
    for (const d of dirs) {
      const p = path.join(expand(d), name);
      if (isFile(p)) return { foundAt: p, via };
    }
    return null;
  };
  // DT_RPATH applies only when there is no DT_RUNPATH.
  if (elf && elf.runpath.length === 0) {
    const r = tryDirs(elf.rpath, 'rpath');
    if (r) return r;
  }
  const l = tryDirs(ldPath, 'LD_LIBRARY_PATH');
  if (l) return l;
  if (elf) {
    const r = tryDirs(elf.runpath, 'runpath');
    if (r) return r;
  }
  const c = cache?.get(name);
  if (c) return { foundAt: c, via: 'ld.so.cache' };
  return tryDirs(defaultDirs, 'default dir');
}

/** Checks the CUDA provider files, the CUDA major they need, and whether the loader finds its libraries. */
export function diagnoseCuda(opts: DiagnoseOptions = {}): CudaDiagnosis {
  const platform = opts.platform ?? process.platform;
  const arch = opts.arch ?? process.arch;
  const env = opts.env ?? process.env;
  const binDir = opts.binDir ?? ortBinDir(platform, arch);
  const ldLibraryPath = (env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean);
  const ldOut = opts.ldconfigOutput === undefined ? readLdconfigCache() : opts.ldconfigOutput;
  const cache = ldOut === null ? null : parseLdconfig(ldOut, arch);
  const defaultDirs = opts.defaultDirs ?? DEFAULT_DIRS;
  const problems: string[] = [];
  const platformSupported = platform === 'linux' && arch === 'x64';
  if (!platformSupported) problems.push(`onnxruntime-node's CUDA execution provider exists for linux x64 only; this is ${platform} ${arch}.`);
  const version = opts.binDir ? null : ortVersion();

  const providerFiles: ProviderFileStatus[] = [];
  let cudaElf: ElfDynamic | null = null;
  for (const name of CUDA_PROVIDER_FILES) {
    const p = path.join(binDir, name);
    const present = isFile(p);
    let problem: string | null = null;
    if (present) {
      try {
        const elf = readElfDynamic(p);
        if (arch === 'x64' && elf.machine !== 62) problem = `built for ${ELF_MACHINE_NAMES[elf.machine] ?? `machine ${elf.machine}`}, not x86-64`;
        else if (name === 'libonnxruntime_providers_cuda.so') cudaElf = elf;
      } catch (e) {
        problem = (e as Error).message;
      }
    }
    providerFiles.push({ name, path: p, present, problem });
  }
  const missing = providerFiles.filter((f) => !f.present);
  if (missing.length > 0) problems.push(`missing in ${binDir}: ${missing.map((f) => f.name).join(', ')}.`);
  for (const f of providerFiles) if (f.problem) problems.push(`${f.path}: ${f.problem.replace(`${f.path}: `, '')}.`);

  const libraries: LibraryStatus[] = [];
  let cudaMajor: number | null = null;
  if (cudaElf) {
    const elf: ElfDynamic = cudaElf;
    cudaMajor = cudaMajorOf(elf.needed);
    const wanted = elf.needed.filter((n) => !SYSTEM_LIBS.test(n)).map((name) => ({ name, required: true }));
    // cuDNN 9 is loaded on demand by the provider builds that do not list it.
    if (!wanted.some((w) => w.name.startsWith('libcudnn.so'))) wanted.push({ name: 'libcudnn.so.9', required: false });
    for (const w of wanted) {
      const r = resolveLibrary(w.name, binDir, elf, ldLibraryPath, cache, defaultDirs);
      libraries.push({ ...w, foundAt: r?.foundAt ?? null, via: r?.via ?? null });
    }
    const lost = libraries.filter((l) => l.required && !l.foundAt);
    if (lost.length > 0) {
      const driver = lost.filter((l) => l.name.startsWith('libcuda.so'));
      const runtime = lost.filter((l) => !l.name.startsWith('libcuda.so'));
      if (runtime.length > 0) {
        problems.push(
          `the CUDA provider needs CUDA ${cudaMajor ?? '?'} libraries the dynamic loader cannot find: ${runtime.map((l) => l.name).join(', ')} ` +
            `(searched LD_LIBRARY_PATH=${ldLibraryPath.join(':') || '(empty)'}${cache ? ', ld.so.cache' : ''}, and the default directories).`,
        );
      }
      if (driver.length > 0) problems.push(`${driver.map((l) => l.name).join(', ')} (the NVIDIA driver's library) was not found: is an NVIDIA driver installed?`);
    }
  }
  if (version && version !== CUDA13_PROVIDER_ORT_VERSION && cudaMajor === 13) {
    problems.push(`the CUDA 13 provider from ${CUDA13_PROVIDER_PACKAGE} matches onnxruntime-node ${CUDA13_PROVIDER_ORT_VERSION}; installed is ${version}.`);
  }
  return {
    platform: `${platform} ${arch}`,
    platformSupported,
    ortVersion: version,
    binDir,
    providerFiles,
    cudaMajor,
    libraries,
    problems,
    searched: { ldLibraryPath, ldCache: cache !== null },
    ok: problems.length === 0,
  };
}

// ---------------------------------------------------------------------------------------------------------
// User-facing messages
// ---------------------------------------------------------------------------------------------------------

function installHint(binDir: string, major: number | null): string {
  const c12 = `CUDA 12: \`${CUDA12_INSTALL_COMMAND}\` (onnxruntime-node's own postinstall; downloads the provider from NuGet)`;
  const c13 = `CUDA 13: copy Plugins/Linux/x64/libonnxruntime_providers_{cuda,shared}.so from the npm package ${CUDA13_PROVIDER_PACKAGE} (built for onnxruntime-node ${CUDA13_PROVIDER_ORT_VERSION} exactly) into ${binDir}`;
  return major === 12 ? `${c12}; or for ${c13}` : major === 13 ? `${c13}; or for ${c12}` : `${c12}; ${c13}`;
}

function libraryHint(major: number | null): string {
  const m = major ?? 'N';
  return (
    `install the CUDA ${m} runtime and cuBLAS (the CUDA toolkit, or pip's nvidia-cuda-runtime / nvidia-cublas wheels, ` +
    `e.g. the lib folders PyTorch for CUDA ${m} brings) and add their folders to LD_LIBRARY_PATH, or install the provider built for the CUDA major you have`
  );
}

/** One paragraph for a failed CUDA session: the diagnosis, the fix, and how to check. */
export function describeCudaProblem(d: CudaDiagnosis, original?: string): string {
  const parts: string[] = [];
  const missingProvider = d.providerFiles.some((f) => !f.present || f.problem);
  if (!d.platformSupported) {
    parts.push(d.problems[0]!, 'Use "device": "cpu" (--device cpu).');
    return parts.join(' ');
  }
  if (missingProvider) {
    parts.push(`the CUDA execution provider is not installed: ${d.problems.join(' ')}`);
    parts.push(`Install it — ${installHint(d.binDir, d.cudaMajor)}.`);
  } else if (!d.ok) {
    parts.push(`the CUDA execution provider (built for CUDA ${d.cudaMajor ?? '?'}) cannot be loaded: ${d.problems.join(' ')}`);
    parts.push(`Fix: ${libraryHint(d.cudaMajor)}.`);
  } else if (original && /could not find an implementation|not implemented|no kernel/i.test(original)) {
    parts.push(
      `a graph node has no CUDA kernel and CPU fallback is disabled (${original}); the provider (CUDA ${d.cudaMajor ?? '?'}) and its libraries were found. ` +
        'This is a limitation of the engine\'s graph on CUDA, not of your set-up: please report it.',
    );
  } else {
    parts.push(
      `CUDA could not be used${original ? ` (${original})` : ''}, although the provider (CUDA ${d.cudaMajor ?? '?'}) and its libraries were found. ` +
        'Check that a GPU is visible (nvidia-smi), that the driver supports this CUDA major, and the device id.',
    );
  }
  parts.push('Check with `sft doctor`; or train on the CPU with --device cpu.');
  return parts.join(' ');
}

/**
 * The SftError for a failed CUDA session creation (onnxruntime-node only says "Failed to load shared
 * library"): runs the diagnosis and says what is missing, which CUDA major, how to fix and how to check.
 */
export function explainCudaFailure(error: unknown, opts: DiagnoseOptions = {}): SftError {
  const original = (error instanceof Error ? error.message : String(error)).split('\n')[0]!.trim();
  let d: CudaDiagnosis;
  try {
    d = diagnoseCuda(opts);
  } catch (e) {
    return new SftError(`the CUDA execution provider could not be used (${original}); diagnosis failed: ${(e as Error).message}`, 'device cuda');
  }
  return new SftError(describeCudaProblem(d, original), 'device cuda');
}

/** `sft doctor`: one line per check, ✓ / ✗ / ! first (of `d` when the caller already has the diagnosis). */
export function cudaReport(opts: DiagnoseOptions = {}, d: CudaDiagnosis = diagnoseCuda(opts)): string[] {
  const lines: string[] = [];
  const mark = (ok: boolean) => (ok ? '✓' : '✗');
  lines.push(`${mark(d.platformSupported)} platform ${d.platform}${d.platformSupported ? '' : ' (CUDA needs linux x64)'}`);
  if (d.ortVersion) lines.push(`${mark(true)} onnxruntime-node ${d.ortVersion}`);
  lines.push(`  provider folder ${d.binDir}`);
  for (const f of d.providerFiles) lines.push(`${mark(f.present && !f.problem)} ${f.name}${f.present ? (f.problem ? `: ${f.problem}` : '') : ': missing'}`);
  if (d.cudaMajor !== null) lines.push(`${mark(true)} provider built for CUDA ${d.cudaMajor}`);
  for (const l of d.libraries) {
    const sign = l.foundAt ? '✓' : l.required ? '✗' : '!';
    lines.push(`${sign} ${l.name}${l.required ? '' : ' (loaded on demand)'}: ${l.foundAt ? `${l.foundAt} (${l.via})` : 'not found'}`);
  }
  lines.push(`  searched LD_LIBRARY_PATH=${d.searched.ldLibraryPath.join(':') || '(empty)'}${d.searched.ldCache ? ', ld.so.cache' : ', no ld.so.cache (ldconfig unavailable)'}`);
  if (d.ok) lines.push('CUDA: ready (a session still needs a visible GPU: nvidia-smi)');
  else lines.push(`CUDA: not usable — ${describeCudaProblem(d)}`);
  return lines;
}
