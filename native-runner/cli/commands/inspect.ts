import type { Command } from '../command';
import { SftError } from '../../util/errors';

// Placeholder registered so the CLI builds; issue #2 implements it.
export const command: Command = {
  name: 'inspect',
  summary: 'Show a model folder: architecture, parameters, tokenizer, chat readiness',
  usage: 'sft inspect',
  async run() {
    throw new SftError('sft inspect is not available in this build yet');
  },
};
