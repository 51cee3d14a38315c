/**
 * What the engine consumes. The data layer (data/batching) builds these; the engine never shifts or masks.
 * All arrays are row-major [B, T].
 */
export interface MicroBatch {
  B: number;
  T: number;
  /** Token ids fed to the model. */
  inputIds: Int32Array;
  /** Already shifted: targets[b,t] is the id that position t must predict (inputIds[b,t+1] of its example); any valid id where weight is 0. */
  targets: Int32Array;
  /** 1 where position t's target is trained, else 0. Loss = Σ w·NLL / Σ w. */
  weights: Float32Array;
  /** Position ids: t for padded rows, restarting at 0 per example in packed rows. */
  positions: Int32Array;
  /**
   * Segment id per token: 1, 2, … for the examples of a row, 0 for padding. Query q may attend key k iff
   * k <= q (same row), segment[k] != 0, and (segment[q] == segment[k] or segment[q] == 0). Padding queries
   * thereby see all real keys before them, as in transformers with a key padding mask.
   */
  segments: Int32Array;
}

/** One optimizer step: its micro-batches (gradient accumulation) and learning rate. */
export interface StepInput {
  microBatches: MicroBatch[];
  lr: number;
  /** Evaluate on the run's eval batches after this step's update (engines with in-run evaluation: TrainingEngine.evalInRun). */
  eval?: boolean;
}

export interface StepMetrics {
  /** Σ NLL / Σ trained tokens over the step's micro-batches (HF Trainer's normalisation). */
  loss: number;
  /** Global L2 norm of the gradient before clipping. */
  gradNorm: number;
  /** Trained tokens in the step. */
  tokens: number;
  /** For a step with `eval`: Σ w·NLL and Σ w over the eval batches, after the step's update. */
  eval?: { nllSum: number; tokens: number };
}
