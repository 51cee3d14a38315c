import type { Command } from '../command';
import { parseOptions } from '../command';
import { cudaReport, diagnoseCuda } from '../../engine/cudaProvider';

const usage = 'sft doctor [--json]';

/** Checks what `device: "cuda"` needs: the CUDA provider files, the CUDA major they want, and whether the loader finds them. */
export const command: Command = {
  name: 'doctor',
  summary: 'Check the CUDA set-up (provider files, CUDA libraries) for device "cuda"',
  usage,
  async run(argv) {
    const { values } = parseOptions(argv, { json: { type: 'boolean' } }, usage);
    const diagnosis = diagnoseCuda();
    for (const line of cudaReport({}, diagnosis)) console.log(line);
    if (values.json) console.log(JSON.stringify(diagnosis));
    return diagnosis.ok ? 0 : 1;
  },
};
