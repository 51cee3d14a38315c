/**
 * Generation speed of the KV-cache graphs (infer/engineLM.ts): time to first token (graph build + session
 * creation are reported separately) and decode tokens/s, greedy, no early stop.
 *   npx tsx bench/generate-speed.ts [--model gpt2|tiny] [--prompt 32] [--new 64] [--device cpu|cuda] [--threads N] [--runs 2]
 * gpt2 = GPT-2 124M (12 layers, 768 wide, vocab 50257, 1024 positions) with random weights (initGpt2Params);
 * tiny = samples/tiny-gpt2-chat. Prints one line per run and a JSON summary last.
 */
import { parseArgs } from 'node:util';
import { EngineLM } from '../native-runner/infer/engineLM';
import { generate } from '../native-runner/infer/generate';
import { benchModel } from './benchModel';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'gpt2' },
    prompt: { type: 'string', default: '32' },
    new: { type: 'string', default: '64' },
    device: { type: 'string', default: 'cpu' },
    threads: { type: 'string', default: '0' },
    runs: { type: 'string', default: '2' },
  },
});

async function main() {
  const t0 = performance.now();
  const { config, params } = await benchModel(values.model!);
  const initS = (performance.now() - t0) / 1000;
  const lm = new EngineLM(config, params, { device: values.device as 'cpu' | 'cuda', threads: Number(values.threads) });
  const t1 = performance.now();
  await lm.warmUp();
  const sessionS = (performance.now() - t1) / 1000;
  console.log(`model ${values.model}: ${config.n_layer} layers, ${config.n_embd} wide, vocab ${config.vocab_size}; weights ${initS.toFixed(1)} s, graph + session ${sessionS.toFixed(1)} s, device ${values.device}`);
  const promptLen = Number(values.prompt);
  const newTokens = Number(values.new);
  const prompt = Array.from({ length: promptLen }, (_, i) => (i * 7919) % config.vocab_size);
  const runs: { ttftMs: number; decodeTokS: number; cpuMsPerToken: number }[] = [];
  for (let r = 0; r < Number(values.runs); r++) {
    const cpu0 = process.cpuUsage();
    const res = await generate(lm, prompt, { maxNewTokens: newTokens, stopIds: [] });
    const cpu = process.cpuUsage(cpu0);
    const decodeMs = res.totalMs - res.firstTokenMs;
    const tokS = ((res.newIds.length - 1) * 1000) / decodeMs;
    const cpuMsPerToken = (cpu.user + cpu.system) / 1000 / res.newIds.length;
    runs.push({ ttftMs: res.firstTokenMs, decodeTokS: tokS, cpuMsPerToken });
    console.log(`run ${r + 1}: prompt ${promptLen} tokens → first token ${res.firstTokenMs.toFixed(1)} ms; ${res.newIds.length} tokens in ${res.totalMs.toFixed(0)} ms; decode ${tokS.toFixed(1)} tokens/s; CPU ${cpuMsPerToken.toFixed(1)} ms/token (all threads; wall-clock figures suffer when other processes share the cores)`);
  }
  const best = runs.reduce((a, b) => (b.decodeTokS > a.decodeTokS ? b : a));
  console.log(JSON.stringify({ model: values.model, device: values.device, prompt_tokens: promptLen, new_tokens: newTokens, session_s: +sessionS.toFixed(2), ttft_ms: +best.ttftMs.toFixed(1), decode_tokens_per_s: +best.decodeTokS.toFixed(1), cpu_ms_per_token: +best.cpuMsPerToken.toFixed(1), rss_mb: Math.round(process.memoryUsage().rss / 1e6) }));
  await lm.dispose();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
