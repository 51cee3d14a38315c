/**
 * `sft inspect --model DIR [--json]`: what a Hugging Face GPT-2 folder holds — architecture, parameter count,
 * tokenizer and its special-token ids, and whether it is ready for chat (role tokens present as special
 * tokens, every token id inside the embeddings). Reads tensor headers only, so it is fast on 124M models.
 * With --json the last stdout line is one object: model_type, n_layer, n_head, n_embd, n_positions,
 * vocab_size, parameters, tokenizer_vocab_size, special_tokens (name → id), chat_ready, missing_role_tokens,
 * weights_file, notes. A bad folder is an SftError naming the file (main prints `error: …`, exit 1).
 */
import * as path from 'node:path';
import type { Command } from '../command';
import { parseOptions, required } from '../command';
import { inspectModelFolder } from '../../model/modelFolder';
import { missingRoleTokens } from '../../model/chat';
import { innerDim } from '../../model/config';

const usage = 'sft inspect --model DIR [--json]';

export const command: Command = {
  name: 'inspect',
  summary: 'Show a model folder: architecture, parameters, tokenizer, chat readiness',
  usage,
  async run(argv) {
    const { values } = parseOptions(argv, { model: { type: 'string' }, json: { type: 'boolean' } }, usage);
    const dir = required(values.model, 'model', usage);
    const s = inspectModelFolder(dir);
    const c = s.config;
    const tok = s.tokenizer;
    const missing = missingRoleTokens(tok);
    const embeddingsSized = tok.vocabSize <= c.vocab_size;
    const chatReady = missing.length === 0 && embeddingsSized;
    const specials = Object.entries(tok.specialTokens).sort((a, b) => a[1] - b[1]);

    const lines = [
      `model        ${path.resolve(dir)}`,
      `type         ${c.model_type} (${c.activation_function}, ${c.tie_word_embeddings ? 'tied' : 'untied'} lm_head)`,
      `layers       ${c.n_layer}`,
      `heads        ${c.n_head} (head dim ${c.n_embd / c.n_head})`,
      `width        ${c.n_embd} (MLP ${innerDim(c)})`,
      `context      ${c.n_positions}`,
      `vocab        ${c.vocab_size} embedding rows`,
      `parameters   ${s.parameters.toLocaleString('en-US')}`,
      `weights      ${path.basename(s.weightsFile)} (${s.tensorCount} tensors)`,
      `tokenizer    ${tok.vocabSize} tokens, eos ${tok.eosId}, pad ${tok.padId}`,
      `special      ${specials.map(([n, id]) => `${n}=${id}`).join(' ')}`,
      `chat ready   ${chatReady ? 'yes' : 'no'}` +
        (missing.length ? ` — missing role tokens ${missing.join(' ')} (sft train adds them)` : '') +
        (embeddingsSized ? '' : ` — tokenizer has ${tok.vocabSize} ids but only ${c.vocab_size} embedding rows`),
      ...s.notes.map((n) => `note         ${n}`),
    ];
    console.log(lines.join('\n'));
    if (values.json) {
      console.log(
        JSON.stringify({
          model_type: c.model_type,
          n_layer: c.n_layer,
          n_head: c.n_head,
          n_embd: c.n_embd,
          n_positions: c.n_positions,
          vocab_size: c.vocab_size,
          parameters: s.parameters,
          tokenizer_vocab_size: tok.vocabSize,
          special_tokens: Object.fromEntries(specials),
          eos_token_id: tok.eosId,
          pad_token_id: tok.padId,
          chat_ready: chatReady,
          missing_role_tokens: missing,
          weights_file: path.basename(s.weightsFile),
          notes: s.notes,
        }),
      );
    }
    return 0;
  },
};
