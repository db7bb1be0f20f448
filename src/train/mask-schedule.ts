/**
 * MSG annealing: each mask group rises from 0 to 1 over its schedule entry, counted in optimizer
 * steps since the growth (the manifest's masks.schedule). Masks are not trained: the trainer sets
 * them from this function before every step, so a resumed run sees the same values.
 */
import type { MaskSchedule } from '../checkpoint/manifest.ts';
import type { MaskGroup } from '../checkpoint/masks.ts';

/** Value of one schedule entry at `stageStep` (steps since growth), in [0, 1]. */
export function scheduleValue(s: MaskSchedule, stageStep: number): number {
  if (s.length <= 0) return 1;
  const t = Math.min(1, Math.max(0, (stageStep - s.startStep) / s.length));
  return s.shape === 'cosine' ? 0.5 * (1 - Math.cos(Math.PI * t)) : t;
}

/** The annealing value of every scheduled group at `stageStep`. */
export function maskValuesAt(schedule: readonly MaskSchedule[], stageStep: number): Partial<Record<MaskGroup, number>> {
  const out: Partial<Record<MaskGroup, number>> = {};
  for (const s of schedule) out[s.group] = scheduleValue(s, stageStep);
  return out;
}

/** First stage step at which every group has reached 1 (0 for an empty schedule). */
export function annealingEndStep(schedule: readonly MaskSchedule[]): number {
  return schedule.reduce((a, s) => Math.max(a, s.startStep + s.length), 0);
}
