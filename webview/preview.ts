/**
 * Dataset Preview front end (sidebar): the formatted examples as the seed prints them, each example's
 * tokens with trained ones highlighted (what the loss sees) and a mark where max_length cut it, paging
 * over all records, the file's statistics (length histogram, truncated, nothing trained) and its bad
 * lines as links that open the file at that line. Options: max_length (refused below 2 with the shared
 * protocol/trainingOptions rule, the reason shown under the field), assistant_only_loss.
 */
import { MAX_LENGTH_MAX, MAX_LENGTH_MIN, maxLengthProblem } from '../protocol/trainingOptions';
import { PreviewToWebview, type PreviewMsgFromWebview, type PreviewMsgToWebview } from '../protocol/webview';
import { connect } from './lib/host';
import { clear, el, svg } from './lib/dom';

type Data = Extract<PreviewMsgToWebview, { type: 'data' }>;

const app = document.getElementById('app')!;
const host = connect<PreviewMsgToWebview, PreviewMsgFromWebview>(PreviewToWebview, (m) => {
  switch (m.type) {
    case 'loading':
      status(`Loading ${m.dataset}…`, 'loading');
      break;
    case 'error':
      status(m.message, 'error');
      break;
    case 'empty':
      status(m.message, 'empty');
      break;
    case 'data':
      host.setState({ data: m });
      renderData(m);
      break;
  }
});

function status(text: string, kind: string): void {
  clear(app);
  app.append(
    el('div', { class: `status ${kind}`, id: 'preview-status' }, text),
    el('button', { class: 'secondary', onclick: () => host.post({ type: 'pickDataset' }) }, 'Pick a dataset…'),
  );
}

function renderData(d: Data): void {
  clear(app);
  const head = el(
    'div',
    { class: 'preview-head' },
    el('div', { class: 'dataset', title: d.dataset }, d.dataset.split(/[\\/]/).pop() ?? d.dataset),
    el('div', { class: 'muted' }, `format ${d.format} · ${d.total} records · tokenizer ${d.model.split(/[\\/]/).pop()}`),
  );
  const maxLen = el('input', { type: 'number', min: MAX_LENGTH_MIN, max: MAX_LENGTH_MAX, step: 1, value: d.max_length, id: 'max-length' });
  const aol = el('input', { type: 'checkbox', checked: d.assistant_only_loss, id: 'assistant-only' });
  const problem = el('div', { class: 'error', id: 'max-length-error', role: 'alert' });
  // The shared rule (run.json, sft preview, the host's setOptions check): a refused value is named, not sent.
  const apply = () => {
    const n = maxLen.value.trim() === '' ? NaN : Number(maxLen.value);
    const why = maxLengthProblem(n);
    problem.textContent = why === null ? '' : `max_length: ${why}`;
    maxLen.setAttribute('aria-invalid', String(why !== null));
    if (why === null) host.post({ type: 'setOptions', max_length: n, assistant_only_loss: aol.checked });
  };
  maxLen.addEventListener('change', apply);
  aol.addEventListener('change', apply);
  const opts = el('div', { class: 'row' }, el('label', { class: 'field small' }, 'max_length', maxLen), el('label', { class: 'check' }, aol, ' assistant_only_loss'), problem);

  const page = Math.floor(d.offset / d.limit) + 1;
  const pages = Math.max(1, Math.ceil(d.total / d.limit));
  const pager = el(
    'div',
    { class: 'row pager' },
    el('button', { class: 'secondary', id: 'prev-page', disabled: d.offset === 0, onclick: () => host.post({ type: 'page', offset: Math.max(0, d.offset - d.limit) }) }, '‹ Prev'),
    el('span', { id: 'page-label' }, `page ${page} / ${pages}`),
    el('button', { class: 'secondary', id: 'next-page', disabled: d.offset + d.limit >= d.total, onclick: () => host.post({ type: 'page', offset: d.offset + d.limit }) }, 'Next ›'),
  );

  const examples = el('div', { class: 'examples' });
  for (const ex of d.examples) examples.append(renderExample(ex, d));

  app.append(head, renderStats(d));
  const bad = renderBadLines(d);
  if (bad) app.append(bad);
  app.append(opts, pager, examples);
}

function renderExample(ex: Data['examples'][number], d: Data): HTMLElement {
  const truncated = ex.fullLength > ex.tokens.length;
  const trainedCount = ex.trained.reduce((a, b) => a + b, 0);
  const toks = el('div', { class: 'tokens' });
  ex.tokens.forEach((t, i) => {
    // Newlines are shown as ↵ (then broken), so whitespace tokens stay visible.
    toks.append(el('span', { class: ex.trained[i] ? 'tok trained' : 'tok', title: `#${i}${ex.trained[i] ? ' · trained' : ''}` }, t.replace(/\n/g, '↵\n')));
  });
  if (truncated) toks.append(el('span', { class: 'cut', title: `cut at max_length ${d.max_length}; ${ex.fullLength - ex.tokens.length} tokens dropped` }, `✂ ${ex.fullLength - ex.tokens.length} more tokens cut at max_length`));
  const src = ex.line > 0 ? el('a', { href: '#', class: 'src', onclick: (e: Event) => { e.preventDefault(); host.post({ type: 'openLine', file: ex.file, line: ex.line }); } }, `line ${ex.line}`) : null;
  return el(
    'div',
    { class: 'example', 'data-index': ex.index, 'data-trained': trainedCount },
    el(
      'div',
      { class: 'example-head' },
      el('strong', {}, `--- Example ${ex.index + 1} ---`),
      ' ',
      src,
      el('span', { class: 'muted' }, ` ${ex.tokens.length} tokens · ${trainedCount} trained${truncated ? ' · truncated' : ''}${trainedCount === 0 ? ' · nothing trained' : ''}`),
    ),
    // As the seed's prepare_dataset.py prints it: the first 500 characters, then "...".
    el('pre', { class: 'rendered' }, `${ex.text.slice(0, 500)}\n...`),
    toks,
  );
}

function renderStats(d: Data): HTMLElement {
  const s = d.stats;
  const w = 240;
  const h = 36;
  const maxCount = Math.max(1, ...s.histogram.map((b) => b.count));
  const bw = s.histogram.length ? w / s.histogram.length : w;
  const bars = s.histogram.map((b, i) => {
    const bh = (b.count / maxCount) * (h - 2);
    const r = svg('rect', { x: (i * bw + 1).toFixed(1), y: (h - bh).toFixed(1), width: Math.max(1, bw - 2).toFixed(1), height: bh.toFixed(1), class: 'bar' });
    r.appendChild(svg('title', {}, `${b.from}–${b.to} tokens: ${b.count}`));
    return r;
  });
  const chart = svg('svg', { width: w, height: h, viewBox: `0 0 ${w} ${h}`, class: 'histogram', role: 'img' }, ...bars);
  return el(
    'div',
    { class: 'stats', id: 'stats' },
    el(
      'div',
      {},
      `${s.examples} examples · mean ${s.meanLength.toFixed(1)} tokens · `,
      el('span', { class: s.truncated ? 'warn' : '' }, `${s.truncated} truncated at ${s.maxLength}`),
      ' · ',
      el('span', { class: s.nothingTrained ? 'warn' : '' }, `${s.nothingTrained} with nothing trained`),
    ),
    chart,
    s.histogram.length ? el('div', { class: 'muted small' }, `length histogram, ${s.histogram[0]!.from}–${s.histogram[s.histogram.length - 1]!.to} tokens`) : null,
  );
}

function renderBadLines(d: Data): HTMLElement | null {
  if (!d.badLines.length) return null;
  const list = el('ul', { class: 'bad-lines' });
  for (const b of d.badLines.slice(0, 200)) {
    list.append(
      el(
        'li',
        {},
        el('a', { href: '#', onclick: (e: Event) => { e.preventDefault(); host.post({ type: 'openLine', file: b.file, line: Math.max(1, b.line) }); } }, `${b.file.split(/[\\/]/).pop()}:${b.line}`),
        `: ${b.reason}`,
      ),
    );
  }
  const more = d.badLineCount - Math.min(d.badLines.length, 200);
  return el('div', { class: 'bad' }, el('h4', {}, `${d.badLineCount} bad line(s) skipped`), list, more > 0 ? el('div', { class: 'muted small' }, `… and ${more} more`) : null);
}

const prev = host.getState<{ data?: Data }>();
if (prev?.data) renderData(prev.data);
else status('Pick a dataset: the Datasets view, or "SFT: Preview Dataset".', 'empty');
host.post({ type: 'ready' });
