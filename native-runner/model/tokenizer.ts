/**
 * GPT-2 byte-level BPE tokenizers from a Hugging Face folder, run by @huggingface/tokenizers.
 *
 * Layouts read (the first that is present wins):
 *   fast: tokenizer.json (+ tokenizer_config.json, optional)
 *   slow: vocab.json + merges.txt (+ added_tokens.json, special_tokens_map.json, tokenizer_config.json), as
 *         transformers' GPT2Tokenizer.save_pretrained writes it. The equivalent tokenizer.json object is built
 *         in memory: BPE model (vocab, merges), ByteLevel pre-tokenizer (GPT-2 regex) / decoder /
 *         post-processor, and every added token (added_tokens_decoder, added_tokens.json, the special
 *         tokens map) with special: true when it is a special token.
 * Both layouts give identical ids (test/model/tokenizer.test.ts checks the 30 golden texts).
 *
 * encode never adds BOS/EOS (add_special_tokens: false) and recognises special tokens written in the text;
 * decode keeps special tokens unless asked to skip them and never "cleans up" spaces unless the config says so.
 * `files()` gives what saveModel writes so the folder loads in transformers 4.x (slow or fast GPT2Tokenizer)
 * and 5.x alike: tokenizer.json, vocab.json, merges.txt, tokenizer_config.json (with the chat template),
 * special_tokens_map.json, added_tokens.json.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { SftError } from '../util/errors';
import type { TextTokenizer } from './types';
import { CHAT_TEMPLATE_JINJA, EOS_TOKEN } from './chatTemplate';
import { isPlainObject, parseJsonFile } from './strictJson';

/** One entry of tokenizer.json's `added_tokens`. */
export interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** The parts of tokenizer.json this module relies on; the rest is passed through untouched. */
export interface TokenizerJson {
  added_tokens: AddedTokenJson[];
  model: { type: string; vocab: Record<string, number>; merges: (string | [string, string])[]; [k: string]: unknown };
  [k: string]: unknown;
}

export interface HfTokenizer extends TextTokenizer {
  /** File name → content for saving the tokenizer (see header). */
  files(): Record<string, string>;
  /** A new tokenizer with `tokens` added as special tokens (ids after the current vocabulary); present ones are kept. */
  withSpecialTokens(tokens: readonly string[]): HfTokenizer;
  /** Where it was loaded from (folder), for messages. */
  readonly source: string;
  readonly layout: 'tokenizer.json' | 'vocab.json+merges.txt' | 'built';
  readonly json: TokenizerJson;
  readonly config: Record<string, unknown>;
}

/** A token given as a string or as an AddedToken dict ({content, …}); undefined when absent. */
function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (isPlainObject(v) && typeof v.content === 'string') return v.content;
  return undefined;
}

function readJsonObject(file: string): Record<string, unknown> {
  const v = parseJsonFile(file);
  if (!isPlainObject(v)) throw new SftError('must be a JSON object', file);
  return v;
}

function addedToken(id: number, content: string, special: boolean, flags: Record<string, unknown> = {}): AddedTokenJson {
  return {
    id,
    content,
    single_word: flags.single_word === true,
    lstrip: flags.lstrip === true,
    rstrip: flags.rstrip === true,
    normalized: flags.normalized === true && !special,
    special,
  };
}

/** Names of the special tokens a tokenizer config / special_tokens_map declares (bos, eos, unk, pad, additional). */
function declaredSpecialTokens(...maps: Record<string, unknown>[]): Set<string> {
  const out = new Set<string>();
  for (const m of maps) {
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token', 'sep_token', 'cls_token', 'mask_token']) {
      const t = tokenContent(m[key]);
      if (t !== undefined) out.add(t);
    }
    for (const key of ['additional_special_tokens', 'extra_special_tokens']) {
      const list = m[key];
      if (Array.isArray(list)) for (const t of list) {
        const c = tokenContent(t);
        if (c !== undefined) out.add(c);
      }
    }
  }
  return out;
}

/** Reads merges.txt: optional `#version` line, then one "left right" pair per line. */
function readMerges(file: string): [string, string][] {
  const text = fs.readFileSync(file, 'utf8');
  const lines = text.split('\n');
  const merges: [string, string][] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, '');
    if (line === '' || (i === 0 && line.startsWith('#version'))) continue;
    const parts = line.split(' ');
    if (parts.length !== 2 || !parts[0] || !parts[1]) throw new SftError(`expected "left right" (two tokens separated by one space), got ${JSON.stringify(line.slice(0, 60))}`, `${file}:${i + 1}`);
    merges.push([parts[0], parts[1]]);
  }
  return merges;
}

function checkVocab(vocab: unknown, where: string): Record<string, number> {
  if (!isPlainObject(vocab)) throw new SftError('vocabulary must be an object of token → id', where);
  const seen = new Map<number, string>();
  for (const [tok, id] of Object.entries(vocab)) {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) throw new SftError(`token ${JSON.stringify(tok)} has id ${JSON.stringify(id)}, expected a non-negative integer`, where);
    const prev = seen.get(id);
    if (prev !== undefined) throw new SftError(`id ${id} is used by both ${JSON.stringify(prev)} and ${JSON.stringify(tok)}`, where);
    seen.set(id, tok);
  }
  return vocab as Record<string, number>;
}

/** tokenizer.json object for the slow layout (see header). */
function buildJsonFromSlowFiles(dir: string): { json: TokenizerJson; config: Record<string, unknown> } {
  const vocabFile = path.join(dir, 'vocab.json');
  const vocab = checkVocab(parseJsonFile(vocabFile), vocabFile);
  const merges = readMerges(path.join(dir, 'merges.txt'));
  const cfgFile = path.join(dir, 'tokenizer_config.json');
  const config = fs.existsSync(cfgFile) ? readJsonObject(cfgFile) : {};
  const stmFile = path.join(dir, 'special_tokens_map.json');
  const stm = fs.existsSync(stmFile) ? readJsonObject(stmFile) : {};
  const atFile = path.join(dir, 'added_tokens.json');
  const addedJson = fs.existsSync(atFile) ? readJsonObject(atFile) : {};
  // GPT2Tokenizer's defaults: bos = eos = unk = <|endoftext|> unless the files name others.
  for (const key of ['bos_token', 'eos_token', 'unk_token']) {
    if (config[key] === undefined || config[key] === null) config[key] = stm[key] ?? EOS_TOKEN;
  }
  if (config.pad_token === undefined && stm.pad_token !== undefined) config.pad_token = stm.pad_token;
  const special = declaredSpecialTokens(config, stm);

  const added = new Map<number, AddedTokenJson>();
  const decoder = config.added_tokens_decoder;
  if (decoder !== undefined) {
    if (!isPlainObject(decoder)) throw new SftError('"added_tokens_decoder" must be an object of id → token', cfgFile);
    for (const [idText, v] of Object.entries(decoder)) {
      const id = Number(idText);
      const content = tokenContent(v);
      if (!Number.isSafeInteger(id) || id < 0 || content === undefined || !isPlainObject(v)) throw new SftError(`added_tokens_decoder["${idText}"] must map an integer id to {content, special, …}`, cfgFile);
      added.set(id, addedToken(id, content, v.special === true || special.has(content), v));
    }
  }
  for (const [content, id] of Object.entries(addedJson)) {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) throw new SftError(`token ${JSON.stringify(content)} has id ${JSON.stringify(id)}, expected a non-negative integer`, atFile);
    const prev = added.get(id);
    if (prev && prev.content !== content) throw new SftError(`id ${id} is ${JSON.stringify(content)} here but ${JSON.stringify(prev.content)} in tokenizer_config.json`, atFile);
    if (!prev) added.set(id, addedToken(id, content, special.has(content)));
  }
  // Declared special tokens already in the vocabulary (GPT-2's <|endoftext|> = 50256) are added tokens too.
  const addedContents = new Set([...added.values()].map((t) => t.content));
  for (const tok of special) {
    if (addedContents.has(tok)) continue;
    const id = vocab[tok];
    if (id === undefined) throw new SftError(`special token ${JSON.stringify(tok)} is in neither vocab.json nor added_tokens.json`, fs.existsSync(stmFile) ? stmFile : cfgFile);
    added.set(id, addedToken(id, tok, true));
  }
  const addPrefixSpace = config.add_prefix_space === true;
  const json: TokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [...added.values()].sort((a, b) => a.id - b.id),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: addPrefixSpace, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  return { json, config };
}

function validateTokenizerJson(v: unknown, file: string): TokenizerJson {
  if (!isPlainObject(v)) throw new SftError('must be a JSON object', file);
  const model = v.model;
  if (!isPlainObject(model)) throw new SftError('missing "model"', file);
  if (model.type !== 'BPE') throw new SftError(`model.type ${JSON.stringify(model.type)} is not supported (GPT-2 uses byte-level "BPE")`, file);
  checkVocab(model.vocab, `${file}: model.vocab`);
  if (!Array.isArray(model.merges)) throw new SftError('model.merges must be a list', file);
  const added = v.added_tokens ?? [];
  if (!Array.isArray(added)) throw new SftError('"added_tokens" must be a list', file);
  for (const [i, t] of added.entries()) {
    if (!isPlainObject(t) || typeof t.content !== 'string' || typeof t.id !== 'number' || !Number.isSafeInteger(t.id) || t.id < 0) {
      throw new SftError(`added_tokens[${i}] must be {id, content, special, …}`, file);
    }
  }
  return { ...v, added_tokens: added as AddedTokenJson[] } as TokenizerJson;
}

/** Builds the runner's tokenizer from a tokenizer.json object and its tokenizer_config. */
export function buildTokenizer(json: TokenizerJson, config: Record<string, unknown>, source: string, layout: HfTokenizer['layout'] = 'built'): HfTokenizer {
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(json as never, config as never);
  } catch (e) {
    throw new SftError(`cannot build the tokenizer: ${(e as Error).message}`, source);
  }
  const vocab = json.model.vocab;
  let vocabSize = 0;
  for (const id of Object.values(vocab)) if (id + 1 > vocabSize) vocabSize = id + 1;
  const specialTokens: Record<string, number> = {};
  const idOf = new Map<string, number>();
  for (const t of json.added_tokens) {
    if (t.id + 1 > vocabSize) vocabSize = t.id + 1;
    idOf.set(t.content, t.id);
    if (t.special) specialTokens[t.content] = t.id;
  }
  const tokenToId = (token: string): number | undefined => idOf.get(token) ?? (Object.hasOwn(vocab, token) ? vocab[token] : undefined);
  const named = (key: string): number | undefined => {
    const c = tokenContent(config[key]);
    if (c === undefined) return undefined;
    const id = tokenToId(c);
    if (id === undefined) throw new SftError(`${key} ${JSON.stringify(c)} is not in the vocabulary`, source);
    return id;
  };
  const eosId = named('eos_token') ?? tokenToId(EOS_TOKEN);
  if (eosId === undefined) throw new SftError(`no eos_token in tokenizer_config.json and no ${EOS_TOKEN} in the vocabulary`, source);
  const padId = named('pad_token') ?? eosId;
  const cleanUp = config.clean_up_tokenization_spaces === true;

  const self: HfTokenizer = {
    source,
    layout,
    json,
    config,
    vocabSize,
    eosId,
    padId,
    specialTokens,
    encode(text: string): number[] {
      if (text === '') return [];
      return tok.encode(text, { add_special_tokens: false }).ids;
    },
    decode(ids: ArrayLike<number>, opts: { skipSpecialTokens?: boolean } = {}): string {
      const arr = Array.from(ids);
      for (const id of arr) {
        if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new SftError(`token id ${id} is outside the vocabulary (0..${vocabSize - 1})`, source);
      }
      if (arr.length === 0) return '';
      return tok.decode(arr, { skip_special_tokens: opts.skipSpecialTokens === true, clean_up_tokenization_spaces: cleanUp });
    },
    tokenToId,
    files: () => tokenizerFiles(self),
    withSpecialTokens(tokens: readonly string[]): HfTokenizer {
      const added = [...json.added_tokens];
      let next = vocabSize;
      for (const t of tokens) {
        const existing = added.find((a) => a.content === t);
        if (existing) {
          if (!existing.special) added.splice(added.indexOf(existing), 1, { ...existing, special: true });
          continue;
        }
        if (Object.hasOwn(vocab, t)) {
          added.push(addedToken(vocab[t]!, t, true));
        } else {
          added.push(addedToken(next++, t, true));
        }
      }
      const list = config.additional_special_tokens;
      const additional = Array.isArray(list) ? list.map(tokenContent).filter((x): x is string => x !== undefined) : [];
      for (const t of tokens) if (!additional.includes(t)) additional.push(t);
      const newConfig: Record<string, unknown> = { ...config, additional_special_tokens: additional };
      delete newConfig.extra_special_tokens;
      return buildTokenizer({ ...json, added_tokens: added.sort((a, b) => a.id - b.id) }, newConfig, source, 'built');
    },
  };
  return self;
}

/** Loads a tokenizer folder (see header for the layouts). Errors name the file and what was expected. */
export function loadTokenizer(dir: string): HfTokenizer {
  const fast = path.join(dir, 'tokenizer.json');
  const vocabFile = path.join(dir, 'vocab.json');
  const mergesFile = path.join(dir, 'merges.txt');
  const cfgFile = path.join(dir, 'tokenizer_config.json');
  if (fs.existsSync(fast)) {
    const json = validateTokenizerJson(parseJsonFile(fast), fast);
    const config = fs.existsSync(cfgFile) ? readJsonObject(cfgFile) : {};
    return buildTokenizer(json, config, dir, 'tokenizer.json');
  }
  const hasVocab = fs.existsSync(vocabFile);
  const hasMerges = fs.existsSync(mergesFile);
  if (hasMerges && !hasVocab) throw new SftError(`merges.txt is present but vocab.json is missing (the slow GPT-2 layout needs both)`, mergesFile);
  if (hasVocab && !hasMerges) throw new SftError(`vocab.json is present but merges.txt is missing (the slow GPT-2 layout needs both)`, vocabFile);
  if (!hasVocab) {
    throw new SftError(`no tokenizer found: expected tokenizer.json (with tokenizer_config.json), or vocab.json + merges.txt (with added_tokens.json, special_tokens_map.json, tokenizer_config.json)`, dir);
  }
  const { json, config } = buildJsonFromSlowFiles(dir);
  return buildTokenizer(json, config, dir, 'vocab.json+merges.txt');
}

/** The token → id map of the BPE model in id order (for vocab.json). */
function vocabInIdOrder(vocab: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(vocab).sort((a, b) => a[1] - b[1]));
}

/** File name → content for a saved tokenizer folder. */
function tokenizerFiles(t: HfTokenizer): Record<string, string> {
  const { json, config } = t;
  const merges = json.model.merges.map((m) => (typeof m === 'string' ? m : `${m[0]} ${m[1]}`));
  const eos = t.json.added_tokens.find((a) => a.id === t.eosId)?.content ?? EOS_TOKEN;
  const pad = t.json.added_tokens.find((a) => a.id === t.padId)?.content ?? eos;
  const bos = tokenContent(config.bos_token) ?? eos;
  const unk = tokenContent(config.unk_token) ?? eos;
  const baseNames = new Set([eos, pad, bos, unk]);
  const additional = json.added_tokens.filter((a) => a.special && !baseNames.has(a.content)).map((a) => a.content);
  const addedTokensDecoder: Record<string, unknown> = {};
  for (const a of json.added_tokens) {
    addedTokensDecoder[String(a.id)] = { content: a.content, lstrip: a.lstrip, normalized: a.normalized, rstrip: a.rstrip, single_word: a.single_word, special: a.special };
  }
  const baseVocabSize = Object.keys(json.model.vocab).length;
  const addedTokensJson: Record<string, number> = {};
  for (const a of json.added_tokens) if (a.id >= baseVocabSize) addedTokensJson[a.content] = a.id;

  const tokenizerJson = {
    ...json,
    // Merges as "left right" strings: readable by every tokenizers version (byte-level tokens hold no spaces).
    model: { ...json.model, vocab: vocabInIdOrder(json.model.vocab), merges },
  };
  const keep = { ...config };
  for (const k of ['added_tokens_decoder', 'additional_special_tokens', 'extra_special_tokens', 'chat_template', 'tokenizer_class', 'backend', 'auto_map']) delete keep[k];
  const tokenizerConfig = {
    add_bos_token: false,
    add_prefix_space: config.add_prefix_space === true,
    clean_up_tokenization_spaces: config.clean_up_tokenization_spaces === true,
    errors: 'replace',
    model_max_length: 1024,
    ...keep,
    added_tokens_decoder: addedTokensDecoder,
    additional_special_tokens: additional,
    bos_token: bos,
    eos_token: eos,
    pad_token: pad,
    unk_token: unk,
    chat_template: CHAT_TEMPLATE_JINJA,
    tokenizer_class: 'GPT2Tokenizer',
  };
  const specialTokensMap = { additional_special_tokens: additional, bos_token: bos, eos_token: eos, pad_token: pad, unk_token: unk };
  return {
    'tokenizer.json': JSON.stringify(tokenizerJson, null, 2) + '\n',
    'tokenizer_config.json': JSON.stringify(sortKeys(tokenizerConfig), null, 2) + '\n',
    'special_tokens_map.json': JSON.stringify(specialTokensMap, null, 2) + '\n',
    'added_tokens.json': JSON.stringify(addedTokensJson, null, 2) + '\n',
    'vocab.json': JSON.stringify(vocabInIdOrder(json.model.vocab)) + '\n',
    'merges.txt': ['#version: 0.2', ...merges].join('\n') + '\n',
  };
}

function sortKeys(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.keys(o).sort().map((k) => [k, o[k]]));
}

/** The file names `files()` produces (saveModel replaces all of them). */
export const TOKENIZER_FILE_NAMES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'added_tokens.json', 'vocab.json', 'merges.txt'] as const;
