/**
 * Chunked decoding (infer/generationGraph.ts 'decode': N tokens per run, cache carried in an ONNX Loop, sampling
 * in the graph) against the per-token path (one run per token, cache through the host, host sampler), on one
 * device: are the token ids identical for the same seeds and settings, and how fast is each path at a short and
 * a long context?
 *   npx tsx bench/decode-chunks.ts [--model gpt2|tiny] [--device cpu|cuda] [--chunk 16] [--new 64]
 *        [--prompts 32,480] [--seeds 1,2]
 * gpt2 = GPT-2 124M (12×768, vocab 50257, 1024 positions) with random weights; tiny = samples/tiny-gpt2-chat.
 * Prints one line per (prompt length, setting, seed): same/DIFFERENT and both timings; then the tokens/s of each
 * path per prompt length (greedy, first run of each path not counted: it creates the session) and a JSON line.
 */
import { parseArgs } from 'node:util';
import { EngineLM } from '../native-runner/infer/engineLM';
import { generate } from '../native-runner/infer/generate';
import { samplingFrom } from '../native-runner/infer/sampling';
import { benchModel } from './benchModel';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'gpt2' },
    device: { type: 'string', default: 'cpu' },
    chunk: { type: 'string', default: '16' },
    new: { type: 'string', default: '64' },
    prompts: { type: 'string', default: '32,480' },
    seeds: { type: 'string', default: '1,2' },
  },
});

async function main() {
  const { config, params } = await benchModel(values.model!);
  const device = values.device as 'cpu' | 'cuda';
  const chunk = Number(values.chunk);
  const maxNewTokens = Number(values.new);
  const perToken = new EngineLM(config, params, { device, decodeChunk: 0 });
  const chunked = new EngineLM(config, params, { device, decodeChunk: chunk });
  const settings = [
    ['greedy', samplingFrom({ temperature: 0 })],
    ['t0.7 top_p0.9', samplingFrom({ temperature: 0.7, topP: 0.9 })],
    ['top_k5', samplingFrom({ temperature: 1, topK: 5 })],
    ['greedy rep1.3', samplingFrom({ temperature: 0, repetitionPenalty: 1.3 })],
  ] as const;
  const summary: Record<string, unknown>[] = [];
  let different = 0;
  let compared = 0;
  for (const promptLen of values.prompts!.split(',').map(Number)) {
    const prompt = Array.from({ length: promptLen }, (_, i) => (i * 7919) % config.vocab_size);
    const greedyMs: Record<'perToken' | 'chunked', number[]> = { perToken: [], chunked: [] };
    for (const [label, sampling] of settings) {
      for (const seed of values.seeds!.split(',').map(Number)) {
        const opts = { maxNewTokens, sampling, seed, stopIds: [] };
        const a = await generate(perToken, prompt, opts);
        const b = await generate(chunked, prompt, opts);
        const same = a.newIds.join(',') === b.newIds.join(',');
        compared++;
        if (!same) different++;
        let firstDiff = -1;
        if (!same) firstDiff = a.newIds.findIndex((x, i) => x !== b.newIds[i]);
        if (label === 'greedy') {
          greedyMs.perToken.push(a.totalMs);
          greedyMs.chunked.push(b.totalMs);
        }
        console.log(
          `prompt ${promptLen} ${label} seed ${seed}: ${same ? 'same' : `DIFFERENT from token ${firstDiff}`} (${a.newIds.length} tokens) ` +
            `per-token ${a.totalMs.toFixed(0)} ms, chunked ${b.totalMs.toFixed(0)} ms (first token ${a.firstTokenMs.toFixed(1)} / ${b.firstTokenMs.toFixed(1)} ms)`,
        );
      }
    }
    // the second greedy run of each path (the first one created the sessions)
    const tps = (ms: number[]) => (maxNewTokens / (ms[ms.length - 1]! / 1000));
    const row = { prompt_tokens: promptLen, per_token_tok_s: +tps(greedyMs.perToken).toFixed(1), chunked_tok_s: +tps(greedyMs.chunked).toFixed(1) };
    console.log(`prompt ${promptLen}: per-token ${row.per_token_tok_s} tok/s, chunked (${chunk}) ${row.chunked_tok_s} tok/s (greedy, ${maxNewTokens} new tokens)`);
    summary.push(row);
  }
  console.log(`RESULT ${JSON.stringify({ model: values.model, device, chunk, new_tokens: maxNewTokens, compared, different, speed: summary })}`);
  await perToken.dispose();
  await chunked.dispose();
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
