// The Dataset Preview front end (webview/preview.ts, bundled for the browser as the extension ships it) in
// headless Chromium with a stand-in acquireVsCodeApi: a max_length below 2 (or a fraction, or empty) is
// refused with the shared rule's words under the field and never posted; a valid one posts setOptions.
// Skipped where /usr/bin/chromium is missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as esbuild from 'esbuild';
import { chromium } from 'playwright-core';
import { maxLengthProblem } from '../../protocol/trainingOptions';
import { samplePreviewData } from './helpers/previewData';

const ROOT = path.join(__dirname, '../..');
const CHROMIUM = '/usr/bin/chromium';
const skip = fs.existsSync(CHROMIUM) ? false : `no ${CHROMIUM}`;

test('Dataset Preview webview: max_length < 2 is refused by the shared rule and not sent; 2 is sent', { skip, timeout: 60_000 }, async () => {
  const bundle = await esbuild.build({ entryPoints: [path.join(ROOT, 'webview/preview.ts')], bundle: true, write: false, platform: 'browser', format: 'iife', logLevel: 'silent', absWorkingDir: ROOT });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => errors.push(`console: ${m.text()}`));
    await page.setContent('<!doctype html><html><body><div id="app"></div></body></html>');
    // Strings, not functions: tsx's name helpers do not exist in the page.
    await page.evaluate(`window.posts = []; window.acquireVsCodeApi = () => ({ postMessage: (m) => window.posts.push(m), getState: () => null, setState: () => {} });`);
    await page.addScriptTag({ content: bundle.outputFiles[0]!.text });
    await page.evaluate(`window.postMessage(${JSON.stringify(samplePreviewData(3))}, '*')`);
    await page.waitForSelector('#max-length', { timeout: 5000 }).catch((e) => assert.fail(`${e}; page: ${errors.join('; ')}`));
    const posts = () => page.evaluate(`window.posts.filter((p) => p.type === 'setOptions')`);
    const setMaxLength = async (v: string) => {
      await page.fill('#max-length', v);
      await page.dispatchEvent('#max-length', 'change');
    };
    for (const [typed, value] of [['1', 1], ['0', 0], ['1.5', 1.5], ['', NaN]] as const) {
      await setMaxLength(typed);
      assert.equal(await page.textContent('#max-length-error'), `max_length: ${maxLengthProblem(value)}`, `typed ${JSON.stringify(typed)}`);
      assert.equal(await page.getAttribute('#max-length', 'aria-invalid'), 'true');
      assert.deepEqual(await posts(), [], `typed ${JSON.stringify(typed)}: nothing sent`);
    }
    await setMaxLength('2');
    assert.equal(await page.textContent('#max-length-error'), '');
    assert.deepEqual(await posts(), [{ type: 'setOptions', max_length: 2, assistant_only_loss: true }]);
    assert.equal(await page.getAttribute('#max-length', 'min'), '2');
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
