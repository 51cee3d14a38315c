/**
 * `sft score --model DIR --requests FILE.jsonl [--batch_size 8] [--device cpu|cuda] [--json]`
 * lm-evaluation-harness log-likelihood requests, one {"context","continuation"} per line (infer/loglik.ts).
 * Output: one line {"loglik","is_greedy","n_tokens"} per request, in order (JSON Lines), with or without
 * --json (accepted like the other commands' --json; stdout holds nothing but these lines either way).
 */
import type { Command } from '../command';
import { parseOptions, required } from '../command';
import { openInferenceModel } from '../../infer/service';
import { CausalLMScorer, type LoglikRequest } from '../../infer/loglik';
import { deviceArg, positiveInt, println, processIO, isTTY, type CommandIO } from '../../infer/cliSupport';
import { SftError } from '../../util/errors';
import { readTextFile } from '../../util/textFile';

const USAGE = 'sft score --model DIR --requests FILE.jsonl [--batch_size 8] [--device cpu|cuda] [--json]';

/** Reads {"context","continuation"} lines; errors name file:line. */
export function readLoglikRequests(file: string): LoglikRequest[] {
  const text = readTextFile(file);
  const out: LoglikRequest[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (!line.trim()) return;
    const where = `${file}:${i + 1}`;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      throw new SftError(`invalid JSON: ${(e as Error).message}`, where);
    }
    const o = v as Record<string, unknown>;
    if (!o || typeof o !== 'object' || Array.isArray(o)) throw new SftError('expected an object {"context","continuation"}', where);
    if (typeof o.context !== 'string') throw new SftError('"context" must be a string', where);
    if (typeof o.continuation !== 'string' || o.continuation === '') throw new SftError('"continuation" must be a non-empty string', where);
    out.push({ context: o.context, continuation: o.continuation });
  });
  if (out.length === 0) throw new SftError('no requests in the file', file);
  return out;
}

export async function runScore(argv: string[], io: CommandIO = processIO()): Promise<number> {
  const { values } = parseOptions(argv, { model: { type: 'string' }, requests: { type: 'string' }, batch_size: { type: 'string' }, device: { type: 'string' }, json: { type: 'boolean' } }, USAGE);
  const dir = required(values.model, 'model', USAGE);
  const requests = readLoglikRequests(required(values.requests, 'requests', USAGE));
  const m = await openInferenceModel(dir, deviceArg(values.device));
  const scorer = new CausalLMScorer(m.lm, m.model.tokenizer, positiveInt(values.batch_size, 'batch_size', 8));
  const results = await scorer.loglikelihood(requests, {
    onProgress: (d, n) => {
      if (n > 8 && isTTY(io.stderr)) io.stderr.write(`\rscored ${d}/${n}${d === n ? '\n' : ''}`);
    },
  });
  const objs = results.map((r) => ({ loglik: r.loglik, is_greedy: r.isGreedy, n_tokens: r.nTokens }));
  for (const o of objs) println(io.stdout, JSON.stringify(o));
  return 0;
}

export const command: Command = {
  name: 'score',
  summary: 'Log-likelihoods of lm-eval style {context, continuation} requests',
  usage: USAGE,
  run: (argv) => runScore(argv),
};
