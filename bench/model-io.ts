// Model I/O figures for a GPT-2 124M-shaped model with random weights: init, save (config + safetensors +
// tokenizer), header-only inspect, full load. Usage: npx tsx bench/model-io.ts [n_layer] (default 12).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { makeConfig } from '../native-runner/model/config';
import { countParameters, initGpt2Params } from '../native-runner/model/gpt2Params';
import { loadTokenizer } from '../native-runner/model/tokenizer';
import { inspectModelFolder, loadModel, saveModel } from '../native-runner/model/modelFolder';

async function main() {
  const nLayer = Number(process.argv[2] ?? 12);
  const config = makeConfig({ n_layer: nLayer, vocab_size: 50260 });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-bench-io-'));
  const time = async <T>(label: string, fn: () => T | Promise<T>): Promise<T> => {
    const t0 = performance.now();
    const r = await fn();
    console.log(`${label.padEnd(28)} ${(performance.now() - t0).toFixed(0).padStart(7)} ms`);
    return r;
  };
  try {
    console.log(`GPT-2 n_layer ${nLayer}: ${countParameters(config).toLocaleString('en-US')} parameters`);
    const params = await time('initGpt2Params', () => initGpt2Params(config, 42));
    const tokenizer = await time('loadTokenizer (tokenizer.json)', () => loadTokenizer(path.join(__dirname, '../test/fixtures/gpt2-tokenizer')));
    const out = path.join(dir, 'model');
    await time('saveModel', () => saveModel(out, { config, params, tokenizer }));
    console.log(`model.safetensors            ${(fs.statSync(path.join(out, 'model.safetensors')).size / 1e6).toFixed(1).padStart(7)} MB`);
    await time('inspectModelFolder (headers)', () => inspectModelFolder(out));
    const m = await time('loadModel', () => loadModel(out));
    console.log(`loaded ${m.params.size} tensors, rss ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
void main();
