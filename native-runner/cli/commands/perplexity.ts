/**
 * `sft perplexity --model DIR --file TEXT [--window N] [--stride S] [--batch_size 4] [--device cpu|cuda] [--json]`
 * Sliding-window perplexity of a UTF-8 text file (infer/perplexity.ts): windows of N tokens (default
 * n_positions) every S tokens (default N/2), each token after the first predicted once. --json: last line
 * {"tokens","predicted","nll_sum","ppl"}.
 */
import type { Command } from '../command';
import { parseOptions, required } from '../command';
import { openInferenceModel, perplexityOfText } from '../../infer/service';
import { deviceArg, fmt, positiveInt, println, processIO, isTTY, type CommandIO } from '../../infer/cliSupport';
import { readTextFile } from '../../util/textFile';

const USAGE = 'sft perplexity --model DIR --file TEXT [--window N] [--stride S] [--batch_size 4] [--device cpu|cuda] [--json]';

export async function runPerplexity(argv: string[], io: CommandIO = processIO()): Promise<number> {
  const { values } = parseOptions(
    argv,
    { model: { type: 'string' }, file: { type: 'string' }, window: { type: 'string' }, stride: { type: 'string' }, batch_size: { type: 'string' }, device: { type: 'string' }, json: { type: 'boolean' } },
    USAGE,
  );
  const dir = required(values.model, 'model', USAGE);
  const file = required(values.file, 'file', USAGE);
  const text = readTextFile(file);
  const m = await openInferenceModel(dir, deviceArg(values.device));
  const window = positiveInt(values.window, 'window', m.lm.nPositions)!;
  const stride = positiveInt(values.stride, 'stride', Math.max(1, Math.floor(window / 2)))!;
  const t0 = performance.now();
  const r = await perplexityOfText(m, text, {
    window,
    stride,
    batchSize: positiveInt(values.batch_size, 'batch_size', 4),
    onProgress: (d, n) => {
      if (n > 1 && isTTY(io.stderr)) io.stderr.write(`\rwindows ${d}/${n}${d === n ? '\n' : ''}`);
    },
  });
  const s = (performance.now() - t0) / 1000;
  println(io.stdout, `model      ${m.dir}`);
  println(io.stdout, `file       ${file}`);
  println(io.stdout, `tokens     ${r.tokens} (${r.predicted} predicted, window ${window}, stride ${stride}, ${r.windows} windows, ${fmt(s, 1)} s)`);
  println(io.stdout, `nll        ${fmt(r.nllSum / r.predicted)} per token`);
  println(io.stdout, `perplexity ${fmt(r.ppl, 3)}`);
  if (values.json) println(io.stdout, JSON.stringify({ tokens: r.tokens, predicted: r.predicted, nll_sum: r.nllSum, ppl: r.ppl }));
  return 0;
}

export const command: Command = {
  name: 'perplexity',
  summary: 'Sliding-window perplexity of a text file',
  usage: USAGE,
  run: (argv) => runPerplexity(argv),
};
