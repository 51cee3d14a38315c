import type { Command } from '../command';
import { SftError } from '../../util/errors';

// Placeholder registered so the CLI builds; issue #6 implements it.
export const command: Command = {
  name: 'perplexity',
  summary: 'Sliding-window perplexity of a text file',
  usage: 'sft perplexity',
  async run() {
    throw new SftError('sft perplexity is not available in this build yet');
  },
};
