/**
 * User-facing errors. Every failure caused by input (a file, a line, a config key, a tensor) is an
 * SftError whose message already says where: `dolly.jsonl:1873: missing "response"`,
 * `model.safetensors: tensor transformer.h.3.attn.c_attn.weight: shape [768,2304] F32 needs 7077888
 * bytes, header says 7077884`. The CLI prints `error: <message>` on one line and exits non-zero.
 */
export class SftError extends Error {
  /** Where the problem is (a path, `path:line`, a config key, a tensor name), already in the message. */
  readonly where: string | undefined;
  constructor(message: string, where?: string) {
    super(where && !message.startsWith(where) ? `${where}: ${message}` : message);
    this.name = 'SftError';
    this.where = where;
  }
}

/** Throws an SftError unless `cond` holds. */
export function check(cond: unknown, message: string, where?: string): asserts cond {
  if (!cond) throw new SftError(message, where);
}

/** One line describing any thrown value, for the CLI and the protocol's error events. */
export function describeError(e: unknown): string {
  if (e instanceof Error) return e.message.split('\n')[0] ?? String(e);
  return String(e);
}
