/**
 * `sft download --model ID [--to DIR] [--revision main] [--json]`: fetches a GPT-2-class model from the
 * Hugging Face hub ($HF_ENDPOINT, default https://huggingface.co) into the cache
 * ($SFT_CACHE or ~/.cache/sft-studio/models/<id>) or DIR, with progress and resume. `--json`: the last
 * stdout line is {"dir", "files": {name: bytes}}.
 */
import type { Command } from '../command';
import { parseOptions, required } from '../command';
import { downloadModel, type DownloadProgress } from '../../util/download';

const usage = 'sft download --model ID [--to DIR] [--revision main] [--json]';

function mb(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}

export const command: Command = {
  name: 'download',
  summary: 'Download a GPT-2-class model from the Hugging Face hub (resumable, cached)',
  usage,
  async run(argv) {
    const { values } = parseOptions(argv, { model: { type: 'string' }, to: { type: 'string' }, revision: { type: 'string' }, json: { type: 'boolean' } }, usage);
    const id = required(values.model, 'model', usage);
    const tty = process.stderr.isTTY === true;
    const files: Record<string, number> = {};
    let lastDraw = 0;
    const progress = (file: string, p: DownloadProgress) => {
      const now = Date.now();
      if (!tty || now - lastDraw < 100) return;
      lastDraw = now;
      const pct = p.total ? ` ${((100 * p.received) / p.total).toFixed(0)}%` : '';
      process.stderr.write(`\r\x1b[K${file}: ${mb(p.received)}${p.total ? ` / ${mb(p.total)}` : ''}${pct}`);
    };
    const dir = await downloadModel(id, {
      revision: values.revision,
      to: values.to,
      onProgress: progress,
      onFile: (file, outcome, bytes) => {
        if (tty) process.stderr.write('\r\x1b[K');
        if (outcome !== 'absent') files[file] = bytes;
        const line = outcome === 'absent' ? `${file}: not in the repository (optional)` : `${file}: ${mb(bytes)} ${outcome}`;
        (values.json ? process.stderr : process.stdout).write(`${line}\n`);
      },
    });
    console.log(`model ready in ${dir}`);
    if (values.json) console.log(JSON.stringify({ dir, files }));
    return 0;
  },
};
