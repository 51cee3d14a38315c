// package.json's extension manifest agrees with the code: every command the extension registers is
// contributed (with the "SFT" category) and vice versa, menus and views name real commands and views,
// every `sft.*` setting the code reads is declared, and the icons it points at exist.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = join(__dirname, '..', '..');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
const c = pkg.contributes;
const srcFiles = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? srcFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
const src = srcFiles(join(ROOT, 'src')).map((f) => readFileSync(f, 'utf8')).join('\n');

test('registered commands = contributed commands, all in the SFT category', () => {
  const registered = new Set([...src.matchAll(/cmd\('(sft\.[A-Za-z]+)'/g)].map((m) => m[1]!));
  const contributed = new Set<string>(c.commands.map((x: { command: string }) => x.command));
  assert.deepEqual([...registered].sort(), [...contributed].sort());
  for (const x of c.commands) assert.equal(x.category, 'SFT', x.command);
  const titles = c.commands.map((x: { title: string }) => `SFT: ${x.title}`);
  for (const t of ['SFT: Start Training', 'SFT: Stop Training', 'SFT: Resume Training', 'SFT: Open Dashboard', 'SFT: Chat with Checkpoint', 'SFT: Compare Base and SFT', 'SFT: Evaluate Checkpoint', 'SFT: Preview Dataset'])
    assert.ok(titles.includes(t), t);
});

test('menus and tree nodes name contributed commands and views', () => {
  const commands = new Set<string>(c.commands.map((x: { command: string }) => x.command));
  const views = new Set<string>(c.views.sft.map((v: { id: string }) => v.id));
  for (const [where, items] of Object.entries(c.menus) as [string, { command: string; when?: string }[]][]) {
    for (const m of items) {
      assert.ok(commands.has(m.command), `${where}: ${m.command}`);
      for (const v of m.when?.match(/view == ([\w.]+)/g) ?? []) assert.ok(views.has(v.slice(8)), `${where}: ${v}`);
    }
  }
  for (const id of ['sft.runs', 'sft.checkpoints', 'sft.datasets']) assert.ok(src.includes(`registerTreeDataProvider('${id}'`), id);
  assert.ok(src.includes("viewId = 'sft.preview'"));
  assert.equal(c.views.sft.find((v: { id: string }) => v.id === 'sft.preview').type, 'webview');
  for (const m of src.matchAll(/command: '(sft\.\w+)'/g)) assert.ok(commands.has(m[1]!), `tree node command ${m[1]}`);
  // Context values used in menus exist in the tree model.
  const model = readFileSync(join(ROOT, 'src', 'treeModel.ts'), 'utf8');
  for (const v of ['run', 'run.active', 'checkpoint', 'dataset']) assert.ok(model.includes(`'${v}'`), v);
});

test('every sft.* setting read by the code is declared', () => {
  const declared = new Set(Object.keys(c.configuration.properties));
  // Settings are read as getConfiguration('sft').get<T>('key') or cfg.get<T>('key').
  const read = new Set([...src.matchAll(/\.get<[^>]+>\('(\w+)'\)/g)].map((m) => `sft.${m[1]}`));
  assert.ok(read.size >= 4);
  for (const k of read) assert.ok(declared.has(k), k);
  assert.deepEqual(c.configuration.properties['sft.device'].enum, ['cpu', 'cuda']);
});

test('icons, entry point and scripts exist', () => {
  assert.ok(existsSync(join(ROOT, pkg.icon)) && pkg.icon.endsWith('.png'));
  assert.ok(existsSync(join(ROOT, c.viewsContainers.activitybar[0].icon)));
  assert.equal(pkg.main, './dist/extension.js');
  for (const s of ['package', 'test:e2e', 'e2e:setup']) assert.ok(pkg.scripts[s], s);
  assert.ok(!JSON.stringify(pkg).includes('webview-ui-toolkit'));
});
