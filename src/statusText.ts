/** Text of the training status-bar item and ETA formatting. Pure; no `vscode`. */
import type { RunnerEvents, RunStatus } from '../protocol/runner';

/** 75 → "1m 15s", 3725 → "1h 2m", 12 → "12s"; negative or non-finite → "—". */
export function formatEta(seconds: number | null | undefined): string {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) return '—';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

export function statusBarText(status: RunStatus, p: RunnerEvents['progress'] | null): string {
  const icon = status === 'stopping' ? '$(debug-pause)' : '$(sync~spin)';
  if (!p) return `${icon} SFT starting…`;
  const parts = [`${icon} SFT ${p.step}/${p.total}`];
  if (p.loss !== null) parts.push(`loss ${p.loss.toFixed(3)}`);
  if (p.eta_s !== null && p.eta_s >= 0) parts.push(`ETA ${formatEta(p.eta_s)}`);
  return parts.join(' · ');
}

/** After a run: "SFT finished", "SFT stopped at step 6 of 30" (a stop ends as finished with that message), "SFT failed". */
export function finishedText(status: 'finished' | 'failed', message: string | null): string {
  if (status === 'failed') return '$(error) SFT failed';
  const stopped = message ? /^stopped\b(.*)$/.exec(message) : null;
  return stopped ? `$(debug-stop) SFT stopped${stopped[1]}` : '$(pass) SFT finished';
}
