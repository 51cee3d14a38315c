/**
 * Start Training front end: the run config as a form (seed recipe defaults prefilled, unknown keys of
 * the file kept as they are), the pre-flight plan recomputed by the runner as the user edits (debounced):
 * a table of the numbers, the learning-rate curve with eval (▲) and save (■) marks and the checkpoints
 * that survive save_total_limit; Start saves the file and starts the run.
 */
import { TrainFormToWebview, type PlanView, type TrainFormMsgFromWebview, type TrainFormMsgToWebview } from '../protocol/webview';
import { DATASET_FORMAT_CHOICES, DEVICES, LR_SCHEDULER_TYPES } from '../protocol/trainingOptions';
import { connect } from './lib/host';
import { clear, el, svg } from './lib/dom';

type Kind = 'text' | 'int' | 'number' | 'bool' | { options: readonly string[] };
type Browse = 'file' | 'folder';
const FIELDS: { key: string; label: string; kind: Kind; browse?: Browse; help?: string }[] = [
  { key: 'model_name_or_path', label: 'Model', kind: 'text', browse: 'folder', help: 'HF model folder (or hub id)' },
  { key: 'dataset', label: 'Dataset', kind: 'text', browse: 'file', help: '.jsonl / .json / .parquet' },
  { key: 'dataset_format', label: 'Dataset format', kind: { options: DATASET_FORMAT_CHOICES } },
  { key: 'eval_dataset', label: 'Eval dataset', kind: 'text', browse: 'file', help: 'empty: split test_size off the dataset' },
  { key: 'test_size', label: 'test_size', kind: 'number' },
  { key: 'output_dir', label: 'Output folder', kind: 'text', browse: 'folder' },
  { key: 'per_device_train_batch_size', label: 'Batch size', kind: 'int' },
  { key: 'gradient_accumulation_steps', label: 'Gradient accumulation', kind: 'int' },
  { key: 'per_device_eval_batch_size', label: 'Eval batch size', kind: 'int' },
  { key: 'num_train_epochs', label: 'Epochs', kind: 'number' },
  { key: 'max_steps', label: 'max_steps (-1 = epochs)', kind: 'int' },
  { key: 'learning_rate', label: 'Learning rate', kind: 'number' },
  { key: 'lr_scheduler_type', label: 'Scheduler', kind: { options: LR_SCHEDULER_TYPES } },
  { key: 'warmup_ratio', label: 'Warmup ratio', kind: 'number' },
  { key: 'warmup_steps', label: 'Warmup steps (overrides ratio)', kind: 'int' },
  { key: 'weight_decay', label: 'Weight decay', kind: 'number' },
  { key: 'max_grad_norm', label: 'Max grad norm', kind: 'number' },
  { key: 'logging_steps', label: 'Logging steps', kind: 'number' },
  { key: 'eval_steps', label: 'Eval steps', kind: 'number' },
  { key: 'save_steps', label: 'Save steps', kind: 'number' },
  { key: 'save_total_limit', label: 'save_total_limit', kind: 'int' },
  { key: 'max_length', label: 'max_length', kind: 'int' },
  { key: 'packing', label: 'Packing', kind: 'bool' },
  { key: 'assistant_only_loss', label: 'Assistant-only loss', kind: 'bool' },
  { key: 'seed', label: 'Seed', kind: 'int' },
  { key: 'device', label: 'Device', kind: { options: DEVICES } },
];

let config: Record<string, unknown> = {};
let configPath = '';
let planTimer: number | undefined;
const inputs = new Map<string, HTMLInputElement | HTMLSelectElement>();

const app = document.getElementById('app')!;
const form = el('div', { class: 'form' });
const planBox = el('div', { class: 'plan', id: 'plan' }, el('div', { class: 'muted' }, 'Computing the plan…'));
const footer = el('div', { class: 'footer' });
app.append(el('div', { class: 'two-col' }, form, planBox), footer);

const host = connect<TrainFormMsgToWebview, TrainFormMsgFromWebview>(TrainFormToWebview, (m) => {
  switch (m.type) {
    case 'init':
      config = { ...m.config };
      configPath = m.configPath;
      renderForm();
      requestPlan(0);
      break;
    case 'plan':
      renderPlan(m.plan);
      break;
    case 'planError':
      clear(planBox);
      planBox.append(el('h3', {}, 'Pre-flight plan'), el('div', { class: 'error', id: 'plan-error' }, m.message));
      break;
    case 'browsed': {
      const input = inputs.get(m.field);
      if (input) {
        input.value = m.path;
        onChange();
      }
      break;
    }
    case 'started':
      setFooterStatus(`Training started: ${m.runDir}`, 'ok');
      break;
    case 'startError':
      setFooterStatus(m.message, 'error');
      (document.getElementById('start') as HTMLButtonElement | null)?.removeAttribute('disabled');
      break;
  }
});

/** The config as the form says: typed values; empty optional fields are left out (runner defaults apply). */
function readForm(): Record<string, unknown> {
  const out: Record<string, unknown> = { ...config };
  for (const f of FIELDS) {
    const input = inputs.get(f.key)!;
    if (f.kind === 'bool') {
      out[f.key] = (input as HTMLInputElement).checked;
      continue;
    }
    const raw = input.value.trim();
    if (raw === '') {
      delete out[f.key];
      continue;
    }
    if (f.kind === 'int' || f.kind === 'number') {
      const n = Number(raw);
      out[f.key] = Number.isFinite(n) ? n : raw; // the runner names a bad value
    } else out[f.key] = raw;
  }
  for (const [k, v] of Object.entries(out)) if (v === null) delete out[k];
  return out;
}

function onChange(): void {
  config = readForm();
  host.setState({ config, configPath });
  requestPlan(400);
}

function requestPlan(delay: number): void {
  if (planTimer !== undefined) clearTimeout(planTimer);
  planTimer = window.setTimeout(() => {
    planTimer = undefined;
    host.post({ type: 'plan', config: readForm() });
  }, delay);
}

function renderForm(): void {
  clear(form);
  inputs.clear();
  form.append(el('h2', { class: 'span2' }, 'Run config'));
  for (const f of FIELDS) {
    const v = config[f.key];
    let input: HTMLInputElement | HTMLSelectElement;
    if (f.kind === 'bool') input = el('input', { type: 'checkbox', checked: v === true, id: `f-${f.key}` });
    else if (typeof f.kind === 'object') {
      input = el('select', { id: `f-${f.key}` }, ...f.kind.options.map((o) => el('option', { value: o }, o)));
      input.value = typeof v === 'string' ? v : f.kind.options[0]!;
    } else input = el('input', { type: f.kind === 'text' ? 'text' : 'number', step: 'any', value: v === null || v === undefined ? '' : String(v), id: `f-${f.key}`, placeholder: f.help ?? '' });
    input.addEventListener(f.kind === 'text' ? 'input' : 'change', onChange);
    inputs.set(f.key, input);
    const browse = f.browse
      ? el('button', { class: 'secondary small', onclick: () => host.post({ type: 'browse', field: f.key as 'dataset', kind: f.browse! }) }, '…')
      : null;
    const cls = f.kind === 'bool' ? 'check' : f.kind === 'text' ? 'field span2' : 'field';
    form.append(el('label', { class: cls }, el('span', { class: 'label' }, f.label), el('span', { class: 'input-row' }, input, browse)));
  }
  const extra = Object.keys(config).filter((k) => !FIELDS.some((f) => f.key === k));
  if (extra.length) form.append(el('div', { class: 'muted span2' }, `Also kept from the file: ${extra.join(', ')}`));
  clear(footer);
  const pathInput = el('input', { type: 'text', id: 'config-path', value: configPath });
  pathInput.addEventListener('input', () => (configPath = pathInput.value));
  footer.append(
    el('label', { class: 'field wide' }, el('span', { class: 'label' }, 'Save config as'), pathInput),
    el(
      'button',
      {
        id: 'start',
        onclick: (e: Event) => {
          (e.currentTarget as HTMLButtonElement).setAttribute('disabled', '');
          setFooterStatus('Starting…', '');
          host.post({ type: 'start', config: readForm(), configPath: pathInput.value.trim() || configPath });
        },
      },
      'Start Training',
    ),
    el('span', { id: 'start-status', class: 'muted' }),
  );
}

function setFooterStatus(text: string, kind: string): void {
  const s = document.getElementById('start-status');
  if (s) {
    s.textContent = text;
    s.className = kind || 'muted';
  }
}

function renderPlan(p: PlanView): void {
  clear(planBox);
  planBox.append(el('h2', {}, 'Pre-flight plan'));
  const table = el('table', { class: 'plan-table' });
  for (const r of p.rows) table.append(el('tr', {}, el('th', {}, r.label), el('td', {}, r.value)));
  planBox.append(table);
  planBox.append(
    el('h3', {}, 'Learning rate'),
    lrChart(p),
    el('div', { class: 'muted small' }, '▲ eval · ■ save (filled: kept by save_total_limit) · dashed line: end of warmup'),
  );
  for (const w of p.warnings) planBox.append(el('div', { class: 'warn' }, `⚠ ${w}`));
  planBox.setAttribute('data-total-steps', String(p.totalSteps));
}

function lrChart(p: PlanView): SVGSVGElement {
  const W = 360;
  const H = 120;
  const pad = 4;
  const maxLr = Math.max(...p.lrCurve.map((q) => q.lr), 0) || 1;
  const total = Math.max(p.totalSteps, 1);
  const x = (s: number) => pad + (s / total) * (W - 2 * pad);
  const y = (lr: number) => H - pad - (lr / maxLr) * (H - 2 * pad - 14);
  const points = p.lrCurve.map((q) => `${x(q.step).toFixed(1)},${y(q.lr).toFixed(1)}`).join(' ');
  const marks: SVGElement[] = [];
  for (const s of p.evalSteps) marks.push(svg('path', { d: `M${x(s) - 3},${H - pad} l3,-6 l3,6 z`, class: 'mark-eval' }, svg('title', {}, `eval at step ${s}`)));
  for (const s of p.saveSteps) {
    const kept = p.keptCheckpoints.includes(s);
    marks.push(svg('rect', { x: x(s) - 3, y: 2, width: 6, height: 6, class: kept ? 'mark-save kept' : 'mark-save' }, svg('title', {}, `save at step ${s}${kept ? ' (kept)' : ' (rotated away)'}`)));
  }
  const warm = svg('line', { x1: x(p.warmupSteps), x2: x(p.warmupSteps), y1: pad, y2: H - pad, class: 'warmup-line' }, svg('title', {}, `warmup ends at step ${p.warmupSteps}`));
  const labels = [
    svg('text', { x: pad + 2, y: 20, class: 'axis-label' }, `peak ${maxLr.toExponential(2)}`),
    svg('text', { x: W - pad - 2, y: H - 10, class: 'axis-label end' }, `step ${p.totalSteps}`),
  ];
  return svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: 'lr-chart', id: 'lr-chart' }, warm, svg('polyline', { points, class: 'lr-line' }), ...marks, ...labels);
}

const prev = host.getState<{ config: Record<string, unknown>; configPath: string }>();
if (prev) {
  config = prev.config;
  configPath = prev.configPath;
  renderForm();
}
host.post({ type: 'ready' });
