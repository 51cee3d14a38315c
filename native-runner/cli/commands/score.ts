import type { Command } from '../command';
import { SftError } from '../../util/errors';

// Placeholder registered so the CLI builds; issue #6 implements it.
export const command: Command = {
  name: 'score',
  summary: 'lm-eval-harness log-likelihood requests',
  usage: 'sft score',
  async run() {
    throw new SftError('sft score is not available in this build yet');
  },
};
