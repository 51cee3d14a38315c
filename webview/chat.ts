/**
 * Chat front end: one pane (or two side by side, same seed) of multi-turn history with a model each;
 * system prompt and sampling parameters shared; answers stream in token by token; Stop cancels.
 * History and settings survive hide/show through getState/setState. All text is rendered as text.
 */
import { ChatToWebview, type ChatMsgFromWebview, type ChatMsgToWebview, type ChatTurn, type ModelChoice, type SamplingParams } from '../protocol/webview';
import { connect } from './lib/host';
import { clear, el } from './lib/dom';

interface Pane {
  model: ModelChoice | null;
  history: ChatTurn[];
  streaming: string | null;
  error: string | null;
  /** Set when the last answer was cut short by Stop. */
  stopped?: boolean;
}
interface State {
  panes: Pane[];
  sideBySide: boolean;
  system: string;
  params: SamplingParams;
  draft: string;
  initKey: string;
}

const saved = (): State | undefined => host.getState<State>();
let state: State = {
  panes: [{ model: null, history: [], streaming: null, error: null }],
  sideBySide: false,
  system: '',
  params: { temperature: 0.7, top_p: 0.9, top_k: 50, max_new_tokens: 150, seed: 42 },
  draft: '',
  initKey: '',
};

const host = connect<ChatMsgToWebview, ChatMsgFromWebview>(ChatToWebview, (m) => {
  switch (m.type) {
    case 'init': {
      const key = JSON.stringify([m.selected, m.sideBySide]);
      const prev = saved();
      if (prev && prev.initKey === key) {
        state = prev; // same panel reopened: keep history
        for (const p of state.panes) p.streaming = null;
      } else {
        const byPath = (p: string | null) => (p ? (m.models.find((x) => x.path === p) ?? { path: p, label: p, detail: p }) : null);
        const n = m.sideBySide ? 2 : 1;
        state = {
          panes: Array.from({ length: n }, (_, i) => ({ model: byPath(m.selected[i] ?? null), history: [], streaming: null, error: null })),
          sideBySide: m.sideBySide,
          system: prev?.system ?? '',
          params: prev?.params ?? m.params,
          draft: '',
          initKey: key,
        };
      }
      render();
      break;
    }
    case 'modelPicked': {
      const p = state.panes[m.pane];
      if (!p) return;
      p.model = m.model;
      p.history = [];
      render();
      break;
    }
    case 'token': {
      const p = state.panes[m.pane];
      if (!p || p.streaming === null) return;
      p.streaming += m.text;
      renderPane(m.pane);
      break;
    }
    case 'done': {
      const p = state.panes[m.pane];
      if (!p) return;
      p.history.push({ role: 'assistant', content: m.text });
      p.streaming = null;
      p.stopped = m.stopped;
      render();
      break;
    }
    case 'error': {
      const p = state.panes[m.pane];
      if (!p) return;
      p.streaming = null;
      p.error = m.message;
      // The failed user turn stays so the user can retry with Send.
      render();
      break;
    }
  }
  persist();
});

function persist(): void {
  host.setState(state);
}

const app = document.getElementById('app')!;
const settingsBox = el('div', { class: 'chat-settings' });
const panesBox = el('div', { class: 'panes' });
const inputBox = el('div', { class: 'chat-input' });
app.append(settingsBox, panesBox, inputBox);
const paneEls: HTMLElement[] = [];

function numberField(label: string, key: keyof SamplingParams, step: string, min: number, max: number): HTMLElement {
  const input = el('input', { type: 'number', step, min, max, value: state.params[key], id: `param-${key}` });
  input.addEventListener('change', () => {
    const v = Number(input.value);
    if (Number.isFinite(v) && v >= min && v <= max) {
      state.params = { ...state.params, [key]: key === 'temperature' || key === 'top_p' ? v : Math.round(v) };
      persist();
    } else input.value = String(state.params[key]);
  });
  return el('label', { class: 'field small' }, label, input);
}

function busy(): boolean {
  return state.panes.some((p) => p.streaming !== null);
}

function render(): void {
  clear(settingsBox);
  const sys = el('textarea', { id: 'system', rows: 2, placeholder: 'System prompt (optional)' });
  sys.value = state.system;
  sys.addEventListener('input', () => {
    state.system = sys.value;
    persist();
  });
  settingsBox.append(
    el('label', { class: 'field wide' }, 'System prompt', sys),
    el(
      'div',
      { class: 'row' },
      numberField('temperature', 'temperature', '0.05', 0, 5),
      numberField('top_p', 'top_p', '0.05', 0, 1),
      numberField('top_k (0 = off)', 'top_k', '1', 0, 100000),
      numberField('max new tokens', 'max_new_tokens', '1', 1, 8192),
      numberField('seed', 'seed', '1', 0, 4294967295),
    ),
  );
  clear(panesBox);
  paneEls.length = 0;
  panesBox.className = state.panes.length > 1 ? 'panes two' : 'panes';
  state.panes.forEach((_, i) => {
    const box = el('div', { class: 'pane', id: `pane-${i}` });
    paneEls.push(box);
    panesBox.append(box);
    renderPane(i);
  });
  clear(inputBox);
  const ta = el('textarea', { id: 'prompt', rows: 3, placeholder: 'Message (Ctrl+Enter to send)' });
  ta.value = state.draft;
  ta.addEventListener('input', () => {
    state.draft = ta.value;
    persist();
  });
  ta.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) send();
  });
  inputBox.append(
    ta,
    el(
      'div',
      { class: 'row' },
      el('button', { id: 'send', onclick: send, disabled: busy() }, 'Send'),
      el('button', { id: 'stop', class: 'secondary', onclick: () => host.post({ type: 'stop' }), disabled: !busy() }, 'Stop'),
      el('button', { id: 'clear', class: 'secondary', onclick: clearHistory, disabled: busy() }, 'Clear history'),
    ),
  );
}

function renderPane(i: number): void {
  const p = state.panes[i]!;
  const box = paneEls[i];
  if (!box) return;
  clear(box);
  box.append(
    el(
      'div',
      { class: 'pane-head' },
      el('span', { class: 'model-label', title: p.model?.path ?? '' }, p.model ? p.model.label : 'No model selected'),
      el('button', { class: 'secondary', onclick: () => host.post({ type: 'pickModel', pane: i }), disabled: busy() }, 'Change model…'),
    ),
  );
  const log = el('div', { class: 'transcript' });
  for (const t of p.history) log.append(el('div', { class: `msg ${t.role}`, 'data-role': t.role }, el('div', { class: 'who' }, t.role), el('div', { class: 'body' }, t.content)));
  if (p.streaming !== null) {
    log.append(el('div', { class: 'msg assistant streaming', 'data-role': 'assistant-streaming' }, el('div', { class: 'who' }, 'assistant'), el('div', { class: 'body' }, p.streaming || '…')));
  }
  if (p.stopped && p.streaming === null) log.append(el('div', { class: 'muted small', id: `stopped-${i}` }, 'Stopped before the end of the answer.'));
  if (p.error) log.append(el('div', { class: 'msg error' }, p.error));
  box.append(log);
  box.setAttribute('data-state', p.streaming !== null ? 'streaming' : 'idle');
  box.setAttribute('data-answers', String(p.history.filter((t) => t.role === 'assistant').length));
  log.scrollTop = log.scrollHeight;
}

function send(): void {
  const text = state.draft.trim();
  if (!text || busy()) return;
  if (state.panes.some((p) => !p.model)) {
    state.panes.forEach((p, i) => {
      if (!p.model) host.post({ type: 'pickModel', pane: i });
    });
    return;
  }
  state.draft = '';
  state.panes.forEach((p, i) => {
    p.error = null;
    p.stopped = false;
    // A retry after an error reuses the dangling user turn.
    if (p.history[p.history.length - 1]?.role === 'user') p.history.pop();
    p.history.push({ role: 'user', content: text });
    p.streaming = '';
    host.post({ type: 'generate', pane: i, model: p.model!.path, system: state.system, messages: p.history, params: state.params });
  });
  persist();
  render();
}

function clearHistory(): void {
  for (const p of state.panes) {
    p.history = [];
    p.error = null;
  }
  persist();
  render();
}

const prev = saved();
if (prev) {
  state = prev;
  for (const p of state.panes) p.streaming = null;
}
render();
host.post({ type: 'ready' });
