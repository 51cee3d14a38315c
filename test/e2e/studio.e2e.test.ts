// End-to-end in real VS Code (code-server + Chromium, see harness.ts): builds the .vsix, installs it,
// runs "SFT: Start Training" on the tiny fixture model with a small Dolly subset through the real runner,
// waits for the dashboard's charts to have points, reads a highlighted example in the Dataset Preview,
// gets an answer in the chat panel, stops a long answer with the Stop button, runs Evaluate Checkpoint (eval loss, perplexity, a benchmark task with a
// limit) through its quick picks, and saves screenshots to .e2e/screenshots.
// Skipped (with the reason) only when .e2e is not set up and SFT_E2E is unset; SFT_E2E=1 makes it run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { E2E, ROOT, answerInputBox, e2eMissing, pickQuickItem, runCommand, runCommandAndPick, screenshot, startVsCode, webviewFrame, type VsCode } from './harness';
import type { RequestParams } from '../../protocol/runner';
import { evaluationText } from '../../src/evaluateText';
import { defaultServices } from '../../native-runner/train/runtime';
import { closeInferenceModels } from '../../native-runner/infer/service';
import { readSafetensors, writeSafetensors } from '../../native-runner/model/safetensors';

/**
 * The tiny model with n_positions raised to `positions` (wpe [128, C] → [positions, C], its rows repeated), so
 * an answer can run long enough (thousands of tokens, seconds) for a Stop click to land in the middle of it.
 */
function writeLongContextModel(from: string, to: string, positions: number): void {
  cpSync(from, to, { recursive: true });
  const weights = readSafetensors(join(to, 'model.safetensors'));
  const wpe = weights.get('transformer.wpe.weight')!;
  const [rows, C] = wpe.shape as [number, number];
  const data = new Float32Array(positions * C);
  for (let i = 0; i < positions; i++) data.set(wpe.data.subarray((i % rows) * C, ((i % rows) + 1) * C), i * C);
  weights.set('transformer.wpe.weight', { shape: [positions, C], data });
  writeSafetensors(join(to, 'model.safetensors'), weights);
  const config = JSON.parse(readFileSync(join(to, 'config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(to, 'config.json'), JSON.stringify({ ...config, n_positions: positions, ...(config.n_ctx !== undefined ? { n_ctx: positions } : {}) }, null, 2));
}

const missing = e2eMissing();
const skip = missing !== null && !process.env.SFT_E2E ? `e2e skipped: ${missing}; set SFT_E2E=1 to require it` : false;
if (skip) console.log(`# ${skip}`);

test('SFT Studio in real VS Code: train, dashboard, dataset preview, chat', { skip, timeout: 420_000 }, async (t) => {
  if (missing) assert.fail(`SFT_E2E is set but ${missing}`);

  // 1. The .vsix as users get it.
  const build = spawnSync(process.execPath, ['scripts/build.mjs', '--package'], { cwd: ROOT, encoding: 'utf8', timeout: 180_000 });
  assert.equal(build.status, 0, `npm run package failed:\n${build.stdout}\n${build.stderr}`);
  const vsix = join(ROOT, 'sft-studio.vsix');
  assert.ok(existsSync(vsix));
  const ls = spawnSync(process.execPath, ['node_modules/@vscode/vsce/vsce', 'ls', '--ignoreFile', '.tmp/vscodeignore'], { cwd: ROOT, encoding: 'utf8' });
  const native = ls.stdout.split('\n').filter((l) => l.includes('onnxruntime-node/bin/'));
  assert.ok(native.length > 0 && native.every((l) => l.includes(`napi-v6/${process.platform}/${process.arch}/`)), `native files in the vsix:\n${native.join('\n')}`);

  // 2. A workspace with the tiny model, 40 Dolly records and a run config.
  const sandbox = join(E2E, 'run'); // kept after the run for inspection; replaced by the next
  rmSync(sandbox, { recursive: true, force: true });
  const ws = join(sandbox, 'workspace');
  mkdirSync(join(ws, '.vscode'), { recursive: true });
  cpSync(join(ROOT, 'samples', 'tiny-gpt2-chat'), join(ws, 'tiny-gpt2-chat'), { recursive: true });
  writeLongContextModel(join(ROOT, 'samples', 'tiny-gpt2-chat'), join(ws, 'tiny-gpt2-long'), 4096);
  const dolly = readFileSync(join(ROOT, 'samples', 'dolly-sample.jsonl'), 'utf8').split('\n').filter(Boolean).slice(0, 40);
  writeFileSync(join(ws, 'small.jsonl'), dolly.join('\n') + '\n');
  writeFileSync(join(ws, 'broken.jsonl'), [dolly[0], '{"instruction": "no response"}', 'not json at all', dolly[1]].join('\n') + '\n');
  writeFileSync(
    join(ws, 'e2e-run.json'),
    JSON.stringify({
      model_name_or_path: 'tiny-gpt2-chat', dataset: 'small.jsonl', output_dir: 'runs/e2e',
      per_device_train_batch_size: 4, gradient_accumulation_steps: 1, max_steps: 12, learning_rate: 1e-3,
      logging_steps: 1, eval_steps: 4, save_steps: 4, max_length: 128,
    }, null, 2),
  );
  writeFileSync(
    join(ws, 'e2e-long.json'),
    JSON.stringify({
      model_name_or_path: 'tiny-gpt2-chat', dataset: 'small.jsonl', output_dir: 'runs/long',
      per_device_train_batch_size: 4, gradient_accumulation_steps: 1, max_steps: 60, learning_rate: 1e-3,
      logging_steps: 1, eval_steps: 20, save_steps: 3, save_total_limit: 2, max_length: 128,
    }, null, 2),
  );
  // For Evaluate Checkpoint: a text for perplexity and three HellaSwag rows (of our own writing) for a task.
  writeFileSync(join(ws, 'notes.txt'), 'The capital of France is Paris. Water boils at one hundred degrees Celsius at sea level.\n');
  cpSync(join(ROOT, 'test', 'fixtures', 'infer', 'bench', 'hellaswag.jsonl'), join(ws, 'hellaswag.jsonl'));
  writeFileSync(join(ws, '.vscode', 'settings.json'), JSON.stringify({ 'sft.defaultModel': 'tiny-gpt2-chat' }));

  let vs: VsCode | undefined;
  try {
    vs = await startVsCode({ vsix, workspace: ws, sandbox });
    const page = vs.page;
    // CSP violations and rejected messages in any webview are failures.
    const violations: string[] = [];
    page.on('console', (m) => {
      const text = m.text();
      if (/Refused to|Content.Security.Policy|rejected host message/i.test(text)) violations.push(text);
    });
    await screenshot(page, '00-workbench');

    // 3. Start Training: pick the config, see the plan, press Start.
    await runCommandAndPick(page, 'SFT: Start Training', 'e2e-run.json');
    const form = await webviewFrame(page, 'train');
    await form.waitForSelector('.plan-table tr', { timeout: 60_000 });
    const totalSteps = await form.getAttribute('#plan', 'data-total-steps');
    assert.equal(totalSteps, '12', 'the pre-flight plan shows max_steps');
    await screenshot(page, '01-start-training-form');
    await form.click('#start');

    // 4. The dashboard opens and fills with points from the live run.
    const dash = await webviewFrame(page, 'dashboard');
    await dash.waitForFunction(() => Number(document.getElementById('summary')?.dataset.points ?? 0) >= 4, undefined, { timeout: 120_000 });
    const status = await dash.waitForFunction(
      () => {
        const s = document.querySelector('.run-summary');
        return s && Number(s.getAttribute('data-eval-points')) >= 3 ? s.textContent : null;
      },
      undefined,
      { timeout: 180_000 },
    );
    const summaryText = String(await status.jsonValue());
    t.diagnostic(`dashboard: ${summaryText}`);
    assert.match(summaryText, /step\s*12 \/ 12/);
    const trainPoints = Number(await dash.getAttribute('.run-summary', 'data-train-points'));
    assert.ok(trainPoints >= 12, `train points ${trainPoints}`);
    await page.waitForTimeout(500);
    await screenshot(page, '02-dashboard');
    assert.ok(existsSync(join(ws, 'runs', 'e2e', 'checkpoint-8', 'COMPLETE')), 'checkpoints were written');

    // 4b. A click on the eval point at step 8 opens a chat with checkpoint-8.
    await dash.waitForFunction(() => document.querySelector('.run-summary')?.textContent?.includes('finished'), undefined, { timeout: 120_000 });
    const evalPoints = JSON.parse((await dash.getAttribute('#chart-loss', 'data-eval-points')) ?? '[]') as { step: number; x: number; y: number }[];
    const at8 = evalPoints.find((p) => p.step === 8);
    assert.ok(at8, `eval points drawn: ${JSON.stringify(evalPoints)}`);
    await dash.locator('#chart-loss').click({ position: { x: at8.x, y: at8.y } });
    const chatFromClick = await webviewFrame(page, 'chat');
    await chatFromClick.waitForFunction(() => document.querySelector('#pane-0 .model-label')?.textContent === 'e2e/checkpoint-8', undefined, { timeout: 30_000 });

    // 5. Dataset preview in the sidebar: a formatted example with trained tokens highlighted.
    await runCommandAndPick(page, 'SFT: Preview Dataset', 'small.jsonl');
    const preview = await webviewFrame(page, 'preview');
    await preview.waitForSelector('.example .tok.trained', { timeout: 60_000 });
    const firstText = await preview.textContent('.example .rendered');
    const trained = await preview.$$eval('.example:first-child .tok.trained', (els) => els.map((e) => e.textContent ?? '').join(''));
    t.diagnostic(`preview example 1 trained tokens: ${JSON.stringify(trained)}`);
    assert.match(firstText ?? '', /<\|user\|>\nWhat is the capital of France\?\n<\|assistant\|>\n/);
    assert.equal(trained, 'The capital of France is Paris.<|endoftext|>', 'only the answer is trained (assistant_only_loss)');
    assert.match((await preview.textContent('#stats')) ?? '', /40 examples/);
    assert.equal(await preview.textContent('#page-label'), 'page 1 / 8');
    await preview.click('#next-page');
    await preview.waitForSelector('.example[data-index="5"]', { timeout: 30_000 });
    assert.equal(await preview.textContent('#page-label'), 'page 2 / 8');
    // A short max_length cuts examples: the cut is marked and counted.
    await preview.fill('#max-length', '14');
    await preview.dispatchEvent('#max-length', 'change');
    await preview.waitForSelector('.example .cut', { timeout: 60_000 });
    assert.match((await preview.textContent('#stats')) ?? '', /\b40 truncated at 14\b/);
    assert.match((await preview.textContent('#stats')) ?? '', /\b[1-9]\d* with nothing trained/);
    await screenshot(page, '03a-dataset-preview-truncated');
    await preview.fill('#max-length', '512');
    await preview.dispatchEvent('#max-length', 'change');
    await preview.waitForFunction(() => !document.querySelector('.example .cut') && document.querySelector('.example'), undefined, { timeout: 60_000 });
    // Collapse the tree views so the preview fills the sidebar for the screenshot.
    for (const title of ['Runs', 'Checkpoints', 'Datasets']) {
      const header = page.locator('.pane-header', { hasText: new RegExp(`^${title}`) }).first();
      if ((await header.getAttribute('aria-expanded')) === 'true') await header.click();
    }
    await page.waitForTimeout(500);
    await screenshot(page, '03-dataset-preview');

    // 5b. Bad lines are listed with links that open the file at that line.
    await runCommandAndPick(page, 'SFT: Preview Dataset', 'broken.jsonl');
    const bad = await webviewFrame(page, 'preview');
    await bad.waitForSelector('.bad-lines li', { timeout: 60_000 });
    const badText = await bad.$$eval('.bad-lines li', (els) => els.map((e) => e.textContent ?? ''));
    t.diagnostic(`bad lines: ${JSON.stringify(badText)}`);
    assert.deepEqual(badText.map((l) => l.split(':').slice(0, 2).join(':')), ['broken.jsonl:2', 'broken.jsonl:3']);
    await bad.click('.bad-lines li:nth-child(2) a');
    await page.locator('.tab.active', { hasText: 'broken.jsonl' }).waitFor({ timeout: 30_000 });
    await page.locator('.statusbar-item', { hasText: /Ln 3, Col 1/ }).first().waitFor({ timeout: 30_000 });
    await screenshot(page, '03b-bad-line-opened');

    // 6. Chat with the trained model: a streamed answer arrives.
    await runCommandAndPick(page, 'SFT: Chat with Checkpoint', 'e2e (final)');
    const chat = await webviewFrame(page, 'chat');
    // The panel re-initialises for the picked model: wait for that before typing.
    await chat.waitForFunction(() => document.querySelector('#pane-0 .model-label')?.textContent === 'e2e (final)', undefined, { timeout: 30_000 });
    await chat.fill('#param-max_new_tokens', '12');
    await chat.dispatchEvent('#param-max_new_tokens', 'change');
    await chat.fill('#prompt', 'What is the capital of France?');
    await chat.dispatchEvent('#prompt', 'input');
    await chat.click('#send');
    await chat.waitForSelector('#pane-0[data-answers="1"]', { timeout: 120_000 });
    const answer = (await chat.textContent('#pane-0 .msg.assistant .body')) ?? '';
    t.diagnostic(`chat answer: ${JSON.stringify(answer)}`);
    assert.ok(answer.trim().length > 0, 'the chat produced an answer');
    assert.equal(await chat.textContent('#pane-0 .msg.user .body'), 'What is the capital of France?');
    await screenshot(page, '04-chat');

    // 7. The chat's history survives hiding and showing the panel (webview state).
    await page.locator('.tab', { hasText: 'SFT Dashboard' }).first().click();
    await page.waitForTimeout(500);
    await page.locator('.tab', { hasText: 'SFT Chat' }).first().click();
    const chatAgain = await webviewFrame(page, 'chat');
    await chatAgain.waitForSelector('#pane-0 .msg.assistant', { timeout: 30_000 });
    assert.equal((await chatAgain.textContent('#pane-0 .msg.assistant .body'))?.trim(), answer.trim());

    // 8. Compare base and SFT side by side with the same seed.
    await runCommandAndPick(page, 'SFT: Compare Base and SFT', 'e2e (final)');
    const cmp = await webviewFrame(page, 'chat');
    await cmp.waitForSelector('#pane-1', { timeout: 30_000 });
    assert.match((await cmp.textContent('#pane-0 .model-label')) ?? '', /^tiny-gpt2-chat \(base/);
    assert.equal(await cmp.textContent('#pane-1 .model-label'), 'e2e (final)');
    await cmp.fill('#param-max_new_tokens', '8');
    await cmp.dispatchEvent('#param-max_new_tokens', 'change');
    await cmp.fill('#prompt', 'Name a color.');
    await cmp.dispatchEvent('#prompt', 'input');
    await cmp.click('#send');
    await cmp.waitForSelector('#pane-0[data-answers="1"]', { timeout: 120_000 });
    await cmp.waitForSelector('#pane-1[data-answers="1"]', { timeout: 120_000 });
    const [left, right] = [await cmp.textContent('#pane-0 .msg.assistant .body'), await cmp.textContent('#pane-1 .msg.assistant .body')];
    t.diagnostic(`compare: base ${JSON.stringify(left)} | sft ${JSON.stringify(right)}`);
    assert.ok(left && right);
    await screenshot(page, '05-compare');

    // 8b. Stop a long answer mid-way. The long-context copy of the untrained tiny model, sampling its whole
    // vocabulary, would answer 4,000 tokens (many seconds) without meeting a stop token; Stop is clicked once the
    // first tokens are on screen. The kept answer is marked stopped (the runner's finish_reason "cancelled"), Send
    // is usable again, and the answer is the start of the same-seed answer computed here in-process afterwards.
    writeFileSync(join(ws, '.vscode', 'settings.json'), JSON.stringify({ 'sft.defaultModel': 'tiny-gpt2-long' }));
    const stopPrompt = 'Tell me a long story about the sea.';
    const sampling = { temperature: 1, top_p: 1, top_k: 0, max_new_tokens: 4000, seed: 42 };
    await page.locator('.tab', { hasText: 'broken.jsonl' }).first().click();
    await runCommandAndPick(page, 'SFT: Chat with Checkpoint', 'tiny-gpt2-long (base, default)');
    const longChat = await webviewFrame(page, 'chat');
    await longChat.waitForFunction(() => document.querySelector('#pane-0 .model-label')?.textContent === 'tiny-gpt2-long (base, default)', undefined, { timeout: 30_000 });
    for (const [key, value] of Object.entries(sampling)) {
      await longChat.fill(`#param-${key}`, String(value));
      await longChat.dispatchEvent(`#param-${key}`, 'change');
    }
    await longChat.fill('#system', '');
    await longChat.dispatchEvent('#system', 'input');
    await longChat.fill('#prompt', stopPrompt);
    await longChat.dispatchEvent('#prompt', 'input');
    await longChat.click('#send');
    await longChat.waitForFunction(() => (document.querySelector('#pane-0[data-state="streaming"] .msg.assistant.streaming .body')?.textContent ?? '…').length > 1, undefined, { timeout: 60_000 });
    assert.equal(await longChat.isEnabled('#stop'), true);
    await longChat.click('#stop');
    await longChat.waitForSelector('#pane-0[data-state="idle"][data-answers="1"] #stopped-0', { timeout: 60_000 });
    const stoppedAnswer = (await longChat.textContent('#pane-0 .msg.assistant .body')) ?? '';
    assert.equal(await longChat.isEnabled('#send'), true, 'Send is usable again');
    assert.equal(await longChat.isEnabled('#stop'), false);
    await screenshot(page, '05a-chat-stopped');
    // The reference: the same request in this process, cut (by its own cancel) 200 characters past the stopped answer.
    const refAbort = new AbortController();
    let refStreamed = 0;
    const reference = await defaultServices(ws).chat(
      { model: join(ws, 'tiny-gpt2-long'), messages: [{ role: 'user', content: stopPrompt }], ...sampling, device: 'cpu' },
      {
        id: 0, signal: refAbort.signal, log: () => undefined,
        token: (text) => {
          refStreamed += text.length;
          if (refStreamed > stoppedAnswer.length + 200) refAbort.abort();
        },
      },
    );
    await closeInferenceModels();
    t.diagnostic(`stopped after ${stoppedAnswer.length} characters; reference ${reference.text.length} characters (${reference.new_tokens} tokens, ${reference.finish_reason})`);
    assert.equal(reference.finish_reason, 'cancelled', 'no stop token before the point where Stop was clicked');
    assert.ok(stoppedAnswer.length > 0 && stoppedAnswer.length < reference.text.length, `stopped answer of ${stoppedAnswer.length} characters`);
    assert.ok(reference.text.startsWith(stoppedAnswer), `the stopped answer is the start of the full one: ${JSON.stringify(stoppedAnswer.slice(0, 80))}`);

    // 9. Closing the dashboard and opening it again rebuilds it from metrics.jsonl.
    await page.locator('.tab', { hasText: 'SFT Dashboard' }).first().click();
    await runCommand(page, 'View: Close Editor');
    await page.locator('.tab', { hasText: 'SFT Dashboard' }).waitFor({ state: 'detached', timeout: 15_000 });
    await runCommand(page, 'SFT: Open Dashboard');
    const dash2 = await webviewFrame(page, 'dashboard');
    await dash2.waitForFunction(() => Number(document.querySelector('.run-summary')?.getAttribute('data-train-points')) >= 12, undefined, { timeout: 30_000 });
    assert.match((await dash2.textContent('.run-summary')) ?? '', /finished/);

    // 10. Evaluate Checkpoint through its quick picks, one run per kind (eval loss on a workspace dataset,
    // perplexity of a workspace text, a benchmark task with a document limit). Each notification must show
    // exactly what the runner's evaluate service computes in this process for the same request.
    // (Focus an editor first: a webview that just loaded can take focus and close a quick pick.)
    const finalModel = join(ws, 'runs', 'e2e');
    const services = defaultServices(ws);
    const evalCtx = { id: 0, signal: new AbortController().signal, token: () => undefined, log: () => undefined };
    const evaluations: { kind: string; picks: string[]; limit?: string; params: RequestParams<'evaluate'>; pattern: RegExp }[] = [
      {
        kind: 'Eval loss on a dataset', picks: ['small.jsonl'],
        params: { model: finalModel, kind: 'eval_loss', dataset: join(ws, 'small.jsonl'), dataset_format: 'auto' },
        pattern: /^eval loss \d+\.\d{4} over \d+ tokens \(perplexity \d+\.\d{2}\)$/,
      },
      {
        kind: 'Perplexity on a text file', picks: ['notes.txt'],
        params: { model: finalModel, kind: 'perplexity', file: join(ws, 'notes.txt') },
        pattern: /^perplexity \d+\.\d{3} over \d+ tokens$/,
      },
      {
        kind: 'Benchmark task', picks: ['hellaswag', 'hellaswag.jsonl'], limit: '2',
        params: { model: finalModel, kind: 'task', task: 'hellaswag', data: join(ws, 'hellaswag.jsonl'), limit: 2 },
        pattern: /^hellaswag: acc \d\.\d{4} ± \d\.\d{4}, acc_norm \d\.\d{4} ± \d\.\d{4} over 2 documents$/,
      },
    ];
    try {
      for (const ev of evaluations) {
        const expected = evaluationText(await services.evaluate(ev.params, evalCtx));
        assert.match(expected, ev.pattern);
        await page.locator('.tab', { hasText: 'broken.jsonl' }).first().click();
        for (let i = 1; ; i++) {
          try {
            await runCommandAndPick(page, 'SFT: Evaluate Checkpoint', 'e2e (final)');
            await pickQuickItem(page, ev.kind, 10_000);
            for (const item of ev.picks) await pickQuickItem(page, item, 10_000);
            if (ev.limit !== undefined) await answerInputBox(page, 'how many documents', ev.limit, 10_000);
            break;
          } catch (e) {
            if (i === 3) throw e;
            await page.keyboard.press('Escape');
          }
        }
        const note = page.locator('.notification-list-item-message', { hasText: `e2e: ${expected}` }).first();
        await note.waitFor({ timeout: 60_000 });
        t.diagnostic(`evaluate (${ev.params.kind}): ${await note.textContent()}`);
        await screenshot(page, `05b-evaluate-${ev.params.kind}`);
      }
    } finally {
      await closeInferenceModels();
    }

    // 11. Stop a longer run mid-way, then resume it to the end.
    await runCommandAndPick(page, 'SFT: Start Training', 'e2e-long.json');
    const form2 = await webviewFrame(page, 'train', 60_000, '#plan[data-total-steps="60"]');
    await form2.click('#start');
    const dash3 = await webviewFrame(page, 'dashboard', 60_000, '.run-summary[data-run$="long"]');
    await dash3.waitForFunction(() => Number(document.querySelector('.run-summary')?.getAttribute('data-train-points')) >= 5, undefined, { timeout: 120_000 });
    await runCommand(page, 'SFT: Stop Training');
    await page.locator('.statusbar-item', { hasText: /SFT stopped at step \d+ of 60/ }).first().waitFor({ timeout: 60_000 });
    await dash3.waitForFunction(() => /status stopped/.test(document.querySelector('.run-summary')?.textContent ?? ''), undefined, { timeout: 30_000 });
    const stoppedAt = Number(/step (\d+) \/ 60/.exec((await dash3.textContent('.run-summary')) ?? '')?.[1]);
    assert.ok(stoppedAt >= 5 && stoppedAt < 60, `stopped at ${stoppedAt}`);
    await screenshot(page, '06-stopped');
    await runCommandAndPick(page, 'SFT: Resume Training', 'long');
    await dash3.waitForFunction(() => /status finished/.test(document.querySelector('.run-summary')?.textContent ?? ''), undefined, { timeout: 180_000 });
    assert.match((await dash3.textContent('.run-summary')) ?? '', /step 60 \/ 60/);
    const longMetrics = readFileSync(join(ws, 'runs', 'long', 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type: string; step: number });
    const trainSteps = longMetrics.filter((r) => r.type === 'train').map((r) => r.step);
    assert.equal(new Set(trainSteps).size, 60, 'every step logged once across stop and resume');
    await screenshot(page, '07-resumed');

    // 12. Overlay both runs on the dashboard.
    for (let i = 1; ; i++) {
      try {
        await dash3.click('#choose-runs');
        const e2eRow = page.locator('.quick-input-widget .monaco-list-row', { hasText: /^e2e/ }).first();
        await e2eRow.waitFor({ timeout: 10_000 });
        await e2eRow.locator('.monaco-checkbox, input[type="checkbox"]').first().click();
        await page.locator('.quick-input-widget .monaco-button', { hasText: 'OK' }).first().click();
        break;
      } catch (e) {
        if (i === 3) throw e;
        await page.keyboard.press('Escape');
      }
    }
    await dash3.waitForFunction(() => document.querySelectorAll('.run-summary').length === 2, undefined, { timeout: 30_000 });
    const legend = (await dash3.$$eval('.run-summary strong', (els) => els.map((e) => e.textContent ?? ''))).sort();
    assert.deepEqual(legend, ['e2e', 'long']);
    await page.waitForTimeout(300);
    await screenshot(page, '08-overlay');

    assert.deepEqual(violations, [], 'no CSP violations or rejected messages in the webviews');
  } catch (e) {
    if (vs) {
      await screenshot(vs.page, 'zz-failure').catch(() => undefined);
      t.diagnostic(`code-server log tail:\n${vs.serverLog.slice(-30).join('\n')}`);
    }
    throw e;
  } finally {
    await vs?.stop();
  }
});
