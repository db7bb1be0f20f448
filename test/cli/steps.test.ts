/**
 * One step convention, the Hugging Face Trainer's (global_step = optimizer updates done), in both
 * engines: the console line `step 5/10`, the metrics.jsonl record `"step": 5`, checkpoint-000005
 * (whose optimizer state has done 5 updates) and the plot's x = 5 are the same point. And with
 * stderr not a terminal, `--log-every N` prints a plain line every N steps and at the last; the
 * eval-loss and "saving checkpoint" lines read the same on both engines.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findTorchPython } from '../../src/engines/torch-process.ts';
import { partitionMetrics, readMetrics } from '../../src/train/metrics.ts';
import { lossSeriesFromMetrics } from '../../src/train/plot.ts';
import { readManifest } from '../../src/checkpoint/manifest.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const F = join(ROOT, 'fixtures/hf/llama-tiny-f32');
const CORPUS = join(ROOT, 'fixtures/corpus/fortunes.txt');
const torch = findTorchPython() !== undefined;

let d: string;
beforeAll(() => {
  d = mkdtempSync(join(tmpdir(), 'flm-grow-steps-'));
});
afterAll(() => rmSync(d, { recursive: true, force: true }));

describe.each([
  ['tfjs', true],
  ['torch', torch],
])('step convention, engine %s', (engine, available) => {
  it.skipIf(!available)('console, metrics.jsonl, checkpoints and plot count updates done', { timeout: 120_000 }, () => {
    const out = join(d, engine);
    // stdio pipes: stderr is not a terminal, so the plain lines are the only per-step output
    const r2 = ['--eval-every', '5', '--log-every', '3', '--keep-checkpoints', '5', '--engine', engine];
    r2.push('--batch-size', '2', '--seq-len', '16');
    rmSync(out, { recursive: true, force: true });
    const run = spawnSync(
      process.execPath,
      [join(ROOT, 'bin/flm-grow.js'), 'train', F, '--data', CORPUS, '--out', out, '--steps', '10', '--save-every', '5', ...r2],
      { encoding: 'utf8', cwd: ROOT },
    );
    expect(run.status, run.stderr).toBe(0);
    const { steps } = partitionMetrics(readMetrics(join(out, 'metrics.jsonl')));
    // the first record is after the first update
    expect(steps.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    // eval every 5 updates: the records of steps 5 and 10
    expect(steps.filter((m) => m.evalLoss !== undefined).map((m) => m.step)).toEqual([5, 10]);
    // the console's plain lines: every 3 steps and the last, each with the loss of that record
    const lines = [...run.stderr.matchAll(/^step (\d+)\/10: loss (\d+\.\d{4}) /gm)];
    expect(lines.map((m) => Number(m[1]))).toEqual([3, 6, 9, 10]);
    for (const m of lines) {
      const rec = steps.find((s) => s.step === Number(m[1]));
      expect(Math.abs(Number(m[2]) - rec!.loss)).toBeLessThan(6e-5);
    }
    // the eval and save lines, in the same format on both engines, at the same steps, with the records' losses
    const evals = [...run.stderr.matchAll(/^train: step (\d+): eval loss (\d+\.\d{4}) \(train loss (\d+\.\d{4})\)$/gm)];
    expect(evals.map((m) => Number(m[1]))).toEqual([5, 10]);
    for (const m of evals) {
      const rec = steps.find((s) => s.step === Number(m[1]));
      expect(Math.abs(Number(m[2]) - rec!.evalLoss!)).toBeLessThan(6e-5);
      expect(Math.abs(Number(m[3]) - rec!.loss)).toBeLessThan(6e-5);
    }
    const saves = [...run.stderr.matchAll(/^train: step (\d+): saving (checkpoint-\d{6})$/gm)];
    expect(saves.map((m) => [Number(m[1]), m[2]])).toEqual([
      [5, 'checkpoint-000005'],
      [10, 'checkpoint-000010'],
    ]);
    // checkpoint-000005 holds the weights after 5 updates (its manifest and optimizer say 5)
    const cks = readdirSync(out).filter((x) => x.startsWith('checkpoint-'));
    expect(cks.sort()).toEqual(['checkpoint-000005', 'checkpoint-000010']);
    const m5 = readManifest(join(out, 'checkpoint-000005'));
    expect(m5?.kind === 'train' ? m5.extra.step : undefined).toBe(5);
    // the plot draws the same x
    const { series } = lossSeriesFromMetrics(readMetrics(join(out, 'metrics.jsonl')));
    expect(series[0].points.map((p) => p.x)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });
});

describe('flm-grow run --log-every', () => {
  it("sets every train stage's plain step line, over the pipeline's log_every", { timeout: 120_000 }, () => {
    const pipe = join(d, 'log-pipe.json');
    writeFileSync(
      pipe,
      JSON.stringify({
        data: CORPUS,
        checkpoint: F,
        train: { batch_size: 2, seq_len: 16, log_every: 3 },
        stages: [{ name: 't', train: { steps: 4 } }],
      }),
    );
    const stepsLogged = (extra: string[], out: string) => {
      const r = spawnSync(process.execPath, [join(ROOT, 'bin/flm-grow.js'), 'run', pipe, '--out', join(d, out), ...extra], {
        encoding: 'utf8',
        cwd: ROOT,
      });
      expect(r.status, r.stderr).toBe(0);
      return [...r.stderr.matchAll(/^step (\d+)\/4: loss /gm)].map((m) => Number(m[1]));
    };
    expect(stepsLogged([], 'log-key')).toEqual([3, 4]);
    expect(stepsLogged(['--log-every', '2'], 'log-flag')).toEqual([2, 4]);
  });
});
