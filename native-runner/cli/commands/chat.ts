import type { Command } from '../command';
import { SftError } from '../../util/errors';

// Placeholder registered so the CLI builds; issue #6 implements it.
export const command: Command = {
  name: 'chat',
  summary: 'Chat with a model or checkpoint',
  usage: 'sft chat',
  async run() {
    throw new SftError('sft chat is not available in this build yet');
  },
};
