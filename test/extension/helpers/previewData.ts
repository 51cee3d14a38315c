// A valid Dataset Preview `data` message (host → webview), made by the host's own mapping (src/previewModel)
// from a small preview reply: two examples, one truncated, one bad line.
import { previewToView } from '../../../src/previewModel';

export function samplePreviewData(maxLength = 3) {
  const reply = {
    format_used: 'dolly',
    total: 2,
    offset: 0,
    examples: [
      { index: 0, text: '<|user|>\nHi\n<|assistant|>\nYo<|endoftext|>', input_ids: [50257, 198, 17250], trained: [0, 0, 1] as (0 | 1)[], tokens: ['<|user|>', '\n', 'Hi'], truncated: true, full_length: 9, source: { file: '/d.jsonl', line: 1 } },
      { index: 1, text: 'x', input_ids: [87], trained: [1] as (0 | 1)[], tokens: ['x'], truncated: false, full_length: 1, source: { file: '/d.jsonl', line: 2 } },
    ],
    stats: { examples: 2, tokens: 4, trained_tokens: 2, truncated: 1, no_trained_tokens: 0, length_histogram: [{ lo: 0, hi: 32, count: 2 }] },
    bad_lines: [{ line: 3, reason: 'missing "response"' }],
  };
  return previewToView(reply, { dataset: '/d.jsonl', model: '/m', maxLength, assistantOnlyLoss: true, limit: 5 });
}
