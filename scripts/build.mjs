// Bundles the extension host (dist/extension.js), the runner (dist/runner.js) and the webviews
// (media/dist/*.js) with esbuild. `--watch` rebuilds on change. Type checking is `npm run typecheck`.
import * as esbuild from 'esbuild';
import { existsSync, readdirSync } from 'node:fs';

const watch = process.argv.includes('--watch');
const common = { bundle: true, sourcemap: true, logLevel: 'info', target: 'node20' };
const builds = [
  { ...common, entryPoints: ['native-runner/cli/main.ts'], outfile: 'dist/runner.js', platform: 'node', format: 'cjs', external: ['onnxruntime-node'] },
];
if (existsSync('src/extension.ts')) {
  builds.push({ ...common, entryPoints: ['src/extension.ts'], outfile: 'dist/extension.js', platform: 'node', format: 'cjs', external: ['vscode'] });
}
const webviews = existsSync('webview') ? readdirSync('webview').filter((f) => /^[a-z-]+\.ts$/.test(f)) : [];
if (webviews.length) {
  builds.push({ ...common, entryPoints: webviews.map((f) => `webview/${f}`), outdir: 'media/dist', platform: 'browser', format: 'iife', target: 'es2022' });
}
if (watch) {
  for (const b of builds) (await esbuild.context(b)).watch();
} else {
  await Promise.all(builds.map((b) => esbuild.build(b)));
}
