/**
 * Run config files in the workspace (run.json-style: TRL SFTConfig keys) and the Start Training form's
 * starting config: the seed recipe's defaults (from the runner's RUN_CONFIG_DEFAULTS) under the file's
 * own values. Plain Node; no `vscode`.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { RUN_CONFIG_DEFAULTS } from '../native-runner/train/config';

/** The keys the form shows, in order (others in the file are kept as they are). */
export const FORM_KEYS = [
  'model_name_or_path', 'dataset', 'dataset_format', 'eval_dataset', 'test_size', 'output_dir',
  'per_device_train_batch_size', 'gradient_accumulation_steps', 'per_device_eval_batch_size',
  'num_train_epochs', 'max_steps', 'learning_rate', 'lr_scheduler_type', 'warmup_ratio', 'warmup_steps',
  'weight_decay', 'max_grad_norm', 'logging_steps', 'eval_steps', 'save_steps', 'save_total_limit',
  'max_length', 'packing', 'assistant_only_loss', 'seed', 'device',
] as const;

/** True for a .json file that holds a run config (an object with model_name_or_path and dataset). */
export function isRunConfig(file: string): boolean {
  try {
    if (statSync(file).size > 1_000_000) return false;
    const v = JSON.parse(readFileSync(file, 'utf8').replace(/^\uFEFF/, '')) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) && 'model_name_or_path' in v && 'dataset' in v;
  } catch {
    return false;
  }
}

/** The form's starting values: defaults, then the settings' model/dataset/device, then the file's keys. */
export function formConfig(file: Record<string, unknown>, settings: { model: string; dataset: string; device: 'cpu' | 'cuda' }): Record<string, unknown> {
  const defaults = RUN_CONFIG_DEFAULTS as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of FORM_KEYS) if (k in defaults) out[k] = defaults[k];
  out.model_name_or_path = settings.model;
  out.dataset = settings.dataset;
  out.device = settings.device;
  return { ...out, ...file };
}

/** A fresh config file name in `dir`: sft-run.json, sft-run-2.json, … */
export function newConfigPath(dir: string): string {
  for (let i = 1; ; i++) {
    const p = join(dir, i === 1 ? 'sft-run.json' : `sft-run-${i}.json`);
    if (!existsSync(p)) return p;
  }
}
