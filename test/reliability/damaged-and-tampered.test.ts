/**
 * Issue 21: a damaged newest checkpoint, and hand-edited manifests.
 *
 * - `train --resume` (and a pipeline's train stage) past a damaged newest checkpoint: before,
 *   it went back to the previous save and said nothing (steps 2 -> 6 instead of 4 -> 6). Now one
 *   line names the checkpoint skipped, why (the file, truncated / sha256 differs / no manifest)
 *   and the step resumed from. These tests failed before (no such line).
 * - A grown checkpoint whose manifest says something impossible (`"length": -5` and the like)
 *   trained with exit 0; now every field that drives computation is checked like a plan's,
 *   naming the field and the file (exit 2 from the CLI). These tests failed before (accepted).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { cpSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTempDir, tinyByteConfig } from '../support/model.ts';
import { initBackend } from '../../src/engines/tfjs-backend.ts';
import { growCheckpoint } from '../../src/growth/grow.ts';
import { parsePlan } from '../../src/growth/plan.ts';
import { writeRandomInit } from '../../src/train/random-init.ts';
import { train } from '../../src/train/trainer.ts';
import { runPipeline } from '../../src/pipeline.ts';
import { verifyGrowth } from '../../src/growth/verify.ts';
import { FlmGrowError } from '../../src/util/errors.ts';
import { MANIFEST_FILE } from '../../src/checkpoint/manifest.ts';

const ROOT = join(import.meta.dirname, '../..');
const CORPUS = join(ROOT, 'fixtures/corpus/fortunes.txt');
const tmp = makeTempDir('flm-grow-damaged-');
afterAll(() => tmp.cleanup());
const trainOpts = { quiet: true, backend: 'wasm' as const, data: CORPUS, batchSize: 2, seqLen: 8, lr: 1e-3 };
let base: string, grown: string, run: string, carried: string;

beforeAll(async () => {
  await initBackend('wasm');
  base = join(tmp.dir, 'base');
  await writeRandomInit(base, tinyByteConfig(), { seed: 5 });
  const plan = parsePlan({
    targets: { hidden_size: 24, intermediate_size: 40, num_attention_heads: 3, num_key_value_heads: 3, num_hidden_layers: 3 },
    placement: { method: 'explicit', positions: [0] },
    seed: 1,
    anneal_steps: 6,
  });
  grown = join(tmp.dir, 'grown');
  await growCheckpoint(base, grown, plan, { quiet: true });
  // a run with saves at steps 2 and 4
  run = join(tmp.dir, 'run');
  await train({ ...trainOpts, checkpoint: grown, out: run, steps: 4, saveEvery: 2, log: () => undefined });
  // grown again while annealing (step 2 of 6): its manifest carries the rest of the schedule
  carried = join(tmp.dir, 'carried');
  const again = parsePlan({
    targets: { num_hidden_layers: 4 },
    placement: { method: 'explicit', positions: [0] },
    seed: 2,
    anneal_steps: 4,
  });
  await growCheckpoint(join(run, 'checkpoint-000002'), carried, again, { quiet: true });
}, 120_000);

type Json = Record<string, any>;

function edit(dir: string, f: (m: Json) => void): void {
  const p = join(dir, MANIFEST_FILE);
  const m = JSON.parse(readFileSync(p, 'utf8')) as Json;
  f(m);
  writeFileSync(p, JSON.stringify(m, null, 2));
}

describe('train --resume past a damaged newest checkpoint says so in one line', () => {
  const cases: [string, (ck: string) => void, RegExp][] = [
    [
      'optimizer.safetensors truncated',
      (ck) => truncateSync(join(ck, 'optimizer.safetensors'), 100),
      /optimizer\.safetensors is truncated \(100 of the \d+ bytes its header needs\)/,
    ],
    [
      'one byte of model.safetensors altered',
      (ck) => {
        const p = join(ck, 'model.safetensors');
        const b = readFileSync(p);
        b[b.length - 3] ^= 0x40;
        writeFileSync(p, b);
      },
      /model\.safetensors does not match its manifest \(sha256 differs; \d+ bytes\)/,
    ],
    ['its manifest removed', (ck) => rmSync(join(ck, MANIFEST_FILE)), /no flm-grow-manifest\.json \(an interrupted save\)/],
    [
      'its manifest torn (not JSON)',
      (ck) => writeFileSync(join(ck, MANIFEST_FILE), '{"format": "flm-gr'),
      /flm-grow-manifest\.json is unreadable/,
    ],
  ];
  for (const [what, damage, why] of cases)
    it(
      what,
      async () => {
        const r = join(tmp.dir, `resume-${what.replace(/\W+/g, '-')}`);
        cpSync(run, r, { recursive: true });
        damage(join(r, 'checkpoint-000004'));
        const log: string[] = [];
        const res = await train({
          ...trainOpts,
          checkpoint: grown,
          out: r,
          steps: 6,
          saveEvery: 2,
          resume: true,
          log: (l) => log.push(l),
        });
        expect(res.startStep).toBe(2);
        const lines = log.filter((l) => l.includes('skipped damaged checkpoint'));
        expect(lines).toHaveLength(1);
        expect(lines[0]).toContain(join(r, 'checkpoint-000004'));
        expect(lines[0]).toMatch(why);
        expect(lines[0]).toMatch(new RegExp(`resuming from ${join(r, 'checkpoint-000002')} at step 2$`));
      },
      60_000,
    );
});

describe('a pipeline train stage resumed past a damaged checkpoint says so', () => {
  it('names the checkpoint, the file and the step resumed from', async () => {
    const dir = join(tmp.dir, 'pipe');
    const file = join(tmp.dir, 'pipe.json');
    writeFileSync(
      file,
      JSON.stringify({
        data: CORPUS,
        seed: 0,
        checkpoint: grown,
        train: { batch_size: 2, seq_len: 8, lr: 0.001, save_every: 2, eval_every: 0, eval_batches: 1 },
        stages: [{ name: 't', train: { steps: 4 } }],
      }),
    );
    await runPipeline(file, { out: dir, quiet: true, log: () => undefined });
    truncateSync(join(dir, '01-t', 'checkpoint-000004', 'optimizer.safetensors'), 100);
    const log: string[] = [];
    await runPipeline(file, { out: dir, quiet: true, log: (l) => log.push(l) });
    const line = log.find((l) => l.startsWith('[t] warning: skipped damaged checkpoint'));
    expect(line).toBeDefined();
    expect(line).toContain(`${join(dir, '01-t', 'checkpoint-000004')} (optimizer.safetensors is truncated`);
    expect(line).toMatch(/resuming from .*checkpoint-000002 at step 2$/);
  }, 120_000);
});

describe('tampered manifests are refused, naming the field and the file', () => {
  const grownEdits: [string, (m: Json) => void][] = [
    ['masks.schedule[0].length', (m) => (m.masks.schedule[0].length = -5)],
    ['masks.schedule[1].group', (m) => (m.masks.schedule[1].group = 'everything')],
    ['masks.schedule[0].shape', (m) => (m.masks.schedule[0].shape = 'square')],
    ['masks.schedule[0].startStep', (m) => (m.masks.schedule[0].startStep = 1.5)],
    ['masks.schedule[1].group', (m) => (m.masks.schedule[1].group = m.masks.schedule[0].group)],
    ['masks.file', (m) => (m.masks.file = '../../etc/passwd')],
    ['layerMap[0].source', (m) => (m.layerMap[0].source = -3)],
    ['layerMap[2].source', (m) => ([m.layerMap[1].source, m.layerMap[2].source] = [m.layerMap[2].source, m.layerMap[1].source])],
    ['layerMap[1].inserted', (m) => (m.layerMap[1].inserted = 'yes')],
    ['layerMap', (m) => m.layerMap.pop()],
  ];
  for (const [field, f] of grownEdits)
    it(`train of a grown checkpoint: ${field}`, async () => {
      const g = join(tmp.dir, `g-${field.replace(/\W+/g, '-')}-${Math.random().toString(16).slice(2)}`);
      cpSync(grown, g, { recursive: true });
      edit(g, f);
      const p = train({ ...trainOpts, checkpoint: g, out: join(g + '-run'), steps: 1, log: () => undefined });
      await expect(p).rejects.toThrow(FlmGrowError);
      await expect(p).rejects.toThrow(`field "${field}"`);
      await expect(p).rejects.toThrow(join(g, MANIFEST_FILE));
    });

  it('carried annealing (masks.carried) of a checkpoint grown while annealing', async () => {
    for (const [field, f] of [
      ['masks.carried.sourceStageStep', (m: Json) => (m.masks.carried.sourceStageStep = -1)],
      ['masks.carried.groups[0].entry.length', (m: Json) => (m.masks.carried.groups[0].entry.length = -5)],
      ['masks.carried.groups[0].how', (m: Json) => (m.masks.carried.groups[0].how = 'sideways')],
    ] as const) {
      const g = join(tmp.dir, `c-${field.replace(/\W+/g, '-')}`);
      cpSync(carried, g, { recursive: true });
      edit(g, f);
      await expect(train({ ...trainOpts, checkpoint: g, out: g + '-run', steps: 1, log: () => undefined })).rejects.toThrow(
        `field "${field}"`,
      );
    }
  });

  it('verify refuses a layer map that would skip a boundary', async () => {
    const g = join(tmp.dir, 'v-layermap');
    cpSync(grown, g, { recursive: true });
    edit(g, (m) => (m.layerMap[0].source = 7));
    await expect(verifyGrowth(base, g, { tokens: 8, seq: 8 })).rejects.toThrow(/field "layerMap\[0\]\.source"/);
  });

  const trainEdits: [string, (m: Json) => void][] = [
    ['extra.step', (m) => (m.extra.step = -1)],
    ['extra.stageStart', (m) => (m.extra.stageStart = m.extra.step + 5)],
    ['extra.tokens', (m) => (m.extra.tokens = 1.5)],
    ['extra.lrSchedule.totalSteps', (m) => (m.extra.lrSchedule.totalSteps = 0)],
    ['extra.lrSchedule.minLr', (m) => (m.extra.lrSchedule.minLr = 5)],
    ['extra.runStartStep', (m) => (m.extra.runStartStep = -4)],
  ];
  for (const [field, f] of trainEdits)
    it(`train --resume of a run whose newest manifest has ${field} edited`, async () => {
      const r = join(tmp.dir, `t-${field.replace(/\W+/g, '-')}`);
      cpSync(run, r, { recursive: true });
      edit(join(r, 'checkpoint-000004'), f);
      const p = train({ ...trainOpts, checkpoint: grown, out: r, steps: 6, resume: true, log: () => undefined });
      await expect(p).rejects.toThrow(`field "${field}"`);
      await expect(p).rejects.toThrow(join(r, 'checkpoint-000004', MANIFEST_FILE));
    });

  it('the CLI exits 2 with one line naming the field and the file', () => {
    const g = join(tmp.dir, 'cli-length');
    cpSync(grown, g, { recursive: true });
    edit(g, (m) => (m.masks.schedule[0].length = -5));
    const r = spawnSync(
      process.execPath,
      [
        join(ROOT, 'bin/flm-grow.js'),
        'train',
        g,
        '--data',
        CORPUS,
        '--out',
        g + '-run',
        '--steps',
        '1',
        '--batch-size',
        '2',
        '--seq-len',
        '8',
        '--backend',
        'wasm',
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );
    expect(r.status).toBe(2);
    const err = r.stderr.trim().split('\n');
    expect(err).toHaveLength(1);
    expect(err[0]).toBe(
      `flm-grow: error: ${join(g, MANIFEST_FILE)}: field "masks.schedule[0].length" must be an integer >= 0, got -5`,
    );
  }, 60_000);
});
