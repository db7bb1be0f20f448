/**
 * The merge of --plan FILE with the plan's CLI flags (flags win; the flags themselves are
 * declared in commands/plan-options.ts, named like the HF config keys).
 */
import { PlanError } from '../util/errors.ts';
import { applyPlanFlags, defaultPlan, readPlanFile, type GrowthPlan, type PlanFlags } from './plan.ts';

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
