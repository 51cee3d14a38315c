/**
 * Hugging Face GPT-2 model folders in and out.
 *
 * Reading (`loadModel`): config.json → GPT2Config; weights from model.safetensors or a sharded
 * model.safetensors.index.json; the tokenizer (model/tokenizer). Tensor names are normalised to
 * `transformer.…` (older checkpoints such as the original gpt2 omit the prefix), the causal-mask buffers
 * `h.N.attn.bias` / `h.N.attn.masked_bias` are dropped, and every expected parameter must be present with its
 * shape (missing, extra and wrong-shaped tensors are named). A tied `lm_head.weight` may be absent or present
 * (equal to wte: dropped; different: ignored with a note, as transformers ties it to wte). The tokenizer's
 * vocabulary must fit in the embedding rows.
 *
 * Writing (`saveModel`): config.json, generation_config.json, model.safetensors (HF names, fp32, tied lm_head
 * not written) and the tokenizer files. A folder that holds only model files (or does not exist) is replaced
 * as a whole (built next to it, renamed into place); a folder with other things in it (checkpoint folders,
 * metrics.jsonl, … : a training output_dir) keeps them and gets the model files replaced one rename at a time.
 *
 * That second kind of save cannot be atomic as a whole (the Hugging Face layout puts the files directly in the
 * folder), so it is made detectable: before the first rename it writes the marker `.sft-model-save.json`
 * (a dot-file: transformers and our listings ignore it) recording, for every file the save writes or
 * deletes, the SHA-256 of its content before and after the save; it renames the weights last and deletes the
 * marker once everything is in place. A folder that still has a marker was caught mid-save (or is being
 * saved right now): loadModel/inspectModelFolder compare the files with the marker (`checkInterruptedSave`)
 * and refuse a mix — some files from the new save while others are still the old ones, e.g. a new
 * config.json over old weights — with an SftError naming the files; when every file is still the old
 * content (or already the new) the folder is a consistent model and loads, with a note.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SftError } from '../util/errors';
import { fsStep, fsyncDir, renameRetrying, writeDirAtomic, writeFileAtomic, writeFileSynced } from '../util/atomic';
import type { GPT2Config, LoadedModel, ParamSet, ParamTensor, TextTokenizer } from './types';
import { configToJson, readConfig } from './config';
import { countParameters, expectedParamShapes } from './gpt2Params';
import { readSafetensors, readSafetensorsHeader, readShardedHeaders, readShardedSafetensors, encodeSafetensors, type SafetensorsHeader, type ShardedHeaders } from './safetensors';
import { loadTokenizer, TOKENIZER_FILE_NAMES } from './tokenizer';
import { SAVE_MARKER_FILE } from '../../protocol/runFiles';

export const WEIGHTS_FILE = 'model.safetensors';
export const WEIGHTS_INDEX_FILE = 'model.safetensors.index.json';
/** Marker of a model save in progress in a folder with other content (see header). */
export { SAVE_MARKER_FILE };
const SAVE_MARKER_FORMAT = 'sft-studio/model-save';

/** Files a saved model folder consists of (anything else in the folder is left alone by saveModel). */
const MODEL_FILE_NAMES = new Set<string>(['config.json', 'generation_config.json', WEIGHTS_FILE, WEIGHTS_INDEX_FILE, 'chat_template.jinja', ...TOKENIZER_FILE_NAMES]);
const SHARD_RE = /^model-\d+-of-\d+\.safetensors$/;

const BUFFER_RE = /(^|\.)h\.\d+\.attn\.(bias|masked_bias)$/;

/** HF name with the `transformer.` prefix restored (lm_head.weight stays as it is). */
export function canonicalParamName(name: string): string {
  if (name.startsWith('transformer.') || name === 'lm_head.weight') return name;
  return `transformer.${name}`;
}

function requireDir(dir: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new SftError('model folder not found', dir);
  }
  if (!st.isDirectory()) throw new SftError('not a folder (expected a Hugging Face model folder with config.json)', dir);
}

/** Which weights file a folder uses. */
export function weightsSource(dir: string): { kind: 'single' | 'sharded'; file: string } {
  const single = path.join(dir, WEIGHTS_FILE);
  const index = path.join(dir, WEIGHTS_INDEX_FILE);
  if (fs.existsSync(single)) return { kind: 'single', file: single };
  if (fs.existsSync(index)) return { kind: 'sharded', file: index };
  const bin = ['pytorch_model.bin', 'pytorch_model.bin.index.json', 'tf_model.h5', 'model.ckpt.index'].find((f) => fs.existsSync(path.join(dir, f)));
  if (bin) throw new SftError(`only safetensors weights are supported, found ${bin} (convert it: save_pretrained(..., safe_serialization=True))`, path.join(dir, bin));
  throw new SftError(`no weights: expected ${WEIGHTS_FILE} or ${WEIGHTS_INDEX_FILE}`, dir);
}

function listNames(names: string[], max = 4): string {
  const shown = names.slice(0, max).join(', ');
  return names.length > max ? `${shown} and ${names.length - max} more` : shown;
}

/**
 * Checks raw tensor names/shapes against the config. Returns raw name → canonical name for the tensors to
 * keep, the canonical name of an lm_head that must be compared with wte, and notes.
 */
export function matchParamShapes(config: GPT2Config, found: Map<string, number[]>, where: string): { keep: Map<string, string>; lmHeadRaw: string | undefined; notes: string[] } {
  const expected = expectedParamShapes(config);
  const keep = new Map<string, string>();
  const notes: string[] = [];
  const extra: string[] = [];
  const wrong: string[] = [];
  let lmHeadRaw: string | undefined;
  let buffers = 0;
  const seen = new Set<string>();
  for (const [raw, shape] of found) {
    if (BUFFER_RE.test(raw)) {
      buffers++;
      continue;
    }
    const name = canonicalParamName(raw);
    if (seen.has(name)) throw new SftError(`tensor ${name} is stored twice (as ${raw} and with/without the "transformer." prefix)`, where);
    seen.add(name);
    if (name === 'lm_head.weight' && config.tie_word_embeddings) {
      const wte = expected.get('transformer.wte.weight')!;
      if (shape.join(',') !== wte.join(',')) wrong.push(`lm_head.weight ${JSON.stringify(shape)} (expected ${JSON.stringify(wte)}, tied to wte)`);
      lmHeadRaw = raw;
      continue;
    }
    const exp = expected.get(name);
    if (!exp) {
      extra.push(raw);
      continue;
    }
    if (exp.length !== shape.length || exp.some((d, i) => d !== shape[i])) wrong.push(`${raw} ${JSON.stringify(shape)} (expected ${JSON.stringify(exp)})`);
    keep.set(raw, name);
  }
  const missing = [...expected.keys()].filter((n) => !seen.has(n));
  if (wrong.length) throw new SftError(`wrong tensor shape${wrong.length > 1 ? 's' : ''} for config.json (n_layer ${config.n_layer}, n_embd ${config.n_embd}, vocab_size ${config.vocab_size}, n_positions ${config.n_positions}): ${listNames(wrong, 3)}`, where);
  if (missing.length) throw new SftError(`missing tensor${missing.length > 1 ? 's' : ''}: ${listNames(missing)}`, where);
  if (extra.length) throw new SftError(`unexpected tensor${extra.length > 1 ? 's' : ''} for a GPT-2 with n_layer ${config.n_layer}: ${listNames(extra)}`, where);
  if (buffers) notes.push(`dropped ${buffers} attention-mask buffer${buffers > 1 ? 's' : ''} (h.N.attn.bias), which are not parameters`);
  return { keep, lmHeadRaw, notes };
}

/** The validated header(s) of a folder's weights: the single file's, or the index's and every shard's. */
export type WeightHeaders = { kind: 'single'; file: string; header: SafetensorsHeader } | { kind: 'sharded'; file: string; sharded: ShardedHeaders };

/**
 * Tensor names and shapes in a folder's weights, from the headers only (no tensor data read). `headers` is
 * what was read (each header once), for loading the data without reading them again.
 */
export function readParamShapes(dir: string): { shapes: Map<string, number[]>; file: string; headers: WeightHeaders } {
  const src = weightsSource(dir);
  const shapes = new Map<string, number[]>();
  let headers: WeightHeaders;
  if (src.kind === 'single') {
    const header = readSafetensorsHeader(src.file);
    for (const e of header.entries) shapes.set(e.name, e.shape);
    headers = { kind: 'single', file: src.file, header };
  } else {
    // Shards in sorted order, tensors in header order; cross-checked against the weight_map.
    const sharded = readShardedHeaders(src.file);
    for (const h of sharded.headers.values()) for (const e of h.entries) shapes.set(e.name, e.shape);
    headers = { kind: 'sharded', file: src.file, sharded };
  }
  return { shapes, file: src.file, headers };
}

function sameData(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** Loads and validates the parameters of a model folder against `config`. */
export function loadParams(dir: string, config: GPT2Config): { params: ParamSet; notes: string[] } {
  const { shapes, file, headers } = readParamShapes(dir);
  const { keep, lmHeadRaw, notes } = matchParamShapes(config, shapes, file);
  const wanted = (n: string) => keep.has(n) || n === lmHeadRaw;
  // The headers read above are handed on: each file's header is read once per load.
  const raw = headers.kind === 'single' ? readSafetensors(headers.file, { filter: wanted, header: headers.header }) : readShardedSafetensors(headers.file, { filter: wanted, shards: headers.sharded });
  // Parameters in the canonical (named_parameters) order.
  const byName = new Map<string, ParamTensor>();
  for (const [r, t] of raw) if (keep.has(r)) byName.set(keep.get(r)!, t);
  const params: ParamSet = new Map();
  for (const name of expectedParamShapes(config).keys()) params.set(name, byName.get(name)!);
  if (lmHeadRaw !== undefined) {
    const lm = raw.get(lmHeadRaw)!;
    if (!sameData(lm.data, params.get('transformer.wte.weight')!.data)) {
      notes.push('lm_head.weight differs from transformer.wte.weight but config.json ties them (tie_word_embeddings): lm_head.weight is ignored and wte is used, as transformers does');
    }
  }
  return { params, notes };
}

/** Checks that every id of the tokenizer has an embedding row. */
export function checkTokenizerFits(tokenizer: TextTokenizer, config: GPT2Config, dir: string): void {
  if (tokenizer.vocabSize > config.vocab_size) {
    throw new SftError(`the tokenizer has ${tokenizer.vocabSize} tokens but the embeddings have ${config.vocab_size} rows (config.json vocab_size): ids ${config.vocab_size}..${tokenizer.vocabSize - 1} would have no embedding`, dir);
  }
}

/** Loads a model folder: config, weights (validated), tokenizer. */
export async function loadModel(dir: string): Promise<LoadedModel> {
  requireDir(dir);
  const saveNote = checkInterruptedSave(dir);
  const config = readConfig(dir);
  const tokenizer = loadTokenizer(dir);
  checkTokenizerFits(tokenizer, config, dir);
  const { params, notes } = loadParams(dir, config);
  if (saveNote) notes.unshift(saveNote);
  return { dir, config, params, tokenizer, notes };
}

function generationConfig(c: GPT2Config): Record<string, unknown> {
  const g: Record<string, unknown> = { _from_model_config: true, bos_token_id: c.bos_token_id, eos_token_id: c.eos_token_id };
  if (c.pad_token_id !== null) g.pad_token_id = c.pad_token_id;
  if (typeof c.raw.transformers_version === 'string') g.transformers_version = c.raw.transformers_version;
  return g;
}

export interface SaveModelInput {
  config: GPT2Config;
  params: ParamSet;
  tokenizer: TextTokenizer;
}

/** The files of a saved model: name → chunks. */
function modelFiles(m: SaveModelInput): Map<string, (string | Uint8Array)[]> {
  const { config, params, tokenizer } = m;
  const expected = expectedParamShapes(config);
  const out = new Map<string, ParamTensor>();
  for (const [name, shape] of expected) {
    const t = params.get(name);
    if (!t) throw new SftError(`cannot save: parameter ${name} is missing`, 'saveModel');
    if (t.shape.join(',') !== shape.join(',')) throw new SftError(`cannot save: parameter ${name} has shape ${JSON.stringify(t.shape)}, config needs ${JSON.stringify(shape)}`, 'saveModel');
    out.set(name, t);
  }
  for (const name of params.keys()) {
    if (!expected.has(name) && !(name === 'lm_head.weight' && config.tie_word_embeddings)) throw new SftError(`cannot save: unexpected parameter ${name}`, 'saveModel');
  }
  if (!tokenizer.files) throw new SftError('cannot save: the tokenizer cannot write its files (load it with model/tokenizer loadTokenizer)', 'saveModel');
  if (tokenizer.vocabSize > config.vocab_size) throw new SftError(`cannot save: tokenizer has ${tokenizer.vocabSize} tokens, embeddings ${config.vocab_size}`, 'saveModel');
  const files = new Map<string, (string | Uint8Array)[]>();
  files.set('config.json', [JSON.stringify(configToJson(config), null, 2) + '\n']);
  files.set('generation_config.json', [JSON.stringify(generationConfig(config), null, 2) + '\n']);
  files.set(WEIGHTS_FILE, encodeSafetensors(out, { format: 'pt' }));
  for (const [name, content] of Object.entries(tokenizer.files())) files.set(name, [content]);
  return files;
}

/**
 * Writes the model files into an existing folder that is being built atomically by the caller (e.g. a
 * checkpoint's temp folder under util/atomic writeDirAtomic): each file written and fsynced, no renames.
 */
export function writeModelFiles(dir: string, m: SaveModelInput): void {
  for (const [name, chunks] of modelFiles(m)) writeFileSynced(path.join(dir, name), chunks);
}

/** Writes a model folder (see header for the replace/keep rule). */
export async function saveModel(dir: string, m: SaveModelInput): Promise<void> {
  const files = modelFiles(m);
  const existing = fs.existsSync(dir) ? fs.readdirSync(dir) : [];
  const foreign = existing.filter((f) => !MODEL_FILE_NAMES.has(f) && !SHARD_RE.test(f));
  if (foreign.length === 0) {
    await writeDirAtomic(dir, (tmp) => {
      for (const [name, chunks] of files) writeFileSynced(path.join(tmp, name), chunks);
    });
    return;
  }
  // The folder holds other things: stage the files in a temp folder inside it (a leftover one is cleared by
  // train/checkpoint removeStaleTemp), record old and new content in the marker, then rename each into place,
  // the weights last (see header).
  const stale = existing.filter((f) => !files.has(f) && (f === WEIGHTS_INDEX_FILE || SHARD_RE.test(f)));
  const record: Record<string, { old: string | null; new: string | null }> = {};
  for (const [name, chunks] of files) record[name] = { old: existing.includes(name) ? hashFile(path.join(dir, name)) : null, new: hashChunks(chunks) };
  for (const f of stale) record[f] = { old: hashFile(path.join(dir, f)), new: null };
  const stage = path.join(dir, `.save-${process.pid}-${Date.now()}`);
  fs.mkdirSync(stage);
  try {
    for (const [name, chunks] of files) writeFileSynced(path.join(stage, name), chunks);
    fsyncDir(stage);
    const marker: SaveMarker = { format: SAVE_MARKER_FORMAT, version: 1, started: new Date().toISOString(), pid: process.pid, files: record };
    writeFileAtomic(path.join(dir, SAVE_MARKER_FILE), `${JSON.stringify(marker, null, 2)}\n`);
    const order = [...files.keys()].filter((n) => n !== WEIGHTS_FILE);
    if (files.has(WEIGHTS_FILE)) order.push(WEIGHTS_FILE);
    for (const name of order) {
      renameRetrying(path.join(stage, name), path.join(dir, name));
      fsStep('renamed into place', path.join(dir, name));
    }
    // Stale weights of another layout (a sharded index and its shards) would shadow nothing but confuse readers.
    for (const f of stale) {
      fs.rmSync(path.join(dir, f), { force: true });
      fsStep('removed', path.join(dir, f));
    }
    fsyncDir(dir);
    fsStep('fsynced', dir);
    fs.rmSync(path.join(dir, SAVE_MARKER_FILE), { force: true });
    fsyncDir(dir);
    fsStep('removed marker', path.join(dir, SAVE_MARKER_FILE));
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

interface SaveMarker {
  format: typeof SAVE_MARKER_FORMAT;
  version: 1;
  started: string;
  pid: number;
  /** File name → SHA-256 (hex) before and after the save; null = absent. */
  files: Record<string, { old: string | null; new: string | null }>;
}

function hashChunks(chunks: (string | Uint8Array)[]): string {
  const h = crypto.createHash('sha256');
  for (const c of chunks) h.update(c);
  return h.digest('hex');
}

/** SHA-256 (hex) of a file's content, or null when it does not exist. */
function hashFile(file: string): string | null {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  try {
    const h = crypto.createHash('sha256');
    const buf = Buffer.allocUnsafe(1 << 22);
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
    return h.digest('hex');
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Checks a folder for a model save caught part-way (its marker is still there, see header). Returns null when
 * there is no marker or the files are all the new ones (a save that finished but for deleting its marker), a
 * note when they are all still the old ones (the model from before the save, consistent), and throws an
 * SftError naming the files when some are new and others old.
 */
export function checkInterruptedSave(dir: string): string | null {
  const file = path.join(dir, SAVE_MARKER_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  let marker: SaveMarker;
  try {
    marker = JSON.parse(text);
    if (marker?.format !== SAVE_MARKER_FORMAT || typeof marker.files !== 'object' || marker.files === null) throw new Error('not a model-save marker');
  } catch (e) {
    return `${SAVE_MARKER_FILE} is unreadable (${(e as Error).message}): the folder may hold an interrupted save`;
  }
  const onlyNew: string[] = [];
  const onlyOld: string[] = [];
  for (const [name, h] of Object.entries(marker.files)) {
    const now = hashFile(path.join(dir, name));
    const isNew = now === h.new;
    const isOld = now === h.old;
    if (isNew && !isOld) onlyNew.push(name);
    else if (isOld && !isNew) onlyOld.push(name);
  }
  const when = `the save started ${marker.started} by pid ${marker.pid}`;
  if (onlyOld.length === 0) return null;
  if (onlyNew.length === 0) return `a model save into this folder did not finish (${when}); its files are still the complete model from before that save`;
  throw new SftError(
    `a model save into this folder is in progress or was interrupted (${when}): ${onlyNew.join(', ')} ${onlyNew.length > 1 ? 'are' : 'is'} new but ${onlyOld.join(', ')} ${onlyOld.length > 1 ? 'are' : 'is'} still from before, so the files do not belong together. Load the newest checkpoint-<step> folder instead, or save/train again into this folder`,
    dir,
  );
}

/** Quick facts about a folder without reading tensor data (for `sft inspect`). */
export interface ModelSummary {
  dir: string;
  config: GPT2Config;
  parameters: number;
  weightsFile: string;
  tensorCount: number;
  tokenizer: TextTokenizer;
  notes: string[];
}

export function inspectModelFolder(dir: string): ModelSummary {
  requireDir(dir);
  const saveNote = checkInterruptedSave(dir);
  const config = readConfig(dir);
  const { shapes, file } = readParamShapes(dir);
  const { notes } = matchParamShapes(config, shapes, file);
  if (saveNote) notes.unshift(saveNote);
  const tokenizer = loadTokenizer(dir);
  return { dir, config, parameters: countParameters(config), weightsFile: file, tensorCount: shapes.size, tokenizer, notes };
}
