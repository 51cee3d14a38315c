// Child process for the SIGKILL test: `holdLock.ts <output_dir>` prepares a (stub-engine) trainer on
// output_dir — taking its lock — prints "prepared <pid>" and waits to be killed.
import * as fs from 'node:fs';
import { Trainer } from '../../../native-runner/train/trainer';
import { stubConfig, stubDeps } from './stubTrainer';

void Trainer.prepare(stubConfig(process.argv[2]!), stubDeps()).then(
  () => {
    fs.writeSync(1, `prepared ${process.pid}\n`);
    setInterval(() => undefined, 1000);
  },
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
