// `npm run demo` (node scripts/demo.mjs): the README's first run on a fresh machine. Trains the tiny built-in
// GPT-2 (samples/tiny-gpt2-chat) on the built-in Dolly-format sample (samples/dolly-sample.jsonl) with
// samples/run.json for about a minute on the CPU, with the progress bar, then answers the seed recipe's test
// prompts with the result (temperature 0.7, top-p 0.9, up to 150 new tokens as the recipe's test_sft.py, fewer when
// the model's context is shorter).
// The tiny model has 1.6 M parameters: expect the answer *format* to be learned, not wisdom.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const sft = join(root, 'bin', 'sft.js');
const config = join(root, 'samples', 'run.json');
const outputDir = resolve(join(root, 'samples'), JSON.parse(readFileSync(config, 'utf8')).output_dir);

// 150 new tokens as the recipe, capped so the prompt still fits the model's context (the tiny model has 128 positions).
const nPositions = JSON.parse(readFileSync(join(root, 'samples', 'tiny-gpt2-chat', 'config.json'), 'utf8')).n_positions ?? 1024;
const maxNewTokens = Math.min(150, nPositions - 32);

const PROMPTS = [
  'What is the capital of France?',
  'Explain photosynthesis in simple terms.',
  'Write a short poem about coding.',
  'What are three tips for learning a new language?',
  'How do I make a peanut butter and jelly sandwich?',
];

function run(args, opts = {}) {
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit', ...opts });
  if (r.status !== 0) {
    console.error(`\ndemo: \`${args.join(' ')}\` failed (exit ${r.status ?? r.signal})`);
    process.exit(r.status ?? 1);
  }
}

if (!existsSync(join(root, 'dist', 'runner.js'))) {
  console.log('building the runner (dist/runner.js)…');
  run([join(root, 'scripts', 'build.mjs')]);
}

console.log(`SFT demo: training samples/tiny-gpt2-chat on samples/dolly-sample.jsonl (${config})\n`);
rmSync(outputDir, { recursive: true, force: true });
const t0 = Date.now();
run([sft, 'train', '--config', config]);
console.log(`\ntrained in ${((Date.now() - t0) / 1000).toFixed(0)} s; model in ${outputDir}\n`);

console.log('='.repeat(60));
console.log('Testing SFT Model');
console.log('='.repeat(60));
for (const prompt of PROMPTS) {
  console.log(`\nUser: ${prompt}`);
  process.stdout.write('Assistant: ');
  run([sft, 'chat', '--model', outputDir, '--prompt', prompt, '--temperature', '0.7', '--top_p', '0.9', '--max_new_tokens', String(maxNewTokens), '--seed', '42']);
  console.log('-'.repeat(60));
}
console.log(`\nChat with it yourself: node bin/sft.js chat --model ${outputDir}`);
