/**
 * The plan's CLI flags (shared by `plan` and `grow`), named like the HF config keys, and the
 * merge of --plan FILE with them (flags win).
 */
import type { Argv } from 'yargs';
import { PlanError } from '../errors.ts';
import { applyPlanFlags, defaultPlan, readPlanFile, type GrowthPlan, type PlanFlags } from './plan.ts';

export function withPlanOptions<T>(y: Argv<T>): Argv<T> {
  return y
    .option('plan', { type: 'string', describe: 'Growth plan JSON (growth-plans/*.json); flags below override it' })
    .option('hidden-size', { type: 'number', group: 'Targets:' })
    .option('intermediate-size', { type: 'number', group: 'Targets:' })
    .option('num-attention-heads', { type: 'number', group: 'Targets:' })
    .option('num-key-value-heads', { type: 'number', group: 'Targets:' })
    .option('num-hidden-layers', { type: 'number', group: 'Targets:' })
    .option('vocab-size', { type: 'number', group: 'Targets:' })
    .option('mup-scale-factor', {
      type: 'number',
      group: 'Targets:',
      describe: 'new µP logit divisor (output_mult scaled by the same ratio)',
    })
    .option('mode', {
      type: 'string',
      choices: ['masked', 'zero'],
      group: 'Growth:',
      describe: 'masked (MSG, default) or zero (mask-free, SPEC §3)',
    })
    .option('init', { type: 'string', choices: ['random', 'zero'], group: 'Growth:', describe: 'new entries of grown tensors' })
    .option('layer-init', {
      type: 'string',
      choices: ['copy', 'random'],
      group: 'Growth:',
      describe: 'inserted layers (copy = MSG default)',
    })
    .option('std', { type: 'number', group: 'Growth:', describe: 'default std of new random weights' })
    .option('seed', { type: 'number', group: 'Growth:' })
    .option('anneal-steps', { type: 'number', group: 'Growth:', describe: 'mask annealing length (default 5000)' })
    .option('placement', { type: 'string', choices: ['distance', 'explicit'], group: 'Layers:' })
    .option('positions', { type: 'string', group: 'Layers:', describe: 'source layers to insert after, e.g. 1,3,3' })
    .option('metric', { type: 'string', choices: ['cosine', 'l2'], group: 'Layers:' })
    .option('order', { type: 'string', choices: ['smallest', 'largest'], group: 'Layers:' })
    .option('calibration-tokens', { type: 'number', group: 'Layers:' })
    .option('calibration-seq', { type: 'number', group: 'Layers:' })
    .option('calibration-seed', { type: 'number', group: 'Layers:' })
    .option('calibration-file', { type: 'string', group: 'Layers:' })
    .option('calibration-text', { type: 'string', group: 'Layers:' });
}

export function planFromArgs(a: Record<string, unknown>): GrowthPlan {
  const base = typeof a.plan === 'string' ? readPlanFile(a.plan) : defaultPlan();
  return applyPlanFlags(base, a as PlanFlags);
}

const TARGET_FLAGS = [
  'hidden-size',
  'intermediate-size',
  'num-attention-heads',
  'num-key-value-heads',
  'num-hidden-layers',
  'vocab-size',
  'mup-scale-factor',
];

/** grow needs something to grow to: --plan or a target flag (without, it would write an unchanged copy). */
export function requirePlanOrTarget(a: Record<string, unknown>): void {
  if (a.plan === undefined && TARGET_FLAGS.every((f) => a[f] === undefined)) {
    throw new PlanError(undefined, `nothing to grow to: give --plan FILE or a target (--${TARGET_FLAGS.join(', --')})`, 'grow');
  }
}
