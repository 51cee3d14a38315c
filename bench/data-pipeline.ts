/**
 * Benchmark: read, render, tokenise, split and batch 15,000 Dolly-sized records of our own generation
 * (instruction ~12 words, a context on ~30 % of records ~120 words, response ~75 words on average).
 * Prints wall time per stage. Run: npx tsx bench/data-pipeline.ts [records] [max_length]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Rng } from '../native-runner/util/rng';
import { loadTokenizer } from '../native-runner/model/tokenizer';
import { loadConversations } from '../native-runner/data/dataset';
import { tokenizeConversation } from '../native-runner/data/tokenize';
import { splitTrainEval } from '../native-runner/data/split';
import { epochMicroBatches } from '../native-runner/data/batching';
import { computeStats } from '../native-runner/data/stats';
import type { TokenizedExample } from '../native-runner/data/types';

const N = Number(process.argv[2] ?? 15000);
const MAX_LENGTH = Number(process.argv[3] ?? 512);
const WORDS = (
  'the a of to and in is that for it as with was on be by this are from at or an which have not they but his her ' +
  'plant light water energy city river capital language learn practice bread butter sandwich pasta cook boil sky blue ' +
  'machine model data network layer weight train example answer question simple explain because people history ' +
  'small large early late north south east west music film book story write read speak listen world country ' +
  'café naïve résumé 東京 😀'
).split(' ');

function sentence(r: Rng, words: number): string {
  const out: string[] = [];
  for (let i = 0; i < words; i++) out.push(WORDS[r.nextInt(WORDS.length)]!);
  const s = out.join(' ');
  return s[0]!.toUpperCase() + s.slice(1) + '.';
}

function paragraph(r: Rng, meanWords: number): string {
  const target = Math.max(3, Math.round(meanWords * (0.3 + 1.4 * r.nextFloat())));
  const parts: string[] = [];
  for (let n = 0; n < target; ) {
    const k = Math.min(target - n, 6 + r.nextInt(12));
    parts.push(sentence(r, k));
    n += k;
  }
  return parts.join(' ');
}

function time<T>(label: string, fn: () => T): T {
  const t0 = performance.now();
  const v = fn();
  console.log(`${label.padEnd(34)} ${(performance.now() - t0).toFixed(0).padStart(7)} ms`);
  return v;
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-bench-data-'));
  const file = path.join(dir, 'dolly-synthetic.jsonl');
  const r = new Rng(1234);
  const lines: string[] = [];
  for (let i = 0; i < N; i++) {
    const hasContext = r.nextFloat() < 0.3;
    lines.push(
      JSON.stringify({
        instruction: paragraph(r, 12).replace(/\.$/, '?'),
        context: hasContext ? paragraph(r, 120) : '',
        response: paragraph(r, 75),
        category: hasContext ? 'closed_qa' : 'open_qa',
      }),
    );
  }
  fs.writeFileSync(file, lines.join('\n') + '\n');
  console.log(`${N} records, ${(fs.statSync(file).size / 1e6).toFixed(1)} MB, max_length ${MAX_LENGTH}, node ${process.version}, ${os.cpus()[0]?.model ?? ''}`);

  const tok = loadTokenizer(path.join(__dirname, '../samples/tiny-gpt2-chat'));
  const total0 = performance.now();
  let t0 = performance.now();
  const set = await loadConversations(file, { format: 'dolly' });
  console.log(`${'read + parse + format'.padEnd(34)} ${(performance.now() - t0).toFixed(0).padStart(7)} ms`);
  t0 = performance.now();
  const split = splitTrainEval(set.conversations, 0.05, 42);
  console.log(`${'split (numpy-exact permutation)'.padEnd(34)} ${(performance.now() - t0).toFixed(0).padStart(7)} ms`);
  const train = time('render + tokenise (train)', () =>
    split.train.map((c) => tokenizeConversation(tok, c, { maxLength: MAX_LENGTH })).filter((e): e is TokenizedExample => e !== null),
  );
  const stats = time('statistics', () => computeStats(train, { maxLength: MAX_LENGTH, batchSize: 8 }));
  const padded = time('micro-batches, padded (B=8)', () => epochMicroBatches(train, 42, 0, { batchSize: 8, padId: tok.padId }));
  const packed = time('micro-batches, packed (B=8)', () => epochMicroBatches(train, 42, 0, { batchSize: 8, padId: tok.padId, packing: true, maxLength: MAX_LENGTH }));
  const total = performance.now() - total0;
  console.log(`${'total'.padEnd(34)} ${total.toFixed(0).padStart(7)} ms`);
  console.log(
    `train ${train.length} examples, ${stats.tokens} tokens (${(stats.tokens / train.length).toFixed(0)}/example), ${stats.trainedTokens} trained, ` +
      `${stats.truncated} truncated; ${padded.length} padded batches (efficiency ${(100 * stats.paddingEfficiency!).toFixed(1)}%), ` +
      `${packed.length} packed batches; ${((stats.tokens / total) * 1000).toFixed(0)} tokens/s end to end`,
  );
  fs.rmSync(dir, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
