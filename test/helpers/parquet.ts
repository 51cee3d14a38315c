// Test helper (not a test): writes a small, uncompressed, single-row-group Parquet file so the Parquet
// readers (oasst1 data, benchmark task rows) can be tested on data of our own. Columns are flat UTF-8
// strings, DOUBLE, BOOLEAN or INT64, REQUIRED or OPTIONAL (nullable). Format facts from the Parquet spec
// (parquet.thrift): "PAR1" magic, one PLAIN-encoded v1 data page per column, definition levels for
// optional columns as an RLE/bit-packed hybrid with a 4-byte length prefix, FileMetaData in Thrift compact
// protocol, its length (4 bytes LE) and "PAR1" at the end.
import * as fs from 'node:fs';

export type ColumnType = 'string' | 'double' | 'boolean' | 'int64';
export interface ColumnSpec {
  name: string;
  type: ColumnType;
  /** OPTIONAL (null/undefined values allowed); default REQUIRED. */
  optional?: boolean;
}

/** Thrift compact protocol writer (only what FileMetaData and PageHeader need). */
class Compact {
  bytes: number[] = [];
  private last: number[] = [0];
  private varint(n: bigint): void {
    let v = n;
    while (v >= 0x80n) {
      this.bytes.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.bytes.push(Number(v));
  }
  private zigzag(n: number | bigint): void {
    const b = BigInt(n);
    this.varint(b >= 0n ? b << 1n : ((-b) << 1n) - 1n);
  }
  private header(id: number, type: number): void {
    const delta = id - this.last[this.last.length - 1]!;
    if (delta > 0 && delta <= 15) this.bytes.push((delta << 4) | type);
    else {
      this.bytes.push(type);
      this.zigzag(id);
    }
    this.last[this.last.length - 1] = id;
  }
  i32(id: number, v: number): this {
    this.header(id, 5);
    this.zigzag(v);
    return this;
  }
  i64(id: number, v: number): this {
    this.header(id, 6);
    this.zigzag(v);
    return this;
  }
  str(id: number, s: string): this {
    this.header(id, 8);
    const b = Buffer.from(s, 'utf8');
    this.varint(BigInt(b.length));
    this.bytes.push(...b);
    return this;
  }
  struct(id: number, fill: (w: Compact) => void): this {
    this.header(id, 12);
    this.structBody(fill);
    return this;
  }
  structBody(fill: (w: Compact) => void): void {
    this.last.push(0);
    fill(this);
    this.bytes.push(0);
    this.last.pop();
  }
  list(id: number, elemType: 'i32' | 'string' | 'struct', items: unknown[], each?: (w: Compact, item: unknown) => void): this {
    this.header(id, 9);
    const t = elemType === 'i32' ? 5 : elemType === 'string' ? 8 : 12;
    if (items.length < 15) this.bytes.push((items.length << 4) | t);
    else {
      this.bytes.push(0xf0 | t);
      this.varint(BigInt(items.length));
    }
    for (const it of items) {
      if (elemType === 'i32') this.zigzag(it as number);
      else if (elemType === 'string') {
        const b = Buffer.from(it as string, 'utf8');
        this.varint(BigInt(b.length));
        this.bytes.push(...b);
      } else this.structBody((w) => each!(w, it));
    }
    return this;
  }
}

/** parquet.thrift Type: BOOLEAN 0, INT64 2, DOUBLE 5, BYTE_ARRAY 6. */
const PHYSICAL: Record<ColumnType, number> = { boolean: 0, int64: 2, double: 5, string: 6 };

function plainValues(type: ColumnType, values: unknown[]): Buffer {
  if (type === 'string') return Buffer.concat(values.map((v) => {
    const b = Buffer.from(v as string, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(b.length);
    return Buffer.concat([len, b]);
  }));
  if (type === 'double') return Buffer.concat(values.map((v) => {
    const b = Buffer.alloc(8);
    b.writeDoubleLE(v as number);
    return b;
  }));
  if (type === 'int64') return Buffer.concat(values.map((v) => {
    const b = Buffer.alloc(8);
    b.writeBigInt64LE(BigInt(v as number | bigint));
    return b;
  }));
  const out = Buffer.alloc(Math.ceil(values.length / 8));
  values.forEach((v, i) => {
    if (v) out[i >> 3]! |= 1 << (i & 7);
  });
  return out;
}

/** Definition levels (bit width 1) as one bit-packed run, with the v1 page's 4-byte length prefix. */
function defLevels(present: boolean[]): Buffer {
  const groups = Math.ceil(present.length / 8);
  const bits = Buffer.alloc(groups);
  present.forEach((p, i) => {
    if (p) bits[i >> 3]! |= 1 << (i & 7);
  });
  const body = Buffer.concat([Buffer.from([(groups << 1) | 1]), bits]);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(body.length);
  return Buffer.concat([len, body]);
}

/** The bytes of a Parquet file holding `rows` (one object per row, keyed by column name). */
export function parquetBytes(columns: ColumnSpec[], rows: Record<string, unknown>[]): Buffer {
  const parts: Buffer[] = [Buffer.from('PAR1')];
  let offset = 4;
  const chunks: { col: ColumnSpec; offset: number; size: number }[] = [];
  for (const col of columns) {
    const vals = rows.map((r) => r[col.name]);
    const present = vals.map((v) => v !== null && v !== undefined);
    if (!col.optional && present.some((p) => !p)) throw new Error(`required column ${col.name} has nulls`);
    const data = Buffer.concat([col.optional ? defLevels(present) : Buffer.alloc(0), plainValues(col.type, vals.filter((_, i) => present[i]))]);
    const h = new Compact();
    h.structBody((w) => {
      w.i32(1, 0).i32(2, data.length).i32(3, data.length); // DATA_PAGE, sizes
      w.struct(5, (d) => d.i32(1, rows.length).i32(2, 0).i32(3, 3).i32(4, 3)); // PLAIN values, RLE levels
    });
    const header = Buffer.from(h.bytes);
    chunks.push({ col, offset, size: header.length + data.length });
    parts.push(header, data);
    offset += header.length + data.length;
  }
  const meta = new Compact();
  meta.structBody((m) => {
    m.i32(1, 1);
    m.list(2, 'struct', [null, ...columns], (w, c) => {
      if (c === null) {
        w.str(4, 'schema').i32(5, columns.length);
        return;
      }
      const col = c as ColumnSpec;
      w.i32(1, PHYSICAL[col.type]).i32(3, col.optional ? 1 : 0).str(4, col.name);
      if (col.type === 'string') w.i32(6, 0); // UTF8
    });
    m.i64(3, rows.length);
    m.list(4, 'struct', [0], (rg) => {
      rg.list(1, 'struct', chunks, (cc, item) => {
        const ch = item as (typeof chunks)[number];
        cc.i64(2, ch.offset);
        cc.struct(3, (md) => {
          md.i32(1, PHYSICAL[ch.col.type]);
          md.list(2, 'i32', [0, 3]);
          md.list(3, 'string', [ch.col.name]);
          md.i32(4, 0).i64(5, rows.length).i64(6, ch.size).i64(7, ch.size).i64(9, ch.offset);
        });
      });
      rg.i64(2, chunks.reduce((s, c) => s + c.size, 0)).i64(3, rows.length);
    });
  });
  const metaBuf = Buffer.from(meta.bytes);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(metaBuf.length);
  parts.push(metaBuf, len, Buffer.from('PAR1'));
  return Buffer.concat(parts);
}

/** Writes parquetBytes(columns, rows) to `file`. */
export function writeParquet(file: string, columns: ColumnSpec[], rows: Record<string, unknown>[]): void {
  fs.writeFileSync(file, parquetBytes(columns, rows));
}

/** The oasst1 columns this project reads. */
export const OASST_COLUMNS: ColumnSpec[] = [
  { name: 'message_id', type: 'string' },
  { name: 'parent_id', type: 'string', optional: true },
  { name: 'role', type: 'string' },
  { name: 'text', type: 'string' },
  { name: 'lang', type: 'string', optional: true },
  { name: 'rank', type: 'double', optional: true },
  { name: 'deleted', type: 'boolean', optional: true },
  { name: 'review_result', type: 'boolean', optional: true },
  { name: 'message_tree_id', type: 'string', optional: true },
];
