/**
 * The contract of one `sft <command>`: a module in cli/commands/ exports `command: Command`.
 * `run` gets the arguments after the command name and returns the exit code; it throws SftError for
 * bad input (main prints `error: <message>` and exits 1). Commands with `--json` print human text first
 * and exactly one JSON object as the last stdout line.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { SftError } from '../util/errors';

export interface Command {
  name: string;
  summary: string;
  usage: string;
  run(argv: string[]): Promise<number>;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** Strict `--key value` / `--flag` parsing; unknown options are an SftError naming the option. */
export function parseOptions<O extends Options>(argv: string[], options: O, usage: string) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false });
  } catch (e) {
    throw new SftError(`${(e as Error).message}\nusage: ${usage}`);
  }
}

/** Parses a number option, naming it on failure. */
export function numberOption(value: string | undefined, name: string, fallback: number): number;
export function numberOption(value: string | undefined, name: string, fallback?: number): number | undefined;
export function numberOption(value: string | undefined, name: string, fallback?: number): number | undefined {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new SftError(`--${name} must be a number, got "${value}"`);
  return n;
}

/** Parses true/false/1/0/yes/no. */
export function boolOption(value: string | undefined, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  const v = value.toLowerCase();
  if (['true', '1', 'yes'].includes(v)) return true;
  if (['false', '0', 'no'].includes(v)) return false;
  throw new SftError(`--${name} must be true or false, got "${value}"`);
}

/** Requires an option to be present. */
export function required(value: string | undefined, name: string, usage: string): string {
  if (value === undefined || value === '') throw new SftError(`--${name} is required\nusage: ${usage}`);
  return value;
}
