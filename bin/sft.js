#!/usr/bin/env node
// Entry point of the `sft` command: runs the bundled runner (npm run build makes dist/runner.js).
const path = require('node:path');
const fs = require('node:fs');
const bundle = path.join(__dirname, '..', 'dist', 'runner.js');
if (!fs.existsSync(bundle)) {
  console.error('error: dist/runner.js is missing; run `npm run build` (npm ci runs it for you)');
  process.exit(1);
}
require(bundle).main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e) => { console.error(`error: ${e && e.message ? e.message : e}`); process.exitCode = 1; },
);
