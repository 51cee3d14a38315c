/**
 * Shared shapes of the model layer. Dimension legend used across the runner:
 * B batch rows, T sequence length, C n_embd, H n_head, D head dim (C/H), V vocab, L layers, P n_positions.
 */

/** GPT-2 config.json, validated. `raw` keeps every key so saving writes back what was read. */
export interface GPT2Config {
  model_type: 'gpt2';
  n_layer: number;
  n_head: number;
  n_embd: number;
  n_positions: number;
  vocab_size: number;
  /** MLP width; null means 4 * n_embd. */
  n_inner: number | null;
  layer_norm_epsilon: number;
  activation_function: 'gelu_new' | 'gelu_pytorch_tanh';
  resid_pdrop: number;
  embd_pdrop: number;
  attn_pdrop: number;
  tie_word_embeddings: boolean;
  bos_token_id: number | null;
  eos_token_id: number | null;
  pad_token_id: number | null;
  raw: Record<string, unknown>;
}

/** One fp32 parameter on the host, row-major. */
export interface ParamTensor {
  shape: number[];
  data: Float32Array;
}

/**
 * Parameters under Hugging Face names (`transformer.wte.weight`, `transformer.h.0.attn.c_attn.weight`, …)
 * with Conv1D weights in HF's [in, out] layout. A tied `lm_head.weight` is not in the set.
 */
export type ParamSet = Map<string, ParamTensor>;

/** The tokenizer as the rest of the runner uses it. Special tokens in text are recognised by encode. */
export interface TextTokenizer {
  encode(text: string): number[];
  decode(ids: ArrayLike<number>, opts?: { skipSpecialTokens?: boolean }): string;
  tokenToId(token: string): number | undefined;
  /** Number of ids including added tokens (50257 for GPT-2, 50260 with the three role tokens). */
  readonly vocabSize: number;
  readonly eosId: number;
  /** pad = eos unless the tokenizer config names another pad token. */
  readonly padId: number;
  /** Special/added tokens, name → id (`<|endoftext|>`, `<|user|>`, …). */
  readonly specialTokens: Record<string, number>;
  /** File name → content to save with a model (model/tokenizer's tokenizers have it; saveModel needs it). */
  files?(): Record<string, string>;
}

export interface LoadedModel {
  dir: string;
  config: GPT2Config;
  params: ParamSet;
  tokenizer: TextTokenizer;
  /** Things the loader tolerated and the user may want to know (an ignored lm_head.weight, dropped buffers). */
  notes?: string[];
}
