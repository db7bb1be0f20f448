/**
 * The tfjs model against independent judges: transformers' own outputs (fixtures/hf), the naive
 * float64 reference (test/reference, itself proven against transformers) for configurations
 * without a fixture, and structural identities (GQA == MHA with repeated K/V heads).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../engines/tfjs-backend.ts';
import { Checkpoint } from '../checkpoint/checkpoint.ts';
import { SafetensorsFile } from '../checkpoint/safetensors.ts';
import { bytesToFloat32, type DType } from '../util/dtype.ts';
import { makeConfig, type ModelConfig } from '../spec/config.ts';
import { tensorName } from '../spec/arch.ts';
import { ModelInputError } from '../util/errors.ts';
import { disposeWeights, forward, gatherRows, loadWeights, matMul2d, ropeInvFreq, type LlamaWeights } from './llama.ts';
import { randomIdRows, randomWeightArrays, weightsFromArrays } from '../../test/support/model.ts';
import { naiveForward } from '../../test/reference/naive-llama.ts';

const FIX = join(import.meta.dirname, '../../fixtures/hf');

beforeAll(async () => {
  await initBackend('wasm');
});

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function runFixture(name: string, invFreqDtype: DType): Promise<{ logits: number; hidden: number[] }> {
  const ck = await Checkpoint.open(join(FIX, name));
  const w = await loadWeights(ck);
  await ck.close();
  const ref = await SafetensorsFile.open(join(FIX, name, 'reference.safetensors'));
  try {
    const info = ref.info('input_ids');
    const ids = tf.tensor2d(
      Int32Array.from(bytesToFloat32(await ref.read('input_ids'), info.dtype)),
      info.shape as [number, number],
      'int32',
    );
    const out = forward(ck.config, w, ids, { collectHidden: true, ropeOptions: { invFreqDtype } });
    const logits = maxAbsDiff(out.logits.dataSync(), bytesToFloat32(await ref.read('logits'), 'F32'));
    const hidden: number[] = [];
    for (let n = 0; n <= ck.config.numLayers; n++) {
      hidden.push(
        maxAbsDiff((out.hidden as tf.Tensor[])[n].dataSync(), bytesToFloat32(await ref.read(`hidden_states.${n}`), 'F32')),
      );
    }
    tf.dispose([ids, out.logits, ...(out.hidden ?? [])]);
    return { logits, hidden };
  } finally {
    disposeWeights(w);
    await ref.close();
  }
}

describe('forward vs transformers (fixtures/hf)', () => {
  it('llama-tiny-f32 matches with exact f32 RoPE frequencies', async () => {
    const d = await runFixture('llama-tiny-f32', 'F32');
    console.log(
      `[model vs transformers] llama-tiny-f32: max |Δlogits| = ${d.logits.toExponential(3)}, max |Δhidden_n| = ${d.hidden.map((v) => v.toExponential(2)).join(' ')}`,
    );
    expect(d.logits).toBeLessThanOrEqual(1e-4);
    for (const h of d.hidden) expect(h).toBeLessThanOrEqual(1e-4);
  });

  it('llama-tiny-bf16 matches with bf16-rounded inv_freq (as its reference was computed)', async () => {
    const d = await runFixture('llama-tiny-bf16', 'BF16');
    console.log(
      `[model vs transformers] llama-tiny-bf16 (bf16 inv_freq): max |Δlogits| = ${d.logits.toExponential(3)}, max |Δhidden_n| = ${d.hidden.map((v) => v.toExponential(2)).join(' ')}`,
    );
    expect(d.logits).toBeLessThanOrEqual(1e-4);
    for (const h of d.hidden) expect(h).toBeLessThanOrEqual(1e-4);
  });

  it('llama-tiny-bf16 with exact f32 frequencies stays within 2e-3 (and visibly differs)', async () => {
    const d = await runFixture('llama-tiny-bf16', 'F32');
    console.log(
      `[model vs transformers] llama-tiny-bf16 (f32 inv_freq): max |Δlogits| = ${d.logits.toExponential(3)}, max |Δhidden| = ${Math.max(...d.hidden).toExponential(3)}`,
    );
    expect(d.logits).toBeLessThanOrEqual(2e-3);
    // proves the option above does something: exact frequencies are measurably off this reference
    expect(d.logits).toBeGreaterThan(1e-5);
  });
});

function idsTensor(rows: number[][]): tf.Tensor2D {
  return tf.tensor2d(rows, [rows.length, rows[0].length], 'int32');
}

function runOurs(
  cfg: ModelConfig,
  arrays: Map<string, Float32Array>,
  rows: number[][],
): { logits: Float32Array; hidden: Float32Array[] } {
  const w = weightsFromArrays(cfg, arrays);
  const ids = idsTensor(rows);
  const out = forward(cfg, w, ids, { collectHidden: true });
  const res = {
    logits: out.logits.dataSync() as Float32Array,
    hidden: (out.hidden as tf.Tensor[]).map((h) => h.dataSync() as Float32Array),
  };
  tf.dispose([ids, out.logits, ...(out.hidden ?? [])]);
  disposeWeights(w);
  return res;
}

describe('forward vs the naive float64 reference (configurations without a fixture)', () => {
  const cases: [string, Parameters<typeof makeConfig>[0]][] = [
    [
      'GQA 6 heads / 2 KV heads',
      { hiddenSize: 48, intermediateSize: 80, numLayers: 2, numHeads: 6, numKvHeads: 2, vocabSize: 50 },
    ],
    [
      'theta 500000, eps 1e-6, odd head count 3',
      { hiddenSize: 36, intermediateSize: 50, numLayers: 2, numHeads: 3, vocabSize: 40, ropeTheta: 500000, rmsNormEps: 1e-6 },
    ],
    [
      'explicit head_dim 10 != H/nh, GQA 3/1',
      { hiddenSize: 24, intermediateSize: 40, numLayers: 2, numHeads: 3, numKvHeads: 1, headDim: 10, vocabSize: 40 },
    ],
    [
      'µP multipliers (input 2.5, output 0.5/16)',
      {
        hiddenSize: 32,
        intermediateSize: 48,
        numLayers: 2,
        numHeads: 4,
        numKvHeads: 2,
        vocabSize: 40,
        useMup: true,
        inputMult: 2.5,
        outputMult: 0.5,
        mupScaleFactor: 16,
      },
    ],
  ];
  it.each(cases)('%s', (label, p) => {
    const cfg = makeConfig(p);
    const arrays = randomWeightArrays(cfg, { seed: 7 });
    const rows = randomIdRows(2, 9, cfg.vocabSize, 3);
    const ours = runOurs(cfg, arrays, rows);
    const V = cfg.vocabSize,
      H = cfg.hiddenSize,
      T = 9;
    let dl = 0,
      dh = 0,
      scale = 0;
    rows.forEach((r, b) => {
      const ref = naiveForward(cfg, { get: (n) => arrays.get(n) as Float32Array }, r);
      for (let t = 0; t < T; t++) {
        for (let v = 0; v < V; v++) {
          dl = Math.max(dl, Math.abs(ours.logits[(b * T + t) * V + v] - ref.logits[t][v]));
          scale = Math.max(scale, Math.abs(ref.logits[t][v]));
        }
        for (let n = 0; n <= cfg.numLayers; n++) {
          for (let i = 0; i < H; i++) dh = Math.max(dh, Math.abs(ours.hidden[n][(b * T + t) * H + i] - ref.hidden[n][t][i]));
        }
      }
    });
    console.log(
      `[model vs naive f64] ${label}: max |Δlogits| = ${dl.toExponential(3)} (max |logit| ${scale.toFixed(2)}), max |Δhidden| = ${dh.toExponential(3)}`,
    );
    expect(dl).toBeLessThanOrEqual(1e-4 * Math.max(1, scale));
    expect(dh).toBeLessThanOrEqual(1e-4);
  });
});

describe('grouped-query attention', () => {
  it('a GQA model equals the MHA model whose K/V heads are the repeated GQA heads', () => {
    for (const [nh, nkv, hd] of [
      [6, 2, 8],
      [4, 1, 6],
      [6, 3, 4],
    ]) {
      const gqa = makeConfig({
        hiddenSize: 24,
        intermediateSize: 40,
        numLayers: 2,
        numHeads: nh,
        numKvHeads: nkv,
        headDim: hd,
        vocabSize: 30,
      });
      const mha = makeConfig({
        hiddenSize: 24,
        intermediateSize: 40,
        numLayers: 2,
        numHeads: nh,
        numKvHeads: nh,
        headDim: hd,
        vocabSize: 30,
      });
      const a = randomWeightArrays(gqa, { seed: nh * 10 + nkv });
      const b = new Map(a);
      const g = nh / nkv;
      for (let l = 0; l < 2; l++) {
        for (const role of ['k', 'v'] as const) {
          const src = a.get(tensorName(role, l)) as Float32Array;
          const rows = hd * 24;
          const rep = new Float32Array(nh * rows);
          for (let j = 0; j < nh; j++) rep.set(src.subarray(Math.floor(j / g) * rows, (Math.floor(j / g) + 1) * rows), j * rows);
          b.set(tensorName(role, l), rep);
        }
      }
      const rows = randomIdRows(2, 7, 30, nh);
      const d = maxAbsDiff(runOurs(gqa, a, rows).logits, runOurs(mha, b, rows).logits);
      console.log(`[GQA == repeated-KV MHA] nh=${nh} nkv=${nkv} hd=${hd}: max |Δlogits| = ${d.toExponential(3)}`);
      expect(d).toBeLessThanOrEqual(1e-5);
    }
  });

  it('a query head reads KV head floor(j/g): swapping KV heads changes the output', () => {
    const cfg = makeConfig({ hiddenSize: 16, intermediateSize: 20, numLayers: 1, numHeads: 4, numKvHeads: 2, vocabSize: 20 });
    const a = randomWeightArrays(cfg, { seed: 5 });
    const b = new Map(a);
    const k = a.get(tensorName('k', 0)) as Float32Array;
    const half = k.length / 2;
    const swapped = new Float32Array(k.length);
    swapped.set(k.subarray(half), 0);
    swapped.set(k.subarray(0, half), half);
    b.set(tensorName('k', 0), swapped);
    const rows = randomIdRows(1, 6, 20, 1);
    expect(maxAbsDiff(runOurs(cfg, a, rows).logits, runOurs(cfg, b, rows).logits)).toBeGreaterThan(1e-4);
  });
});

describe('RoPE frequencies', () => {
  it('inv_freq = 1/theta^(2i/d) (f32), and bf16 rounding changes them', () => {
    const f = ropeInvFreq(16, 10000);
    for (let i = 0; i < 8; i++) expect(f[i]).toBeCloseTo(Math.pow(10000, -(2 * i) / 16), 7);
    const b = ropeInvFreq(16, 10000, 'BF16');
    expect(maxAbsDiff(f, b)).toBeGreaterThan(0);
  });
});

describe('bad input', () => {
  const cfg = makeConfig({ hiddenSize: 16, intermediateSize: 20, numLayers: 1, numHeads: 2, vocabSize: 20 });
  let w: LlamaWeights;
  beforeAll(() => {
    w = weightsFromArrays(cfg, randomWeightArrays(cfg));
  });
  it('ids out of range, wrong dtype, wrong rank are ModelInputErrors naming the problem', () => {
    const bad: [tf.Tensor, RegExp][] = [
      [tf.tensor2d([[1, 20]], [1, 2], 'int32'), /token id 20 .*outside the vocabulary \[0, 20\)/],
      [tf.tensor2d([[1, -1]], [1, 2], 'int32'), /token id -1/],
      [tf.tensor2d([[1, 2]], [1, 2], 'float32'), /expected int32/],
      [tf.tensor1d([1, 2], 'int32'), /expected rank 2/],
    ];
    for (const [ids, re] of bad) {
      expect(() => forward(cfg, w, ids as tf.Tensor2D)).toThrow(ModelInputError);
      expect(() => forward(cfg, w, ids as tf.Tensor2D)).toThrow(re);
      ids.dispose();
    }
  });
});

describe('memory', () => {
  it('repeated forwards leave no tensors behind', () => {
    const cfg = makeConfig({ hiddenSize: 16, intermediateSize: 20, numLayers: 2, numHeads: 2, vocabSize: 20 });
    const w = weightsFromArrays(cfg, randomWeightArrays(cfg));
    const ids = idsTensor(randomIdRows(2, 5, 20, 1));
    const run = (collectHidden: boolean) => {
      const out = forward(cfg, w, ids, { collectHidden });
      tf.dispose([out.logits, ...(out.hidden ?? [])]);
    };
    run(true);
    const before = tf.memory().numTensors;
    for (let k = 0; k < 3; k++) {
      run(false);
      run(true);
    }
    expect(tf.memory().numTensors).toBe(before);
    ids.dispose();
    disposeWeights(w);
  });
});

describe('embedding gradient (custom: wasm has no gather gradient)', () => {
  it('scatter-adds repeated ids: matches central finite differences', () => {
    const V = 5,
      H = 3;
    const table = tf.tensor2d(
      Array.from({ length: V * H }, (_, k) => Math.sin(k)),
      [V, H],
    );
    const idx = tf.tensor1d([3, 1, 3, 0, 3], 'int32');
    const wts = tf.tensor2d(
      Array.from({ length: 5 * H }, (_, k) => Math.cos(3 * k)),
      [5, H],
    );
    // a nonlinear loss so the gradient depends on the forward values too
    const loss = (t: tf.Tensor) => tf.sum(tf.square(tf.mul(gatherRows(t, idx), wts))) as tf.Scalar;
    const g = tf.grad(loss)(table).dataSync();
    const base = table.dataSync();
    const eps = 1e-2;
    let worst = 0;
    for (let k = 0; k < V * H; k++) {
      const p = base.slice();
      p[k] += eps;
      const m = base.slice();
      m[k] -= eps;
      const fd =
        (tf.tidy(() => loss(tf.tensor2d(p, [V, H])).dataSync()[0]) - tf.tidy(() => loss(tf.tensor2d(m, [V, H])).dataSync()[0])) /
        (2 * eps);
      worst = Math.max(worst, Math.abs(fd - g[k]));
    }
    console.log(`[embedding grad vs finite differences] max |Δ| = ${worst.toExponential(3)}`);
    expect(worst).toBeLessThan(1e-3);
    // rows 2 and 4 are never used: exactly zero gradient
    for (let c = 0; c < H; c++) {
      expect(g[2 * H + c]).toBe(0);
      expect(g[4 * H + c]).toBe(0);
    }
    tf.dispose([table, idx, wts]);
  });

  it('the whole forward is differentiable on wasm and matches finite differences', () => {
    const cfg = makeConfig({ hiddenSize: 8, intermediateSize: 12, numLayers: 1, numHeads: 2, numKvHeads: 1, vocabSize: 11 });
    const arrays = randomWeightArrays(cfg, { seed: 3 });
    const w = weightsFromArrays(cfg, arrays);
    const ids = idsTensor([
      [1, 4, 1, 7],
      [3, 3, 5, 2],
    ]); // two sequences: attention runs per (sequence, KV head) piece
    const probe = tf.tensor3d(
      Array.from({ length: 2 * 4 * 11 }, (_, k) => Math.sin(k * 0.7)),
      [2, 4, 11],
    );
    const lossWith = (embed: tf.Tensor, q: tf.Tensor) => {
      const ww = { ...w, embed, layers: [{ ...w.layers[0], q }] };
      const out = forward(cfg, ww, ids, { skipIdCheck: true });
      const l = tf.sum(tf.mul(out.logits, probe)) as tf.Scalar;
      return l;
    };
    const [gEmbed, gQ] = tf.grads((e: tf.Tensor, q: tf.Tensor) => lossWith(e, q))([w.embed, w.layers[0].q]);
    const check = (which: 0 | 1, k: number) => {
      const tensors = [w.embed, w.layers[0].q];
      const eps = 1e-2;
      const shifted = (d: number) =>
        tf.tidy(() => {
          const v = tensors[which].dataSync().slice();
          v[k] += d;
          const t = tf.tensor(v, tensors[which].shape);
          return (which === 0 ? lossWith(t, w.layers[0].q) : lossWith(w.embed, t)).dataSync()[0];
        });
      const fd = (shifted(eps) - shifted(-eps)) / (2 * eps);
      const an = (which === 0 ? gEmbed : gQ).dataSync()[k];
      return { fd, an };
    };
    let worst = 0;
    for (const k of [1 * 8 + 0, 1 * 8 + 5, 4 * 8 + 2, 7 * 8 + 7, 3 * 8 + 1, 5 * 8 + 6, 0]) {
      const { fd, an } = check(0, k);
      worst = Math.max(worst, Math.abs(fd - an) / Math.max(1, Math.abs(an)));
      if (k === 0) expect(an).toBe(0); // token 0 never occurs
    }
    for (const k of [0, 17, 40, 63]) {
      const { fd, an } = check(1, k);
      worst = Math.max(worst, Math.abs(fd - an) / Math.max(1, Math.abs(an)));
    }
    console.log(`[model grad vs finite differences] max relative |Δ| = ${worst.toExponential(3)}`);
    expect(worst).toBeLessThan(2e-2);
    tf.dispose([gEmbed, gQ, ids, probe]);
    disposeWeights(w);
  });
});

describe('matMul2d (fast-path product with explicit-transpose gradient)', () => {
  it('value and gradients equal tf.matMul and its built-in gradient', () => {
    const a = tf.randomNormal([5, 7], 0, 1, 'float32', 1);
    const b = tf.randomNormal([7, 3], 0, 1, 'float32', 2);
    const probe = tf.randomNormal([5, 3], 0, 1, 'float32', 3);
    const ours = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(matMul2d(x, y), probe)))([a, b]);
    const ref = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(tf.matMul(x as tf.Tensor2D, y as tf.Tensor2D), probe)))([
      a,
      b,
    ]);
    expect(maxAbsDiff(matMul2d(a, b).dataSync(), tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D).dataSync())).toBeLessThan(1e-6);
    expect(maxAbsDiff(ours[0].dataSync(), ref[0].dataSync())).toBeLessThan(1e-5);
    expect(maxAbsDiff(ours[1].dataSync(), ref[1].dataSync())).toBeLessThan(1e-5);
    tf.dispose([a, b, probe, ...ours, ...ref]);
  });
});
