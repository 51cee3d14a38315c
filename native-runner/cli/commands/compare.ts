/**
 * `sft compare --base DIR --model DIR [--model DIR2 …] --prompts FILE [--seed 42] [--temperature 0.7
 *  --top_p 1 --top_k 50 --max_new_tokens 100] [--device cpu|cuda] [--json]`
 * The seed's compare_models.py: per prompt the base model's continuation of the raw prompt beside each SFT
 * model's answer to the chat-templated prompt, all with the same sampling seed. Several --model give a grid of
 * checkpoints × prompts. --json: last line {"seed","base","models":[…],"results":[{"prompt","base",
 * "answers":[…]}]} (answers in --model order).
 */
import type { Command } from '../command';
import { parseOptions, required } from '../command';
import { chatWith, holdInferenceModel, openInferenceModel, type InferenceModel } from '../../infer/service';
import { deviceArg, println, processIO, readPromptsFile, SAMPLING_OPTIONS, samplingArgs, type CommandIO, type SamplingArgs } from '../../infer/cliSupport';
import { SftError } from '../../util/errors';

const USAGE =
  'sft compare --base DIR --model DIR [--model DIR2 ...] --prompts FILE [--seed 42] [--temperature 0.7] [--top_p 1.0] [--top_k 50] [--max_new_tokens 100] [--device cpu|cuda] [--json]';

export async function runCompare(argv: string[], io: CommandIO = processIO()): Promise<number> {
  const { values } = parseOptions(
    argv,
    { base: { type: 'string' }, model: { type: 'string', multiple: true }, prompts: { type: 'string' }, json: { type: 'boolean' }, ...SAMPLING_OPTIONS },
    USAGE,
  );
  const baseDir = required(values.base, 'base', USAGE);
  const modelDirs = values.model ?? [];
  if (modelDirs.length === 0) throw new SftError(`--model is required (repeat it for a grid of checkpoints)\nusage: ${USAGE}`);
  const prompts = readPromptsFile(required(values.prompts, 'prompts', USAGE));
  // compare_models.py: temperature 0.7, do_sample, max_new_tokens 100, generate()'s top_k 50 and top_p 1.
  const s = samplingArgs(values, { temperature: 0.7, top_p: 1, top_k: 50, max_new_tokens: 100, seed: 42 });
  const device = deviceArg(values.device);
  // Every model is held until the last prompt, so opening the others (more than the cache holds) closes none.
  const releases: (() => void)[] = [];
  const open = async (dir: string) => {
    const m = await openInferenceModel(dir, device);
    releases.push(holdInferenceModel(m));
    return m;
  };
  try {
    return await compareModels(open, baseDir, modelDirs, prompts, s, Boolean(values.json), io);
  } finally {
    for (const release of releases) release();
  }
}

async function compareModels(
  open: (dir: string) => Promise<InferenceModel>,
  baseDir: string,
  modelDirs: string[],
  prompts: string[],
  s: SamplingArgs,
  json: boolean,
  io: CommandIO,
): Promise<number> {
  const base = await open(baseDir);
  const models: InferenceModel[] = [];
  for (const d of modelDirs) models.push(await open(d));
  const answer = async (m: InferenceModel, prompt: string, mode: 'raw' | 'chat') =>
    (
      await chatWith(m, {
        messages: [{ role: 'user', content: prompt }],
        mode: mode === 'chat' && m.defaultMode === 'raw' ? 'raw' : mode,
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        repetition_penalty: s.repetition_penalty,
        max_new_tokens: s.max_new_tokens,
        seed: s.seed,
      })
    ).text;
  for (const m of models) if (m.defaultMode === 'raw') println(io.stderr, `note: ${m.dir} has no role tokens; it is prompted with the raw text`);
  const results: { prompt: string; base: string; answers: string[] }[] = [];
  const rule = '='.repeat(70);
  for (const prompt of prompts) {
    const baseText = await answer(base, prompt, 'raw');
    const answers: string[] = [];
    for (const m of models) answers.push(await answer(m, prompt, 'chat'));
    results.push({ prompt, base: baseText, answers });
    println(io.stdout, `\n${rule}\nPROMPT: ${prompt}\n${rule}`);
    println(io.stdout, `\n[BASE MODEL] ${base.dir}:\n${baseText}`);
    models.forEach((m, i) => println(io.stdout, `\n[SFT MODEL${models.length > 1 ? ` ${i + 1}` : ''}] ${m.dir}:\n${answers[i]}`));
  }
  if (json) println(io.stdout, JSON.stringify({ seed: s.seed, base: base.dir, models: models.map((m) => m.dir), results }));
  return 0;
}

export const command: Command = {
  name: 'compare',
  summary: 'Base model vs SFT model(s) side by side on a prompts file, same sampling seed',
  usage: USAGE,
  run: (argv) => runCompare(argv),
};
