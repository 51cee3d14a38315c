/**
 * Checks, on the device, what the residualBiasDropout variant (engine/residual.ts) assumes of onnxruntime's
 * com.microsoft BiasDropout CUDA kernel, which has no CPU kernel and so is not covered by the CPU tests:
 *   out = r + (y + b)·mask/(1 − ratio), mask = the keep-mask (true = kept), about (1 − ratio) of it true,
 * in float and in bfloat16, on GPT-2-sized rows (N 4096 × C 768, ratio 0.1), with the region's own output names.
 *
 *   npx tsx bench/contrib-probe.ts [--device cuda|cpu] [--json FILE] [--emulate]
 *
 * Prints one line per dtype and "contrib-probe: PASS" or "FAIL" (exit status 1). On the cpu it reports that the op
 * has no kernel there (a PASS of that fact), so the device check's dry run exercises the script. --emulate builds the
 * region from ONNX Add → Dropout → Add instead (float only): what the 'emulate' graphs run, to check the checker on a CPU.
 */
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { Graph, makeData } from '../native-runner/engine/graph/graph';
import { createSession } from '../native-runner/engine/ortSession';
import { roundBf16 } from '../native-runner/engine/precision';
import { Rng } from '../native-runner/util/rng';

const { values: argv } = parseArgs({ options: { device: { type: 'string', default: 'cuda' }, json: { type: 'string' }, emulate: { type: 'boolean', default: false } } });
const device = argv.device === 'cpu' ? 'cpu' : 'cuda';
const N = 4096;
const C = 768;
const RATIO = 0.1;

function probeGraph(dtype: 'float' | 'bfloat16'): Graph {
  const g = new Graph(`bias_dropout_${dtype}`);
  const ins = [g.input('y', 'float', [N, C]), g.input('b', 'float', [C]), g.input('r', 'float', [N, C])].map((t) => (dtype === 'float' ? t : g.cast(t, 'bfloat16')));
  if (argv.emulate) {
    const d = g.dropoutWithMask(g.add(ins[0]!, ins[1]!), RATIO, 5);
    g.output(g.add(ins[2]!, d.out), 'out');
    g.output(d.mask, 'mask');
    return g;
  }
  const [out, mask] = g.node('BiasDropout', [...ins, g.scalar(RATIO, 'float'), g.constant(makeData('bool', [], [1]), 'training')], { seed: 5 }, [
    { dtype, shape: [N, C] },
    { dtype: 'bool', shape: [N, C] },
  ], 'com.microsoft');
  g.output(dtype === 'float' ? out! : g.cast(out!, 'float'), 'out');
  g.output(mask!, 'mask');
  return g;
}

async function main(): Promise<void> {
  const rng = new Rng(17);
  const y = Float32Array.from({ length: N * C }, () => 2 * rng.nextFloat() - 1);
  const b = Float32Array.from({ length: C }, () => 0.5 * rng.nextFloat() - 0.25);
  const r = Float32Array.from({ length: N * C }, () => 4 * rng.nextFloat() - 2);
  const feeds = { y: new ort.Tensor('float32', y, [N, C]), b: new ort.Tensor('float32', b, [C]), r: new ort.Tensor('float32', r, [N, C]) };
  const results: Record<string, unknown> = { device, N, C, ratio: RATIO };
  let pass = true;
  for (const dtype of argv.emulate ? (['float'] as const) : (['float', 'bfloat16'] as const)) {
    let session: ort.InferenceSession;
    try {
      session = await createSession(probeGraph(dtype).toModelBytes(), { device });
    } catch (e) {
      const msg = String(e instanceof Error ? e.message : e).split('\n')[0]!;
      const expected = device === 'cpu' && /BiasDropout/.test(msg);
      console.log(`${dtype}: session not created${expected ? ' (expected on the cpu: no CPU kernel)' : ''}: ${msg.slice(0, 200)}`);
      results[dtype] = { created: false, error: msg.slice(0, 300) };
      if (!expected) pass = false;
      continue;
    }
    try {
      const o = await session.run(feeds);
      const out = o.out!.data as Float32Array;
      const mask = o.mask!.data as Uint8Array;
      const q = dtype === 'float' ? (v: number) => v : roundBf16;
      let kept = 0;
      let worst = 0;
      let droppedNotR = 0;
      for (let i = 0; i < N * C; i++) {
        const j = i % C;
        const keep = mask[i] !== 0;
        if (keep) kept++;
        const branch = (q(y[i]!) + q(b[j]!)) / (1 - RATIO);
        const want = q(r[i]!) + (keep ? branch : 0);
        // float: a few fp32 roundings; bf16: the sum and the output rounded to bf16 (2 ulps of the larger term).
        const tol = dtype === 'float' ? 1e-6 * (Math.abs(want) + Math.abs(branch)) : 2 ** -7 * (Math.abs(want) + Math.abs(branch));
        const err = Math.abs(out[i]! - want);
        worst = Math.max(worst, err / Math.max(tol, 1e-30));
        if (!keep && out[i] !== q(r[i]!) && Math.abs(out[i]! - q(r[i]!)) > tol) droppedNotR++;
      }
      const keepFrac = kept / (N * C);
      const ok = worst <= 1 && Math.abs(keepFrac - (1 - RATIO)) < 0.005 && droppedNotR === 0;
      if (!ok) pass = false;
      results[dtype] = { created: true, keep_fraction: keepFrac, worst_error_over_tolerance: worst, dropped_not_residual: droppedNotR, ok };
      console.log(`${dtype}: keep fraction ${keepFrac.toFixed(5)} (want ${1 - RATIO}), worst |out − (r + (y+b)·mask/(1−p))| / tolerance ${worst.toFixed(3)}, dropped elements not equal to r: ${droppedNotR} → ${ok ? 'ok' : 'WRONG'}`);
    } finally {
      await session.release();
    }
  }
  results.pass = pass;
  if (argv.json) fs.writeFileSync(argv.json, JSON.stringify(results, null, 1));
  console.log(`contrib-probe: ${pass ? 'PASS' : 'FAIL'}`);
  if (!pass) process.exitCode = 1;
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
