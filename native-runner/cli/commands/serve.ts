import type { Command } from '../command';
import { SftError } from '../../util/errors';

// Placeholder registered so the CLI builds; issue #5 implements it.
export const command: Command = {
  name: 'serve',
  summary: 'Speak the JSON-lines process protocol over stdio (used by the extension)',
  usage: 'sft serve',
  async run() {
    throw new SftError('sft serve is not available in this build yet');
  },
};
