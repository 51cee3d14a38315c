import type { Command } from '../command';
import { SftError } from '../../util/errors';

// Placeholder registered so the CLI builds; issue #6 implements it.
export const command: Command = {
  name: 'compare',
  summary: 'Base vs SFT answers side by side',
  usage: 'sft compare',
  async run() {
    throw new SftError('sft compare is not available in this build yet');
  },
};
