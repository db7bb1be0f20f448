/**
 * pipelines/tiny-tele-flm.json with `"engine": "torch"` for its train stages ends with the same
 * loss table as with the tfjs trainer (issue 11). The demo itself runs for minutes; this is a
 * reduced copy (same stages, plans and structure; a few steps per stage, anneal windows that end
 * inside them) written to a temp folder and run once per engine, torch with 2 processes. The tfjs
 * run is the independent reference: a separate implementation of the same training math. (The
 * full-length demo is not a test: past train-small's first ~30 steps any f32 difference, even the
 * torch engine's own on another thread count, is amplified ~10x per 10 steps; docs/engines.md.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { runPipeline, type PipelineResult, type StageResult } from '../../src/pipeline.ts';
import { readMetrics, partitionMetrics, type StepMetrics } from '../../src/train/metrics.ts';
import { MASKS_FILE } from '../../src/checkpoint/masks.ts';
import { findTorchPython, NO_TORCH_HELP } from '../../src/engines/torch-process.ts';
import { tensorsAndMetadata } from '../support/safetensors-compare.ts';

const torch = findTorchPython();
if (torch === undefined) {
  console.log(`test/torch: SKIPPED (torch engine tests): ${NO_TORCH_HELP} Set FLM_GROW_PYTHON=/path/to/python to enable them.`);
}

const PIPELINE = resolve(import.meta.dirname, '../../pipelines/tiny-tele-flm.json');
let root: string;

interface Stage {
  name: string;
  init?: unknown;
  train?: Record<string, unknown>;
  grow?: { plan: string; anneal_steps?: number };
  verify?: unknown;
  bake?: unknown;
}

/**
 * The demo with a few steps per train stage, paths made absolute, the train stages on `engine`:
 * torch under torchrun with 2 processes (DDP, gloo), each on half of the same global batch.
 */
function reducedPipeline(engine: 'tfjs' | 'torch'): string {
  const spec = JSON.parse(readFileSync(PIPELINE, 'utf8')) as {
    data: string;
    train: Record<string, unknown>;
    stages: Stage[];
  };
  const base = resolve(PIPELINE, '..');
  spec.data = resolve(base, spec.data);
  spec.train = { ...spec.train, batch_size: 4, seq_len: 32, warmup_steps: 2, eval_every: 3, eval_batches: 2, save_every: 4 };
  spec.train.engine = engine;
  if (engine === 'torch') spec.train.nproc = 2;
  const steps = [6, 5, 4];
  let t = 0;
  for (const s of spec.stages) {
    if (s.verify !== undefined) s.verify = { ...s.verify, tokens: 64, seq: 16 };
    if (s.grow !== undefined) s.grow = { ...s.grow, plan: resolve(base, s.grow.plan), anneal_steps: 3 };
    // the large stage's own warmup/save settings stay: the overrides must still merge as before
    if (s.train !== undefined)
      s.train = { ...s.train, steps: steps[t++], ...(s.train.save_every !== undefined ? { save_every: 2 } : {}) };
  }
  const dir = join(root, engine);
  const file = join(root, `${engine}.json`);
  writeFileSync(file, JSON.stringify({ ...spec, $comment: 'reduced copy of pipelines/tiny-tele-flm.json' }));
  return dir;
}

async function run(engine: 'tfjs' | 'torch'): Promise<PipelineResult> {
  const out = reducedPipeline(engine);
  return runPipeline(join(root, `${engine}.json`), { out, quiet: true, log: () => undefined });
}

function stepsOf(r: PipelineResult, s: StageResult): StepMetrics[] {
  expect(r.stages).toContain(s);
  return partitionMetrics(readMetrics(join(s.dir, 'metrics.jsonl'))).steps;
}

const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'flm-pipe-engines-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe.skipIf(torch === undefined)('tiny-tele-flm pipeline: torch engine vs tfjs trainer', () => {
  it('same loss table (≤1e-3 rel), same step losses and eval losses, same mask values and masks files', async () => {
    const t0 = Date.now();
    const a = await run('tfjs');
    const t1 = Date.now();
    const b = await run('torch');
    console.log(`reduced tiny-tele-flm: tfjs ${(t1 - t0) / 1000} s, torch ${(Date.now() - t1) / 1000} s`);
    expect(b.stages.map((s) => [s.name, s.kind])).toEqual(a.stages.map((s) => [s.name, s.kind]));
    let worst = 0;
    const check = (x: number | undefined, y: number | undefined) => {
      expect(x === undefined).toBe(y === undefined);
      if (x === undefined || y === undefined) return;
      worst = Math.max(worst, rel(x, y));
      expect(rel(x, y)).toBeLessThan(1e-3);
    };
    const trains = a.stages.filter((s) => s.kind === 'train');
    expect(trains).toHaveLength(3);
    for (let i = 0; i < a.stages.length; i++) {
      const sa = a.stages[i],
        sb = b.stages[i];
      // the table's columns: growth's before/after (same tfjs probe, so this checks the grow
      // input/output the torch run produced), loss at stage end, eval loss, step ranges
      check(sb.lossBefore, sa.lossBefore);
      check(sb.lossAfter, sa.lossAfter);
      check(sb.lossEnd, sa.lossEnd);
      check(sb.lastTrainLoss, sa.lastTrainLoss);
      check(sb.evalLoss, sa.evalLoss);
      expect(sb.steps).toEqual(sa.steps);
      expect(sb.parameters).toBe(sa.parameters);
      if (sa.kind === 'verify') expect(sb.verify?.passed).toBe(true);
      if (sa.kind !== 'train') continue;
      const ma = stepsOf(a, sa),
        mb = stepsOf(b, sb);
      expect(mb.map((m) => m.step)).toEqual(ma.map((m) => m.step));
      ma.forEach((m, k) => {
        check(mb[k].loss, m.loss);
        check(mb[k].evalLoss, m.evalLoss);
        expect(mb[k].masks).toEqual(m.masks);
        expect(mb[k].tokens).toBe(m.tokens);
      });
      // the checkpoint each stage hands on stores the same f32 mask values
      const last = `checkpoint-${String((sa.steps as [number, number])[1]).padStart(6, '0')}`;
      const fa = join(sa.dir, last, MASKS_FILE),
        fb = join(sb.dir, last, MASKS_FILE);
      expect(existsSync(fb)).toBe(existsSync(fa));
      if (existsSync(fa)) expect(await tensorsAndMetadata(fb)).toEqual(await tensorsAndMetadata(fa));
      // and the torch stage really ran as 2 DDP processes (its manifest says how it trained)
      const extra = (
        JSON.parse(readFileSync(join(sb.dir, last, 'flm-grow-manifest.json'), 'utf8')) as { extra: Record<string, unknown> }
      ).extra;
      expect([extra.engine, extra.processes, extra.sharding]).toEqual(['torch', 2, 'ddp']);
    }
    console.log(`tiny-tele-flm (reduced), torch vs tfjs: max rel diff over the table and every step ${worst.toExponential(2)}`);
  }, 600_000);
});
