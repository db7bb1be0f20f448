/**
 * Issue 15, "Training folders and resume": a run folder belongs to one run (refused without
 * --resume/--overwrite), --resume with a larger --steps continues the run to its new target,
 * and a run that fails validation leaves no --out folder behind.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTempDir, tinyByteConfig } from '../support/model.ts';
import { initBackend } from '../../src/engines/tfjs-backend.ts';
import { writeRandomInit } from '../../src/train/random-init.ts';
import { train } from '../../src/train/trainer.ts';
import { trainWithEngine } from '../../src/train/engine.ts';
import { listCheckpoints } from '../../src/train/checkpointing.ts';
import { partitionMetrics, readMetrics } from '../../src/train/metrics.ts';
import { readManifest } from '../../src/checkpoint/manifest.ts';

const CORPUS = join(import.meta.dirname, '../../fixtures/corpus/fortunes.txt');
const tmp = makeTempDir('flm-grow-run-folder-');
afterAll(() => tmp.cleanup());
const quiet = { quiet: true, log: () => undefined, backend: 'wasm' as const };
const tinyCfg = () => tinyByteConfig({ num_hidden_layers: 1 });
let init: string;
const common = () => ({ ...quiet, checkpoint: init, data: CORPUS, batchSize: 2, seqLen: 8, lr: 3e-3 });

beforeAll(async () => {
  await initBackend('wasm');
  init = join(tmp.dir, 'init');
  await writeRandomInit(init, tinyCfg(), { seed: 1 });
});

describe('a run folder holds one run', () => {
  it('train into a folder holding a run is refused without --resume/--overwrite; nothing there changes', async () => {
    const out = join(tmp.dir, 'occupied');
    await train({ ...common(), out, steps: 3 });
    const metricsBefore = readFileSync(join(out, 'metrics.jsonl'), 'utf8');
    await expect(train({ ...common(), out, steps: 2 })).rejects.toMatchObject({
      code: 'RunExists',
      message: expect.stringContaining('--resume'),
    });
    await expect(trainWithEngine({ ...common(), out, steps: 2 }, { engine: 'tfjs' })).rejects.toMatchObject({
      code: 'RunExists',
    });
    expect(readFileSync(join(out, 'metrics.jsonl'), 'utf8')).toBe(metricsBefore);
    expect(listCheckpoints(out).map((c) => c.step)).toEqual([3]);
    // --overwrite replaces it: the old checkpoint and metrics are gone
    const r = await train({ ...common(), out, steps: 2, overwrite: true });
    expect(r.step).toBe(2);
    expect(listCheckpoints(out).map((c) => c.step)).toEqual([2]);
    expect(partitionMetrics(readMetrics(join(out, 'metrics.jsonl'))).steps.map((m) => m.step)).toEqual([1, 2]);
  });

  it('--resume with a larger --steps continues the run to its new target (30 -> 40 in the issue; 3 -> 5 here)', async () => {
    const out = join(tmp.dir, 'extend');
    const first = await train({ ...common(), out, steps: 3 });
    expect(first.step).toBe(3);
    const more = await train({ ...common(), out, steps: 5, resume: true });
    expect(more.startStep).toBe(3);
    expect(more.step).toBe(5);
    expect(more.losses).toHaveLength(2);
    expect(more.losses.every((l) => Number.isFinite(l))).toBe(true);
    expect(more.checkpoint).toMatch(/checkpoint-000005$/);
    expect(readManifest(more.checkpoint)?.extra).toMatchObject({ step: 5, runStartStep: 0, targetStep: 5 });
    // one metrics record per step of the whole run
    expect(partitionMetrics(readMetrics(join(out, 'metrics.jsonl'))).steps.map((m) => m.step)).toEqual([1, 2, 3, 4, 5]);
    // a resume already at its target trains nothing and reports the checkpoint it found, not NaN losses
    const again = await train({ ...common(), out, steps: 5, resume: true });
    expect(again.step).toBe(5);
    expect(again.losses).toEqual([]);
    expect(again.checkpoint).toBe(more.checkpoint);
  });

  it('a run that fails validation leaves no --out folder behind', async () => {
    for (const [name, o] of [
      ['lr', { lr: -1 }],
      ['data', { data: join(tmp.dir, 'missing.txt') }],
      ['steps', { steps: 0 }],
      ['seq', { seqLen: 1000 }],
    ] as const) {
      const out = join(tmp.dir, `invalid-${name}`);
      await expect(trainWithEngine({ ...common(), steps: 2, ...o, out }, { engine: 'tfjs' })).rejects.toThrow();
      expect(existsSync(out), name).toBe(false);
    }
  });
});

describe('continuing a run from one of its own checkpoints', () => {
  it('train <run>/checkpoint-N --out <run> is allowed and keeps the metrics of the earlier steps', async () => {
    const out = join(tmp.dir, 'continue');
    const first = await train({ ...common(), out, steps: 3 });
    const r = await train({ ...common(), checkpoint: first.checkpoint, out, steps: 2 });
    expect(r.step).toBe(5);
    expect(partitionMetrics(readMetrics(join(out, 'metrics.jsonl'))).steps.map((m) => m.step)).toEqual([1, 2, 3, 4, 5]);
  });
});
