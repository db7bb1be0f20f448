/**
 * Issue 15, "Growth of a checkpoint whose masks are still annealing": grow carries every unit's
 * current mask value and the rest of the source's schedules (growth/carry.ts), so that
 * grow -> (0, some or all annealing steps) -> grow -> train to the end of every schedule leaves
 * every mask at 1, bake succeeds without --force, and the baked model is the trained one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { join } from 'node:path';
import { makeTempDir, tinyByteConfig } from '../support/model.ts';
import { initBackend } from '../../src/engines/tfjs-backend.ts';
import { growCheckpoint } from '../../src/growth/grow.ts';
import { bakeCheckpoint } from '../../src/growth/bake.ts';
import { parsePlan } from '../../src/growth/plan.ts';
import { writeRandomInit } from '../../src/train/random-init.ts';
import { train } from '../../src/train/trainer.ts';
import { readManifest } from '../../src/checkpoint/manifest.ts';
import { annealingEndStep, groupsBelowOne, readMasks, masksPath } from '../../src/checkpoint/masks.ts';
import { Checkpoint } from '../../src/checkpoint/checkpoint.ts';
import { verifyGrowth } from '../../src/growth/verify.ts';

const CORPUS = join(import.meta.dirname, '../../fixtures/corpus/fortunes.txt');
const tmp = makeTempDir('flm-grow-grow-annealing-');
afterAll(() => tmp.cleanup());
const quiet = { quiet: true, log: () => undefined, backend: 'wasm' as const };
const trainOpts = { ...quiet, data: CORPUS, batchSize: 2, seqLen: 8, lr: 1e-3 };
let base: string;

beforeAll(async () => {
  await initBackend('wasm');
  base = join(tmp.dir, 'base');
  await writeRandomInit(base, tinyByteConfig(), { seed: 5 });
});

const ANNEAL1 = 6;
/** Stage 1: every width group and depth grow, annealed over ANNEAL1 steps. */
const stage1 = parsePlan({
  targets: { hidden_size: 24, intermediate_size: 40, num_attention_heads: 3, num_key_value_heads: 3, num_hidden_layers: 3 },
  placement: { method: 'explicit', positions: [0] },
  seed: 1,
  anneal_steps: ANNEAL1,
});
/** Stage 2 variants: width (hidden and heads grow again; ffn and layers are carried), or vocab only. */
const stage2 = {
  width: parsePlan({
    targets: { hidden_size: 32, num_attention_heads: 4, num_key_value_heads: 4 },
    placement: { method: 'explicit' },
    seed: 2,
    anneal_steps: 4,
  }),
  vocab: parsePlan({ targets: { vocab_size: 264 }, placement: { method: 'explicit' }, seed: 2, anneal_steps: 4 }),
};

async function masksBelow(dir: string): Promise<string[]> {
  const ck = await Checkpoint.open(dir);
  try {
    return groupsBelowOne(await readMasks(masksPath(dir), ck.config)).map((g) => g.group);
  } finally {
    await ck.close();
  }
}

let run = 0;
describe('grow -> grow while annealing -> train to the end -> bake', () => {
  it('every mask reaches 1, bake needs no --force, and the baked model is the trained one', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(0, 3, ANNEAL1),
        fc.constantFrom('width' as const, 'vocab' as const),
        async (between, kind) => {
          const d = join(tmp.dir, `r${++run}-${between}-${kind}`);
          await growCheckpoint(base, join(d, 'g1'), stage1, { quiet: true });
          let mid = join(d, 'g1');
          if (between > 0) mid = (await train({ ...trainOpts, checkpoint: mid, out: join(d, 't1'), steps: between })).checkpoint;
          await growCheckpoint(mid, join(d, 'g2'), stage2[kind], { quiet: true });
          const m = readManifest(join(d, 'g2'));
          const schedule = m?.masks?.schedule ?? [];
          // every group still below 1 has a schedule entry: carried ones continue, regrown ones restart with this growth
          const below = await masksBelow(join(d, 'g2'));
          expect(below.filter((g) => !schedule.some((e) => e.group === g))).toEqual([]);
          if (between < ANNEAL1) {
            expect(m?.masks?.carried).toMatchObject({ sourceStageStep: between });
            const ffn = schedule.find((e) => e.group === 'ffn');
            expect(ffn).toMatchObject({ startStep: 0 - between, length: ANNEAL1 });
          } else expect(m?.masks?.carried).toBeUndefined();
          const steps = Math.max(1, annealingEndStep(schedule));
          const logs: string[] = [];
          const r = await train({ ...trainOpts, checkpoint: join(d, 'g2'), out: join(d, 't2'), steps, log: (l) => logs.push(l) });
          expect(r.masksAllOne).toBe(true);
          expect(await masksBelow(r.checkpoint)).toEqual([]);
          if (schedule.length > 0) expect(logs.filter((l) => l.includes('every mask reached 1'))).toHaveLength(1);
          await bakeCheckpoint(r.checkpoint, join(d, 'baked'), { quiet: true });
          const v = await verifyGrowth(r.checkpoint, join(d, 'baked'), { backend: 'wasm', tokens: 32, seq: 16 });
          expect(v.passed).toBe(true);
          expect(v.relativeLogitDiff).toBeLessThan(1e-5);
        },
      ),
      { numRuns: 6, seed: 15 },
    );
  });
});
