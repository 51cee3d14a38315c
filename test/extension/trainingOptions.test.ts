// The dataset formats, lr_scheduler_type values and devices are defined once (protocol/trainingOptions.ts): the
// Start Training webview bundles that module for the browser (no Node modules come with it) instead of keeping
// its own lists, and the runner's run.json parser (and data layer, schedule code) accept exactly those values.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as esbuild from 'esbuild';
import { DATASET_FORMAT_CHOICES, DATASET_FORMATS, DEVICES, LR_SCHEDULER_TYPES, type Device, type LrSchedulerType } from '../../protocol/trainingOptions';
import { DATASET_FORMATS as DATA_LAYER_FORMATS, isFormatChoice } from '../../native-runner/data/formats';
import { parseRunConfig, type RunConfig, type SchedulerType } from '../../native-runner/train/config';
import { lrFactor } from '../../native-runner/train/schedule';

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
    for (const name of ['oasst1', 'sharegpt', 'prompt_completion', 'cosine', 'constant_with_warmup', 'cuda']) assert.ok(!src.includes(`'${name}'`) && !src.includes(`"${name}"`), `webview/${f} spells out '${name}'`);
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

// Compile-time: the runner's config types are the shared lists' types (tsc fails on a drift in either direction).
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const schedulerTypesAgree: Same<SchedulerType, LrSchedulerType> = true;
const devicesAgree: Same<RunConfig['device'], Device> = true;

test('the runner accepts exactly the shared lr_scheduler_type values and devices (run.json, schedule)', () => {
  assert.ok(schedulerTypesAgree && devicesAgree);
  const base = { model_name_or_path: 'm', dataset: 'd.jsonl' };
  for (const t of LR_SCHEDULER_TYPES) {
    assert.equal(parseRunConfig({ ...base, lr_scheduler_type: t }, ROOT).config.lr_scheduler_type, t);
    // The schedule code knows every shared name: mid-warmup factor 0.5, and a finite factor after warmup.
    assert.equal(lrFactor(t, 5, 10, 100), t === 'constant' ? 1 : 0.5, t);
    assert.ok(Number.isFinite(lrFactor(t, 50, 10, 100)), t);
  }
  assert.deepEqual([...LR_SCHEDULER_TYPES].sort(), ['constant', 'constant_with_warmup', 'cosine', 'linear']);
  assert.throws(
    () => parseRunConfig({ ...base, lr_scheduler_type: 'polynomial' }, ROOT),
    (e: Error) => e.message.includes('lr_scheduler_type') && e.message.includes(`one of ${LR_SCHEDULER_TYPES.join(' | ')}`),
  );
  for (const d of DEVICES) assert.equal(parseRunConfig({ ...base, device: d }, ROOT).config.device, d);
  assert.deepEqual([...DEVICES], ['cpu', 'cuda']);
  assert.throws(
    () => parseRunConfig({ ...base, device: 'gpu' }, ROOT),
    (e: Error) => e.message.includes('device') && e.message.includes(`one of ${DEVICES.join(' | ')}`),
  );
});

test('the Start Training form offers the shared scheduler and device lists as its select options', async () => {
  // Bundle the webview and check the option lists it renders come from the shared arrays: the bundle holds
  // each list exactly once (the protocol module's), so there is no second copy to drift.
  const r = await esbuild.build({
    entryPoints: [path.join(ROOT, 'webview/train.ts')],
    bundle: true,
    write: false,
    platform: 'browser',
    format: 'iife',
    logLevel: 'silent',
    absWorkingDir: ROOT,
  });
  const js = r.outputFiles[0]!.text;
  assert.equal(js.split('"constant_with_warmup"').length - 1, 1, 'one copy of the scheduler list in the bundle');
  assert.equal(js.split('["cpu", "cuda"]').length - 1, 1, 'one device array in the bundle');
  assert.match(js, /key: "lr_scheduler_type"[^}]*options: LR_SCHEDULER_TYPES/);
  assert.match(js, /key: "device"[^}]*options: DEVICES/);
});
