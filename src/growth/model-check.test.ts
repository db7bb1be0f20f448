/**
 * Growth judged by the project's own tfjs model (src/model) as well: the grown HF fixture's
 * masked forward reproduces transformers' logits of the source; at masks = 1 the masked model is
 * the plain model of the same weights, and bake's output is that plain model.
 */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Checkpoint } from '../checkpoint/checkpoint.ts';
import { SafetensorsFile } from '../checkpoint/safetensors.ts';
import { bytesToFloat32 } from '../util/dtype.ts';
import { applyMaskValues, readMasks, writeMasks, MASKS_FILE } from '../checkpoint/masks.ts';
import { initBackend } from '../engines/tfjs-backend.ts';
import { streamedForward, type StreamOptions } from '../model/streaming.ts';
import { growCheckpoint } from './grow.ts';
import { bakeCheckpoint } from './bake.ts';
import { applyPlanFlags, readPlanFile } from './plan.ts';
import { tempDir } from '../../test/support/growth.ts';

const FIX = join(import.meta.dirname, '../../fixtures/hf');
const PLANS = join(import.meta.dirname, '../../growth-plans');

let tmp: { dir: string; cleanup: () => void };
beforeAll(async () => {
  await initBackend('auto');
  tmp = tempDir('flm-grow-model-');
});
afterAll(() => tmp.cleanup());

const allOps = () =>
  applyPlanFlags(readPlanFile(join(PLANS, 'tiny-stage1-to-stage2.json')), {
    numAttentionHeads: 10,
    numKeyValueHeads: 5,
    vocabSize: 336,
    positions: '0,2',
    numHiddenLayers: 6,
  });

async function forward(dir: string, ids: number[][], masks?: StreamOptions['masks']) {
  const ck = await Checkpoint.open(dir);
  try {
    return await streamedForward(ck, ids, { masks, ropeOptions: dir.includes('bf16') ? { invFreqDtype: 'BF16' } : {} });
  } finally {
    await ck.close();
  }
}

describe.each(['llama-tiny-f32', 'llama-tiny-bf16'])('model forward of the grown fixture %s', (name) => {
  it("reproduces transformers' logits of the source (old vocab) and masks the padding", async () => {
    const out = join(tmp.dir, `grown-${name}`);
    await growCheckpoint(join(FIX, name), out, allOps(), { quiet: true });
    const ref = await SafetensorsFile.open(join(FIX, name, 'reference.safetensors'));
    const info = ref.info('input_ids');
    const flat = bytesToFloat32(await ref.read('input_ids'), info.dtype);
    const logits = bytesToFloat32(await ref.read('logits'), 'F32');
    await ref.close();
    const [B, T] = info.shape;
    const ids = Array.from({ length: B }, (_, b) => Array.from(flat.subarray(b * T, (b + 1) * T)));
    const r = await forward(out, ids);
    expect(r.masked).toBe(true);
    let max = 0;
    for (let n = 0; n < B * T; n++) {
      for (let v = 0; v < 320; v++) max = Math.max(max, Math.abs(r.logits[n * 336 + v] - logits[n * 320 + v]));
      for (let v = 320; v < 336; v++) expect(r.logits[n * 336 + v]).toBeLessThan(-1e20);
    }
    expect(max).toBeLessThan(2e-4);
  });
});

describe('masks = 1', () => {
  it('masked model at ones == plain model of the same weights == baked checkpoint', async () => {
    const g = join(tmp.dir, 'ones');
    const res = await growCheckpoint(join(FIX, 'llama-tiny-f32'), g, allOps(), { quiet: true });
    const ones = applyMaskValues(await readMasks(join(g, MASKS_FILE), res.target), { hidden: 1, heads: 1, ffn: 1, layers: 1 });
    rmSync(join(g, MASKS_FILE));
    await writeMasks(join(g, MASKS_FILE), ones);
    const ids = [[1, 5, 9, 200, 3, 77, 12, 319]];
    const masked = await forward(g, ids);
    const plain = await forward(g, ids, null);
    const b = join(tmp.dir, 'baked');
    await bakeCheckpoint(g, b, { quiet: true });
    const baked = await forward(b, ids);
    expect(baked.masked).toBe(false);
    let d1 = 0,
      d2 = 0;
    for (let n = 0; n < ids[0].length; n++) {
      for (let v = 0; v < 320; v++) {
        const k = n * 336 + v;
        d1 = Math.max(d1, Math.abs(masked.logits[k] - plain.logits[k]));
        d2 = Math.max(d2, Math.abs(baked.logits[k] - plain.logits[k]));
      }
    }
    expect(d1).toBeLessThan(1e-5);
    expect(d2).toBe(0);
  });
});
