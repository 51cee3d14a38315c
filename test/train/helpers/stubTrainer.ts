// A Trainer without ONNX Runtime for tests of what surrounds the loop (locks, saves): the stub engine
// "trains" by returning a fixed loss and hands back the weights it was given.
import * as path from 'node:path';
import { prepareForChat } from '../../../native-runner/model/chat';
import { parseRunConfig, type RunConfig } from '../../../native-runner/train/config';
import { type EngineCreateOptions, type StepEngine, type TrainerDeps } from '../../../native-runner/train/trainer';

const ROOT = path.join(__dirname, '../../..');

export function stubDeps(): TrainerDeps {
  return {
    prepareForChat,
    createEngine: async (o: EngineCreateOptions): Promise<StepEngine> => ({
      runSteps: async (steps) => steps.map(() => ({ loss: 2.5, gradNorm: 1, tokens: 10 })),
      evalBatch: async () => ({ nllSum: 0, tokens: 0 }),
      getParams: () => o.params,
      getOptimizerState: () => ({ m: new Map(), v: new Map(), step: 0 }),
      dispose: () => undefined,
    }),
  };
}

/** run.json keys of a 2-step run of the tiny model on the small Dolly file into `outputDir` (no checkpoints unless asked). */
export function tinyRunJson(outputDir: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model_name_or_path: path.join(ROOT, 'samples/tiny-gpt2-chat'),
    dataset: path.join(ROOT, 'test/fixtures/train/dolly-small.jsonl'),
    dataset_format: 'dolly',
    output_dir: outputDir,
    test_size: 0,
    max_steps: 2,
    per_device_train_batch_size: 2,
    gradient_accumulation_steps: 1,
    logging_steps: 1,
    save_strategy: 'no',
    ...extra,
  };
}

/** tinyRunJson parsed into a RunConfig. */
export function stubConfig(outputDir: string, extra: Record<string, unknown> = {}): RunConfig {
  return parseRunConfig(tinyRunJson(outputDir, extra), '/').config;
}
