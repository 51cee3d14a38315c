// Child process for the real-crash test: `crashSave.ts <output_dir> <step> <save_total_limit> <k>` saves a
// stand-in checkpoint (helpers/fakeCheckpoint, version "new") and SIGKILLs itself right after the k-th
// filesystem step (util/atomic's step hook), printing "killed <label>" first; k = 0 runs to the end and
// prints every step's label, then "done".
import * as fs from 'node:fs';
import { setFsStepHook } from '../../../native-runner/util/atomic';
import { saveFake } from './fakeCheckpoint';

const [out, step, limit, killAt] = process.argv.slice(2) as [string, string, string, string];
let n = 0;
setFsStepHook((label, target) => {
  n++;
  const line = `${label} ${target.split('/').pop()}`;
  if (n === Number(killAt)) {
    fs.writeSync(1, `killed ${line}\n`);
    process.kill(process.pid, 'SIGKILL');
  }
  if (Number(killAt) === 0) fs.writeSync(1, `step ${line}\n`);
});
saveFake(out, Number(step), 'new', limit === 'null' ? null : Number(limit)).then(
  () => fs.writeSync(1, 'done\n'),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
