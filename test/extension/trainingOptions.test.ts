// The dataset formats are defined once (protocol/trainingOptions.ts): the Start Training webview bundles that
// module for the browser (no Node modules come with it) instead of keeping its own list, and the runner's
// run.json parser and data layer accept exactly those formats.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as esbuild from 'esbuild';
import { DATASET_FORMAT_CHOICES, DATASET_FORMATS } from '../../protocol/trainingOptions';
import { DATASET_FORMATS as DATA_LAYER_FORMATS, isFormatChoice } from '../../native-runner/data/formats';
import { parseRunConfig } from '../../native-runner/train/config';

const ROOT = path.join(__dirname, '../..');

test('webview/train.ts takes the dataset formats from protocol/trainingOptions.ts and bundles for the browser', async () => {
  const r = await esbuild.build({
    entryPoints: [path.join(ROOT, 'webview/train.ts')],
    bundle: true,
    write: false,
    metafile: true,
    platform: 'browser',
    format: 'iife',
    logLevel: 'silent',
    absWorkingDir: ROOT,
  });
  const inputs = Object.keys(r.metafile.inputs);
  assert.ok(inputs.includes('protocol/trainingOptions.ts'), inputs.join(', '));
  assert.deepEqual(inputs.filter((f) => !/^(webview|protocol)\//.test(f)), [], 'only webview/ and protocol/ code in the browser bundle');
  // No copy of the list in any webview source: a format name appears in none of them as a string literal.
  for (const f of fs.readdirSync(path.join(ROOT, 'webview'), { recursive: true }) as string[]) {
    if (!f.endsWith('.ts')) continue;
    const src = fs.readFileSync(path.join(ROOT, 'webview', f), 'utf8');
    for (const name of ['oasst1', 'sharegpt', 'prompt_completion']) assert.ok(!src.includes(`'${name}'`) && !src.includes(`"${name}"`), `webview/${f} spells out '${name}'`);
  }
});

test('the runner accepts exactly the shared formats (run.json dataset_format, data layer)', () => {
  assert.equal(DATA_LAYER_FORMATS, DATASET_FORMATS, 'the data layer re-exports the same list');
  assert.deepEqual(DATASET_FORMAT_CHOICES, ['auto', ...DATASET_FORMATS]);
  for (const f of DATASET_FORMAT_CHOICES) {
    assert.ok(isFormatChoice(f), f);
    assert.equal(parseRunConfig({ model_name_or_path: 'm', dataset: 'd.jsonl', dataset_format: f }, ROOT).config.dataset_format, f);
  }
  assert.ok(!isFormatChoice('csv'));
  assert.throws(() => parseRunConfig({ model_name_or_path: 'm', dataset: 'd.jsonl', dataset_format: 'csv' }, ROOT), /dataset_format: expected one of auto \| dolly \| oasst1/);
});
