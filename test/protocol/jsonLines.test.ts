// JSON-lines framing: UTF-8 split across chunks, garbage lines, oversized lines, CRLF, end of stream.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeJsonLine, JsonLineDecoder, type DecodedLine } from '../../protocol/jsonLines';

const values = (items: DecodedLine[]) => items.filter((i) => i.ok).map((i) => (i as { value: unknown }).value);
const errors = (items: DecodedLine[]) => items.filter((i) => !i.ok).map((i) => (i as { error: string }).error);

test('multi-byte UTF-8 characters split at every byte boundary decode intact', () => {
  const msg = { text: 'héllo — 東京 🎉 ✓', n: 1 };
  const bytes = Buffer.from(encodeJsonLine(msg) + encodeJsonLine({ n: 2 }), 'utf8');
  for (let cut = 1; cut < bytes.length; cut++) {
    const d = new JsonLineDecoder();
    const out = [...d.push(bytes.subarray(0, cut)), ...d.push(bytes.subarray(cut)), ...d.end()];
    assert.deepEqual(values(out), [msg, { n: 2 }], `cut at ${cut}`);
    assert.deepEqual(errors(out), []);
  }
  // one byte at a time
  const d = new JsonLineDecoder();
  const out: DecodedLine[] = [];
  for (const b of bytes) out.push(...d.push(Uint8Array.of(b)));
  out.push(...d.end());
  assert.deepEqual(values(out), [msg, { n: 2 }]);
});

test('garbage lines become errors and do not stop the following lines', () => {
  const d = new JsonLineDecoder();
  const out = d.push('{"a":1}\nnot json at all\n\n{"b":\n   \r\n{"c":3}\r\n');
  assert.deepEqual(values(out), [{ a: 1 }, { c: 3 }]);
  const errs = errors(out);
  assert.equal(errs.length, 2);
  assert.match(errs[0]!, /^line 2: invalid JSON/);
  assert.match(errs[1]!, /^line 4: invalid JSON/);
});

test('an oversized line is dropped with one error, spread over many chunks, and the stream recovers', () => {
  const d = new JsonLineDecoder(1000);
  const out: DecodedLine[] = [];
  out.push(...d.push('{"ok":1}\n{"big":"'));
  for (let i = 0; i < 50; i++) out.push(...d.push('x'.repeat(100)));
  out.push(...d.push('"}\n{"ok":2}\n'));
  out.push(...d.end());
  assert.deepEqual(values(out), [{ ok: 1 }, { ok: 2 }]);
  const errs = errors(out);
  assert.equal(errs.length, 1);
  assert.match(errs[0]!, /^line 2: longer than 1000 characters/);
  // a complete oversized line in one chunk: the error names that line
  const d2 = new JsonLineDecoder(10);
  const out2 = d2.push(`{"a":1}\n${JSON.stringify({ s: 'y'.repeat(20) })}\n{"z":0}\n`);
  assert.deepEqual(values(out2), [{ a: 1 }, { z: 0 }]);
  assert.equal(errors(out2).length, 1);
  assert.match(errors(out2)[0]!, /^line 2: longer than 10 characters/);
});

test('the last line without a newline is delivered at end(); a truncated multi-byte tail becomes U+FFFD, not a crash', () => {
  const d = new JsonLineDecoder();
  assert.deepEqual(d.push('{"a":1}\n{"b":2}'), [{ ok: true, value: { a: 1 } }]);
  assert.deepEqual(values(d.end()), [{ b: 2 }]);
  const d2 = new JsonLineDecoder();
  const euro = Buffer.from('"€"', 'utf8');
  d2.push(euro.subarray(0, 2)); // '"' + first byte of €
  const out = d2.end();
  assert.equal(out.length, 1);
  assert.equal(out[0]!.ok, false);
});

test('encodeJsonLine writes one line, escapes U+2028 and turns non-finite numbers into null', () => {
  const line = encodeJsonLine({ t: 'a\u2028b\nc', x: NaN, y: Infinity });
  assert.equal(line.split('\n').length, 2);
  assert.ok(!line.includes('\u2028'));
  assert.deepEqual(JSON.parse(line), { t: 'a\u2028b\nc', x: null, y: null });
});
