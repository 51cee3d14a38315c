/**
 * Tiny runtime validators for protocol messages. A `Check<T>` looks at an unknown value and returns null
 * when it is a valid T, otherwise a reason naming the offending path (`params.messages[2].role: expected
 * one of system|user|assistant`). Pure, dependency-free, shared as source by the runner and the extension.
 */

export type Check<T> = ((value: unknown, path: string) => string | null) & { readonly __type?: T };

/** The static type a Check validates. */
export type Checked<C> = C extends Check<infer T> ? T : never;

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

export const str: Check<string> = (v, p) => (typeof v === 'string' ? null : `${p}: expected string, got ${describe(v)}`);

export const bool: Check<boolean> = (v, p) => (typeof v === 'boolean' ? null : `${p}: expected boolean, got ${describe(v)}`);

/** A finite number (JSON cannot carry NaN/Infinity anyway; null is not a number). */
export const num: Check<number> = (v, p) =>
  typeof v === 'number' && Number.isFinite(v) ? null : `${p}: expected finite number, got ${describe(v)}`;

/** An integer ≥ min (default 0). */
export function int(min = 0): Check<number> {
  return (v, p) =>
    typeof v === 'number' && Number.isInteger(v) && v >= min ? null : `${p}: expected integer >= ${min}, got ${JSON.stringify(v) ?? describe(v)}`;
}

/** A number in [lo, hi]. */
export function range(lo: number, hi: number): Check<number> {
  return (v, p) =>
    typeof v === 'number' && Number.isFinite(v) && v >= lo && v <= hi ? null : `${p}: expected number in [${lo}, ${hi}], got ${JSON.stringify(v) ?? describe(v)}`;
}

export function literal<const L extends readonly (string | number | boolean)[]>(...values: L): Check<L[number]> {
  return (v, p) => (values.includes(v as L[number]) ? null : `${p}: expected one of ${values.join('|')}, got ${JSON.stringify(v) ?? describe(v)}`);
}

export function nullable<T>(c: Check<T>): Check<T | null> {
  return (v, p) => (v === null ? null : c(v, p));
}

export function arrayOf<T>(c: Check<T>, maxLength = Infinity): Check<T[]> {
  return (v, p) => {
    if (!Array.isArray(v)) return `${p}: expected array, got ${describe(v)}`;
    if (v.length > maxLength) return `${p}: at most ${maxLength} items, got ${v.length}`;
    for (let i = 0; i < v.length; i++) {
      const r = c(v[i], `${p}[${i}]`);
      if (r) return r;
    }
    return null;
  };
}

export function oneOf<A, B>(a: Check<A>, b: Check<B>): Check<A | B> {
  return (v, p) => {
    const ra = a(v, p);
    if (!ra) return null;
    const rb = b(v, p);
    if (!rb) return null;
    return `${ra} (or ${rb.slice(p.length + 2)})`;
  };
}

/** A plain JSON object (not null, not an array). */
export const record: Check<Record<string, unknown>> = (v, p) =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? null : `${p}: expected object, got ${describe(v)}`;

const OPTIONAL = Symbol('optional');
export type OptionalCheck<T> = Check<T | undefined> & { [OPTIONAL]: true };

/** Marks an object field as optional (absent or undefined). */
export function opt<T>(c: Check<T>): OptionalCheck<T> {
  const f = ((v: unknown, p: string) => (v === undefined ? null : c(v, p))) as OptionalCheck<T>;
  f[OPTIONAL] = true;
  return f;
}

type Shape = Record<string, Check<unknown>>;
type RequiredKeys<S extends Shape> = { [K in keyof S]: S[K] extends OptionalCheck<unknown> ? never : K }[keyof S];
type OptionalKeys<S extends Shape> = { [K in keyof S]: S[K] extends OptionalCheck<unknown> ? K : never }[keyof S];
export type ObjectOf<S extends Shape> = { [K in RequiredKeys<S>]: Checked<S[K]> } & {
  [K in OptionalKeys<S>]?: Exclude<Checked<S[K]>, undefined>;
};

/**
 * An object with the given fields. Unknown fields are rejected (`strict`, the default) so a typo in a
 * message is an error rather than a silently ignored setting.
 */
export function obj<S extends Shape>(shape: S, strict = true): Check<ObjectOf<S>> {
  return (v, p) => {
    const r = record(v, p);
    if (r) return r;
    const o = v as Record<string, unknown>;
    for (const [k, c] of Object.entries(shape)) {
      const e = c(o[k], `${p}.${k}`);
      if (e) return o[k] === undefined && !(OPTIONAL in c) ? `${p}.${k}: missing` : e;
    }
    if (strict) {
      for (const k of Object.keys(o)) if (!(k in shape)) return `${p}.${k}: unknown field`;
    }
    return null;
  };
}

/** A discriminated union on `field`: the value of `field` picks the check (which validates the whole object). */
export function tagged<M extends Record<string, Check<unknown>>>(field: string, variants: M): Check<Checked<M[keyof M]>> {
  return (v, p) => {
    const r = record(v, p);
    if (r) return r;
    const tag = (v as Record<string, unknown>)[field];
    if (typeof tag !== 'string' || !Object.prototype.hasOwnProperty.call(variants, tag)) {
      return `${p}.${field}: expected one of ${Object.keys(variants).join('|')}, got ${JSON.stringify(tag) ?? 'nothing'}`;
    }
    return variants[tag]!(v, p);
  };
}
