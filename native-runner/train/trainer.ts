/**
 * The training loop behind `sft train` and the protocol's `train` request.
 *
 *   prepare(): resolve the model (local folder, hub id → download, or the checkpoint when resuming) →
 *     loadModel → prepareForChat when the role tokens are missing → loadTrainingData (split, tokenise) →
 *     schedule (train/schedule) → TrainingEngine (K = steps_per_run optimizer steps per session.run)
 *   run(): runs of ≤ K steps whose boundaries fall on every logging, eval and save step; per step the
 *     micro-batches come from the data cursor (epoch order is a pure function of seed and epoch, see
 *     data/batching) and the lr from the schedule. After a run: non-finite check, metrics.jsonl records
 *     (train every logging_steps — loss averaged over the window's steps as HF does, grad_norm of the last
 *     step, learning_rate used by that step — eval every eval_steps and at the end, save), progress events,
 *     checkpoints every save_steps (and at the end), then the final model in output_dir + run.json.
 *
 * Resume (`resume: true` = newest complete checkpoint of output_dir, or a checkpoint folder) restores the
 * weights, AdamW moments, step, data cursor, the open logging window and the log history, so with dropout 0
 * the resumed run's metrics and weights equal an uninterrupted run's (bitwise on CPU).
 * A stop request ends the loop at the next run boundary (saving a checkpoint when asked).
 * Non-finite loss/grad norm: the run fails naming the step; nothing after the last good checkpoint is saved.
 * One trainer per output_dir: prepare() takes output_dir's lock (train/lock) before any clean-up or overwrite
 * and a failed prepare() releases it; run() releases it when the run ends (finished, stopped, failed), discard()
 * when it never runs.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { MetricsRecord, RunStatus, TrainRecord } from '../../protocol/runner';
import type { MicroBatch, StepInput, StepMetrics } from '../engine/types';
import type { LoadedModel, ParamSet } from '../model/types';
import { buildMicroBatch, makeMicroBatches, microBatchCount, planRows, epochOrder } from '../data/batching';
import { loadTrainingData, type TrainingData } from '../data/dataset';
import { loadModel, saveModel, writeModelFiles } from '../model/modelFolder';
import { writeFileAtomic } from '../util/atomic';
import { downloadModel, looksLikeHubId } from '../util/download';
import { describeError, SftError } from '../util/errors';
import { Rng } from '../util/rng';
import {
  checkpointDir, checkpointProblem, deleteCheckpointDir, findLatestCheckpoint, locateCheckpoint, listCheckpointDirs, newTrainerState, readOptimizerState, readTrainerState,
  removeStaleTemp, saveCheckpoint, type OptimizerState, type PendingLog, type TrainerState,
} from './checkpoint';
import { defaultStepsPerRun, runConfigToJson, trainingDataOptions, type RunConfig } from './config';
import { acquireOutputDirLock, type OutputDirLock } from './lock';
import { MetricsLog } from './metricsLog';
import { computePlan, runEvents, type RunEvents } from './plan';
import { computeStepSchedule, cursorOfStep, epochAfter, learningRateAt, type LrSchedule, type StepSchedule } from './schedule';

// ---- the engine as the trainer uses it (engine/trainingEngine.ts implements it) --------------------

export interface EngineCreateOptions {
  config: LoadedModel['config'];
  params: ParamSet;
  optimizer?: OptimizerState;
  /** The engine may take params/optimizer as its own (TrainingEngineOptions.adoptParams). */
  adoptParams?: boolean;
  device: 'cpu' | 'cuda';
  stepsPerRun: number;
  /** run.json merge_micro_batches (TrainingEngineOptions.mergeMicroBatches). */
  mergeMicroBatches?: number;
  dropout: number | null;
  bf16: boolean;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  maxGradNorm: number;
  seed: number;
  /** Choices the engine reports (e.g. where the training state lives between runs). */
  onNote?: (message: string) => void;
}

export interface StepEngine {
  /** Steps marked `eval` (only when evalInRun) evaluate `opts.evalBatches` inside the run, after their update. */
  runSteps(steps: StepInput[], opts?: { evalBatches?: readonly MicroBatch[] }): Promise<StepMetrics[]>;
  /** The engine evaluates inside a run (TrainingEngine.evalInRun): eval steps then do not end runs. */
  readonly evalInRun?: boolean;
  evalBatch(mb: MicroBatch): Promise<{ nllSum: number; tokens: number }>;
  /** Several micro-batches at once (fewer runs on CUDA); evalBatch per micro-batch when absent. */
  evalBatches?(mbs: readonly MicroBatch[]): Promise<{ nllSum: number; tokens: number }[]>;
  /** Makes getParams/getOptimizerState current when the state lives on the device (engine/deviceState.ts). */
  syncToHost?(): Promise<void>;
  getParams(): ParamSet;
  getOptimizerState(): OptimizerState;
  dispose(): void | Promise<void>;
}

export type EngineFactory = (o: EngineCreateOptions) => Promise<StepEngine>;

/** Adds the role tokens when missing (model/chat.ts prepareForChat). */
export type ChatPreparer = (m: LoadedModel) => { model: LoadedModel; added: string[] };

// ---- events ------------------------------------------------------------------------------------

export interface ProgressInfo {
  step: number;
  total: number;
  loss: number | null;
  lr: number;
  tokens_per_second: number;
  eta_s: number | null;
  epoch: number;
}

export interface TrainerListener {
  log?(level: 'debug' | 'info' | 'warn' | 'error', message: string): void;
  metrics?(record: MetricsRecord): void;
  progress?(p: ProgressInfo): void;
  state?(status: RunStatus, message?: string): void;
}

export interface TrainerDeps {
  createEngine: EngineFactory;
  prepareForChat: ChatPreparer;
}

export interface PrepareOptions {
  /** true: newest complete checkpoint of output_dir; a string: that checkpoint folder. */
  resume?: boolean | string;
  listener?: TrainerListener;
  notes?: string[];
}

export interface TrainOutcome {
  status: 'finished' | 'stopped';
  step: number;
  outputDir: string;
  lastCheckpoint: string | null;
  finalEval: { eval_loss: number; eval_tokens: number } | null;
}

function oomHint(c: RunConfig, K: number): string {
  return `lower per_device_train_batch_size (${c.per_device_train_batch_size}), max_length (${c.max_length}) or steps_per_run (${K})${c.merge_micro_batches > 1 ? `, or merge_micro_batches (${c.merge_micro_batches})` : ''}; raise gradient_accumulation_steps (${c.gradient_accumulation_steps}) to keep the effective batch`;
}

/** Turns an engine/session failure into a clear SftError. */
export function engineError(e: unknown, c: RunConfig, K: number, what: string): SftError {
  if (e instanceof SftError) return e;
  const msg = describeError(e);
  if (/out of memory|bad_alloc|failed to allocate|allocat|OOM|cudaMalloc|CUBLAS_STATUS_ALLOC/i.test(msg)) {
    return new SftError(`out of memory ${what}: ${oomHint(c, K)} (${msg})`, 'engine');
  }
  return new SftError(`ONNX Runtime failed ${what}: ${msg}`, 'engine');
}

function realTokens(mb: MicroBatch): number {
  let n = 0;
  for (let i = 0; i < mb.segments.length; i++) if (mb.segments[i] !== 0) n++;
  return n;
}

const emptyWindow = (): PendingLog => ({ loss_sum: 0, tokens: 0, steps: 0, grad_norm_last: 0, seconds: 0 });

export class Trainer {
  private stopRequested: { save: boolean } | null = null;
  private status: RunStatus = 'idle';
  private step: number;
  private lastLoss: number | null = null;
  private readonly metrics: MetricsLog;
  private evalBatches: MicroBatch[] | null = null;
  /** Rows (example indices) of the epoch in `rowsEpoch`. */
  private rows: number[][] = [];
  private rowsEpoch = -1;

  private constructor(
    readonly config: RunConfig,
    private model: LoadedModel,
    private readonly data: TrainingData,
    readonly schedule: StepSchedule,
    readonly events: RunEvents,
    readonly stepsPerRun: number,
    private readonly engine: StepEngine,
    private state: TrainerState,
    readonly resumedFrom: string | null,
    private readonly listener: TrainerListener,
    private readonly lock: OutputDirLock,
  ) {
    this.step = state.global_step;
    this.metrics = new MetricsLog(config.output_dir);
  }

  get outputDir(): string {
    return this.config.output_dir;
  }
  get currentStep(): number {
    return this.step;
  }
  get totalSteps(): number {
    return this.schedule.totalSteps;
  }
  get currentStatus(): RunStatus {
    return this.status;
  }
  get currentLoss(): number | null {
    return this.lastLoss;
  }
  get currentEpoch(): number {
    return epochAfter(this.schedule, this.step);
  }

  /** Loads everything and builds the engine; throws SftError for bad input. */
  static async prepare(config: RunConfig, deps: TrainerDeps, opts: PrepareOptions = {}): Promise<Trainer> {
    const listener = opts.listener ?? {};
    const log = (m: string) => listener.log?.('info', m);
    for (const n of opts.notes ?? []) log(n);
    fs.mkdirSync(config.output_dir, { recursive: true });
    // Before anything in output_dir is cleaned up or deleted: a second trainer there would destroy this one's saves.
    const lock = acquireOutputDirLock(config.output_dir, (m) => listener.log?.('warn', m));
    try {
      return await Trainer.prepareLocked(config, deps, opts, lock);
    } catch (e) {
      lock.release();
      throw e;
    }
  }

  private static async prepareLocked(config: RunConfig, deps: TrainerDeps, opts: PrepareOptions, lock: OutputDirLock): Promise<Trainer> {
    const listener = opts.listener ?? {};
    const log = (m: string) => listener.log?.('info', m);
    removeStaleTemp(config.output_dir, log);

    let resumeDir: string | null = null;
    if (opts.resume) {
      if (typeof opts.resume === 'string') {
        // A folder caught mid-replacement by a crash is found through its complete leftover.
        resumeDir = locateCheckpoint(path.resolve(opts.resume), (m) => listener.log?.('warn', m));
        const problem = fs.existsSync(resumeDir) ? checkpointProblem(resumeDir) : 'no such folder';
        if (problem) throw new SftError(`cannot resume: ${problem}`, resumeDir);
      } else {
        const latest = findLatestCheckpoint(config.output_dir, (m) => listener.log?.('warn', m));
        if (!latest) throw new SftError(`cannot resume: no complete checkpoint-<step> folder in ${config.output_dir}`, 'resume');
        resumeDir = latest.dir;
      }
      log(`resuming from ${resumeDir}`);
    } else {
      const old = listCheckpointDirs(config.output_dir);
      if (old.length > 0 && !config.overwrite_output_dir) {
        throw new SftError(
          `holds checkpoints of an earlier run (${old.map((c) => path.basename(c.dir)).join(', ')}): resume it (--resume), choose another output_dir, or set "overwrite_output_dir": true to start over`,
          `output_dir ${config.output_dir}`,
        );
      }
      for (const c of old) {
        deleteCheckpointDir(c.dir);
        log(`overwrite_output_dir: deleted ${path.basename(c.dir)}`);
      }
    }

    // model
    let modelDir = resumeDir ?? config.model_name_or_path;
    if (!resumeDir && !fs.existsSync(modelDir) && looksLikeHubId(config.model_name_or_path)) {
      log(`downloading ${config.model_name_or_path}`);
      modelDir = await downloadModel(config.model_name_or_path, { onFile: (f, o) => o !== 'absent' && log(`  ${f} ${o}`) });
    }
    if (!fs.existsSync(modelDir)) throw new SftError('no such model folder (give a local folder or a hub id like openai-community/gpt2)', `model_name_or_path: ${modelDir}`);
    let model = await loadModel(modelDir);
    for (const n of model.notes ?? []) log(n);
    const prepared = deps.prepareForChat(model);
    if (prepared.added.length) log(`added chat tokens ${prepared.added.join(' ')} (embeddings ${model.config.vocab_size} → ${prepared.model.config.vocab_size} rows)`);
    model = prepared.model;

    // data
    const data = await loadTrainingData(trainingDataOptions(config, model.config.n_positions, model.tokenizer));
    if (config.max_length > model.config.n_positions) log(`max_length ${config.max_length} > the model's n_positions ${model.config.n_positions}: examples are cut at ${model.config.n_positions}`);
    for (const n of data.notes) log(n);
    log(`data: ${data.train.length} train / ${data.eval.length} eval examples (${data.formatUsed})`);

    const batchOpts = { batchSize: config.per_device_train_batch_size, padId: model.tokenizer.padId, packing: config.packing, maxLength: Math.min(config.max_length, model.config.n_positions) };
    const schedule = computeStepSchedule({
      microBatchesPerEpoch: microBatchCount(data.train, batchOpts),
      gradientAccumulationSteps: config.gradient_accumulation_steps,
      numTrainEpochs: config.num_train_epochs,
      maxSteps: config.max_steps,
      warmupRatio: config.warmup_ratio,
      warmupSteps: config.warmup_steps,
    });
    if (schedule.totalSteps === 0) throw new SftError('the run has 0 optimizer steps', 'num_train_epochs');
    const events = runEvents(config, schedule, data.eval.length > 0);
    const K = defaultStepsPerRun(config, events.loggingEvery);

    let state: TrainerState;
    let optimizer: OptimizerState | undefined;
    if (resumeDir) {
      state = readTrainerState(resumeDir);
      const s = state.schedule;
      if (s.total_steps !== schedule.totalSteps || s.micro_batches_per_epoch !== schedule.microBatchesPerEpoch || s.steps_per_epoch !== schedule.stepsPerEpoch) {
        throw new SftError(
          `the checkpoint was made for ${s.total_steps} steps over ${s.micro_batches_per_epoch} micro-batches per epoch, this config/data gives ${schedule.totalSteps} over ${schedule.microBatchesPerEpoch}: resume with the same run.json and dataset`,
          resumeDir,
        );
      }
      optimizer = readOptimizerState(resumeDir);
    } else {
      state = newTrainerState({
        global_step: 0,
        epoch: 0,
        data_cursor: { epoch: 0, micro_batch: 0 },
        rng: new Rng(config.seed, 0x5f7).getState(),
        schedule: {
          total_steps: schedule.totalSteps,
          warmup_steps: schedule.warmupSteps,
          steps_per_epoch: schedule.stepsPerEpoch,
          micro_batches_per_epoch: schedule.microBatchesPerEpoch,
          lr_scheduler_type: config.lr_scheduler_type,
          learning_rate: config.learning_rate,
        },
        best_eval: null,
        log_history: [],
        pending_log: emptyWindow(),
        elapsed_s: 0,
        tokens_seen: 0,
      });
    }

    let engine: StepEngine;
    try {
      engine = await deps.createEngine({
        config: model.config,
        params: model.params,
        optimizer,
        // Loaded for this run only and not read again: no second copy of the weights and moments.
        adoptParams: true,
        device: config.device,
        stepsPerRun: K,
        mergeMicroBatches: config.merge_micro_batches,
        dropout: config.dropout,
        bf16: config.bf16,
        weightDecay: config.weight_decay,
        beta1: config.adam_beta1,
        beta2: config.adam_beta2,
        eps: config.adam_epsilon,
        maxGradNorm: config.max_grad_norm,
        seed: config.seed,
        onNote: (m) => listener.log?.('info', m),
      });
    } catch (e) {
      throw engineError(e, config, K, 'creating the training session');
    }

    try {
      writeFileAtomic(path.join(config.output_dir, 'run.json'), `${JSON.stringify(runConfigToJson(config), null, 2)}\n`);
      const t = new Trainer(config, model, data, schedule, events, K, engine, state, resumeDir, listener, lock);
      t.metrics.reset(state.log_history);
      t.logPlan(data, batchOpts.maxLength, state.global_step);
      return t;
    } catch (e) {
      await engine.dispose();
      throw e;
    }
  }

  private logPlan(data: TrainingData, maxLength: number, startStep: number): void {
    const { config, schedule, stepsPerRun: K, listener } = this;
    const log = (m: string) => listener.log?.('info', m);
    const plan = computePlan({ ...config, max_length: maxLength }, {
      trainLengths: data.train.map((e) => e.inputIds.length),
      trainedCounts: data.train.map((e) => e.trained.reduce((a, b) => a + b, 0)),
      evalExamples: data.eval.length,
      truncated: data.stats.truncated,
      noTrained: data.stats.noTrainedTokens,
    });
    log(
      `plan: ${schedule.microBatchesPerEpoch} micro-batches/epoch, ${schedule.stepsPerEpoch} steps/epoch, ${schedule.totalSteps} steps, warmup ${schedule.warmupSteps}, K=${K} steps per run` +
        (startStep > 0 ? `, starting at step ${startStep}` : ''),
    );
    for (const w of plan.warnings) listener.log?.('warn', w);
  }

  /** Releases the engine of a prepared trainer that will not run (run() releases it otherwise). */
  async discard(): Promise<void> {
    try {
      await this.engine.dispose();
    } finally {
      this.lock.release();
    }
  }

  /**
   * Ends the loop at the next run boundary; with `save` a checkpoint is written there. On a prepared trainer
   * that has not started yet, the run then ends before its first step.
   */
  requestStop(save: boolean): boolean {
    if (this.status === 'idle') {
      this.stopRequested = { save };
      return true;
    }
    if (this.status !== 'training') return false;
    this.stopRequested = { save };
    this.setStatus('stopping');
    return true;
  }

  private setStatus(s: RunStatus, message?: string): void {
    this.status = s;
    this.listener.state?.(s, message);
  }

  private emit(record: MetricsRecord): void {
    this.state.log_history.push(record);
    this.metrics.append(record);
    this.listener.metrics?.(record);
  }

  private lr(): LrSchedule {
    return { type: this.config.lr_scheduler_type, learningRate: this.config.learning_rate, warmupSteps: this.schedule.warmupSteps, totalSteps: this.schedule.totalSteps };
  }

  private batchOpts() {
    return {
      batchSize: this.config.per_device_train_batch_size,
      padId: this.model.tokenizer.padId,
      packing: this.config.packing,
      maxLength: Math.min(this.config.max_length, this.model.config.n_positions),
    };
  }

  /** The micro-batches of optimizer step `s` (0-based). */
  private stepBatches(s: number): MicroBatch[] {
    const cur = cursorOfStep(this.schedule, s);
    if (cur.epoch !== this.rowsEpoch) {
      const order = epochOrder(this.data.train.length, this.config.seed, cur.epoch, this.config.shuffle);
      this.rows = planRows(this.data.train, order, this.batchOpts());
      this.rowsEpoch = cur.epoch;
    }
    const B = this.config.per_device_train_batch_size;
    const out: MicroBatch[] = [];
    for (let mb = cur.microStart; mb < cur.microEnd; mb++) {
      const rows = this.rows.slice(mb * B, (mb + 1) * B);
      out.push(buildMicroBatch(rows.map((r) => r.map((i) => this.data.train[i]!)), this.model.tokenizer.padId));
    }
    return out;
  }

  /**
   * Σ NLL / Σ trained tokens over the eval set (fixed order). Packed when eval_packing (default: packing) is on:
   * whole examples share rows, each attending only to itself from position 0, so the loss is the padded one
   * computed over fewer positions.
   */
  async evaluate(): Promise<{ eval_loss: number; eval_tokens: number } | null> {
    if (this.data.eval.length === 0) return null;
    return evalLoss(this.engine, this.evalMicroBatches(), this.config, this.stepsPerRun);
  }

  /** The evaluation at the last step, when there is one (the run's outcome reports it). */
  private finalEval: { eval_loss: number; eval_tokens: number } | null = null;

  private evalMicroBatches(): MicroBatch[] {
    this.evalBatches ??= makeMicroBatches(this.data.eval, this.data.eval.map((_, i) => i), {
      ...this.batchOpts(),
      batchSize: this.config.per_device_eval_batch_size,
      packing: this.config.eval_packing ?? this.config.packing,
    });
    return this.evalBatches;
  }

  /** Whether eval steps run inside training runs (the engine evaluates in-run and there is an eval set). */
  private get evalsInRun(): boolean {
    return this.engine.evalInRun === true && this.data.eval.length > 0;
  }

  /** An evaluation's record, best_eval and (at the last step) the final result. */
  private recordEval(step: number, ev: { eval_loss: number; eval_tokens: number }): void {
    this.emit({ type: 'eval', step, ...ev });
    if (!this.state.best_eval || ev.eval_loss < this.state.best_eval.eval_loss) this.state.best_eval = { step, eval_loss: ev.eval_loss };
    if (step === this.schedule.totalSteps) this.finalEval = ev;
  }

  private nextBoundary(from: number): number {
    const after = (list: number[]) => list.find((s) => s > from) ?? Infinity;
    // Logging needs only the per-step metrics every run returns, so on CUDA (where each run boundary may
    // cost a host round trip of the state) runs span logging steps; on the CPU they end there, which keeps
    // progress fine-grained at no cost.
    const spanLogging = this.config.device === 'cuda';
    const logging = spanLogging ? Infinity : (Math.floor(from / this.events.loggingEvery) + 1) * this.events.loggingEvery;
    const first = !spanLogging && this.config.logging_first_step && from === 0 ? 1 : Infinity;
    // An engine that evaluates inside a run needs no boundary at eval steps.
    const evaluation = this.evalsInRun ? Infinity : after(this.events.evalAt);
    return Math.min(this.schedule.totalSteps, logging, first, evaluation, after(this.events.saveAt));
  }

  private async saveAt(step: number): Promise<string> {
    const dir = checkpointDir(this.outputDir, step);
    const record: MetricsRecord = { type: 'save', step, path: dir };
    this.state.log_history.push(record);
    const cursor = step < this.schedule.totalSteps ? cursorOfStep(this.schedule, step) : { epoch: this.schedule.epochs, microStart: 0 };
    this.state.global_step = step;
    this.state.epoch = epochAfter(this.schedule, step);
    this.state.data_cursor = { epoch: cursor.epoch, micro_batch: cursor.microStart };
    await this.engine.syncToHost?.();
    const params = this.engine.getParams();
    try {
      await saveCheckpoint(this.outputDir, {
        step,
        writeModel: (tmp) => writeModelFiles(tmp, { config: this.model.config, params, tokenizer: this.model.tokenizer }),
        optimizer: this.engine.getOptimizerState(),
        state: this.state,
        saveTotalLimit: this.config.save_total_limit,
        log: (m) => this.listener.log?.('info', m),
      });
    } finally {
      this.state.log_history.pop();
    }
    this.emit(record);
    return dir;
  }

  /** Runs to the end (or a stop request). Throws SftError on failure (status 'failed' is reported first). */
  async run(): Promise<TrainOutcome> {
    this.setStatus('training');
    try {
      return await this.loop();
    } catch (e) {
      this.setStatus('failed', describeError(e));
      throw e;
    } finally {
      try {
        await this.engine.dispose();
      } finally {
        this.lock.release();
      }
    }
  }

  private async loop(): Promise<TrainOutcome> {
    const total = this.schedule.totalSteps;
    const lr = this.lr();
    const window = this.state.pending_log;
    let lastCheckpoint: string | null = this.resumedFrom;
    this.finalEval = null;
    let windowReal = 0;
    let recentTps = 0;
    let stepSeconds = 0;
    let firstRun = true;
    while (this.step < total) {
      if (this.stopRequested) break;
      const end = this.nextBoundary(this.step);
      const n = Math.min(this.stepsPerRun, end - this.step);
      const inputs: StepInput[] = [];
      const realPerStep: number[] = [];
      const inRun = this.evalsInRun;
      for (let s = this.step; s < this.step + n; s++) {
        const microBatches = this.stepBatches(s);
        let real = 0;
        for (const mb of microBatches) real += realTokens(mb);
        realPerStep.push(real);
        inputs.push({ microBatches, lr: learningRateAt(lr, s), ...(inRun && this.events.evalAt.includes(s + 1) ? { eval: true } : {}) });
      }
      const real = realPerStep.reduce((a, b) => a + b, 0);
      if (firstRun && this.config.device === 'cuda') {
        // Nothing is reported until a run ends: say why the first one takes longer.
        this.listener.log?.('info', `steps ${this.step + 1}-${this.step + n} run in one call on the GPU; the first call also builds the training graph and creates its session (seconds)`);
      }
      firstRun = false;
      const t0 = performance.now();
      let results: StepMetrics[];
      try {
        results = await this.engine.runSteps(inputs, inputs.some((x) => x.eval) ? { evalBatches: this.evalMicroBatches() } : {});
      } catch (e) {
        throw engineError(e, this.config, this.stepsPerRun, `at steps ${this.step + 1}-${this.step + n}`);
      }
      const seconds = (performance.now() - t0) / 1000;
      for (let i = 0; i < results.length; i++) {
        const r = results[i]!;
        if (!Number.isFinite(r.loss) || !Number.isFinite(r.gradNorm)) {
          const good = findLatestCheckpoint(this.outputDir);
          throw new SftError(
            `non-finite ${Number.isFinite(r.loss) ? 'gradient norm' : 'loss'} at step ${this.step + i + 1} (loss ${r.loss}, grad norm ${r.gradNorm}): training stopped; ` +
              (good ? `the last good checkpoint is ${good.dir}` : 'no checkpoint was saved before it') +
              '. Lower learning_rate, keep max_grad_norm > 0, or check the data',
            `step ${this.step + i + 1}`,
          );
        }
        window.loss_sum += r.loss; // HF averages the per-step losses of the logging window
        window.tokens += r.tokens;
        window.steps += 1;
        window.grad_norm_last = r.gradNorm;
        this.state.tokens_seen += r.tokens;
        this.lastLoss = r.loss;
        // A run's time is shared evenly among its steps (the engine reports no per-step time).
        window.seconds += seconds / n;
        windowReal += realPerStep[i]!;
        this.state.elapsed_s += seconds / n;
        const done = this.step + i + 1;
        if (done % this.events.loggingEvery === 0 || (this.config.logging_first_step && done === 1) || done === total) {
          const rec: TrainRecord = {
            type: 'train',
            step: done,
            epoch: epochAfter(this.schedule, done),
            loss: window.loss_sum / window.steps,
            grad_norm: window.grad_norm_last,
            learning_rate: learningRateAt(lr, done - 1),
            tokens: window.tokens,
            tokens_per_second: window.seconds > 0 ? windowReal / window.seconds : 0,
            elapsed_s: this.state.elapsed_s,
          };
          this.emit(rec);
          Object.assign(window, emptyWindow());
          windowReal = 0;
        }
        // In-run evaluation: after the step's log record, as the evaluation after a run would follow it.
        if (r.eval) this.recordEval(done, evalResult(r.eval.nllSum, r.eval.tokens));
      }
      stepSeconds = seconds / n;
      recentTps = seconds > 0 ? real / seconds : 0;
      this.step += n;
      const step = this.step;
      const epoch = epochAfter(this.schedule, step);

      if (this.events.evalAt.includes(step) && !inputs[inputs.length - 1]!.eval) {
        const ev = await this.evaluate();
        if (ev) this.recordEval(step, ev);
      }
      if (this.events.saveAt.includes(step)) lastCheckpoint = await this.saveAt(step);
      this.listener.progress?.({
        step,
        total,
        loss: this.lastLoss,
        lr: learningRateAt(lr, step - 1),
        tokens_per_second: recentTps,
        eta_s: stepSeconds > 0 ? (total - step) * stepSeconds : null,
        epoch,
      });
    }

    if (this.step < total) {
      // stopped early
      if (this.stopRequested?.save && !this.events.saveAt.includes(this.step) && this.step > 0) lastCheckpoint = await this.saveAt(this.step);
      this.setStatus('finished', `stopped at step ${this.step} of ${total}`);
      return { status: 'stopped', step: this.step, outputDir: this.outputDir, lastCheckpoint, finalEval: this.finalEval };
    }
    await this.engine.syncToHost?.();
    await saveModel(this.outputDir, { config: this.model.config, params: this.engine.getParams(), tokenizer: this.model.tokenizer });
    this.setStatus('finished', `finished ${total} steps; model saved in ${this.outputDir}`);
    return { status: 'finished', step: this.step, outputDir: this.outputDir, lastCheckpoint, finalEval: this.finalEval };
  }
}

/** Σ NLL and Σ trained tokens over the eval set → its record's numbers (loss 0 when nothing is trained). */
function evalResult(nllSum: number, tokens: number): { eval_loss: number; eval_tokens: number } {
  return { eval_loss: tokens > 0 ? nllSum / tokens : 0, eval_tokens: tokens };
}

/** Eval loss of micro-batches with an engine: Σ NLL / Σ trained tokens. */
export async function evalLoss(engine: Pick<StepEngine, 'evalBatch' | 'evalBatches'>, batches: readonly MicroBatch[], c: RunConfig, K: number): Promise<{ eval_loss: number; eval_tokens: number }> {
  let nll = 0;
  let tokens = 0;
  if (engine.evalBatches) {
    let rs: { nllSum: number; tokens: number }[];
    try {
      rs = await engine.evalBatches(batches);
    } catch (e) {
      throw engineError(e, c, K, 'during evaluation (per_device_eval_batch_size)');
    }
    for (const r of rs) {
      nll += r.nllSum;
      tokens += r.tokens;
    }
    return evalResult(nll, tokens);
  }
  for (const mb of batches) {
    let r: { nllSum: number; tokens: number };
    try {
      r = await engine.evalBatch(mb);
    } catch (e) {
      throw engineError(e, c, K, 'during evaluation (per_device_eval_batch_size)');
    }
    nll += r.nllSum;
    tokens += r.tokens;
  }
  return evalResult(nll, tokens);
}
