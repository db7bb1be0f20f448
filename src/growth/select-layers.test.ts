/**
 * Layer selection on a model with a known identity layer (o_proj and down_proj zero): that layer
 * has distance 0 and is picked first under `smallest`, last under `largest`. Runs through the
 * model's layer-streamed forward when src/model exists; the naive reference provides the stream
 * otherwise, so the selection logic is always tested.
 */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { makeConfig } from '../config.ts';
import { Checkpoint } from '../checkpoint/checkpoint.ts';
import { calibrationIds, selectLayers, setResidualStream, type ResidualStreamFn } from './select-layers.ts';
import { defaultPlan, parsePlan } from './plan.ts';
import { growCheckpoint } from './grow.ts';
import { loadAll, naive, tempDir, writeRandomCheckpoint } from '../../test/support/growth.ts';

const MODEL_READY = existsSync(join(import.meta.dirname, '../model/streaming.ts')) && process.env.FLM_GROW_NAIVE_STREAM === undefined;

/** x_0..x_L from the naive reference; x_L recovered up to scale (final gain 1), enough for cosine. */
const naiveStream: ResidualStreamFn = async (ck, batch, visit) => {
  const { w } = await loadAll(ck.dir);
  w.set('model.norm.weight', new Float32Array(ck.config.hiddenSize).fill(1));
  const H = ck.config.hiddenSize;
  const L = ck.config.numLayers;
  const out = Array.from({ length: L + 1 }, () => new Float32Array(batch.length * batch[0].length * H));
  batch.forEach((ids, b) => {
    const o = naive({ ...ck.config, rmsNormEps: 1e-30 }, w, ids);
    for (let n = 0; n <= L; n++) o.hidden[n].forEach((row, t) => out[n].set(Float32Array.from(row), (b * ids.length + t) * H));
  });
  for (let l = 0; l < L; l++) visit(l, out[l], out[l + 1]);
};

let tmp: { dir: string; cleanup: () => void };
let dir: string;
const cfg = makeConfig({ hiddenSize: 16, intermediateSize: 24, numLayers: 4, numHeads: 4, numKvHeads: 2, headDim: 4, vocabSize: 40, dtype: 'F32' });

beforeAll(async () => {
  tmp = tempDir('flm-grow-sel-');
  dir = join(tmp.dir, 'ident');
  await writeRandomCheckpoint(dir, cfg, 'F32', { seed: 11, identityLayers: [2], std: 0.3 });
  if (!MODEL_READY) setResidualStream(naiveStream);
});
afterAll(() => { setResidualStream(undefined); tmp.cleanup(); });

describe('distance-based layer selection', () => {
  it('an identity layer has distance 0 and is picked first (smallest) / last (largest)', async () => {
    const ck = await Checkpoint.open(dir);
    try {
      const ids = await calibrationIds(ck, { ...defaultPlan().calibration, tokens: 24, seq: 8 });
      expect(ids.length).toBe(3);
      for (const metric of ['cosine', 'l2'] as const) {
        if (metric === 'l2' && !MODEL_READY) continue; // the naive stream gives x_L only up to scale
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

  it('grow with method distance duplicates that layer and records the distances in the manifest', async () => {
    const out = join(tmp.dir, 'grown');
    const plan = parsePlan({ targets: { num_hidden_layers: 5 }, placement: { method: 'distance', metric: 'cosine', order: 'smallest' }, calibration: { tokens: 16, seq: 8 } });
    const r = await growCheckpoint(dir, out, plan, { quiet: true });
    expect(r.selection?.picks).toEqual([2]);
    expect(r.layerMap.map((e) => e.inserted)).toEqual([false, false, false, true, false]);
    expect(r.layerMap[3].source).toBe(2);
    const { readManifest } = await import('../manifest.ts');
    expect((readManifest(out)?.layerSelection as { distances: number[] }).distances.length).toBe(4);
  });
});
