/**
 * JSON-lines framing for the process protocol: one JSON value per line, `\n` terminated, UTF-8.
 * `JsonLineDecoder` takes raw chunks as they arrive from a pipe (a multi-byte character may be split
 * across chunks: decoded with TextDecoder in stream mode), splits on `\n` (a trailing `\r` is dropped), and
 * yields one item per line: the parsed value, or an error (invalid JSON, oversized line) — it never throws,
 * so one bad line cannot kill a peer. Blank lines are ignored. `encodeJsonLine` is the writer's half.
 */

/** Default limit of one line, in UTF-16 code units of the decoded text (≈ bytes for JSON, which is mostly ASCII). */
export const DEFAULT_MAX_LINE = 16 * 1024 * 1024;

export type DecodedLine = { ok: true; value: unknown } | { ok: false; error: string; line?: string };

export class JsonLineDecoder {
  private readonly decoder = new TextDecoder('utf-8', { fatal: false });
  private pending = '';
  /** True while skipping the rest of an oversized line (up to its newline). */
  private discarding = false;
  private lineNo = 0;

  constructor(private readonly maxLine: number = DEFAULT_MAX_LINE) {}

  /** Feeds one chunk; returns the complete lines it finished. */
  push(chunk: Uint8Array | string): DecodedLine[] {
    const text = typeof chunk === 'string' ? chunk : this.decoder.decode(chunk, { stream: true });
    return this.take(text, false);
  }

  /** Flushes at end of stream: a last line without `\n` still counts. */
  end(): DecodedLine[] {
    const text = this.decoder.decode();
    return this.take(text, true);
  }

  private take(text: string, final: boolean): DecodedLine[] {
    const out: DecodedLine[] = [];
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      if (nl < 0) break;
      const piece = text.slice(start, nl);
      start = nl + 1;
      this.lineNo++;
      if (this.discarding) {
        this.discarding = false;
        this.pending = '';
        continue;
      }
      const line = this.pending + piece;
      this.pending = '';
      if (line.length > this.maxLine) {
        out.push(this.oversized(this.lineNo, line.length));
        continue;
      }
      const item = this.parse(line);
      if (item) out.push(item);
    }
    const rest = text.slice(start);
    if (!this.discarding) {
      this.pending += rest;
      if (this.pending.length > this.maxLine) {
        out.push(this.oversized(this.lineNo + 1, this.pending.length));
        this.pending = '';
        this.discarding = true;
      }
    }
    if (final) {
      if (!this.discarding && this.pending.length > 0) {
        this.lineNo++;
        const item = this.parse(this.pending);
        if (item) out.push(item);
      }
      this.pending = '';
      this.discarding = false;
    }
    return out;
  }

  private oversized(lineNo: number, length: number): DecodedLine {
    return { ok: false, error: `line ${lineNo}: longer than ${this.maxLine} characters (${length}+), dropped` };
  }

  private parse(raw: string): DecodedLine | null {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.trim() === '') return null;
    try {
      return { ok: true, value: JSON.parse(line) };
    } catch (e) {
      const shown = line.length > 120 ? `${line.slice(0, 120)}…` : line;
      return { ok: false, error: `line ${this.lineNo}: invalid JSON (${(e as Error).message})`, line: shown };
    }
  }
}

/**
 * One message as a line. Non-finite numbers (which JSON cannot carry) become null; U+2028/U+2029 are
 * escaped so that no consumer splitting on Unicode line terminators sees a broken line.
 */
export function encodeJsonLine(value: unknown): string {
  const s = JSON.stringify(value, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v));
  return `${s.replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029')}\n`;
}
