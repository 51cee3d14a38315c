// Bundles the extension host (dist/extension.js), the runner (dist/runner.js) and the webviews
// (media/dist/*.js) with esbuild. `--watch` rebuilds on change. Type checking is `npm run typecheck`.
// `--package` then makes sft-studio.vsix with @vscode/vsce for this platform only: .vscodeignore with its
// platform lines replaced so that only this machine's onnxruntime-node binaries go in (--target os-arch).
import * as esbuild from 'esbuild';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';

const watch = process.argv.includes('--watch');
const packaging = process.argv.includes('--package');
const common = { bundle: true, sourcemap: true, logLevel: 'info', target: 'node20' };
const builds = [
  { ...common, entryPoints: ['native-runner/cli/main.ts'], outfile: 'dist/runner.js', platform: 'node', format: 'cjs', external: ['onnxruntime-node'] },
];
if (existsSync('src/extension.ts')) {
  builds.push({ ...common, entryPoints: ['src/extension.ts'], outfile: 'dist/extension.js', platform: 'node', format: 'cjs', external: ['vscode'] });
}
const webviews = existsSync('webview') ? readdirSync('webview').filter((f) => /^[a-z-]+\.ts$/.test(f)) : [];
if (webviews.length) {
  builds.push({ ...common, entryPoints: webviews.map((f) => `webview/${f}`), outdir: 'media/dist', platform: 'browser', format: 'iife', target: 'es2022', minify: packaging });
}
if (watch) {
  for (const b of builds) (await esbuild.context(b)).watch();
} else {
  await Promise.all(builds.map((b) => esbuild.build(b)));
}

if (packaging) packageVsix();

function packageVsix() {
  const napi = 'node_modules/onnxruntime-node/bin/napi-v6';
  const here = `${process.platform}/${process.arch}`;
  if (!existsSync(`${napi}/${here}`)) throw new Error(`onnxruntime-node has no binaries for ${here} (${napi})`);
  const lines = readFileSync('.vscodeignore', 'utf8').split('\n');
  const at = lines.findIndex((l) => l.startsWith(`!${napi}/`));
  if (at < 0) throw new Error(`.vscodeignore: no "!${napi}/<os>/<arch>/**" platform line`);
  lines[at] = `!${napi}/${here}/**`;
  const out = lines;
  mkdirSync('.tmp', { recursive: true });
  writeFileSync('.tmp/vscodeignore', out.join('\n') + '\n');
  const target = `${process.platform}-${process.arch}`;
  const vsce = ['node_modules/@vscode/vsce/vsce', 'package', '--ignoreFile', '.tmp/vscodeignore', '--target', target, '--skip-license', '--out', 'sft-studio.vsix'];
  const r = spawnSync(process.execPath, vsce, { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
