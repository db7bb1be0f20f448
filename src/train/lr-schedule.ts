/**
 * Learning-rate schedules: linear warmup, then cosine / linear decay to minLr (or constant).
 * `startStep` shifts the whole schedule so that after a growth stage the warmup can be rewound
 * (restarted) at the growth step; `lrAtSegments` chains such stages.
 */
import { TrainError } from '../util/errors.ts';
import { trainOption } from './options.ts';

export type LrScheduleKind = 'cosine' | 'linear' | 'constant';
/** The schedules (train_options.json's `schedule` choices). */
export const LR_SCHEDULE_KINDS = trainOption('schedule').choices as readonly LrScheduleKind[];

export interface LrSchedule {
  /** Peak learning rate, reached at the last warmup step. */
  lr: number;
  /** Floor the decay ends at (ignored by 'constant'). */
  minLr: number;
  warmupSteps: number;
  /** Length of this schedule counted from startStep: decay ends at startStep + totalSteps. */
  totalSteps: number;
  schedule: LrScheduleKind;
  /** Global step at which this schedule's step 0 (and its warmup) begins; default 0. */
  startStep?: number;
}

export function validateLrSchedule(s: LrSchedule, source = 'lr schedule'): void {
  const bad = (field: string, msg: string): never => {
    throw new TrainError('LrSchedule', `${source}: field "${field}" ${msg}`);
  };
  if (!LR_SCHEDULE_KINDS.includes(s.schedule))
    bad('schedule', `must be one of ${LR_SCHEDULE_KINDS.join(', ')}, got ${JSON.stringify(s.schedule)}`);
  if (!(Number.isFinite(s.lr) && s.lr >= 0)) bad('lr', `must be a finite number ≥ 0, got ${s.lr}`);
  if (!(Number.isFinite(s.minLr) && s.minLr >= 0 && s.minLr <= s.lr)) bad('minLr', `must be in [0, lr=${s.lr}], got ${s.minLr}`);
  if (!(Number.isInteger(s.totalSteps) && s.totalSteps > 0)) bad('totalSteps', `must be a positive integer, got ${s.totalSteps}`);
  if (!(Number.isInteger(s.warmupSteps) && s.warmupSteps >= 0 && s.warmupSteps <= s.totalSteps)) {
    bad('warmupSteps', `must be an integer in [0, totalSteps=${s.totalSteps}], got ${s.warmupSteps}`);
  }
  if (s.startStep !== undefined && !(Number.isInteger(s.startStep) && s.startStep >= 0))
    bad('startStep', `must be a non-negative integer, got ${s.startStep}`);
}

/**
 * LR for global `step`. With t = step - startStep and W = warmupSteps, T = totalSteps:
 *   t < W:  lr·(t+1)/W                       (starts above 0 so the first step is not wasted)
 *   t ≥ W:  p = min(1, (t-W)/(T-W)); cosine: minLr + ½(lr-minLr)(1+cos πp); linear: lr - (lr-minLr)p
 *   constant: lr after warmup.  Steps before startStep get the first warmup value.
 */
export function lrAt(step: number, s: LrSchedule): number {
  validateLrSchedule(s);
  const t = Math.max(0, step - (s.startStep ?? 0));
  const { lr, minLr, warmupSteps: w, totalSteps: total } = s;
  if (t < w) return (lr * (t + 1)) / w;
  if (s.schedule === 'constant') return lr;
  const p = total > w ? Math.min(1, (t - w) / (total - w)) : 1;
  if (s.schedule === 'linear') return lr - (lr - minLr) * p;
  return minLr + 0.5 * (lr - minLr) * (1 + Math.cos(Math.PI * p));
}

/** The same schedule restarted (warmup rewound) at `step`, optionally with a new length. */
export function rewindAt(s: LrSchedule, step: number, totalSteps: number = s.totalSteps): LrSchedule {
  const r = { ...s, startStep: step, totalSteps };
  validateLrSchedule(r);
  return r;
}

/**
 * LR under a chain of schedules (e.g. one per growth stage): the one with the largest startStep
 * ≤ step applies. Segments need not be sorted.
 */
export function lrAtSegments(step: number, segments: readonly LrSchedule[]): number {
  if (segments.length === 0) throw new TrainError('LrSchedule', 'lr schedule: no segments given');
  let active: LrSchedule | undefined;
  for (const seg of segments) {
    const start = seg.startStep ?? 0;
    if (start <= step && (active === undefined || start >= (active.startStep ?? 0))) active = seg;
  }
  // Before every segment: the earliest one's warmup start.
  active ??= segments.reduce((a, b) => ((b.startStep ?? 0) < (a.startStep ?? 0) ? b : a));
  return lrAt(step, active);
}
