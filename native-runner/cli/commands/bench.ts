import type { Command } from '../command';
import { SftError } from '../../util/errors';

// Placeholder registered so the CLI builds; issue #6 implements it.
export const command: Command = {
  name: 'bench',
  summary: 'lm-eval tasks (hellaswag, arc, piqa, winogrande, truthfulqa_mc2) from local files',
  usage: 'sft bench',
  async run() {
    throw new SftError('sft bench is not available in this build yet');
  },
};
