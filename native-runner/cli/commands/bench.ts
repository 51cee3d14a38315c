/**
 * `sft bench --model DIR --task NAME --data FILE [--limit N] [--batch_size 8] [--device cpu|cuda] [--json]`
 * Zero-shot lm-evaluation-harness tasks from local dataset files (infer/benchmarks.ts): hellaswag, arc_easy,
 * arc_challenge, piqa, winogrande, truthfulqa_mc2. Prints each metric with its standard error; --json: last
 * line {"task","n","acc","acc_stderr",…} (acc_norm for hellaswag/arc/piqa, mc2 for truthfulqa_mc2).
 */
import { resolve } from 'node:path';
import type { Command } from '../command';
import { parseOptions, required } from '../command';
import { benchmarkOfFile, isTaskName, TASKS } from '../../infer/benchmarks';
import { deviceArg, fmt, positiveInt, println, processIO, isTTY, type CommandIO } from '../../infer/cliSupport';
import { SftError } from '../../util/errors';

const USAGE = `sft bench --model DIR --task ${TASKS.join('|')} --data FILE [--limit N] [--batch_size 8] [--device cpu|cuda] [--json]`;

export async function runBench(argv: string[], io: CommandIO = processIO()): Promise<number> {
  const { values } = parseOptions(
    argv,
    { model: { type: 'string' }, task: { type: 'string' }, data: { type: 'string' }, limit: { type: 'string' }, batch_size: { type: 'string' }, device: { type: 'string' }, json: { type: 'boolean' } },
    USAGE,
  );
  const dir = required(values.model, 'model', USAGE);
  const task = required(values.task, 'task', USAGE);
  if (!isTaskName(task)) throw new SftError(`--task must be one of ${TASKS.join(', ')}, got "${task}"`);
  const data = required(values.data, 'data', USAGE);
  const limit = positiveInt(values.limit, 'limit');
  const batchSize = positiveInt(values.batch_size, 'batch_size', 8);
  const t0 = performance.now();
  const r = await benchmarkOfFile(dir, task, data, {
    device: deviceArg(values.device),
    limit,
    batchSize,
    onProgress: (d, n) => {
      if (isTTY(io.stderr)) io.stderr.write(`\rrequests ${d}/${n}${d === n ? '\n' : ''}`);
    },
  });
  println(io.stdout, `${task}: ${r.n} documents, ${resolve(dir)} (${fmt((performance.now() - t0) / 1000, 1)} s)`);
  const flat: Record<string, unknown> = { task, n: r.n };
  for (const [name, v] of Object.entries(r.metrics)) {
    println(io.stdout, `  ${name.padEnd(9)} ${fmt(v.value)}${v.stderr === null ? '' : ` ± ${fmt(v.stderr)}`}`);
    flat[name] = v.value;
    flat[`${name}_stderr`] = v.stderr;
  }
  if (values.json) println(io.stdout, JSON.stringify(flat));
  return 0;
}

export const command: Command = {
  name: 'bench',
  summary: 'lm-eval benchmarks (hellaswag, arc, piqa, winogrande, truthfulqa_mc2) from local files',
  usage: USAGE,
  run: (argv) => runBench(argv),
};
