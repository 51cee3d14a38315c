/**
 * Test-only: writes a minimal Parquet file (one row group, flat REQUIRED columns of UTF-8 strings or
 * INT64, PLAIN encoding, uncompressed, one data page per column) so the benchmark reader's Parquet path can
 * be exercised without a Parquet library that writes. Metadata in Thrift compact protocol, as the Parquet
 * format specifies (parquet.thrift field ids).
 */

type Col = { name: string; kind: 'string'; values: string[] } | { name: string; kind: 'int64'; values: number[] };

class Compact {
  bytes: number[] = [];
  private last: number[] = [0];
  varint(n: bigint): void {
    let v = n;
    do {
      let b = Number(v & 0x7fn);
      v >>= 7n;
      if (v) b |= 0x80;
      this.bytes.push(b);
    } while (v);
  }
  zigzag(n: number | bigint): void {
    const v = BigInt(n);
    this.varint(v >= 0n ? v << 1n : ((-v) << 1n) - 1n);
  }
  field(id: number, type: number): void {
    const delta = id - this.last[this.last.length - 1]!;
    if (delta > 0 && delta <= 15) this.bytes.push((delta << 4) | type);
    else {
      this.bytes.push(type);
      this.zigzag(id);
    }
    this.last[this.last.length - 1] = id;
  }
  i32(id: number, v: number): void {
    this.field(id, 5);
    this.zigzag(v);
  }
  i64(id: number, v: number): void {
    this.field(id, 6);
    this.zigzag(v);
  }
  binary(id: number, s: string): void {
    this.field(id, 8);
    this.rawBinary(s);
  }
  rawBinary(s: string): void {
    const b = new TextEncoder().encode(s);
    this.varint(BigInt(b.length));
    this.bytes.push(...b);
  }
  listHeader(id: number, elemType: number, size: number): void {
    this.field(id, 9);
    if (size < 15) this.bytes.push((size << 4) | elemType);
    else {
      this.bytes.push(0xf0 | elemType);
      this.varint(BigInt(size));
    }
  }
  beginStruct(id: number | null): void {
    if (id !== null) this.field(id, 12);
    this.last.push(0);
  }
  endStruct(): void {
    this.bytes.push(0);
    this.last.pop();
  }
}

export function writeParquet(cols: Col[]): Uint8Array {
  const nRows = cols[0]!.values.length;
  const out: number[] = [...new TextEncoder().encode('PAR1')];
  const chunks: { offset: number; size: number; col: Col }[] = [];
  for (const col of cols) {
    const data: number[] = [];
    for (const v of col.values) {
      if (col.kind === 'string') {
        const b = new TextEncoder().encode(v as string);
        const len = new Uint8Array(new Uint32Array([b.length]).buffer);
        data.push(...len, ...b);
      } else {
        data.push(...new Uint8Array(new BigInt64Array([BigInt(v as number)]).buffer));
      }
    }
    const h = new Compact();
    h.beginStruct(null);
    h.i32(1, 0); // DATA_PAGE
    h.i32(2, data.length);
    h.i32(3, data.length);
    h.beginStruct(5);
    h.i32(1, nRows);
    h.i32(2, 0); // PLAIN
    h.i32(3, 3); // RLE
    h.i32(4, 3);
    h.endStruct();
    h.endStruct();
    const offset = out.length;
    out.push(...h.bytes, ...data);
    chunks.push({ offset, size: h.bytes.length + data.length, col });
  }
  const m = new Compact();
  m.beginStruct(null);
  m.i32(1, 1); // version
  m.listHeader(2, 12, cols.length + 1);
  m.beginStruct(null);
  m.binary(4, 'schema');
  m.i32(5, cols.length);
  m.endStruct();
  for (const col of cols) {
    m.beginStruct(null);
    m.i32(1, col.kind === 'string' ? 6 : 2); // BYTE_ARRAY | INT64
    m.i32(3, 0); // REQUIRED
    m.binary(4, col.name);
    if (col.kind === 'string') m.i32(6, 0); // UTF8
    m.endStruct();
  }
  m.i64(3, nRows);
  m.listHeader(4, 12, 1);
  m.beginStruct(null);
  m.listHeader(1, 12, chunks.length);
  for (const c of chunks) {
    m.beginStruct(null);
    m.i64(2, c.offset);
    m.beginStruct(3);
    m.i32(1, c.col.kind === 'string' ? 6 : 2);
    m.listHeader(2, 5, 1);
    m.zigzag(0); // PLAIN
    m.listHeader(3, 8, 1);
    m.rawBinary(c.col.name);
    m.i32(4, 0); // UNCOMPRESSED
    m.i64(5, nRows);
    m.i64(6, c.size);
    m.i64(7, c.size);
    m.i64(9, c.offset);
    m.endStruct();
    m.endStruct();
  }
  m.i64(2, chunks.reduce((a, c) => a + c.size, 0));
  m.i64(3, nRows);
  m.endStruct();
  m.endStruct();
  out.push(...m.bytes, ...new Uint8Array(new Uint32Array([m.bytes.length]).buffer), ...new TextEncoder().encode('PAR1'));
  return Uint8Array.from(out);
}
