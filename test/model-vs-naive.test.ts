/**
 * Our tfjs model against the naive float64 reference (itself proven against transformers) on
 * configurations no HF fixture covers: grouped-query attention, explicit head_dim ≠ H/nh, odd
 * head counts, other RoPE theta and eps, Tele-FLM µP multipliers, and arbitrary mask values;
 * and every supported family (families.ts) with its features: tied head, Qwen2 q/k/v biases,
 * Qwen3 q/k norms, Mistral's sliding window, RoPE scaling (linear, dynamic, llama3, yarn).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import * as tf from '@tensorflow/tfjs';
import { makeConfig, type ModelConfig } from '../src/spec/config.ts';
import { expectedTensors } from '../src/spec/arch.ts';
import type { MaskSet } from '../src/checkpoint/masks.ts';
import { initBackend } from '../src/engines/tfjs-backend.ts';
import { forward, type LlamaWeights } from '../src/model/llama.ts';
import { masksToTensors } from '../src/model/mask-tensors.ts';
import { naiveForward } from './reference/naive-llama.ts';
import { weightsFromArrays } from './support/model.ts';
import { FAMILY_NAMES, type FamilyName } from '../src/spec/families.ts';
import { mulberry32 } from '../src/util/random.ts';

/** Uniform [0, 1) from the project's seeded generator. */
function uniform(seed: number): () => number {
  const next = mulberry32(seed);
  return () => next() / 4294967296;
}

function randomWeights(c: ModelConfig, seed: number): Map<string, Float32Array> {
  const rnd = uniform(seed);
  const m = new Map<string, Float32Array>();
  for (const t of expectedTensors(c)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const a = new Float32Array(n);
    const isNorm = t.role.endsWith('norm');
    for (let k = 0; k < n; k++) a[k] = isNorm ? 1 + 0.2 * (rnd() - 0.5) : 0.3 * (rnd() - 0.5);
    m.set(t.name, a);
  }
  return m;
}

function toTf(c: ModelConfig, w: Map<string, Float32Array>): LlamaWeights {
  return weightsFromArrays(c, w);
}

function randomMasks(c: ModelConfig, rnd: () => number): MaskSet {
  const pick = () => (rnd() < 0.5 ? 1 : rnd() < 0.3 ? 0 : rnd());
  const vec = (n: number) => Float32Array.from({ length: n }, pick);
  const hidden = vec(c.hiddenSize);
  hidden[0] = 1; // keep at least one live hidden unit so RMSNorm statistics exist
  const vocab = Float32Array.from({ length: c.vocabSize }, (_, v) => (v === 0 || rnd() < 0.8 ? 1 : 0));
  return {
    hidden,
    vocab,
    layers: Array.from({ length: c.numLayers }, () => ({
      heads: vec(c.numHeads),
      ffn: vec(c.intermediateSize),
      residual: pick(),
    })),
  };
}

beforeAll(async () => {
  await initBackend('wasm');
});

const configArb = fc.record({
  numKvHeads: fc.integer({ min: 1, max: 3 }),
  group: fc.integer({ min: 1, max: 3 }),
  headDimHalf: fc.integer({ min: 1, max: 5 }),
  hiddenSize: fc.integer({ min: 3, max: 24 }),
  intermediateSize: fc.integer({ min: 1, max: 20 }),
  numLayers: fc.integer({ min: 1, max: 3 }),
  vocabSize: fc.integer({ min: 2, max: 30 }),
  rmsNormEps: fc.constantFrom(1e-6, 1e-5, 1e-3, 0.1),
  ropeTheta: fc.constantFrom(10000, 500000, 100, 3.5),
  mup: fc.boolean(),
  outputMult: fc.double({ min: 0.1, max: 4, noNaN: true }),
  mupScaleFactor: fc.double({ min: 1, max: 80, noNaN: true }),
  inputMult: fc.double({ min: 0.2, max: 3, noNaN: true }),
  masked: fc.boolean(),
  T: fc.integer({ min: 1, max: 7 }),
  seed: fc.integer({ min: 0, max: 1 << 30 }),
  family: fc.constantFrom<FamilyName>(...FAMILY_NAMES),
  tied: fc.boolean(),
  window: fc.integer({ min: 1, max: 6 }),
  maxPos: fc.integer({ min: 2, max: 8 }),
  rope: fc.oneof(
    fc.constant(undefined),
    fc.record({ rope_type: fc.constant('linear'), factor: fc.double({ min: 1, max: 8, noNaN: true }) }),
    fc.record({ rope_type: fc.constant('dynamic'), factor: fc.double({ min: 1, max: 8, noNaN: true }) }),
    fc.record({
      rope_type: fc.constant('llama3'),
      factor: fc.constantFrom(2, 8, 32),
      low_freq_factor: fc.constantFrom(1, 2),
      high_freq_factor: fc.constantFrom(4, 8),
      original_max_position_embeddings: fc.constantFrom(4, 16, 64, 8192),
    }),
    fc.record(
      {
        rope_type: fc.constant('yarn'),
        factor: fc.constantFrom(2, 4, 40),
        original_max_position_embeddings: fc.option(fc.constantFrom(4, 32, 4096), { nil: undefined }),
        attention_factor: fc.option(fc.double({ min: 0.5, max: 2, noNaN: true }), { nil: undefined }),
        beta_fast: fc.option(fc.constantFrom(8, 32), { nil: undefined }),
        truncate: fc.option(fc.boolean(), { nil: undefined }),
        mscale: fc.option(fc.constantFrom(0.707, 1), { nil: undefined }),
        mscale_all_dim: fc.option(fc.constantFrom(0.707, 1), { nil: undefined }),
      },
      { requiredKeys: ['rope_type', 'factor'] },
    ),
  ),
});

describe('tfjs model vs naive float64 reference', () => {
  it('agrees on random configs (GQA, explicit head_dim, theta, eps, µP, masks)', async () => {
    let worst = 0;
    const byFamily = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(configArb, async (p) => {
        const c = makeConfig({
          hiddenSize: p.hiddenSize,
          intermediateSize: p.intermediateSize,
          numLayers: p.numLayers,
          numHeads: p.numKvHeads * p.group,
          numKvHeads: p.numKvHeads,
          headDim: 2 * p.headDimHalf,
          vocabSize: p.vocabSize,
          rmsNormEps: p.rmsNormEps,
          ropeTheta: p.ropeTheta,
          useMup: p.mup,
          inputMult: p.inputMult,
          outputMult: p.outputMult,
          mupScaleFactor: p.mupScaleFactor,
          family: p.family,
          tieWordEmbeddings: p.tied,
          ropeScaling:
            p.rope === undefined ? undefined : Object.fromEntries(Object.entries(p.rope).filter(([, v]) => v !== undefined)),
          slidingWindow: p.family === 'mistral' ? p.window : undefined,
          maxPositionEmbeddings: p.maxPos,
        });
        const w = randomWeights(c, p.seed);
        const rnd = uniform(p.seed ^ 0x5bd1e995);
        const masks = p.masked ? randomMasks(c, rnd) : undefined;
        const ids = Array.from({ length: p.T }, () => Math.floor(rnd() * c.vocabSize));
        const ref = naiveForward(c, { get: (n) => w.get(n) as Float32Array }, ids, { masks });
        const tw = toTf(c, w);
        const idsT = tf.tensor2d([ids], [1, p.T], 'int32');
        const mt = masks ? masksToTensors(masks) : undefined;
        const out = forward(c, tw, idsT, { masks: mt });
        const got = await out.logits.data();
        tf.dispose([out.logits, ...(out.hidden ?? []), idsT]);
        tf.dispose(tw as unknown as tf.TensorContainer);
        if (mt) tf.dispose(mt as unknown as tf.TensorContainer);
        let maxRef = 1e-6;
        let maxDiff = 0;
        for (let t = 0; t < p.T; t++) {
          for (let v = 0; v < c.vocabSize; v++) {
            const r = ref.logits[t][v];
            const g = got[t * c.vocabSize + v];
            if (r === -Infinity) {
              expect(g, `masked vocab id ${v} must be -inf`).toBe(-Infinity);
              continue;
            }
            maxRef = Math.max(maxRef, Math.abs(r));
            maxDiff = Math.max(maxDiff, Math.abs(r - g));
          }
        }
        worst = Math.max(worst, maxDiff / maxRef);
        byFamily.set(p.family, Math.max(byFamily.get(p.family) ?? 0, maxDiff / maxRef));
        expect(maxDiff / maxRef).toBeLessThan(2e-5);
      }),
      { numRuns: 120, seed: 20261124 },
    );
    console.log(
      `[model vs naive] worst relative |Δlogits| over 120 random configs: ${worst.toExponential(3)}; by family: ${[...byFamily].map(([f, v]) => `${f} ${v.toExponential(2)}`).join(', ')}`,
    );
  });
});
