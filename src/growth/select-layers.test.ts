/**
 * Layer selection on a model with a known identity layer (o_proj and down_proj zero): that layer
 * has distance 0 and is picked first under `smallest`, last under `largest`, through the model's
 * layer-streamed forward.
 */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { makeConfig } from '../spec/config.ts';
import { Checkpoint } from '../checkpoint/checkpoint.ts';
import { calibrationIds, selectLayers } from './select-layers.ts';
import { defaultPlan, parsePlan } from './plan.ts';
import { growCheckpoint } from './grow.ts';
import { tempDir, writeRandomCheckpoint } from '../../test/support/growth.ts';

let tmp: { dir: string; cleanup: () => void };
let dir: string;
const cfg = makeConfig({
  hiddenSize: 16,
  intermediateSize: 24,
  numLayers: 4,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 4,
  vocabSize: 40,
  dtype: 'F32',
});

beforeAll(async () => {
  tmp = tempDir('flm-grow-sel-');
  dir = join(tmp.dir, 'ident');
  await writeRandomCheckpoint(dir, cfg, 'F32', { seed: 11, identityLayers: [2], std: 0.3 });
});
afterAll(() => tmp.cleanup());

describe('distance-based layer selection', () => {
  it('an identity layer has distance 0 and is picked first (smallest) / last (largest)', async () => {
    const ck = await Checkpoint.open(dir);
    try {
      const ids = await calibrationIds(ck, { ...defaultPlan().calibration, tokens: 24, seq: 8 });
      expect(ids.length).toBe(3);
      for (const metric of ['cosine', 'l2'] as const) {
        const r = await selectLayers(ck, ids, { metric, order: 'smallest', count: 2 });
        expect(r.distances[2]).toBeLessThan(1e-6);
        for (const l of [0, 1, 3]) expect(r.distances[l]).toBeGreaterThan(1e-4);
        expect(r.picks[0]).toBe(2);
        const big = await selectLayers(ck, ids, { metric, order: 'largest', count: 4 });
        expect(big.picks[3]).toBe(2);
      }
    } finally {
      await ck.close();
    }
  });

  it('refuses calibration text whose token ids fall outside the vocabulary (like forward), instead of wrapping them', async () => {
    const ck = await Checkpoint.open(dir); // no tokenizer.json: the byte tokenizer, ids up to 255 > V = 40
    try {
      await expect(calibrationIds(ck, { ...defaultPlan().calibration, text: 'hello world', seq: 4 })).rejects.toThrow(
        /calibration\.text.*outside the model's vocabulary \[0, 40\)/,
      );
    } finally {
      await ck.close();
    }
  });

  it('grow with method distance duplicates that layer and records the distances in the manifest', async () => {
    const out = join(tmp.dir, 'grown');
    const plan = parsePlan({
      targets: { num_hidden_layers: 5 },
      placement: { method: 'distance', metric: 'cosine', order: 'smallest' },
      calibration: { tokens: 16, seq: 8 },
    });
    const r = await growCheckpoint(dir, out, plan, { quiet: true });
    expect(r.selection?.picks).toEqual([2]);
    expect(r.layerMap.map((e) => e.inserted)).toEqual([false, false, false, true, false]);
    expect(r.layerMap[3].source).toBe(2);
    const { readManifest } = await import('../checkpoint/manifest.ts');
    type GrowManifest = import('../checkpoint/manifest.ts').GrowManifest;
    expect(((readManifest(out) as GrowManifest | undefined)?.layerSelection as { distances: number[] }).distances.length).toBe(4);
  });
});
