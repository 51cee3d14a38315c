/**
 * GPT-2 `config.json`: parse + validate into GPT2Config, and write back. Absent keys take the defaults of
 * transformers' GPT2Config (124M shape: 12 layers, 12 heads, 768 wide, 1024 positions, 50257 vocab, dropouts
 * 0.1, eps 1e-5, gelu_new, tied embeddings, bos = eos = 50256). Options that change the maths in ways the
 * runner does not implement (another model type, non-tanh GELU, unscaled or layer-scaled attention, cross
 * attention) are errors naming the key. `raw` keeps every key so `configToJson` writes back what was read
 * with our fields updated.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SftError } from '../util/errors';
import type { GPT2Config } from './types';
import { isPlainObject, parseJsonFile } from './strictJson';

export const SUPPORTED_ACTIVATIONS = ['gelu_new', 'gelu_pytorch_tanh'] as const;

/** transformers' GPT2Config defaults for the fields GPT2Config carries. */
export const GPT2_DEFAULTS = {
  n_layer: 12,
  n_head: 12,
  n_embd: 768,
  n_positions: 1024,
  vocab_size: 50257,
  n_inner: null,
  layer_norm_epsilon: 1e-5,
  activation_function: 'gelu_new',
  resid_pdrop: 0.1,
  embd_pdrop: 0.1,
  attn_pdrop: 0.1,
  tie_word_embeddings: true,
  bos_token_id: 50256,
  eos_token_id: 50256,
  pad_token_id: null,
} as const;

/** Parses a config.json object (already JSON-decoded); `file` is used in error messages. */
export function parseConfig(json: unknown, file: string): GPT2Config {
  if (!isPlainObject(json)) throw new SftError('config must be a JSON object', file);
  const raw = json;
  const where = (key: string) => `${file}: ${key}`;

  const modelType = raw.model_type;
  if (modelType === undefined) {
    const arch = raw.architectures;
    const gpt2Arch = Array.isArray(arch) && arch.some((a) => typeof a === 'string' && a.startsWith('GPT2'));
    if (!gpt2Arch) throw new SftError('missing "model_type" (expected "gpt2")', where('model_type'));
  } else if (modelType !== 'gpt2') {
    throw new SftError(`model_type "${String(modelType)}" is not supported; SFT Studio trains GPT-2 models (model_type "gpt2")`, where('model_type'));
  }

  const posInt = (key: keyof typeof GPT2_DEFAULTS, fallback?: number): number => {
    const v = raw[key] ?? fallback ?? GPT2_DEFAULTS[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw new SftError(`must be a positive integer, got ${JSON.stringify(raw[key])}`, where(key));
    return v;
  };
  const prob = (key: 'resid_pdrop' | 'embd_pdrop' | 'attn_pdrop'): number => {
    const v = raw[key] ?? GPT2_DEFAULTS[key];
    if (typeof v !== 'number' || !(v >= 0 && v < 1)) throw new SftError(`must be a number in [0, 1), got ${JSON.stringify(raw[key])}`, where(key));
    return v;
  };
  const tokenId = (key: 'bos_token_id' | 'eos_token_id' | 'pad_token_id'): number | null => {
    const v = key in raw ? raw[key] : GPT2_DEFAULTS[key];
    if (v === null || v === undefined) return null;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new SftError(`must be a non-negative integer or null, got ${JSON.stringify(v)}`, where(key));
    return v;
  };
  const bool = (key: string, fallback: boolean): boolean => {
    const v = raw[key] ?? fallback;
    if (typeof v !== 'boolean') throw new SftError(`must be true or false, got ${JSON.stringify(v)}`, where(key));
    return v;
  };

  // Older checkpoints carry n_ctx (= n_positions); it only matters when n_positions is absent.
  const nCtx = typeof raw.n_ctx === 'number' ? raw.n_ctx : undefined;
  const n_layer = posInt('n_layer');
  const n_head = posInt('n_head');
  const n_embd = posInt('n_embd');
  const n_positions = posInt('n_positions', nCtx);
  const vocab_size = posInt('vocab_size');
  if (n_embd % n_head !== 0) throw new SftError(`n_embd ${n_embd} is not divisible by n_head ${n_head}`, where('n_head'));

  const innerRaw = raw.n_inner ?? null;
  if (innerRaw !== null && (typeof innerRaw !== 'number' || !Number.isSafeInteger(innerRaw) || innerRaw <= 0)) {
    throw new SftError(`must be a positive integer or null, got ${JSON.stringify(innerRaw)}`, where('n_inner'));
  }

  const eps = raw.layer_norm_epsilon ?? GPT2_DEFAULTS.layer_norm_epsilon;
  if (typeof eps !== 'number' || !(eps > 0 && eps < 1)) throw new SftError(`must be a small positive number, got ${JSON.stringify(raw.layer_norm_epsilon)}`, where('layer_norm_epsilon'));

  const act = raw.activation_function ?? GPT2_DEFAULTS.activation_function;
  if (typeof act !== 'string' || !(SUPPORTED_ACTIVATIONS as readonly string[]).includes(act)) {
    throw new SftError(`activation "${String(act)}" is not supported (supported: ${SUPPORTED_ACTIVATIONS.join(', ')}, both the tanh GELU)`, where('activation_function'));
  }

  if (!bool('scale_attn_weights', true)) throw new SftError('false is not supported: attention scores are always scaled by 1/sqrt(head dim)', where('scale_attn_weights'));
  if (bool('scale_attn_by_inverse_layer_idx', false)) throw new SftError('true is not supported (attention scaled by 1/layer index)', where('scale_attn_by_inverse_layer_idx'));
  if (bool('add_cross_attention', false)) throw new SftError('true is not supported: SFT Studio trains decoder-only GPT-2', where('add_cross_attention'));

  return {
    model_type: 'gpt2',
    n_layer,
    n_head,
    n_embd,
    n_positions,
    vocab_size,
    n_inner: innerRaw as number | null,
    layer_norm_epsilon: eps,
    activation_function: act as GPT2Config['activation_function'],
    resid_pdrop: prob('resid_pdrop'),
    embd_pdrop: prob('embd_pdrop'),
    attn_pdrop: prob('attn_pdrop'),
    tie_word_embeddings: bool('tie_word_embeddings', GPT2_DEFAULTS.tie_word_embeddings),
    bos_token_id: tokenId('bos_token_id'),
    eos_token_id: tokenId('eos_token_id'),
    pad_token_id: tokenId('pad_token_id'),
    raw: { ...raw },
  };
}

/** Reads and validates `<dir>/config.json`. */
export function readConfig(dir: string): GPT2Config {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) throw new SftError('not found: a Hugging Face model folder needs config.json, model.safetensors and tokenizer files', file);
  return parseConfig(parseJsonFile(file), file);
}

/** The MLP width (n_inner, or 4·n_embd when null). */
export function innerDim(c: GPT2Config): number {
  return c.n_inner ?? 4 * c.n_embd;
}

/** config.json content: every raw key kept, our fields written over them. */
export function configToJson(c: GPT2Config): Record<string, unknown> {
  const out: Record<string, unknown> = { ...c.raw };
  if (!Array.isArray(out.architectures)) out.architectures = ['GPT2LMHeadModel'];
  Object.assign(out, {
    model_type: 'gpt2',
    n_layer: c.n_layer,
    n_head: c.n_head,
    n_embd: c.n_embd,
    n_positions: c.n_positions,
    vocab_size: c.vocab_size,
    n_inner: c.n_inner,
    layer_norm_epsilon: c.layer_norm_epsilon,
    activation_function: c.activation_function,
    resid_pdrop: c.resid_pdrop,
    embd_pdrop: c.embd_pdrop,
    attn_pdrop: c.attn_pdrop,
    tie_word_embeddings: c.tie_word_embeddings,
    bos_token_id: c.bos_token_id,
    eos_token_id: c.eos_token_id,
    pad_token_id: c.pad_token_id,
  });
  if ('n_ctx' in out) out.n_ctx = c.n_positions;
  // Sorted keys, as transformers writes them.
  return Object.fromEntries(Object.keys(out).sort().map((k) => [k, out[k]]));
}

/** A GPT2Config from explicit sizes (benchmarks, tests, fresh models); everything else at the defaults. */
export function makeConfig(sizes: Partial<Omit<GPT2Config, 'raw' | 'model_type'>>): GPT2Config {
  return parseConfig({ model_type: 'gpt2', ...sizes }, '<config>');
}
