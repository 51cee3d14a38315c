/**
 * `sft preview`: shows what training on a dataset file would see. Prints the first n examples as the
 * recipe's prepare_dataset.py does (`--- Example i ---` + rendered text), then their tokens with the
 * trained ones marked, the whole file's statistics and its bad lines (preview always skips and lists
 * them). With --json the last stdout line is
 *   {"examples":[{"text","input_ids","trained"}],"stats":{"examples","tokens","trained_tokens",
 *    "truncated","no_trained_tokens"},"bad_lines":[{"line","reason"}],"format":…}
 * The tokenizer comes from --model (default: the package's samples/tiny-gpt2-chat).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { boolOption, numberOption, parseOptions, required, type Command } from '../command';
import { SftError } from '../../util/errors';
import { loadTokenizer } from '../../model/tokenizer';
import { isFormatChoice, DATASET_FORMATS, type FormatChoice } from '../../data/formats';
import { previewDataset, type PreviewExampleJson } from '../../data/preview';
import { checkMaxLength } from '../../data/tokenize';
import { formatStats } from '../../data/stats';
import type { HubProgress } from '../../data/hub';

const USAGE =
  'sft preview --dataset FILE [--dataset_format auto|' +
  DATASET_FORMATS.join('|') +
  '] [--model DIR] [--max_length N] [--assistant_only_loss true|false] [--n N] [--offset N] [--split all|train|eval [--test_size F] [--seed N]] [--oasst_paths best|all] [--oasst_lang CODE] [--json]';

/** The folder holding package.json of sft-studio (works from the bundle in dist/ and from sources). */
export function packageRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 8; i++) {
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        if ((JSON.parse(fs.readFileSync(pj, 'utf8')) as { name?: string }).name === 'sft-studio') return dir;
      } catch {
        // keep looking
      }
    }
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return process.cwd();
}

export function defaultPreviewModel(): string {
  return path.join(packageRoot(), 'samples', 'tiny-gpt2-chat');
}

/** The tokens of an example with trained runs wrapped in [[ ]] (special tokens and newlines kept visible). */
function markedTokens(ex: PreviewExampleJson): string {
  const pieces = ex.tokens ?? ex.input_ids.map((id) => `#${id}`);
  let out = '';
  let inTrained = false;
  pieces.forEach((p, i) => {
    const t = ex.trained[i] === 1;
    if (t && !inTrained) out += '[[';
    if (!t && inTrained) out += ']]';
    inTrained = t;
    out += p;
  });
  if (inTrained) out += ']]';
  return out;
}

export const command: Command = {
  name: 'preview',
  summary: 'Render and tokenise a dataset file and show what will be trained',
  usage: USAGE,
  async run(argv) {
    const { values } = parseOptions(
      argv,
      {
        dataset: { type: 'string' },
        dataset_format: { type: 'string' },
        model: { type: 'string' },
        max_length: { type: 'string' },
        assistant_only_loss: { type: 'string' },
        n: { type: 'string' },
        offset: { type: 'string' },
        split: { type: 'string' },
        test_size: { type: 'string' },
        seed: { type: 'string' },
        oasst_paths: { type: 'string' },
        oasst_lang: { type: 'string' },
        json: { type: 'boolean' },
      },
      USAGE,
    );
    const dataset = required(values.dataset, 'dataset', USAGE);
    const format = values.dataset_format ?? 'auto';
    if (!isFormatChoice(format)) throw new SftError(`--dataset_format must be auto or one of ${DATASET_FORMATS.join(', ')}, got "${format}"`);
    const maxLength = numberOption(values.max_length, 'max_length', 512);
    checkMaxLength(maxLength, '--max_length');
    const n = numberOption(values.n, 'n', 3);
    const offset = numberOption(values.offset, 'offset', 0);
    if (!Number.isInteger(n) || n < 0) throw new SftError(`--n must be a non-negative integer, got ${values.n}`);
    if (!Number.isInteger(offset) || offset < 0) throw new SftError(`--offset must be a non-negative integer, got ${values.offset}`);
    const oasstPaths = values.oasst_paths ?? 'best';
    if (oasstPaths !== 'best' && oasstPaths !== 'all') throw new SftError(`--oasst_paths must be best or all, got "${oasstPaths}"`);
    const split = values.split ?? 'all';
    if (split !== 'all' && split !== 'train' && split !== 'eval') throw new SftError(`--split must be all, train or eval, got "${split}"`);
    const testSize = numberOption(values.test_size, 'test_size', 0.05);
    const seed = numberOption(values.seed, 'seed', 42);
    const aol = boolOption(values.assistant_only_loss, 'assistant_only_loss', true);
    const modelDir = values.model ? path.resolve(values.model) : defaultPreviewModel();
    if (!fs.existsSync(modelDir)) throw new SftError(`model folder not found: ${values.model ?? modelDir}`, '--model');
    const tokenizer = loadTokenizer(modelDir);

    const r = await previewDataset({
      dataset,
      dataset_format: format as FormatChoice,
      tokenizer,
      tokenizerKey: modelDir,
      max_length: maxLength,
      assistant_only_loss: aol,
      offset,
      limit: n,
      oasst_paths: oasstPaths,
      oasst_lang: values.oasst_lang,
      split,
      test_size: testSize,
      seed,
      maxBadLines: values.json ? 1000 : 20,
      onProgress: (() => {
        let shown = -1;
        return (p: HubProgress) => {
          const pct = p.total ? Math.floor((100 * p.received) / p.total) : -1;
          if (pct === shown) return;
          shown = pct;
          process.stderr.write(`downloading ${p.id} ${p.file}: ${pct >= 0 ? `${pct}%` : `${(p.received / 1e6).toFixed(1)} MB`}\r`);
          if (p.total && p.received >= p.total) process.stderr.write('\n');
        };
      })(),
    });

    const out: string[] = [];
    const part = split === 'all' ? '' : ` in the ${split} split (test_size ${testSize}, seed ${seed})`;
    out.push(`dataset: ${dataset} (format ${r.format_used}${r.detected ? ', detected by auto' : ''}; ${r.total} examples${part}; tokenizer ${modelDir})`);
    for (const ex of r.examples) {
      out.push('', `--- Example ${ex.index + 1} ---`, ex.text);
      const trainedN = ex.trained.reduce<number>((s, t) => s + t, 0);
      out.push(
        '',
        `tokens: ${ex.input_ids.length}${ex.truncated ? ` (truncated from ${ex.full_length})` : ''}, trained: ${trainedN}  — trained tokens are inside [[ ]]:`,
        markedTokens(ex),
        `ids: ${ex.input_ids.map((id, i) => (ex.trained[i] ? `*${id}` : String(id))).join(' ')}`,
      );
    }
    out.push('', 'statistics (whole file):', ...formatStats(r.detail).map((l) => `  ${l}`));
    if (r.bad_line_count > 0) {
      out.push('', `bad lines: ${r.bad_line_count} (skipped)`);
      for (const b of r.bad_lines.slice(0, 20)) out.push(`  ${b.file}:${b.line}: ${b.reason}`);
      if (r.bad_line_count > 20) out.push(`  … and ${r.bad_line_count - 20} more`);
    }
    console.log(out.join('\n'));
    if (values.json) {
      const json = {
        format: r.format_used,
        examples: r.examples.map((e) => ({ text: e.text, input_ids: e.input_ids, trained: e.trained })),
        stats: {
          examples: r.stats.examples,
          tokens: r.stats.tokens,
          trained_tokens: r.stats.trained_tokens,
          truncated: r.stats.truncated,
          no_trained_tokens: r.stats.no_trained_tokens,
          skipped: r.stats.skipped ?? 0,
        },
        bad_lines: r.bad_lines.map((b) => ({ line: b.line, reason: b.reason })),
        bad_line_count: r.bad_line_count,
      };
      console.log(JSON.stringify(json));
    }
    return 0;
  },
};
