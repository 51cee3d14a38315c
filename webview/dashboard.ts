/**
 * Dashboard front end (chart.js, bundled): per shown run, train loss with eval loss points, learning
 * rate, grad norm and tokens/s against the optimizer step; several runs overlay in different colours.
 * Live: `append` adds records (deduplicated by type+step), `progress` updates step/ETA. A click on an
 * eval point posts `openChatAt` with that run and step. Rebuilt from scratch on every `runs` message.
 */
import {
  Chart, LineController, LineElement, PointElement, LinearScale, Tooltip, Legend, ScatterController,
  type ChartDataset, type ChartEvent, type ActiveElement,
} from 'chart.js';
import { DashboardToWebview, type DashboardMsgFromWebview, type DashboardMsgToWebview, type MetricRecord, type ProgressInfo } from '../protocol/webview';
import { connect } from './lib/host';
import { clear, el } from './lib/dom';
import { formatEta } from '../src/statusText';

/** Publishes where the eval points are drawn (canvas pixels) as data-eval-points, for keyboard-free tests and tools. */
const evalPointsAttr = {
  id: 'evalPointsAttr',
  afterRender(chart: Chart) {
    const pts: { runDir: string; step: number; x: number; y: number }[] = [];
    chart.data.datasets.forEach((ds, i) => {
      const d = ds as unknown as { runDir: string; metric: string; data: { x: number }[] };
      if (d.metric !== 'eval') return;
      chart.getDatasetMeta(i).data.forEach((el, j) => pts.push({ runDir: d.runDir, step: d.data[j]!.x, x: Math.round(el.x), y: Math.round(el.y) }));
    });
    chart.canvas.dataset.evalPoints = JSON.stringify(pts);
  },
};
Chart.register(LineController, LineElement, PointElement, LinearScale, Tooltip, Legend, ScatterController, evalPointsAttr);

interface RunData {
  runDir: string;
  name: string;
  status: string;
  totalSteps: number | null;
  records: MetricRecord[];
  keys: Set<string>;
  progress?: ProgressInfo;
}

const COLORS = ['#3794ff', '#f14c4c', '#89d185', '#cca700', '#b180d7', '#4ec9b0'];
const css = getComputedStyle(document.body);
const fg = css.getPropertyValue('--vscode-foreground').trim() || '#ccc';
const grid = css.getPropertyValue('--vscode-widget-border').trim() || 'rgba(128,128,128,0.2)';
Chart.defaults.color = fg;
Chart.defaults.borderColor = grid;
Chart.defaults.animation = false;

let runs: RunData[] = [];
const app = document.getElementById('app')!;
const header = el('div', { class: 'toolbar' });
const summary = el('div', { class: 'summary', id: 'summary' });
const chartsBox = el('div', { class: 'charts' });
app.append(header, summary, chartsBox);

const host = connect<DashboardMsgToWebview, DashboardMsgFromWebview>(DashboardToWebview, (m) => {
  switch (m.type) {
    case 'runs':
      runs = m.runs.map((r) => ({ ...r, keys: new Set(), records: [] }));
      for (let i = 0; i < m.runs.length; i++) addRecords(runs[i]!, m.runs[i]!.records);
      rebuild();
      break;
    case 'append': {
      const r = runs.find((x) => x.runDir === m.runDir);
      if (!r) return;
      if (addRecords(r, m.records)) scheduleUpdate();
      break;
    }
    case 'progress': {
      const r = runs.find((x) => x.runDir === m.runDir);
      if (!r) return;
      r.progress = m.progress;
      if (m.progress.total) r.totalSteps = m.progress.total;
      r.status = 'training';
      renderSummary();
      break;
    }
  }
});

function addRecords(r: RunData, recs: MetricRecord[]): boolean {
  let added = false;
  for (const rec of recs) {
    const key = `${rec.type}:${rec.step}`;
    if (r.keys.has(key)) continue;
    r.keys.add(key);
    r.records.push(rec);
    added = true;
  }
  if (added) r.records.sort((a, b) => a.step - b.step);
  return added;
}

type Metric = { id: string; title: string; pick: (r: MetricRecord) => number | undefined; type: 'train' | 'eval'; log?: boolean };
const CHARTS: { id: string; title: string; series: Metric[] }[] = [
  {
    id: 'loss',
    title: 'Loss',
    series: [
      { id: 'train', title: 'train loss', pick: (r) => r.loss, type: 'train' },
      { id: 'eval', title: 'eval loss', pick: (r) => r.eval_loss, type: 'eval' },
    ],
  },
  { id: 'lr', title: 'Learning rate', series: [{ id: 'lr', title: 'lr', pick: (r) => r.learning_rate, type: 'train' }] },
  { id: 'grad', title: 'Grad norm', series: [{ id: 'grad', title: 'grad norm', pick: (r) => r.grad_norm, type: 'train' }] },
  { id: 'tps', title: 'Tokens / s', series: [{ id: 'tps', title: 'tokens/s', pick: (r) => r.tokens_per_second, type: 'train' }] },
];

const charts = new Map<string, Chart<'line' | 'scatter', { x: number; y: number }[]>>();
let updateTimer: number | undefined;

function datasetsFor(chart: (typeof CHARTS)[number]): ChartDataset<'line', { x: number; y: number }[]>[] {
  const out: ChartDataset<'line', { x: number; y: number }[]>[] = [];
  runs.forEach((run, i) => {
    const color = COLORS[i % COLORS.length]!;
    for (const s of chart.series) {
      const data = run.records.filter((r) => r.type === s.type).flatMap((r) => {
        const y = s.pick(r);
        return typeof y === 'number' && Number.isFinite(y) ? [{ x: r.step, y }] : [];
      });
      const isEval = s.type === 'eval';
      out.push({
        label: runs.length > 1 ? `${run.name}: ${s.title}` : s.title,
        data,
        borderColor: color,
        backgroundColor: color,
        borderDash: isEval ? [4, 3] : undefined,
        pointRadius: isEval ? 5 : data.length > 60 ? 0 : 2,
        pointHoverRadius: isEval ? 8 : 4,
        pointStyle: isEval ? 'rectRot' : 'circle',
        borderWidth: isEval ? 1.5 : 2,
        tension: 0,
        // Custom fields for click handling.
        ...({ runDir: run.runDir, metric: s.id } as object),
      });
    }
  });
  return out;
}

function rebuild(): void {
  for (const c of charts.values()) c.destroy();
  charts.clear();
  clear(chartsBox);
  clear(header);
  header.append(
    el('span', { class: 'title' }, runs.length ? runs.map((r) => r.name).join(' · ') : 'No runs yet'),
    el('button', { class: 'secondary', id: 'choose-runs', onclick: () => host.post({ type: 'chooseRuns' }) }, 'Runs to overlay…'),
  );
  for (const spec of CHARTS) {
    const canvas = el('canvas', { id: `chart-${spec.id}`, 'aria-label': spec.title });
    const box = el('div', { class: 'chart-box' }, el('h3', {}, spec.title), el('div', { class: 'chart-canvas' }, canvas));
    chartsBox.append(box);
    const chart = new Chart(canvas, {
      type: 'line',
      data: { datasets: datasetsFor(spec) },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        parsing: false,
        normalized: true,
        interaction: { mode: 'nearest', intersect: true },
        scales: {
          x: { type: 'linear', title: { display: true, text: 'step' }, min: 0, suggestedMax: Math.max(1, ...runs.map((r) => r.totalSteps ?? 0)) },
          y: { type: 'linear', ticks: spec.id === 'lr' ? { callback: (v) => Number(v).toExponential(1) } : {} },
        },
        plugins: { legend: { display: true, labels: { boxWidth: 12 } } },
        onClick: (_e: ChartEvent, els: ActiveElement[], c: Chart) => onChartClick(els, c),
      },
    });
    charts.set(spec.id, chart as unknown as Chart<'line' | 'scatter', { x: number; y: number }[]>);
  }
  renderSummary();
}

function onChartClick(els: ActiveElement[], c: Chart): void {
  for (const e of els) {
    const ds = c.data.datasets[e.datasetIndex] as unknown as { runDir: string; metric: string; data: { x: number; y: number }[] };
    if (ds.metric !== 'eval') continue;
    const point = ds.data[e.index];
    if (point) host.post({ type: 'openChatAt', runDir: ds.runDir, step: point.x });
    return;
  }
}

function scheduleUpdate(): void {
  if (updateTimer !== undefined) return;
  updateTimer = window.setTimeout(() => {
    updateTimer = undefined;
    for (const spec of CHARTS) {
      const c = charts.get(spec.id);
      if (!c) continue;
      c.data.datasets = datasetsFor(spec) as never;
      c.update('none');
    }
    renderSummary();
  }, 200);
}

function last(r: RunData, type: string): MetricRecord | undefined {
  for (let i = r.records.length - 1; i >= 0; i--) if (r.records[i]!.type === type) return r.records[i];
  return undefined;
}

function renderSummary(): void {
  clear(summary);
  let points = 0;
  for (const r of runs) {
    const t = last(r, 'train');
    const e = last(r, 'eval');
    const trainPoints = r.records.filter((x) => x.type === 'train').length;
    const evalPoints = r.records.filter((x) => x.type === 'eval').length;
    points += trainPoints + evalPoints;
    const p = r.progress;
    const step = Math.max(p?.step ?? 0, t?.step ?? 0);
    const total = p?.total || r.totalSteps || 0;
    const items: [string, string][] = [
      ['status', r.status],
      ['step', total ? `${step} / ${total}` : String(step)],
      ['train loss', t?.loss !== undefined ? t.loss.toFixed(4) : '—'],
      ['eval loss', e?.eval_loss !== undefined ? `${e.eval_loss.toFixed(4)} @${e.step}` : '—'],
      ['lr', t?.learning_rate !== undefined ? t.learning_rate.toExponential(2) : '—'],
      ['grad norm', t?.grad_norm !== undefined ? t.grad_norm.toFixed(3) : '—'],
      ['tokens/s', p ? p.tokens_per_second.toFixed(0) : t?.tokens_per_second !== undefined ? t.tokens_per_second.toFixed(0) : '—'],
      ['ETA', p && r.status === 'training' ? formatEta(p.eta_s) : '—'],
    ];
    summary.append(
      el(
        'div',
        { class: 'run-summary', 'data-run': r.runDir, 'data-train-points': trainPoints, 'data-eval-points': evalPoints },
        el('strong', {}, r.name),
        ...items.map(([k, v]) => el('span', { class: 'kv' }, el('span', { class: 'k' }, k), ' ', el('span', { class: 'v' }, v))),
      ),
    );
  }
  summary.setAttribute('data-points', String(points));
}

host.post({ type: 'ready' });
