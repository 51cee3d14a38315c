// The data behind the Runs / Checkpoints / Datasets trees, from real folders laid out as the runner
// writes them (metrics.jsonl, checkpoint-<step>/ with COMPLETE and trainer_state.json, final model).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listCheckpoints, nearestCheckpoint, parseMetrics, readRun } from '../../src/runFolder';
import { checkpointTree, datasetNodes, formatProgress, isDatasetCandidate, runNode } from '../../src/treeModel';
import { SAVE_MARKER_FILE } from '../../protocol/runFiles';

function makeRun(root: string, name: string, opts: { lines: string[]; ckpts: { step: number; complete: boolean; state?: object }[]; final?: boolean; config?: object }): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'metrics.jsonl'), opts.lines.join('\n') + '\n');
  for (const c of opts.ckpts) {
    const cd = join(dir, `checkpoint-${c.step}`);
    mkdirSync(cd);
    if (c.complete) writeFileSync(join(cd, 'COMPLETE'), '');
    if (c.state) writeFileSync(join(cd, 'trainer_state.json'), JSON.stringify(c.state));
  }
  if (opts.final) {
    writeFileSync(join(dir, 'config.json'), '{}');
    writeFileSync(join(dir, 'model.safetensors'), '');
  }
  if (opts.config) writeFileSync(join(dir, 'run.json'), JSON.stringify(opts.config));
  return dir;
}

const train = (step: number, loss: number) => JSON.stringify({ type: 'train', step, epoch: step / 10, loss, grad_norm: 1, learning_rate: 1e-4, tokens: 100, tokens_per_second: 50, elapsed_s: step });
const evalRec = (step: number, eval_loss: number) => JSON.stringify({ type: 'eval', step, eval_loss, eval_tokens: 40 });

test('parseMetrics keeps valid records, counts bad lines, tolerates a torn last line', () => {
  const text = [train(1, 3), 'garbage', JSON.stringify({ type: 'train' }), evalRec(2, 2.5), '{"type":"train","st'].join('\n');
  const m = parseMetrics(text);
  assert.deepEqual(m.records.map((r) => `${r.type}@${r.step}`), ['train@1', 'eval@2']);
  assert.deepEqual(m.badLines, [2, 3]);
});

test('readRun: finished run with best eval, checkpoints newest first, eval loss per checkpoint', () => {
  const root = mkdtempSync(join(tmpdir(), 'sft-tree-'));
  try {
    const dir = makeRun(root, 'run-a', {
      lines: [train(10, 3.1), evalRec(10, 3.0), train(20, 2.4), evalRec(20, 2.2), train(30, 2.0), evalRec(30, 2.3)],
      ckpts: [
        { step: 10, complete: true },
        { step: 20, complete: true },
        { step: 30, complete: false },
        { step: 5, complete: true, state: { log_history: [{ step: 5, eval_loss: 3.5 }] } },
      ],
      final: true,
      config: { model_name_or_path: '/models/base', max_steps: 30 },
    });
    const r = readRun(dir);
    assert.equal(r.state, 'finished');
    assert.equal(r.step, 30);
    assert.equal(r.totalSteps, 30);
    assert.equal(r.lastLoss, 2.0);
    assert.deepEqual(r.bestEval, { step: 20, loss: 2.2 });
    assert.equal(r.baseModel, '/models/base');
    assert.deepEqual(r.checkpoints.map((c) => [c.step, c.complete, c.evalLoss]), [[30, false, 2.3], [20, true, 2.2], [10, true, 3.0], [5, true, 3.5]]);
    assert.equal(nearestCheckpoint(r.checkpoints, 28)?.step, 20, 'incomplete checkpoint-30 is skipped');
    assert.equal(nearestCheckpoint(r.checkpoints, 15)?.step, 20, 'ties go to the later checkpoint');
    assert.equal(nearestCheckpoint(r.checkpoints, 7)?.step, 5);

    const node = runNode(r, root);
    assert.equal(node.label, 'run-a');
    assert.equal(node.description, 'finished · step 30/30 (100%) · best eval 2.2000 @20');
    assert.equal(node.contextValue, 'run');
    assert.equal(node.icon, 'pass');

    const [ck] = checkpointTree([r], root);
    assert.deepEqual(ck!.children!.map((c) => c.label), ['final model', 'checkpoint-30', 'checkpoint-20', 'checkpoint-10', 'checkpoint-5']);
    assert.deepEqual(ck!.children!.map((c) => c.contextValue), ['checkpoint', 'checkpoint.incomplete', 'checkpoint', 'checkpoint', 'checkpoint']);
    assert.equal(ck!.children![2]!.description, 'step 20 · eval 2.2000');
    assert.match(ck!.children![1]!.description!, /incomplete/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('readRun: a final save interrupted by a crash (its marker left) is not offered as the final model', () => {
  const root = mkdtempSync(join(tmpdir(), 'sft-tree-'));
  try {
    const dir = makeRun(root, 'run-c', { lines: [train(10, 3.1)], ckpts: [{ step: 10, complete: true }], final: true, config: { max_steps: 10 } });
    assert.equal(readRun(dir).hasFinalModel, true);
    writeFileSync(join(dir, SAVE_MARKER_FILE), '{}');
    const r = readRun(dir);
    assert.equal(r.interruptedSave, true);
    assert.equal(r.hasFinalModel, false);
    assert.equal(r.state, 'stopped');
    const node = runNode(r, root);
    assert.match(node.description!, /final save interrupted/);
    assert.match(node.tooltip!, /use the newest checkpoint/);
    const [ck] = checkpointTree([r], root);
    assert.deepEqual(ck!.children!.map((c) => c.label), ['checkpoint-10']);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('readRun: stopped and live runs, totals from trainer_state', () => {
  const root = mkdtempSync(join(tmpdir(), 'sft-tree-'));
  try {
    const dir = makeRun(root, 'run-b', { lines: [train(4, 2.9)], ckpts: [{ step: 4, complete: true, state: { global_step: 4, schedule: { total_steps: 12, warmup_steps: 2 } } }] });
    const stopped = readRun(dir);
    assert.equal(stopped.state, 'stopped');
    assert.equal(stopped.totalSteps, 12);
    assert.equal(runNode(stopped).description, 'stopped · step 4/12 (33%)');
    const live = readRun(dir, { status: 'training', step: 6, total: 12 });
    assert.equal(live.state, 'training');
    assert.equal(live.step, 6);
    const node = runNode(live);
    assert.equal(node.contextValue, 'run.active');
    assert.equal(node.icon, 'sync~spin');
    assert.equal(listCheckpoints(join(root, 'missing')).length, 0);
    assert.equal(formatProgress(7, null), 'step 7');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('dataset candidates: data files yes, model/tokenizer/run/editor files no', () => {
  for (const p of ['data/dolly.jsonl', 'train.json', 'oasst/train-00000.parquet', 'samples/dolly-sample.jsonl']) assert.ok(isDatasetCandidate(p), p);
  for (const p of ['model/config.json', 'model/tokenizer.json', 'tokenizer_config.json', 'runs/a/metrics.jsonl', 'runs/a/run.json', 'node_modules/x/data.jsonl', 'runs/a/checkpoint-10/data.json', 'package.json', 'notes.txt', '.vscode/settings.json'])
    assert.ok(!isDatasetCandidate(p), p);
});

test('datasetNodes: configured first and marked, duplicates merged, workspace files sorted', () => {
  const nodes = datasetNodes(['/w/b.jsonl', '/w/data/a.jsonl', '/w/cfg.jsonl'], ['/w/cfg.jsonl', '/elsewhere/x.parquet'], '/w');
  assert.deepEqual(nodes.map((n) => n.path), ['/w/cfg.jsonl', '/elsewhere/x.parquet', '/w/b.jsonl', '/w/data/a.jsonl']);
  assert.equal(nodes[0]!.description, 'configured');
  assert.equal(nodes[1]!.description, 'configured · /elsewhere/x.parquet');
  assert.equal(nodes[1]!.icon, 'database');
  assert.equal(nodes[3]!.description, 'data');
  assert.ok(nodes.every((n) => n.command === 'sft.previewDataset' && n.contextValue === 'dataset'));
});
