/**
 * The runner side of the process protocol (protocol/runner.ts): `sft serve` feeds it stdin chunks and it
 * writes protocol lines only (through `write`). Requests are validated, dispatched to handlers and answered
 * with exactly one reply each; long work (training) reports through events. Bad lines (invalid JSON,
 * oversized, malformed or unknown requests) produce an `error` event (or an error reply when the request id
 * was readable) and never stop the server.
 *
 * Training: one run at a time; `train` replies once the run is prepared, then progress/metrics/state
 * events follow; `stop` ends it at the next run boundary. When the input ends (stdin closed) or on
 * `shutdown`, a running training is stopped at the next boundary and `onExit` is called.
 */
import * as path from 'node:path';
import {
  checkResult, checkEvent, makeErrorReply, makeEvent, makeReply, parseRequest, PROTOCOL_VERSION,
  type RequestMessage, type RequestParams, type RequestResult, type RunnerEventName, type RunnerEvents, type RunnerMethod,
} from '../../protocol/runner';
import { encodeJsonLine, JsonLineDecoder } from '../../protocol/jsonLines';
import { describeError, SftError } from '../util/errors';
import { parseRunConfig, readRunConfig, type ParsedRunConfig } from './config';
import { Trainer, type TrainerDeps, type TrainerListener } from './trainer';

export interface RequestContext {
  id: number;
  signal: AbortSignal;
  /** Streams a token event for this request. */
  token(text: string): void;
  log(level: 'debug' | 'info' | 'warn' | 'error', message: string): void;
}

/** Handlers for the requests that are not about training (wired to data/ and infer/). */
export interface ServiceHandlers {
  plan(params: RequestParams<'plan'>, ctx: RequestContext): Promise<RequestResult<'plan'>>;
  preview(params: RequestParams<'preview'>, ctx: RequestContext): Promise<RequestResult<'preview'>>;
  chat(params: RequestParams<'chat'>, ctx: RequestContext): Promise<RequestResult<'chat'>>;
  evaluate(params: RequestParams<'evaluate'>, ctx: RequestContext): Promise<RequestResult<'evaluate'>>;
}

export interface ServerOptions {
  write: (line: string) => void;
  deps: TrainerDeps;
  services: ServiceHandlers;
  /** Called once when the server is done (input ended or shutdown) and training has wound down. */
  onExit?: (code: number) => void;
  maxLineLength?: number;
  /** Working folder for relative config paths (default process.cwd()). */
  cwd?: string;
}

/** Reads a train/plan `config` param: a run.json path or an object (relative paths against base_dir). */
export function configFromParam(config: string | Record<string, unknown>, baseDir: string | undefined, cwd: string): ParsedRunConfig {
  if (typeof config === 'string') return readRunConfig(path.resolve(cwd, config));
  return parseRunConfig(config, path.resolve(cwd, baseDir ?? '.'), 'config');
}

export class RunnerServer {
  private readonly decoder: JsonLineDecoder;
  private readonly inflight = new Map<number, { method: RunnerMethod; abort: AbortController }>();
  private trainer: Trainer | null = null;
  private training: Promise<unknown> | null = null;
  /** A `stop` that arrived while a train request was still preparing: applied as soon as its trainer exists. */
  private stopWhilePreparing: { save: boolean } | null = null;
  private preparing = false;
  private exiting = false;

  constructor(private readonly o: ServerOptions) {
    this.decoder = new JsonLineDecoder(o.maxLineLength);
  }

  /** Announces the server (state idle). */
  start(): void {
    this.event('state', { status: 'idle', run_dir: null });
  }

  push(chunk: Uint8Array | string): void {
    for (const item of this.decoder.push(chunk)) {
      if (!item.ok) this.event('error', { message: `bad input line: ${item.error}` });
      else this.handle(item.value);
    }
  }

  /** The input ended: finish pending lines, stop training, exit. */
  end(): void {
    for (const item of this.decoder.end()) {
      if (!item.ok) this.event('error', { message: `bad input line: ${item.error}` });
      else this.handle(item.value);
    }
    void this.shutdown();
  }

  private send(msg: unknown): void {
    this.o.write(encodeJsonLine(msg));
  }

  event<E extends RunnerEventName>(name: E, data: RunnerEvents[E]): void {
    const problem = checkEvent(name, data);
    if (problem) {
      this.send(makeEvent('error', { message: `internal: invalid ${name} event (${problem})` }));
      return;
    }
    this.send(makeEvent(name, data));
  }

  private handle(value: unknown): void {
    const parsed = parseRequest(value);
    if (!parsed.ok) {
      if (parsed.id !== undefined) this.send(makeErrorReply(parsed.id, parsed.reason));
      else this.event('error', { message: `rejected message: ${parsed.reason}` });
      return;
    }
    const msg = parsed.message;
    if (this.inflight.has(msg.id)) {
      this.send(makeErrorReply(msg.id, `request id ${msg.id} is already in use`));
      return;
    }
    const abort = new AbortController();
    this.inflight.set(msg.id, { method: msg.method, abort });
    this.dispatch(msg, abort.signal).then(
      (result) => {
        this.inflight.delete(msg.id);
        const problem = checkResult(msg.method, result);
        if (problem) this.send(makeErrorReply(msg.id, `internal: invalid ${msg.method} result (${problem})`));
        else this.send(makeReply(msg.id, msg.method, result as never));
      },
      (e: unknown) => {
        this.inflight.delete(msg.id);
        this.send(makeErrorReply(msg.id, describeError(e), e instanceof SftError ? e.where : undefined));
      },
    );
  }

  private context(id: number, signal: AbortSignal): RequestContext {
    return {
      id,
      signal,
      token: (text) => this.event('token', { requestId: id, text }),
      log: (level, message) => this.event('log', { level, message }),
    };
  }

  private async dispatch(msg: RequestMessage, signal: AbortSignal): Promise<unknown> {
    const ctx = this.context(msg.id, signal);
    const cwd = this.o.cwd ?? process.cwd();
    switch (msg.method) {
      case 'train':
        return this.startTraining(msg.params, cwd);
      case 'stop': {
        if (this.preparing) {
          this.stopWhilePreparing = { save: msg.params.save ?? true };
          return { stopping: true, status: 'stopping' };
        }
        const t = this.trainer;
        const stopping = t ? t.requestStop(msg.params.save ?? true) : false;
        return { stopping, status: t ? t.currentStatus : 'idle' };
      }
      case 'status': {
        const t = this.trainer;
        return {
          status: t ? t.currentStatus : 'idle',
          run_dir: t ? t.outputDir : null,
          step: t ? t.currentStep : 0,
          total_steps: t ? t.totalSteps : 0,
          epoch: t ? t.currentEpoch : 0,
          loss: t ? t.currentLoss : null,
          pid: process.pid,
          protocol_version: PROTOCOL_VERSION,
        };
      }
      case 'plan':
        return this.o.services.plan(msg.params, ctx);
      case 'preview':
        return this.o.services.preview(msg.params, ctx);
      case 'chat':
        return this.o.services.chat(msg.params, ctx);
      case 'evaluate':
        return this.o.services.evaluate(msg.params, ctx);
      case 'cancel': {
        const target = this.inflight.get(msg.params.requestId);
        if (!target || target.method === 'train') return { cancelled: false };
        target.abort.abort();
        return { cancelled: true };
      }
      case 'shutdown':
        setImmediate(() => void this.shutdown());
        return {};
    }
  }

  private async startTraining(params: RequestParams<'train'>, cwd: string): Promise<RequestResult<'train'>> {
    if (this.training) throw new SftError(`a run is already in progress${this.trainer ? ` (${this.trainer.outputDir})` : ''}; stop it first`, 'train');
    if (this.exiting) throw new SftError('the runner is shutting down', 'train');
    const parsed = configFromParam(params.config, params.base_dir, cwd);
    const listener: TrainerListener = {
      log: (level, message) => this.event('log', { level, message }),
      metrics: (record) => this.event('metrics', record),
      progress: (p) => this.event('progress', p),
      state: (status, message) => this.event('state', message === undefined ? { status, run_dir: parsed.config.output_dir } : { status, run_dir: parsed.config.output_dir, message }),
    };
    // Reserve the slot while preparing (loading, downloading); a shutdown meanwhile waits for it.
    let prepared!: () => void;
    this.training = new Promise<void>((resolve) => (prepared = resolve));
    this.preparing = true;
    this.stopWhilePreparing = null;
    let trainer: Trainer;
    try {
      trainer = await Trainer.prepare(parsed.config, this.o.deps, { resume: params.resume, listener, notes: parsed.notes });
      if (this.exiting) {
        await trainer.discard();
        throw new SftError('the runner is shutting down', 'train');
      }
    } catch (e) {
      this.training = null;
      throw e;
    } finally {
      this.preparing = false;
      prepared();
    }
    this.trainer = trainer;
    // A stop during preparation ends the run at its first boundary, before any step.
    const pendingStop = this.stopWhilePreparing as { save: boolean } | null; // set by a `stop` during the await above
    if (pendingStop) trainer.requestStop(pendingStop.save);
    this.stopWhilePreparing = null;
    this.training = trainer
      .run()
      .catch((e: unknown) => this.event('error', { message: describeError(e), where: e instanceof SftError ? e.where : undefined }))
      .finally(() => {
        this.training = null;
      });
    return { run_dir: trainer.outputDir, total_steps: trainer.totalSteps, start_step: trainer.currentStep, resumed_from: trainer.resumedFrom };
  }

  /** Stops training at the next boundary (no save), aborts requests, then calls onExit. */
  async shutdown(): Promise<void> {
    if (this.exiting) return;
    this.exiting = true;
    for (const r of this.inflight.values()) r.abort.abort();
    this.trainer?.requestStop(false);
    if (this.training) await this.training;
    this.o.onExit?.(0);
  }

  /** For tests: resolves when the current training (if any) has ended. */
  async idle(): Promise<void> {
    if (this.training) await this.training;
  }
}
