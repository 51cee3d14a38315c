/** Text of an Evaluate Checkpoint result (output channel and notification) and the limit box's parsing. Pure; no `vscode`. */
import type { BenchmarkMetric, RequestResult } from '../protocol/runner';

function metricText(name: string, m: BenchmarkMetric | undefined): string | null {
  if (!m) return null;
  return `${name} ${m.value.toFixed(4)}${m.stderr === null ? '' : ` ± ${m.stderr.toFixed(4)}`}`;
}

/**
 * One line per result: "eval loss 2.3456 over 120 tokens (perplexity 10.44)", "perplexity 12.345 over 300
 * tokens", "arc_easy: acc 0.5000 ± 0.5000, acc_norm 1.0000 ± 0.0000 over 2 documents".
 */
export function evaluationText(r: RequestResult<'evaluate'>): string {
  if (r.kind === 'task') {
    const parts = [metricText('acc', r.metrics.acc), metricText('acc_norm', r.metrics.acc_norm), metricText('mc2', r.metrics.mc2)].filter((x) => x !== null);
    return `${r.task}: ${parts.join(', ')} over ${r.n} document${r.n === 1 ? '' : 's'}`;
  }
  if (r.kind === 'eval_loss') {
    return `eval loss ${r.eval_loss?.toFixed(4)} over ${r.eval_tokens} tokens (perplexity ${r.eval_loss !== undefined ? Math.exp(r.eval_loss).toFixed(2) : '—'})`;
  }
  return `perplexity ${r.ppl?.toFixed(3)} over ${r.tokens} tokens`;
}

/** The "limit" input box: empty → all documents (undefined), a positive integer → that many, else a message. */
export function parseDocLimit(text: string): { ok: true; limit: number | undefined } | { ok: false; message: string } {
  const t = text.trim();
  if (t === '') return { ok: true, limit: undefined };
  if (!/^\d+$/.test(t) || Number(t) < 1 || !Number.isSafeInteger(Number(t))) return { ok: false, message: 'Enter a positive whole number, or leave empty for all documents' };
  return { ok: true, limit: Number(t) };
}
