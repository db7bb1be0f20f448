import { describe, expect, it } from 'vitest';
import { TrainError } from '../util/errors.ts';
import { lrAt, lrAtSegments, rewindAt, type LrSchedule } from './lr-schedule.ts';

const base: LrSchedule = { lr: 3e-3, minLr: 3e-4, warmupSteps: 100, totalSteps: 1100, schedule: 'cosine' };

describe('lrAt', () => {
  it('warms up linearly and peaks at the last warmup step', () => {
    expect(lrAt(0, base)).toBeCloseTo(3e-3 / 100, 15);
    expect(lrAt(49, base)).toBeCloseTo(3e-3 * 0.5, 15);
    expect(lrAt(99, base)).toBeCloseTo(3e-3, 15);
    expect(lrAt(100, base)).toBeCloseTo(3e-3, 15); // decay progress 0
  });

  it('cosine: midpoint is the mean of lr and minLr, end is minLr, and matches the closed form', () => {
    expect(lrAt(600, base)).toBeCloseTo((3e-3 + 3e-4) / 2, 15);
    expect(lrAt(1100, base)).toBeCloseTo(3e-4, 15);
    expect(lrAt(5000, base)).toBeCloseTo(3e-4, 15);
    // A quarter of the way: cos(π/4) = √2/2.
    expect(lrAt(350, base)).toBeCloseTo(3e-4 + 0.5 * 2.7e-3 * (1 + Math.SQRT1_2), 15);
  });

  it('linear: decays on a straight line to minLr', () => {
    const s = { ...base, schedule: 'linear' } as const;
    expect(lrAt(600, s)).toBeCloseTo((3e-3 + 3e-4) / 2, 15);
    expect(lrAt(350, s)).toBeCloseTo(3e-3 - 0.25 * 2.7e-3, 15);
    expect(lrAt(1100, s)).toBeCloseTo(3e-4, 15);
  });

  it('constant: flat after warmup', () => {
    const s = { ...base, schedule: 'constant' } as const;
    expect(lrAt(49, s)).toBeCloseTo(1.5e-3, 15);
    expect(lrAt(600, s)).toBe(3e-3);
    expect(lrAt(5000, s)).toBe(3e-3);
  });

  it('without warmup starts at the peak', () => {
    expect(lrAt(0, { ...base, warmupSteps: 0 })).toBe(3e-3);
  });

  it('startStep shifts the schedule (warmup rewound after growth)', () => {
    const r = rewindAt(base, 2000, 500);
    expect(r.startStep).toBe(2000);
    expect(lrAt(2000, r)).toBeCloseTo(3e-3 / 100, 15);
    expect(lrAt(2099, r)).toBeCloseTo(3e-3, 15);
    expect(lrAt(2300, r)).toBeCloseTo((3e-3 + 3e-4) / 2, 15);
    expect(lrAt(2500, r)).toBeCloseTo(3e-4, 15);
  });

  it('rejects nonsense configs, naming the field', () => {
    expect(() => lrAt(0, { ...base, minLr: 1 })).toThrow(TrainError);
    expect(() => lrAt(0, { ...base, minLr: 1 })).toThrow(/"minLr"/);
    expect(() => lrAt(0, { ...base, warmupSteps: 2000 })).toThrow(/"warmupSteps"/);
    expect(() => lrAt(0, { ...base, schedule: 'step' as never })).toThrow(/"schedule"/);
  });
});

describe('lrAtSegments', () => {
  it('switches to the stage schedule at each growth step', () => {
    const stage0 = { ...base, totalSteps: 1000 };
    const stage1 = rewindAt(base, 1000, 400);
    const segs = [stage1, stage0];
    expect(lrAtSegments(999, segs)).toBe(lrAt(999, stage0));
    expect(lrAtSegments(1000, segs)).toBeCloseTo(3e-3 / 100, 15);
    expect(lrAtSegments(1250, segs)).toBeCloseTo((3e-3 + 3e-4) / 2, 15);
  });
});
