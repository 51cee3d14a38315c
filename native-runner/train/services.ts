/**
 * The non-training requests of `sft serve`, wired to the other layers: `plan` (config + data →
 * train/plan computePlan), `preview` (data/preview), `chat` and `evaluate` (infer/ and the engine).
 * Also `modelTokenizer(dir)`: the tokenizer training will use (role tokens added when missing, as
 * prepareForChat does), so plans and previews count the same tokens as the run.
 */
import * as fs from 'node:fs';
import type { RequestParams, RequestResult } from '../../protocol/runner';
import { previewDataset } from '../data/preview';
import { loadTrainingData } from '../data/dataset';
import { epochOrder } from '../data/batching';
import { DATASET_FORMATS, isFormatChoice, type FormatChoice } from '../data/formats';
import { missingRoleTokens } from '../model/chat';
import { ROLE_TOKENS } from '../model/chatTemplate';
import { loadTokenizer, type HfTokenizer } from '../model/tokenizer';
import { readConfig } from '../model/config';
import { downloadModel, looksLikeHubId } from '../util/download';
import { SftError } from '../util/errors';
import { trainingDataOptions, type RunConfig } from './config';
import { computePlan } from './plan';
import { configFromParam, type RequestContext, type ServiceHandlers } from './server';
import { defaultPreviewModel } from '../cli/commands/preview';

/** A local model folder for `spec` (hub ids are downloaded into the cache first). */
export async function resolveModelDir(spec: string, log?: (m: string) => void): Promise<string> {
  if (fs.existsSync(spec)) return spec;
  if (looksLikeHubId(spec)) {
    log?.(`downloading ${spec}`);
    return downloadModel(spec);
  }
  throw new SftError('no such model folder', spec);
}

/** The tokenizer of a model folder with the chat role tokens added when missing (what training uses). */
export function modelTokenizer(dir: string): HfTokenizer {
  const t = loadTokenizer(dir);
  return missingRoleTokens(t).length === 0 ? t : t.withSpecialTokens(ROLE_TOKENS);
}

/** The pre-flight plan of a parsed config: loads the tokenizer and the data, as `sft train` would. */
export async function planRun(config: RunConfig, ctx?: Pick<RequestContext, 'signal' | 'log'>): Promise<RequestResult<'plan'>> {
  const dir = await resolveModelDir(config.model_name_or_path, (m) => ctx?.log('info', m));
  const tokenizer = modelTokenizer(dir);
  const nPositions = readConfig(dir).n_positions;
  const maxLength = Math.min(config.max_length, nPositions);
  const data = await loadTrainingData(trainingDataOptions(config, nPositions, tokenizer, ctx?.signal));
  const order = epochOrder(data.train.length, config.seed, 0, config.shuffle);
  const plan = computePlan(
    { ...config, max_length: maxLength },
    {
      trainLengths: order.map((i) => data.train[i]!.inputIds.length),
      trainedCounts: order.map((i) => data.train[i]!.trained.reduce((a, b) => a + b, 0)),
      evalExamples: data.eval.length,
      truncated: data.stats.truncated,
      noTrained: data.stats.noTrainedTokens,
    },
  );
  if (config.max_length > nPositions) plan.warnings.push(`max_length ${config.max_length} exceeds the model's context (${nPositions}); examples are cut at ${nPositions}`);
  for (const n of data.notes) plan.warnings.push(n);
  return plan;
}

/** Services without the inference parts (chat/evaluate answer with a clear error until wired). */
export function dataServices(cwd: string = process.cwd()): Pick<ServiceHandlers, 'plan' | 'preview'> {
  return {
    async plan(params: RequestParams<'plan'>, ctx) {
      const parsed = configFromParam(params.config, params.base_dir, cwd);
      return planRun(parsed.config, ctx);
    },
    async preview(params: RequestParams<'preview'>, ctx) {
      if (!isFormatChoice(params.dataset_format)) throw new SftError(`expected auto or one of ${DATASET_FORMATS.join(', ')}, got "${params.dataset_format}"`, 'dataset_format');
      const dir = await resolveModelDir(params.model ?? defaultPreviewModel(), (m) => ctx.log('info', m));
      const r = await previewDataset({
        dataset: params.dataset,
        dataset_format: params.dataset_format as FormatChoice,
        tokenizer: modelTokenizer(dir),
        tokenizerKey: dir,
        max_length: params.max_length,
        assistant_only_loss: params.assistant_only_loss,
        offset: params.offset,
        limit: params.limit,
        baseDir: cwd,
        signal: ctx.signal,
      });
      return { format_used: r.format_used, total: r.total, offset: r.offset, examples: r.examples, stats: r.stats, bad_lines: r.bad_lines, bad_line_count: r.bad_line_count };
    },
  };
}
