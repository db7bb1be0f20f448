import { appendFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TrainError } from '../errors.ts';
import { MetricsLog, partitionMetrics, readMetrics, type StepMetrics } from './metrics.ts';

const dir = mkdtempSync(join(tmpdir(), 'flm-metrics-'));

function step(i: number, extra: Partial<StepMetrics> = {}): StepMetrics {
  return { step: i, tokens: 512 * (i + 1), loss: 5 - i / 10, lr: 1e-3, gradNorm: 0.5 + i, tokensPerSec: 1000 + i, ...extra };
}

describe('MetricsLog / readMetrics', () => {
  it('round-trips steps and growth events, one JSON object per line', () => {
    const path = join(dir, 'a.jsonl');
    const log = new MetricsLog(path, { truncate: true });
    const s0 = step(0, { stage: 0 });
    const s1 = step(1, { evalLoss: 4.75, masks: { 'layer.2': 0.25, hidden: 1 }, stage: 0 });
    log.logStep(s0);
    log.logStep(s1);
    log.logGrowth(2, 1, 'depth 2→4');
    log.logStep(step(2, { stage: 1 }));
    log.close();

    const lines = readFileSync(path, 'utf8').trim().split('\n');
    expect(lines.length).toBe(4);
    expect(JSON.parse(lines[2])).toEqual({ event: 'growth', step: 2, stage: 1, detail: 'depth 2→4' });

    const recs = readMetrics(path);
    expect(recs).toEqual([s0, s1, { event: 'growth', step: 2, stage: 1, detail: 'depth 2→4' }, step(2, { stage: 1 })]);
    const { steps, growth } = partitionMetrics(recs);
    expect(steps.map((s) => s.step)).toEqual([0, 1, 2]);
    expect(growth).toEqual([{ event: 'growth', step: 2, stage: 1, detail: 'depth 2→4' }]);
  });

  it('writes a diverged (NaN) loss as null and reads it back as NaN', () => {
    const path = join(dir, 'nan.jsonl');
    const log = new MetricsLog(path, { truncate: true });
    log.logStep(step(0, { loss: NaN, gradNorm: Infinity }));
    log.close();
    expect(readFileSync(path, 'utf8')).toContain('"loss":null');
    const [r] = readMetrics(path) as StepMetrics[];
    expect(r.loss).toBeNaN();
    expect(r.gradNorm).toBeNaN();
  });

  it('appends by default; on resume drops later steps and keeps growth at the resume step once', () => {
    const path = join(dir, 'resume.jsonl');
    const log = new MetricsLog(path, { truncate: true });
    for (let i = 0; i < 5; i++) log.logStep(step(i));
    log.logGrowth(3, 1);
    log.close();
    const again = new MetricsLog(path); // plain append keeps everything
    again.close();
    expect(readMetrics(path).length).toBe(6);

    const resumed = new MetricsLog(path, { resumeAtStep: 3 });
    resumed.logGrowth(3, 1); // the resumed run re-does the growth: must not duplicate the event
    resumed.logStep(step(3, { loss: 1 }));
    resumed.close();
    const recs = readMetrics(path);
    expect(recs.map((r) => r.step)).toEqual([0, 1, 2, 3, 3]);
    expect(partitionMetrics(recs).growth).toEqual([{ event: 'growth', step: 3, stage: 1 }]);
    expect((recs[4] as StepMetrics).loss).toBe(1);

    // Resuming from a checkpoint written after the growth: nothing re-logs it, and it stays.
    new MetricsLog(path, { resumeAtStep: 3 }).close();
    expect(partitionMetrics(readMetrics(path)).growth).toEqual([{ event: 'growth', step: 3, stage: 1 }]);

    const earlier = new MetricsLog(path, { resumeAtStep: 2 });
    earlier.close();
    expect(readMetrics(path).map((r) => r.step)).toEqual([0, 1]);
  });

  it('skips a torn last line but reports a malformed middle line with file:line', () => {
    const path = join(dir, 'torn.jsonl');
    writeFileSync(path, JSON.stringify(step(0)) + '\n');
    appendFileSync(path, '{"step":1,"tok');
    expect(readMetrics(path).length).toBe(1);
    // Reopening after the crash drops the fragment so the next record starts on its own line.
    const log = new MetricsLog(path);
    log.logStep(step(1));
    log.close();
    expect(readMetrics(path)).toEqual([step(0), step(1)]);

    const bad = join(dir, 'bad.jsonl');
    writeFileSync(bad, `${JSON.stringify(step(0))}\n{oops\n${JSON.stringify(step(1))}\n`);
    expect(() => readMetrics(bad)).toThrow(TrainError);
    expect(() => readMetrics(bad)).toThrow(`${bad}:2`);

    const wrongType = join(dir, 'type.jsonl');
    writeFileSync(wrongType, '{"step":0,"loss":"low"}\n');
    expect(() => readMetrics(wrongType)).toThrow(/"loss"/);
  });

  it('names the file it cannot read', () => {
    const p = join(dir, 'missing.jsonl');
    expect(() => readMetrics(p)).toThrow(p);
  });
});
