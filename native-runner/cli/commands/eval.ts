/**
 * `sft eval --model DIR --dataset FILE --dataset_format FMT [--max_length N] [--assistant_only_loss true|false]
 * [--per_device_eval_batch_size N] [--device cpu|cuda] [--json]`: eval loss = Σ NLL / Σ trained tokens over
 * the whole file (no shuffling, no split), as training's eval computes it (train/evaluate.ts).
 * With --json the last stdout line is {"eval_loss", "eval_tokens"}.
 */
import type { Command } from '../command';
import { boolOption, numberOption, parseOptions, required } from '../command';
import { DATASET_FORMATS, isFormatChoice } from '../../data/formats';
import { checkMaxLength } from '../../data/tokenize';
import { evalModelOnFile } from '../../train/evaluate';
import { SftError } from '../../util/errors';

const usage =
  'sft eval --model DIR --dataset FILE --dataset_format FMT [--max_length N] [--assistant_only_loss true|false] [--per_device_eval_batch_size N] [--device cpu|cuda] [--json]';

function positiveInt(v: string | undefined, name: string): number | undefined {
  const n = numberOption(v, name);
  if (n !== undefined && !(Number.isInteger(n) && n >= 1)) throw new SftError(`--${name} must be a positive integer, got "${v}"`);
  return n;
}

export const command: Command = {
  name: 'eval',
  summary: 'Eval loss of a model on a dataset file (Σ NLL / Σ trained tokens)',
  usage,
  async run(argv) {
    const { values } = parseOptions(
      argv,
      {
        model: { type: 'string' },
        dataset: { type: 'string' },
        dataset_format: { type: 'string' },
        max_length: { type: 'string' },
        assistant_only_loss: { type: 'string' },
        per_device_eval_batch_size: { type: 'string' },
        device: { type: 'string' },
        json: { type: 'boolean' },
      },
      usage,
    );
    const model = required(values.model, 'model', usage);
    const dataset = required(values.dataset, 'dataset', usage);
    const format = values.dataset_format ?? 'auto';
    if (!isFormatChoice(format)) throw new SftError(`--dataset_format must be auto or one of ${DATASET_FORMATS.join(', ')}, got "${format}"`);
    const device = values.device ?? 'cpu';
    if (device !== 'cpu' && device !== 'cuda') throw new SftError(`--device must be cpu or cuda, got "${device}"`);
    // The shared max_length rule (protocol/trainingOptions maxLengthProblem), naming the flag as `sft preview` does.
    const maxLength = numberOption(values.max_length, 'max_length');
    if (maxLength !== undefined) checkMaxLength(maxLength, '--max_length');
    const t0 = performance.now();
    const r = await evalModelOnFile({
      model,
      dataset,
      dataset_format: format,
      max_length: maxLength,
      assistant_only_loss: boolOption(values.assistant_only_loss, 'assistant_only_loss', true),
      per_device_eval_batch_size: positiveInt(values.per_device_eval_batch_size, 'per_device_eval_batch_size'),
      device,
      onProgress: (d, n) => {
        if (process.stderr.isTTY) process.stderr.write(`\r\x1b[Kbatch ${d}/${n}`);
      },
    });
    if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
    console.log(`model       ${model}`);
    console.log(`dataset     ${dataset} (${r.examples} examples)`);
    console.log(`eval_loss   ${r.eval_loss.toFixed(6)} over ${r.eval_tokens} trained tokens (ppl ${Math.exp(r.eval_loss).toFixed(3)}, ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    if (values.json) console.log(JSON.stringify({ eval_loss: r.eval_loss, eval_tokens: r.eval_tokens }));
    return 0;
  },
};
