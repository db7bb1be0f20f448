import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { initBackend } from './engines/tfjs-backend.ts';
import { FlmGrowError } from './util/errors.ts';
import { readManifest } from './checkpoint/manifest.ts';
import { formatLossTable, readPipelineFile, runPipeline } from './pipeline.ts';
import { partitionMetrics, readMetrics } from './train/metrics.ts';
import { TINY_BYTE_CONFIG } from '../test/support/model.ts';

let root: string;
const CORPUS = resolve(import.meta.dirname, '../fixtures/corpus/fortunes.txt');

function writePipeline(dir: string): string {
  writeFileSync(
    join(dir, 'plan.json'),
    JSON.stringify({
      targets: { hidden_size: 24, intermediate_size: 40, num_attention_heads: 3, num_key_value_heads: 3, num_hidden_layers: 3 },
      mode: 'masked',
      placement: { method: 'explicit', positions: [1] },
      seed: 1,
      anneal_steps: 2,
    }),
  );
  const file = join(dir, 'pipe.json');
  writeFileSync(
    file,
    JSON.stringify({
      data: CORPUS,
      seed: 0,
      backend: 'wasm',
      train: { batch_size: 2, seq_len: 16, lr: 0.003, warmup_steps: 1, save_every: 2, eval_every: 2, eval_batches: 1 },
      stages: [
        {
          name: 'init',
          init: {
            config: { ...TINY_BYTE_CONFIG, max_position_embeddings: 32 },
          },
        },
        { name: 'small', train: { steps: 5 } },
        { name: 'grow', grow: { plan: 'plan.json' } },
        { name: 'check', verify: { tokens: 32, seq: 16 } },
        { name: 'big', train: { steps: 3 } },
        { name: 'bake', bake: {} },
        { name: 'check-bake', verify: { tokens: 32, seq: 16 } },
      ],
    }),
  );
  return file;
}

beforeAll(async () => {
  await initBackend('wasm');
  root = mkdtempSync(join(tmpdir(), 'flm-pipeline-test-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('pipeline', () => {
  it('rejects malformed pipelines naming the field', () => {
    const f = join(root, 'bad.json');
    writeFileSync(f, JSON.stringify({ data: 'x', stages: [{ name: 'a', train: {} }] }));
    expect(() => readPipelineFile(f)).toThrow(/field "checkpoint"/);
    writeFileSync(f, JSON.stringify({ data: 'x', checkpoint: 'c', stages: [{ name: 'a', train: {}, bake: {} }] }));
    expect(() => readPipelineFile(f)).toThrow(/stages\[0\]".*exactly one/);
  });

  it('runs init/train/grow/verify/train/bake, resumes after an interruption to the same losses, then skips everything', async () => {
    const file = writePipeline(root);
    const quietLog: string[] = [];
    const log = (s: string) => quietLog.push(s);
    // reference: one uninterrupted run
    await runPipeline(file, { out: join(root, 'ref'), quiet: true, log: () => undefined });
    // interrupted in the first train stage after 3 steps (a checkpoint exists at step 2)
    await expect(
      runPipeline(file, { out: join(root, 'run'), quiet: true, log, shouldStopTraining: (n) => n >= 3 }),
    ).rejects.toThrow(FlmGrowError);
    expect(existsSync(join(root, 'run', '02-small', 'checkpoint-000002'))).toBe(true);
    const r = await runPipeline(file, { out: join(root, 'run'), quiet: true, log });
    expect(r.stages.map((s) => s.skipped)).toEqual([true, false, false, false, false, false, false]);
    expect(quietLog.some((l) => l.includes('resuming from') && l.includes('checkpoint-000002'))).toBe(true);
    // same losses as the uninterrupted pipeline, and no duplicated steps in the resumed metrics
    for (const stage of ['02-small', '05-big']) {
      const a = partitionMetrics(readMetrics(join(root, 'ref', stage, 'metrics.jsonl'))).steps;
      const b = partitionMetrics(readMetrics(join(root, 'run', stage, 'metrics.jsonl'))).steps;
      expect(b.map((m) => m.step)).toEqual(a.map((m) => m.step));
      expect(b.map((m) => m.loss)).toEqual(a.map((m) => m.loss));
    }
    const grow = r.stages.find((s) => s.kind === 'grow');
    expect(grow?.lossBefore).toBeDefined();
    expect(
      Math.abs((grow?.lossAfter as number) - (grow?.lossBefore as number)) / (grow?.lossBefore as number),
    ).toBeLessThanOrEqual(1e-5);
    expect(r.stages.filter((s) => s.kind === 'verify').every((s) => s.verify?.passed === true)).toBe(true);
    expect(readManifest(r.finalCheckpoint)?.kind).toBe('bake');
    expect(existsSync(join(root, 'run', 'loss.svg'))).toBe(true);
    expect(formatLossTable(r)).toMatch(/\| big +\|/);
    // everything complete: a rerun skips every stage
    const again = await runPipeline(file, { out: join(root, 'run'), quiet: true, log: () => undefined });
    expect(again.stages.every((s) => s.skipped)).toBe(true);
    expect(again.finalCheckpoint).toBe(r.finalCheckpoint);
  });
});
