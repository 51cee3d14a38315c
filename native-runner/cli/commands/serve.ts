/**
 * `sft serve`: the JSON-lines process protocol (protocol/runner.ts) over stdio, for the extension host.
 * stdout carries protocol lines only — console.log/info/debug are routed to stderr in this mode — and
 * the process exits when stdin closes or after a `shutdown` request (a running training stops at its
 * next run boundary first).
 */
import type { Command } from '../command';
import { parseOptions } from '../command';
import { RunnerServer } from '../../train/server';
import { defaultDeps, defaultServices } from '../../train/runtime';
import { describeError } from '../../util/errors';

const usage = 'sft serve';

export const command: Command = {
  name: 'serve',
  summary: 'Speak the JSON-lines process protocol over stdio (used by the extension)',
  usage,
  async run(argv) {
    parseOptions(argv, {}, usage);
    // Nothing but protocol lines on stdout.
    const toStderr = (...args: unknown[]) => console.error(...args);
    console.log = toStderr;
    console.info = toStderr;
    console.debug = toStderr;
    console.warn = toStderr;
    const out = process.stdout;
    return new Promise<number>((resolve) => {
      const server = new RunnerServer({
        write: (line) => out.write(line),
        deps: defaultDeps(),
        services: defaultServices(),
        onExit: (code) => {
          process.stdin.destroy();
          // let stdout drain, then finish
          if (out.writableNeedDrain) out.once('drain', () => resolve(code));
          else resolve(code);
        },
      });
      // A bug must not kill the process silently: report it as a protocol error, then exit non-zero.
      const fatal = (e: unknown) => {
        try {
          server.event('error', { message: `runner crashed: ${describeError(e)}`, stderrTail: e instanceof Error ? (e.stack ?? '').split('\n').slice(0, 6).join('\n') : undefined });
        } finally {
          console.error(e);
          process.exit(1);
        }
      };
      process.on('uncaughtException', fatal);
      process.on('unhandledRejection', fatal);
      // The host went away (EPIPE): wind down as if stdin closed.
      out.on('error', () => server.end());
      server.start();
      process.stdin.on('data', (chunk: Buffer) => server.push(chunk));
      process.stdin.on('end', () => server.end());
      process.stdin.on('error', () => server.end());
    });
  },
};
