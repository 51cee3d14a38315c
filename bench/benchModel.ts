/**
 * The model a benchmark runs: 'tiny' = samples/tiny-gpt2-chat (loaded from disk), 'gpt2' = GPT-2 124M's shapes
 * (12 layers, 768 wide, vocab 50257, 1024 positions) with random weights (initGpt2Params, seed 1234); and random
 * fully trained micro-batches for throughput runs; and the SFT_* switches a run was made with.
 */
import { makeConfig } from '../native-runner/model/config';
import { initGpt2Params } from '../native-runner/model/gpt2Params';
import { loadModel } from '../native-runner/model/modelFolder';
import type { MicroBatch } from '../native-runner/engine/types';
import type { GPT2Config, ParamSet } from '../native-runner/model/types';
import type { Rng } from '../native-runner/util/rng';

export async function benchModel(name: string): Promise<{ config: GPT2Config; params: ParamSet }> {
  if (name === 'tiny') {
    const m = await loadModel('samples/tiny-gpt2-chat');
    return { config: m.config, params: m.params };
  }
  if (name !== 'gpt2') throw new Error(`--model must be tiny or gpt2, got ${name}`);
  const config = makeConfig({ n_layer: 12, n_head: 12, n_embd: 768, n_positions: 1024, vocab_size: 50257 });
  return { config, params: initGpt2Params(config, 1234) };
}

/**
 * bench/gpu-train.ts's model shapes (random weights there): GPT-2 124M with the chat vocabulary (50,257 + the three
 * role tokens), or its `--smoke` model (2 layers, 64 wide). bench/profile-vs-model.ts rebuilds the same graph.
 */
export function gpuTrainConfig(smoke: boolean): GPT2Config {
  return smoke
    ? makeConfig({ n_layer: 2, n_head: 2, n_embd: 64, n_positions: 128, vocab_size: 2048 })
    : makeConfig({ n_layer: 12, n_head: 12, n_embd: 768, n_positions: 1024, vocab_size: 50260 });
}

/** B×T random ids and random targets in [0, V), every position trained, positions 0..T−1, one segment per row. */
export function randomBatch(rng: Rng, B: number, T: number, V: number): MicroBatch {
  const n = B * T;
  const mb: MicroBatch = { B, T, inputIds: new Int32Array(n), targets: new Int32Array(n), weights: new Float32Array(n).fill(1), positions: new Int32Array(n), segments: new Int32Array(n).fill(1) };
  for (let i = 0; i < n; i++) {
    mb.inputIds[i] = rng.nextInt(V);
    mb.targets[i] = rng.nextInt(V);
    mb.positions[i] = i % T;
  }
  return mb;
}

/** Every SFT_* environment variable set for this run (the engine's switches: results are compared by them). */
export function sftSwitches(): Record<string, string> {
  return Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[0].startsWith('SFT_') && e[1] !== undefined));
}
