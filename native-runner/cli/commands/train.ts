/**
 * `sft train --config run.json [--resume [CHECKPOINT_DIR]] [--json-events]`: fine-tunes as run.json says
 * (TRL SFTConfig keys; train/config.ts). On a terminal a progress bar (step, loss, tokens/s, ETA) is
 * redrawn in place; otherwise one plain line per logged record. `--json-events` switches stdout to the
 * process protocol's event lines only (log, progress, metrics, state, error). Ctrl-C stops at the next
 * run boundary and saves a checkpoint (a second Ctrl-C exits at once).
 */
import type { Command } from '../command';
import { parseOptions, required } from '../command';
import { encodeJsonLine } from '../../../protocol/jsonLines';
import { checkEvent, makeEvent, type MetricsRecord, type RunnerEventName, type RunnerEvents } from '../../../protocol/runner';
import { readRunConfig } from '../../train/config';
import { defaultDeps } from '../../train/runtime';
import { Trainer, type ProgressInfo, type TrainerListener } from '../../train/trainer';
import { describeError, SftError } from '../../util/errors';

const usage = 'sft train --config run.json [--resume [CHECKPOINT_DIR]] [--json-events]';

/** Splits `--resume [DIR]` (optional value) out of argv. */
export function takeResume(argv: string[]): { rest: string[]; resume: boolean | string | undefined } {
  const rest: string[] = [];
  let resume: boolean | string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--resume') {
      const next = argv[i + 1];
      if (next !== undefined && !next.startsWith('--')) {
        resume = next;
        i++;
      } else resume = true;
    } else if (a.startsWith('--resume=')) resume = a.slice(9) || true;
    else rest.push(a);
  }
  return { rest, resume };
}

export function formatDuration(s: number | null): string {
  if (s === null || !Number.isFinite(s)) return '--:--';
  const t = Math.max(0, Math.round(s));
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = t % 60;
  const mm = String(m).padStart(2, '0');
  const ss = String(sec).padStart(2, '0');
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** One progress-bar line (no newline), fitted to `width` columns. */
export function progressLine(p: ProgressInfo, width = 100): string {
  const pct = p.total > 0 ? p.step / p.total : 0;
  const info = ` ${p.step}/${p.total} loss ${p.loss === null ? '-' : p.loss.toFixed(4)} lr ${p.lr.toExponential(2)} ${Math.round(p.tokens_per_second)} tok/s ETA ${formatDuration(p.eta_s)}`;
  const barWidth = Math.max(10, Math.min(40, width - info.length - 8));
  const filled = Math.round(pct * barWidth);
  return `${(pct * 100).toFixed(0).padStart(3)}% [${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}]${info}`;
}

export function recordLine(r: MetricsRecord, total: number): string {
  switch (r.type) {
    case 'train':
      return `step ${r.step}/${total}  epoch ${r.epoch.toFixed(2)}  loss ${r.loss.toFixed(4)}  grad_norm ${r.grad_norm.toFixed(3)}  lr ${r.learning_rate.toExponential(3)}  ${Math.round(r.tokens_per_second)} tok/s  ${r.elapsed_s.toFixed(1)}s`;
    case 'eval':
      return `eval @ step ${r.step}: eval_loss ${r.eval_loss.toFixed(4)} (${r.eval_tokens} tokens)`;
    case 'save':
      return `saved ${r.path}`;
  }
}

export const command: Command = {
  name: 'train',
  summary: 'Fine-tune a model from a run.json (TRL SFTConfig keys)',
  usage,
  async run(argv) {
    const { rest, resume } = takeResume(argv);
    const { values } = parseOptions(rest, { config: { type: 'string' }, 'json-events': { type: 'boolean' } }, usage);
    const configFile = required(values.config, 'config', usage);
    const json = values['json-events'] === true;
    const out = process.stdout;
    const tty = !json && out.isTTY === true;
    if (json) {
      const toStderr = (...args: unknown[]) => console.error(...args);
      console.log = toStderr;
      console.info = toStderr;
    }
    const emit = <E extends RunnerEventName>(name: E, data: RunnerEvents[E]) => {
      if (checkEvent(name, data) === null) out.write(encodeJsonLine(makeEvent(name, data)));
    };
    const emitError = (e: unknown) => {
      if (json) emit('error', { message: describeError(e), where: e instanceof SftError ? e.where : undefined });
    };
    let parsed: ReturnType<typeof readRunConfig>;
    try {
      parsed = readRunConfig(configFile);
    } catch (e) {
      emitError(e);
      throw e;
    }
    let barShown = false;
    const clearBar = () => {
      if (barShown) out.write('\r\x1b[K');
      barShown = false;
    };
    let total = 0;
    const listener: TrainerListener = json
      ? {
          log: (level, message) => emit('log', { level, message }),
          metrics: (r) => emit('metrics', r),
          progress: (p) => emit('progress', p),
          state: (status, message) => emit('state', message === undefined ? { status, run_dir: parsed.config.output_dir } : { status, run_dir: parsed.config.output_dir, message }),
        }
      : {
          log: (level, message) => {
            clearBar();
            (level === 'warn' || level === 'error' ? process.stderr : out).write(`${level === 'warn' ? 'warning: ' : ''}${message}\n`);
          },
          metrics: (r) => {
            clearBar();
            out.write(`${recordLine(r, total)}\n`);
          },
          progress: (p) => {
            if (!tty) return;
            out.write(`\r\x1b[K${progressLine(p, out.columns ?? 100)}`);
            barShown = true;
          },
          state: (status, message) => {
            if (message && status !== 'failed') {
              clearBar();
              out.write(`${message}\n`);
            }
          },
        };
    let trainer: Trainer;
    try {
      trainer = await Trainer.prepare(parsed.config, defaultDeps(), { resume, listener, notes: parsed.notes });
    } catch (e) {
      emitError(e);
      throw e;
    }
    total = trainer.totalSteps;
    let interrupts = 0;
    // Ctrl-C (SIGINT) or SIGTERM (kill, a job scheduler): stop at the next run boundary, save, release the
    // output_dir lock; a second signal quits at once (the lock's exit hook still releases it).
    const onSigint = () => {
      interrupts++;
      if (interrupts > 1) process.exit(130);
      listener.log?.('warn', 'stopping at the next step boundary and saving a checkpoint (Ctrl-C again to quit now)');
      trainer.requestStop(true);
    };
    process.on('SIGINT', onSigint);
    process.on('SIGTERM', onSigint);
    try {
      const outcome = await trainer.run();
      clearBar();
      if (!json) {
        out.write(outcome.status === 'finished' ? `done: ${outcome.step} steps, model in ${outcome.outputDir}\n` : `stopped at step ${outcome.step}; resume with: sft train --config ${configFile} --resume\n`);
      }
      return 0;
    } catch (e) {
      clearBar();
      emitError(e);
      throw e;
    } finally {
      process.off('SIGINT', onSigint);
      process.off('SIGTERM', onSigint);
    }
  },
};
