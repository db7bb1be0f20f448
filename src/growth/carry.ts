/**
 * Growing a checkpoint whose masks are still annealing (a pipeline may grow before the last
 * stage has converged): the grown masks carry every unit's current value (layout.ts
 * initialMasks), and this module carries the rest of the source's annealing into the grown
 * checkpoint's schedule, so that training it brings every mask to 1.
 *
 * - A group that is still annealing in the source and does not grow again keeps the rest of its
 *   source schedule: the same entry shifted back by the steps already taken (its startStep may
 *   be negative: "began that many steps before this growth"), so its units go on rising exactly
 *   as they would have without the growth.
 * - A group that grows again gets this growth's entry; its older units (already above 0) hold
 *   their value until the new annealing reaches it and then rise with it (mask values only
 *   rise: the trainer takes max(value, c)), so every unit of the group reaches 1 with it.
 * - A group below 1 in the source with nothing left of its schedule (a source without a
 *   manifest, or one written before schedules were carried) anneals from where it is over the
 *   plan's anneal_steps.
 */
import type { Manifest } from '../checkpoint/manifest.ts';
import { MASK_GROUPS, type MaskGroup, type MaskSchedule } from '../checkpoint/masks.ts';

/** Where the source stood in its annealing: steps since its growth, and its schedule. */
export interface SourceAnnealing {
  stageStep: number;
  schedule: MaskSchedule[];
}

/** What the grown manifest records about the carried annealing (masks.carried). */
export interface CarriedAnnealing {
  /** Optimizer steps the source had annealed for (its stage step). */
  sourceStageStep: number;
  /** Groups still below 1 in the source, and what each continues with. */
  groups: { group: MaskGroup; how: 'continued' | 'regrown' | 'restarted'; entry: MaskSchedule }[];
}

export function sourceAnnealing(m: Manifest | undefined): SourceAnnealing {
  const step = m?.kind === 'train' ? m.extra?.stageStep : 0;
  return { stageStep: typeof step === 'number' && Number.isFinite(step) ? step : 0, schedule: m?.masks?.schedule ?? [] };
}

/**
 * The grown checkpoint's schedule: this growth's entries (`grown`) plus, for every group still
 * below 1 in the source (`below`), the rest of its source schedule (see the module comment).
 */
export function carrySchedule(
  grown: readonly MaskSchedule[],
  src: SourceAnnealing,
  below: readonly MaskGroup[],
  annealSteps: number,
): { schedule: MaskSchedule[]; carried: CarriedAnnealing | undefined } {
  const k = src.stageStep;
  const out = new Map<MaskGroup, MaskSchedule>(grown.map((e) => [e.group, e]));
  const groups: CarriedAnnealing['groups'] = [];
  for (const g of MASK_GROUPS) {
    if (!below.includes(g)) continue;
    const regrown = out.get(g);
    if (regrown !== undefined) {
      groups.push({ group: g, how: 'regrown', entry: regrown });
      continue;
    }
    const s = src.schedule.find((e) => e.group === g);
    const entry: MaskSchedule =
      s !== undefined && k < s.startStep + s.length
        ? { ...s, startStep: s.startStep - k }
        : { group: g, startStep: 0, length: annealSteps, shape: 'linear' };
    groups.push({ group: g, how: s !== undefined && k < s.startStep + s.length ? 'continued' : 'restarted', entry });
    out.set(g, entry);
  }
  const schedule = MASK_GROUPS.flatMap((g) => (out.has(g) ? [out.get(g) as MaskSchedule] : []));
  return { schedule, carried: groups.length === 0 ? undefined : { sourceStageStep: k, groups } };
}
