import { appendFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TrainError } from '../util/errors.ts';
import { METRICS_HEADER, MetricsLog, partitionMetrics, readMetrics, type StepMetrics } from './metrics.ts';

const dir = mkdtempSync(join(tmpdir(), 'flm-metrics-'));

function step(i: number, extra: Partial<StepMetrics> = {}): StepMetrics {
  return { step: i, tokens: 512 * (i + 1), loss: 5 - i / 10, lr: 1e-3, gradNorm: 0.5 + i, tokensPerSec: 1000 + i, ...extra };
}

describe('MetricsLog / readMetrics', () => {
  it('round-trips steps and growth events, one JSON object per line', () => {
    const path = join(dir, 'a.jsonl');
    const log = new MetricsLog(path, { truncate: true });
    const s1 = step(1, { stage: 0 });
    const s2 = step(2, { evalLoss: 4.75, masks: { 'layer.2': 0.25, hidden: 1 }, stage: 0 });
    log.logStep(s1);
    log.logStep(s2);
    log.logGrowth(2, 1, 'depth 2→4');
    log.logStep(step(3, { stage: 1 }));
    log.close();

    const lines = readFileSync(path, 'utf8').trim().split('\n');
    expect(lines.length).toBe(5);
    expect(JSON.parse(lines[0])).toMatchObject({ event: 'format', version: 2 });
    expect(JSON.parse(lines[3])).toEqual({ event: 'growth', step: 2, stage: 1, detail: 'depth 2→4' });

    const recs = readMetrics(path);
    expect(recs).toEqual([s1, s2, { event: 'growth', step: 2, stage: 1, detail: 'depth 2→4' }, step(3, { stage: 1 })]);
    const { steps, growth } = partitionMetrics(recs);
    expect(steps.map((s) => s.step)).toEqual([1, 2, 3]);
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
    for (let i = 1; i <= 5; i++) log.logStep(step(i));
    log.logGrowth(3, 1);
    log.close();
    const again = new MetricsLog(path); // plain append keeps everything
    again.close();
    expect(readMetrics(path).length).toBe(6);

    const resumed = new MetricsLog(path, { resumeAtStep: 3 });
    resumed.logGrowth(3, 1); // the resumed run re-does the growth: must not duplicate the event
    resumed.logStep(step(4, { loss: 1 })); // a checkpoint at step 3 holds 3 updates: the 4th is logged next
    resumed.close();
    const recs = readMetrics(path);
    expect(recs.map((r) => r.step)).toEqual([1, 2, 3, 3, 4]);
    expect(partitionMetrics(recs).growth).toEqual([{ event: 'growth', step: 3, stage: 1 }]);
    expect((recs[4] as StepMetrics).loss).toBe(1);

    // Resuming from a checkpoint written after the growth: nothing re-logs it, and it stays.
    new MetricsLog(path, { resumeAtStep: 3 }).close();
    expect(partitionMetrics(readMetrics(path)).growth).toEqual([{ event: 'growth', step: 3, stage: 1 }]);

    const earlier = new MetricsLog(path, { resumeAtStep: 2 });
    earlier.close();
    expect(readMetrics(path).map((r) => r.step)).toEqual([1, 2]);
  });

  it('reads a version-1 file (no format line, 0-based step index) with step + 1 and migrates it on append', () => {
    const path = join(dir, 'v1.jsonl');
    // as flm-grow 0.x wrote it: the first update logged as step 0, growth at the updates done
    writeFileSync(
      path,
      [step(0), step(1), { event: 'growth', step: 2, stage: 1 }, step(2)].map((r) => JSON.stringify(r) + '\n').join(''),
    );
    const recs = readMetrics(path);
    expect(recs.map((r) => r.step)).toEqual([1, 2, 2, 3]);
    expect(partitionMetrics(recs).growth).toEqual([{ event: 'growth', step: 2, stage: 1 }]);
    const log = new MetricsLog(path);
    log.logStep(step(4));
    log.close();
    const lines = readFileSync(path, 'utf8').trim().split('\n');
    expect(JSON.parse(lines[0])).toEqual(METRICS_HEADER);
    expect(lines.slice(1).map((l) => (JSON.parse(l) as { step: number }).step)).toEqual([1, 2, 2, 3, 4]);
    expect(readMetrics(path).map((r) => r.step)).toEqual([1, 2, 2, 3, 4]);

    const future = join(dir, 'v3.jsonl');
    writeFileSync(future, '{"event":"format","version":3}\n{"step":1,"loss":1}\n');
    expect(() => readMetrics(future)).toThrow(/format version 3/);
  });

  it('skips a torn last line but reports a malformed middle line with file:line', () => {
    const path = join(dir, 'torn.jsonl');
    writeFileSync(path, JSON.stringify(METRICS_HEADER) + '\n' + JSON.stringify(step(1)) + '\n');
    appendFileSync(path, '{"step":2,"tok');
    expect(readMetrics(path).length).toBe(1);
    // Reopening after the crash drops the fragment so the next record starts on its own line.
    const log = new MetricsLog(path);
    log.logStep(step(2));
    log.close();
    expect(readMetrics(path)).toEqual([step(1), step(2)]);

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
