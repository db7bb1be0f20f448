/**
 * The masked (MSG) model of SPEC §2: all-ones masks are the plain model; intermediate mask
 * values agree with the naive float64 reference; and a model grown BY HAND (random new weights,
 * interleaved new units, an inserted layer, vocab padding) computes the old function exactly
 * where its masks are 0.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../engines/tfjs-backend.ts';
import { makeConfig, type ModelConfig } from '../spec/config.ts';
import { onesMasks, type MaskSet } from '../checkpoint/masks.ts';
import { disposeWeights, forward } from './llama.ts';
import { disposeMaskTensors, masksToTensors } from './mask-tensors.ts';
import { buildHandGrown, randomIdRows, randomWeightArrays, weightsFromArrays } from '../../test/support/model.ts';
import { naiveForward } from '../../test/reference/naive-llama.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

function run(
  cfg: ModelConfig,
  arrays: Map<string, Float32Array>,
  rows: number[][],
  masks?: MaskSet,
): { logits: Float32Array; hidden: Float32Array[] } {
  const w = weightsFromArrays(cfg, arrays);
  const ids = tf.tensor2d(rows, [rows.length, rows[0].length], 'int32');
  const mt = masks === undefined ? undefined : masksToTensors(masks);
  const out = forward(cfg, w, ids, { collectHidden: true, masks: mt });
  const res = {
    logits: out.logits.dataSync() as Float32Array,
    hidden: (out.hidden as tf.Tensor[]).map((h) => h.dataSync() as Float32Array),
  };
  tf.dispose([ids, out.logits, ...(out.hidden ?? [])]);
  if (mt !== undefined) disposeMaskTensors(mt);
  disposeWeights(w);
  return res;
}

const base = makeConfig({
  hiddenSize: 16,
  intermediateSize: 24,
  numLayers: 3,
  numHeads: 2,
  numKvHeads: 1,
  headDim: 8,
  vocabSize: 40,
});

describe('masked model', () => {
  it('all masks at 1 equal the plain model', () => {
    const arrays = randomWeightArrays(base, { seed: 11 });
    const rows = randomIdRows(2, 8, base.vocabSize, 2);
    const plain = run(base, arrays, rows);
    const ones = run(base, arrays, rows, onesMasks(base));
    let d = 0;
    for (let i = 0; i < plain.logits.length; i++) d = Math.max(d, Math.abs(plain.logits[i] - ones.logits[i]));
    console.log(`[all-ones masks vs plain] max |Δlogits| = ${d.toExponential(3)}`);
    expect(d).toBeLessThanOrEqual(1e-6);
  });

  it('intermediate mask values agree with the naive float64 reference', () => {
    const arrays = randomWeightArrays(base, { seed: 12 });
    const m = onesMasks(base);
    m.hidden.forEach((_, i) => {
      if (i % 3 === 0) m.hidden[i] = 0.25;
    });
    m.layers[1].heads[1] = 0.5;
    m.layers[0].ffn.forEach((_, i) => {
      if (i % 4 === 1) m.layers[0].ffn[i] = 0.1;
    });
    m.layers[2].residual = 0.3;
    m.vocab.fill(0, 35);
    const rows = randomIdRows(1, 7, 35, 4);
    const ours = run(base, arrays, rows, m);
    const ref = naiveForward(base, { get: (n) => arrays.get(n) as Float32Array }, rows[0], { masks: m });
    const V = base.vocabSize;
    let d = 0;
    for (let t = 0; t < 7; t++) {
      for (let v = 0; v < V; v++) {
        const a = ours.logits[t * V + v],
          b = ref.logits[t][v];
        if (v >= 35) expect(a).toBe(-Infinity);
        else d = Math.max(d, Math.abs(a - b));
      }
    }
    console.log(`[masked model vs naive f64, c in (0,1)] max |Δlogits| = ${d.toExponential(3)}`);
    expect(d).toBeLessThanOrEqual(1e-4);
  });

  it('a hand-grown model with zero-masked extra units computes the old function', () => {
    const arrays = randomWeightArrays(base, { seed: 13 });
    const g = buildHandGrown(base, arrays);
    const rows = randomIdRows(2, 9, base.vocabSize, 5);
    const src = run(base, arrays, rows);
    const grown = run(g.cfg, g.arrays, rows, g.masks);
    const unmasked = run(g.cfg, g.arrays, rows);
    const V = base.vocabSize,
      V2 = g.cfg.vocabSize,
      H = base.hiddenSize,
      H2 = g.cfg.hiddenSize,
      N = 2 * 9;
    let dl = 0,
      scale = 0,
      dUnmasked = 0;
    for (let n = 0; n < N; n++) {
      for (let v = 0; v < V2; v++) {
        const b = grown.logits[n * V2 + v];
        if (v >= V) {
          expect(b).toBe(-Infinity);
          continue;
        }
        const a = src.logits[n * V + v];
        dl = Math.max(dl, Math.abs(a - b));
        scale = Math.max(scale, Math.abs(a));
        dUnmasked = Math.max(dUnmasked, Math.abs(a - unmasked.logits[n * V2 + v]));
      }
    }
    // hidden states: source boundary n <-> grown boundary after the non-inserted copy of layer n-1
    let dh = 0,
      newNonZero = 0;
    for (let s = 0; s <= base.numLayers; s++) {
      const k =
        s === 0 ? 0 : s === base.numLayers ? g.cfg.numLayers : g.layerMap.findIndex((e) => e.source === s - 1 && !e.inserted) + 1;
      for (let n = 0; n < N; n++) {
        for (let i = 0; i < H; i++)
          dh = Math.max(dh, Math.abs(src.hidden[s][n * H + i] - grown.hidden[k][n * H2 + g.hiddenPos[i]]));
        for (let p = 0; p < H2; p++) if (!g.hiddenPos.includes(p) && grown.hidden[k][n * H2 + p] !== 0) newNonZero++;
      }
    }
    console.log(
      `[hand-grown masked vs source] max |Δlogits| = ${dl.toExponential(3)} (max |logit| ${scale.toFixed(2)}), max |Δhidden| = ${dh.toExponential(3)}; without masks: ${dUnmasked.toExponential(3)}`,
    );
    expect(dl).toBeLessThanOrEqual(1e-5 * Math.max(1, scale));
    expect(dh).toBeLessThanOrEqual(1e-5);
    expect(newNonZero).toBe(0); // new residual coordinates stay exactly 0
    expect(dUnmasked).toBeGreaterThan(1e-2); // the masks are what preserves the function
  });
});
