/**
 * The production wiring of the trainer and the protocol server: the engine factory (engine/
 * trainingEngine), prepareForChat (model/chat) and the request services — plan/preview (data/),
 * chat/perplexity/benchmark tasks (infer/service), eval_loss (train/evaluate). CLI commands import from here.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { RequestResult } from '../../protocol/runner';
import { isFormatChoice } from '../data/formats';
import { TrainingEngine } from '../engine/trainingEngine';
import { benchmarkOfFile } from '../infer/benchmarks';
import { chat, perplexityOfFile } from '../infer/service';
import { prepareForChat } from '../model/chat';
import { SftError } from '../util/errors';
import { evalModelOnFile } from './evaluate';
import type { ServiceHandlers } from './server';
import { dataServices, resolveModelDir } from './services';
import type { EngineFactory, TrainerDeps } from './trainer';

export const createEngine: EngineFactory = (o) => TrainingEngine.create(o);

export function defaultDeps(): TrainerDeps {
  return { createEngine, prepareForChat };
}

const FINISH: Record<string, RequestResult<'chat'>['finish_reason']> = {
  stop_token: 'eos',
  max_new_tokens: 'length',
  context_full: 'length',
  aborted: 'cancelled',
};

export function defaultServices(cwd: string = process.cwd()): ServiceHandlers {
  const abs = (p: string) => (fs.existsSync(path.resolve(cwd, p)) ? path.resolve(cwd, p) : p);
  return {
    ...dataServices(cwd),
    async chat(p, ctx) {
      const model = await resolveModelDir(abs(p.model), (m) => ctx.log('info', m));
      const r = await chat({
        model,
        device: p.device,
        messages: p.messages,
        system: p.system,
        temperature: p.temperature,
        top_p: p.top_p,
        top_k: p.top_k,
        repetition_penalty: p.repetition_penalty,
        max_new_tokens: p.max_new_tokens,
        seed: p.seed,
        signal: ctx.signal,
        onToken: (t) => ctx.token(t),
      });
      return { text: r.text, new_tokens: r.newTokens, finish_reason: FINISH[r.stopReason] ?? 'length' };
    },
    async evaluate(p, ctx) {
      const model = await resolveModelDir(abs(p.model), (m) => ctx.log('info', m));
      if (p.kind === 'eval_loss') {
        if (!p.dataset) throw new SftError('eval_loss needs a dataset', 'dataset');
        const format = p.dataset_format ?? 'auto';
        if (!isFormatChoice(format)) throw new SftError(`unknown dataset_format "${format}"`, 'dataset_format');
        const r = await evalModelOnFile({
          model,
          dataset: path.resolve(cwd, p.dataset),
          dataset_format: format,
          max_length: p.max_length,
          assistant_only_loss: p.assistant_only_loss,
          per_device_eval_batch_size: p.per_device_eval_batch_size,
          device: p.device,
          signal: ctx.signal,
        });
        return { kind: 'eval_loss', eval_loss: r.eval_loss, eval_tokens: r.eval_tokens };
      }
      if (p.kind === 'task') {
        const r = await benchmarkOfFile(model, p.task, path.resolve(cwd, p.data), { device: p.device, limit: p.limit, batchSize: p.batch_size, signal: ctx.signal });
        return { kind: 'task', task: r.task, n: r.n, metrics: r.metrics };
      }
      if (!p.file) throw new SftError('perplexity needs a text file', 'file');
      const r = await perplexityOfFile(model, path.resolve(cwd, p.file), { device: p.device, window: p.window, stride: p.stride, signal: ctx.signal });
      return { kind: 'perplexity', ppl: r.ppl, nll_sum: r.nllSum, tokens: r.tokens, predicted: r.predicted };
    },
  };
}
