import type { Command } from '../command';
import { SftError } from '../../util/errors';

// Placeholder registered so the CLI builds; issue #5 implements it.
export const command: Command = {
  name: 'eval',
  summary: 'Eval loss of a model on a dataset file',
  usage: 'sft eval',
  async run() {
    throw new SftError('sft eval is not available in this build yet');
  },
};
