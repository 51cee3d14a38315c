// Peak RSS of `sft eval` on a GPT-2 124M-shaped model with random weights (the model folder is written to a
// temp dir: config, model.safetensors, the chat tokenizer of samples/tiny-gpt2-chat) over
// samples/dolly-sample.jsonl. Each run is a child process (`node --import tsx native-runner/cli/main.ts eval`)
// that prints its own peak RSS (process.resourceUsage().maxRSS) and, on Linux, its peak virtual size (VmPeak:
// zero-filled buffers that are never written, such as unused AdamW moments, count there and in Windows'
// commit charge, but not in Linux RSS).
// Usage: npx tsx bench/eval-memory.ts [--root DIR ...] [--runs N] [--n_layer L]
//   --root: source trees to run the CLI from (default: this repo); give two (e.g. a copy of an older tree
//   with node_modules linked) to compare before/after on the same model folder.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { makeConfig } from '../native-runner/model/config';
import { countParameters, initGpt2Params } from '../native-runner/model/gpt2Params';
import { loadTokenizer } from '../native-runner/model/tokenizer';
import { saveModel } from '../native-runner/model/modelFolder';

const REPO = path.join(__dirname, '..');

function evalPeakRss(root: string, model: string, dataset: string): { mb: number; vmMb: number; loss: string; seconds: number } {
  const script = [
    `const { main } = require(${JSON.stringify(path.join(root, 'native-runner/cli/main.ts'))});`,
    `main(${JSON.stringify(['eval', '--model', model, '--dataset', dataset, '--dataset_format', 'dolly', '--json'])})`,
    `.then((c) => {`,
    `  let vm = '';`,
    `  try { vm = /VmPeak:\\s*(\\d+)/.exec(require('node:fs').readFileSync('/proc/self/status', 'utf8'))[1]; } catch {}`,
    `  console.log('maxrss_kb ' + process.resourceUsage().maxRSS + ' vmpeak_kb ' + vm);`,
    `  process.exitCode = c;`,
    `});`,
  ].join('\n');
  const t0 = performance.now();
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], { cwd: root, encoding: 'utf8' });
  const seconds = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`eval failed in ${root}:\n${r.stdout}\n${r.stderr}`);
  const m = /maxrss_kb (\d+) vmpeak_kb (\d*)/.exec(r.stdout)!;
  const loss = /"eval_loss":([0-9.e+-]+)/.exec(r.stdout)?.[1] ?? '?';
  return { mb: Number(m[1]) / 1024, vmMb: m[2] ? Number(m[2]) / 1024 : NaN, loss, seconds };
}

async function main() {
  const { values } = parseArgs({ options: { root: { type: 'string', multiple: true }, runs: { type: 'string', default: '2' }, n_layer: { type: 'string', default: '12' } } });
  const roots = (values.root ?? [REPO]).map((r) => path.resolve(r));
  const config = makeConfig({ n_layer: Number(values.n_layer), vocab_size: 50260, pad_token_id: 50256 });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-bench-evalmem-'));
  try {
    const model = path.join(dir, 'model');
    await saveModel(model, { config, params: initGpt2Params(config, 42), tokenizer: loadTokenizer(path.join(REPO, 'samples/tiny-gpt2-chat')) });
    const params = countParameters(config);
    console.log(`GPT-2 n_layer ${config.n_layer}: ${params.toLocaleString('en-US')} parameters (${((params * 4) / 2 ** 20).toFixed(0)} MiB fp32)`);
    const dataset = path.join(REPO, 'samples/dolly-sample.jsonl');
    for (let i = 0; i < Number(values.runs); i++) {
      for (const root of roots) {
        const r = evalPeakRss(root, model, dataset);
        console.log(`${root.padEnd(24)} peak RSS ${r.mb.toFixed(0).padStart(6)} MiB  VmPeak ${r.vmMb.toFixed(0).padStart(6)} MiB  eval_loss ${r.loss}  ${r.seconds.toFixed(1)} s`);
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
void main();
