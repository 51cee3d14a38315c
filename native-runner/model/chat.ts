/**
 * Preparing a base GPT-2 for chat, as the recipe does (tokenizer.add_special_tokens + resize_token_embeddings):
 * `<|user|>`, `<|assistant|>`, `<|system|>` become special tokens when missing (ids 50257, 50258, 50259 on
 * GPT-2's 50257-token vocabulary), pad = eos, and wte [V,C] grows to the tokenizer's size with each new row set
 * to the mean of the existing rows (transformers' mean resizing without its 1e-9-covariance jitter); an untied
 * lm_head grows the same way. On a model that is already ready this is a no-op (same object, nothing added).
 */
import { SftError } from '../util/errors';
import type { LoadedModel, ParamSet, ParamTensor } from './types';
import { ROLE_TOKENS } from './chatTemplate';
import type { HfTokenizer } from './tokenizer';

/** Rows [0, oldRows) copied, rows [oldRows, newRows) = mean of the old rows (accumulated in float64). */
export function growRowsWithMean(t: ParamTensor, newRows: number): ParamTensor {
  const [oldRows, C] = t.shape as [number, number];
  if (newRows <= oldRows) return t;
  const data = new Float32Array(newRows * C);
  data.set(t.data);
  const mean = new Float64Array(C);
  for (let r = 0; r < oldRows; r++) {
    const off = r * C;
    for (let c = 0; c < C; c++) mean[c]! += t.data[off + c]!;
  }
  const row = new Float32Array(C);
  for (let c = 0; c < C; c++) row[c] = mean[c]! / oldRows;
  for (let r = oldRows; r < newRows; r++) data.set(row, r * C);
  return { shape: [newRows, C], data };
}

/** Role tokens the tokenizer does not yet have as special tokens. */
export function missingRoleTokens(tokenizer: { specialTokens: Record<string, number> }): string[] {
  return ROLE_TOKENS.filter((t) => tokenizer.specialTokens[t] === undefined);
}

function isHfTokenizer(t: unknown): t is HfTokenizer {
  return typeof (t as HfTokenizer).withSpecialTokens === 'function';
}

export function prepareForChat(model: LoadedModel): { model: LoadedModel; added: string[] } {
  const added = missingRoleTokens(model.tokenizer);
  const { config } = model;
  const eos = model.tokenizer.eosId;
  if (added.length === 0 && model.tokenizer.vocabSize <= config.vocab_size && config.pad_token_id !== null) return { model, added };

  let tokenizer = model.tokenizer;
  if (added.length) {
    if (!isHfTokenizer(tokenizer)) throw new SftError('cannot add chat tokens: the tokenizer was not loaded from a Hugging Face folder', model.dir);
    tokenizer = tokenizer.withSpecialTokens(ROLE_TOKENS);
  }
  const V = Math.max(config.vocab_size, tokenizer.vocabSize);
  const params: ParamSet = new Map();
  for (const [name, t] of model.params) {
    params.set(name, name === 'transformer.wte.weight' || name === 'lm_head.weight' ? growRowsWithMean(t, V) : t);
  }
  const newConfig = { ...config, vocab_size: V, pad_token_id: config.pad_token_id ?? eos, raw: { ...config.raw } };
  return { model: { ...model, config: newConfig, params, tokenizer }, added };
}
