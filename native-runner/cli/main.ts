/**
 * `sft` — the runner's command line. Every capability of the extension is reachable here headless.
 * Commands live one per file in ./commands and are registered below.
 */
import type { Command } from './command';
import { describeError, SftError } from '../util/errors';
import { command as inspect } from './commands/inspect';
import { command as preview } from './commands/preview';
import { command as train } from './commands/train';
import { command as evalCmd } from './commands/eval';
import { command as download } from './commands/download';
import { command as chat } from './commands/chat';
import { command as compare } from './commands/compare';
import { command as perplexity } from './commands/perplexity';
import { command as score } from './commands/score';
import { command as bench } from './commands/bench';
import { command as serve } from './commands/serve';
import { command as doctor } from './commands/doctor';

export const COMMANDS: Command[] = [inspect, preview, train, evalCmd, download, chat, compare, perplexity, score, bench, serve, doctor];

function help(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length));
  return ['usage: sft <command> [options]', '', 'commands:', ...COMMANDS.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`), '', 'sft <command> --help shows its options.'].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(help());
    return name ? 0 : 1;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    console.error(`error: unknown command "${name}"\n${help()}`);
    return 1;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(`usage: ${cmd.usage}\n\n${cmd.summary}`);
    return 0;
  }
  try {
    return await cmd.run(rest);
  } catch (e) {
    if (e instanceof SftError) {
      console.error(`error: ${e.message}`);
    } else {
      console.error(`error: ${describeError(e)}`);
      if (process.env.SFT_DEBUG) console.error(e);
    }
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      console.error(`error: ${describeError(e)}`);
      process.exitCode = 1;
    },
  );
}
