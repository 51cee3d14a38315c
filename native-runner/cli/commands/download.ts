import type { Command } from '../command';
import { SftError } from '../../util/errors';

// Placeholder registered so the CLI builds; issue #5 implements it.
export const command: Command = {
  name: 'download',
  summary: 'Download a GPT-2-class model from the Hugging Face hub into a cache',
  usage: 'sft download',
  async run() {
    throw new SftError('sft download is not available in this build yet');
  },
};
