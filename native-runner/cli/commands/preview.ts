import type { Command } from '../command';
import { SftError } from '../../util/errors';

// Placeholder registered so the CLI builds; issue #4 implements it.
export const command: Command = {
  name: 'preview',
  summary: 'Render and tokenise a dataset file and show what will be trained',
  usage: 'sft preview',
  async run() {
    throw new SftError('sft preview is not available in this build yet');
  },
};
