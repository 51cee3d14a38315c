import type { Command } from '../command';
import { SftError } from '../../util/errors';

// Placeholder registered so the CLI builds; issue #5 implements it.
export const command: Command = {
  name: 'train',
  summary: 'Fine-tune a model from a run.json (TRL SFTConfig keys)',
  usage: 'sft train',
  async run() {
    throw new SftError('sft train is not available in this build yet');
  },
};
