// Workspace-relative paths (settings, command arguments, the Start Training form's config path) are made
// absolute by one helper, src/workspacePath.ts, which every caller in src/ uses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { resolveInWorkspace } from '../../src/workspacePath';

const ROOT = path.join(__dirname, '../..');

test('resolveInWorkspace: relative paths go under the root; absolute ones, and any without a root, stay', () => {
  assert.equal(resolveInWorkspace('data/dolly.jsonl', '/ws'), '/ws/data/dolly.jsonl');
  assert.equal(resolveInWorkspace('./models/../models/gpt2', '/ws'), '/ws/models/gpt2');
  assert.equal(resolveInWorkspace('../shared/d.jsonl', '/ws/project'), '/ws/shared/d.jsonl');
  assert.equal(resolveInWorkspace('/abs/d.jsonl', '/ws'), '/abs/d.jsonl');
  assert.equal(resolveInWorkspace('data/dolly.jsonl', undefined), 'data/dolly.jsonl');
  assert.equal(resolveInWorkspace('data/dolly.jsonl', ''), 'data/dolly.jsonl');
});

test('no other file in src/ resolves against the workspace root by hand', () => {
  const offenders: string[] = [];
  for (const f of fs.readdirSync(path.join(ROOT, 'src'), { recursive: true }) as string[]) {
    if (!f.endsWith('.ts') || f === 'workspacePath.ts') continue;
    fs.readFileSync(path.join(ROOT, 'src', f), 'utf8')
      .split('\n')
      .forEach((line, i) => {
        if (/isAbsolute\(/.test(line) && /\bjoin\(/.test(line)) offenders.push(`src/${f}:${i + 1}: ${line.trim()}`);
      });
  }
  assert.deepEqual(offenders, []);
});
