/**
 * Incremental detokenisation for streaming. Byte-level BPE tokens may end in the middle of a multi-byte
 * UTF-8 character; decoding such a prefix yields U+FFFD at the end. The stream keeps a short window of
 * recent ids (prefix … read offset, as text-generation-inference does) and only emits text once the tail
 * decodes cleanly, so no delta ever splits a character. The concatenation of all deltas plus flush()
 * equals decode(all ids).
 */
import type { TextTokenizer } from '../model/types';

export class TokenTextStream {
  private readonly ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;

  constructor(
    private readonly tokenizer: Pick<TextTokenizer, 'decode'>,
    private readonly skipSpecialTokens = false,
  ) {}

  private decode(from: number, to: number): string {
    return this.tokenizer.decode(this.ids.slice(from, to), { skipSpecialTokens: this.skipSpecialTokens });
  }

  /** Adds one id; returns the newly complete text ('' while a character is still incomplete). */
  push(id: number): string {
    this.ids.push(id);
    const before = this.decode(this.prefixOffset, this.readOffset);
    const now = this.decode(this.prefixOffset, this.ids.length);
    if (now.length > before.length && !now.endsWith('\uFFFD') && now.startsWith(before)) {
      const delta = now.slice(before.length);
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      return delta;
    }
    return '';
  }

  /** Text still held back (an incomplete character at the very end decodes with U+FFFD). */
  flush(): string {
    if (this.readOffset === this.ids.length) return '';
    const before = this.decode(this.prefixOffset, this.readOffset);
    const now = this.decode(this.prefixOffset, this.ids.length);
    this.prefixOffset = this.readOffset = this.ids.length;
    return now.startsWith(before) ? now.slice(before.length) : now;
  }
}
