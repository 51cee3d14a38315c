/**
 * Renders the runner's pre-flight plan (protocol/runner.ts TrainingPlan, computed by
 * native-runner/train/plan.ts) into what the Start Training form shows: labelled rows with the numbers
 * users check before a run (steps per epoch and total, warmup, evals and saves, surviving checkpoints,
 * tokens per step, padding or packing efficiency), the lr curve points and warnings. Pure; no `vscode`.
 */
import type { TrainingPlan } from '../protocol/runner';
import type { PlanView } from '../protocol/webview';

/** 1234567 → "1,234,567"; fractional numbers keep `digits` decimals. */
export function formatCount(n: number, digits = 0): string {
  const fixed = n.toFixed(digits);
  const [i, f] = fixed.split('.');
  const grouped = i!.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return f ? `${grouped}.${f}` : grouped;
}

/** Lists steps compactly: "200, 400, 600 … 1338 (7 in all)" when more than `max`. */
export function formatStepList(steps: number[], max = 6): string {
  if (steps.length === 0) return 'none';
  if (steps.length <= max) return steps.join(', ');
  return `${steps.slice(0, max - 1).join(', ')} … ${steps[steps.length - 1]} (${steps.length} in all)`;
}

export function formatLr(x: number): string {
  return x === 0 ? '0' : x.toExponential(2).replace('e+', 'e');
}

export function renderPlan(plan: TrainingPlan): PlanView {
  const rows: PlanView['rows'] = [];
  const row = (label: string, value: string) => rows.push({ label, value });
  row('Examples', `${formatCount(plan.train_examples)} train · ${formatCount(plan.eval_examples)} eval`);
  row(
    'Batch',
    `${plan.micro_batch_size} × ${plan.gradient_accumulation_steps} accumulation = ${plan.effective_batch_size} examples per step`,
  );
  row('Micro-batches per epoch', formatCount(plan.micro_batches_per_epoch));
  row('Steps per epoch', formatCount(plan.steps_per_epoch));
  row('Epochs', String(plan.num_train_epochs));
  row('Total steps', formatCount(plan.total_steps));
  const pct = plan.total_steps > 0 ? ` (${((100 * plan.warmup_steps) / plan.total_steps).toFixed(1)}%)` : '';
  row('Warmup steps', `${formatCount(plan.warmup_steps)}${pct}`);
  row('Learning rate', `${formatLr(plan.learning_rate)} peak, ${plan.lr_scheduler_type} schedule`);
  row('Logging', `every ${plan.logging_steps} steps; ${plan.steps_per_run} steps per engine run`);
  row('Evaluations', `${plan.eval_at.length} at steps ${formatStepList(plan.eval_at)}`);
  row('Saves', `${plan.save_at.length} at steps ${formatStepList(plan.save_at)}`);
  row('Checkpoints kept at the end', plan.kept_checkpoints.length ? plan.kept_checkpoints.map((s) => `checkpoint-${s}`).join(', ') : 'none');
  row('Tokens per step', `${formatCount(plan.tokens_per_step)} fed · ${formatCount(plan.trained_tokens_per_step)} trained`);
  row(plan.packing ? 'Packing efficiency' : 'Padding efficiency', `${(100 * plan.efficiency).toFixed(1)}% of fed slots are real tokens`);
  if (plan.truncated_examples || plan.no_trained_examples) {
    row('Data issues', `${formatCount(plan.truncated_examples)} truncated at max_length · ${formatCount(plan.no_trained_examples)} with nothing trained`);
  }
  return {
    rows,
    lrCurve: plan.lr_curve,
    evalSteps: plan.eval_at,
    saveSteps: plan.save_at,
    keptCheckpoints: plan.kept_checkpoints,
    totalSteps: plan.total_steps,
    warmupSteps: plan.warmup_steps,
    warnings: plan.warnings,
  };
}
