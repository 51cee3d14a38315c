/**
 * `output_dir/metrics.jsonl`: one JSON object per line, the MetricsRecord union of protocol/runner.ts
 * ({"type":"train"|"eval"|"save", …}). Appended and fsynced record by record while training; on resume
 * the file is rewritten (atomically) from the checkpoint's log history so it never holds records of steps
 * that were lost with the process.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { MetricsRecord } from '../../protocol/runner';
import { writeFileAtomic } from '../util/atomic';

export const METRICS_FILE = 'metrics.jsonl';

export class MetricsLog {
  readonly file: string;
  constructor(outputDir: string) {
    this.file = path.join(outputDir, METRICS_FILE);
  }

  /** Starts the file over with `records` (empty for a new run, the checkpoint's history on resume). */
  reset(records: readonly MetricsRecord[]): void {
    writeFileAtomic(this.file, records.map((r) => `${JSON.stringify(r)}\n`).join(''));
  }

  append(record: MetricsRecord): void {
    const fd = fs.openSync(this.file, 'a');
    try {
      fs.writeSync(fd, `${JSON.stringify(record)}\n`);
      fs.fdatasyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }
}

/** Reads a metrics.jsonl (skipping a torn last line). */
export function readMetrics(file: string): MetricsRecord[] {
  if (!fs.existsSync(file)) return [];
  const out: MetricsRecord[] = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as MetricsRecord);
    } catch {
      // a line torn by a crash: ignore
    }
  }
  return out;
}
