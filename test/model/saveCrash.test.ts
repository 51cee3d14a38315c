// The final-model save into a folder with other content (a training output_dir) renames files one at a time,
// so a crash can fall between two renames. saveModel's marker (.sft-model-save.json) makes that detectable:
// a crash is simulated at every filesystem step (util/atomic setFsStepHook throwing), and after each the
// folder either loads as exactly the old model, exactly the new one, or is refused naming the mixed files —
// never a new config/tokenizer silently paired with old weights.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkInterruptedSave, inspectModelFolder, loadModel, saveModel, SAVE_MARKER_FILE, type SaveModelInput } from '../../native-runner/model/modelFolder';
import type { ParamSet, TextTokenizer } from '../../native-runner/model/types';
import { setFsStepHook } from '../../native-runner/util/atomic';
import { SftError } from '../../native-runner/util/errors';
import { tempDir, TINY_DIR } from './helpers';

class Crash extends Error {}

function scaled(params: ParamSet, f: number): ParamSet {
  const out: ParamSet = new Map();
  for (const [n, t] of params) out.set(n, { ...t, data: t.data.map((x) => x * f + 0.01) });
  return out;
}

/** The tokenizer with its files() computed once (it rebuilds vocab.json/merges.txt at every call), or replaced. */
function withFiles(tok: TextTokenizer, edit: (files: Record<string, string>) => void = () => {}): TextTokenizer {
  const files = { ...tok.files!() };
  edit(files);
  const t = Object.create(tok) as TextTokenizer;
  t.files = () => files;
  return t;
}

/** Runs saveModel with a crash after filesystem step k (0: no crash); returns the step labels seen. */
async function saveCrashingAt(dir: string, m: SaveModelInput, k: number): Promise<string[]> {
  const seen: string[] = [];
  setFsStepHook((label, target) => {
    seen.push(`${label} ${path.basename(target)}`);
    if (seen.length === k) throw new Crash(seen[k - 1]);
  });
  try {
    await saveModel(dir, m);
  } catch (e) {
    if (!(e instanceof Crash)) throw e;
  } finally {
    setFsStepHook(null);
  }
  return seen;
}

type Outcome = 'old' | 'new' | 'refused';

const MODEL_FILES = ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'vocab.json', 'merges.txt', 'special_tokens_map.json'];

/** Each model file's bytes (absent: null). */
function snapshot(dir: string): Map<string, Buffer | null> {
  return new Map(MODEL_FILES.map((f) => [f, fs.existsSync(path.join(dir, f)) ? fs.readFileSync(path.join(dir, f)) : null]));
}

const eq = (a: Buffer | null | undefined, b: Buffer | null | undefined) => (a == null || b == null ? a == b : a.equals(b));

/**
 * What the folder holds, file by file against the old and new saves, and what the reader says: a mix (some
 * file only the new save's, another only the old one's) must be refused, anything else accepted.
 */
function classify(dir: string, oldSnap: Map<string, Buffer | null>, newSnap: Map<string, Buffer | null>): { outcome: Outcome; note: string | null } {
  const now = snapshot(dir);
  const onlyNew = MODEL_FILES.filter((f) => eq(now.get(f), newSnap.get(f)) && !eq(now.get(f), oldSnap.get(f)));
  const onlyOld = MODEL_FILES.filter((f) => eq(now.get(f), oldSnap.get(f)) && !eq(now.get(f), newSnap.get(f)));
  const neither = MODEL_FILES.filter((f) => !eq(now.get(f), oldSnap.get(f)) && !eq(now.get(f), newSnap.get(f)));
  assert.deepEqual(neither, [], 'every file is the old or the new content (no half-written file in place)');
  const mixed = onlyNew.length > 0 && onlyOld.length > 0;
  let note: string | null;
  try {
    note = checkInterruptedSave(dir);
  } catch (e) {
    assert.ok(e instanceof SftError, String(e));
    assert.ok(mixed, `refused although the files are one model's: ${e.message}`);
    assert.match(e.message, /a model save into this folder is in progress or was interrupted \(the save started .* by pid \d+\): .* (is|are) new but .* (is|are) still from before/);
    for (const f of [...onlyNew, ...onlyOld]) assert.ok(e.message.includes(f), `names ${f}`);
    return { outcome: 'refused', note: null };
  }
  assert.ok(!mixed, `new ${onlyNew.join(',')} with old ${onlyOld.join(',')} was not detected`);
  return { outcome: onlyNew.length > 0 || onlyOld.length === 0 ? 'new' : 'old', note };
}

test('saveModel over an existing final model: a crash at every step leaves the old model, the new one, or a refused mix', { timeout: 120_000 }, async () => {
  const root = tempDir('sft-save-crash-');
  const oldM = await loadModel(TINY_DIR);
  const oldInput: SaveModelInput = { config: oldM.config, params: oldM.params, tokenizer: withFiles(oldM.tokenizer) };
  // an output_dir: the old final model next to other run files
  const template = path.join(root, 'template');
  fs.mkdirSync(template);
  fs.writeFileSync(path.join(template, 'metrics.jsonl'), '{"type":"train"}\n');
  await saveModel(template, oldInput);
  assert.equal(fs.existsSync(path.join(template, SAVE_MARKER_FILE)), false, 'a finished save leaves no marker');
  const oldSnap = snapshot(template);

  // new model 1: new weights, identical config/tokenizer files; new model 2: new weights and a changed tokenizer_config.json
  const newWeights = scaled(oldM.params, 0.5);
  const sameFiles: SaveModelInput = { ...oldInput, params: newWeights };
  const newFiles: SaveModelInput = {
    ...oldInput,
    params: newWeights,
    tokenizer: withFiles(oldM.tokenizer, (f) => void (f['tokenizer_config.json'] = f['tokenizer_config.json']!.replace(/\}\s*$/, ',\n  "sft_test_marker": true\n}\n'))),
  };

  for (const [label, newM] of [['same files', sameFiles], ['new tokenizer file', newFiles]] as const) {
    const dir = path.join(root, 'out');
    const reset = () => {
      fs.rmSync(dir, { recursive: true, force: true });
      fs.cpSync(template, dir, { recursive: true });
    };
    reset();
    const steps = await saveCrashingAt(dir, newM, 0);
    const newSnap = snapshot(dir);
    assert.ok(steps.length > 10, steps.join('\n'));
    const renames = steps.filter((s) => s.startsWith('renamed into place'));
    assert.equal(renames[renames.length - 1], 'renamed into place model.safetensors', `${label}: the weights are renamed last`);
    const counts: Record<Outcome, number> = { old: 0, new: 0, refused: 0 };
    let refusedDir: string | null = null;
    for (let k = 1; k <= steps.length; k++) {
      reset();
      await saveCrashingAt(dir, newM, k);
      const { outcome, note } = classify(dir, oldSnap, newSnap);
      counts[outcome]++;
      if (outcome === 'old' && fs.existsSync(path.join(dir, SAVE_MARKER_FILE))) assert.match(note ?? '', /a model save into this folder did not finish .*still the complete model from before that save/, `${label} k=${k}`);
      if (outcome === 'refused' && !refusedDir) fs.cpSync(dir, (refusedDir = path.join(root, 'refused')), { recursive: true });
      assert.equal(fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8'), '{"type":"train"}\n', 'other run files are untouched');
      // the next save repairs the folder whatever the crash left
      await saveModel(dir, newM);
      assert.equal(classify(dir, oldSnap, newSnap).outcome, 'new', `${label} k=${k}: saving again gives the new model`);
      assert.deepEqual(fs.readdirSync(dir).filter((n) => n.startsWith('.')), [], 'no marker or staging folder after a finished save');
    }
    assert.ok(counts.old > 0 && counts.new > 0, `${label}: ${JSON.stringify(counts)}`);
    if (label === 'same files') assert.equal(counts.refused, 0, 'identical config/tokenizer files with either weights is a consistent model');
    else {
      assert.ok(refusedDir, `a crash between the tokenizer file and the weights is caught: ${JSON.stringify(counts)}`);
      // the readers refuse it too
      await assert.rejects(loadModel(refusedDir), (e: unknown) => e instanceof SftError && /tokenizer_config\.json is new but model\.safetensors is still from before/.test(e.message));
      assert.throws(() => inspectModelFolder(refusedDir!), /in progress or was interrupted/);
    }
  }
  // a crash that left the old model whole: loadModel loads it, with the note
  const dir = path.join(root, 'out');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.cpSync(template, dir, { recursive: true });
  const all = await saveCrashingAt(dir, sameFiles, 0);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.cpSync(template, dir, { recursive: true });
  await saveCrashingAt(dir, sameFiles, all.indexOf('renamed into place model.safetensors'));
  const loaded = await loadModel(dir);
  assert.deepEqual(loaded.params.get('transformer.wte.weight')!.data, oldM.params.get('transformer.wte.weight')!.data);
  assert.match((loaded.notes ?? []).join('\n'), /did not finish .*complete model from before that save/);
});
