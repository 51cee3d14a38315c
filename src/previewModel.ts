/**
 * Turns the runner's `preview` reply into the Dataset Preview view's `data` message: per example the
 * token pieces with their trained flags (ids shown as `#id` when the runner sent no decoded pieces), the
 * source file/line, the whole-file statistics and bad lines. Pure; no `vscode`.
 */
import type { RequestResult } from '../protocol/runner';
import type { PreviewMsgToWebview } from '../protocol/webview';

type PreviewReply = RequestResult<'preview'>;
type DataMsg = Extract<PreviewMsgToWebview, { type: 'data' }>;

export function previewToView(
  r: PreviewReply,
  o: { dataset: string; model: string; maxLength: number; assistantOnlyLoss: boolean; limit: number },
): DataMsg {
  const examples = r.examples.map((e) => ({
    index: e.index,
    file: e.source?.file ?? o.dataset,
    line: e.source?.line ?? 0,
    text: e.text,
    tokens: e.tokens && e.tokens.length === e.input_ids.length ? e.tokens : e.input_ids.map((id) => `#${id}`),
    trained: e.trained.map((t) => (t ? 1 : 0)),
    fullLength: Math.max(e.full_length, e.input_ids.length),
  }));
  const s = r.stats;
  return {
    type: 'data',
    dataset: o.dataset,
    format: r.format_used,
    model: o.model,
    max_length: o.maxLength,
    assistant_only_loss: o.assistantOnlyLoss,
    offset: r.offset,
    limit: o.limit,
    total: r.total,
    examples,
    stats: {
      examples: s.examples,
      truncated: s.truncated,
      nothingTrained: s.no_trained_tokens,
      histogram: (s.length_histogram ?? []).map((b) => ({ from: b.lo, to: b.hi, count: b.count })),
      meanLength: s.examples > 0 ? s.tokens / s.examples : 0,
      maxLength: o.maxLength,
    },
    badLines: r.bad_lines.map((b) => ({ file: b.file ?? o.dataset, line: b.line, reason: b.reason })),
    badLineCount: Math.max(r.bad_line_count ?? 0, r.bad_lines.length),
  };
}
