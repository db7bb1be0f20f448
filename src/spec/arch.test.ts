import { describe, expect, it } from 'vitest';
import {
  checkTensorsAgainstConfig,
  expectedTensors,
  parameterCount,
  parseTensorName,
  tensorName,
  assertTensorsMatchConfig,
  headRole,
  layerRolesOf,
  LAYER_ROLES,
  LLAMA_TENSORS,
} from './arch.ts';
import { makeConfig } from './config.ts';
import { CheckpointError } from '../util/errors.ts';

const c = makeConfig({
  hiddenSize: 12,
  intermediateSize: 20,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 6,
  vocabSize: 30,
});
// written out by hand from HF's LlamaForCausalLM
const H = 12,
  F = 20,
  Q = 4 * 6,
  KV = 2 * 6,
  V = 30;
const handShapes: Record<string, number[]> = {
  'model.embed_tokens.weight': [V, H],
  'model.norm.weight': [H],
  'lm_head.weight': [V, H],
};
for (let i = 0; i < 2; i++) {
  const p = `model.layers.${i}.`;
  Object.assign(handShapes, {
    [`${p}input_layernorm.weight`]: [H],
    [`${p}post_attention_layernorm.weight`]: [H],
    [`${p}self_attn.q_proj.weight`]: [Q, H],
    [`${p}self_attn.k_proj.weight`]: [KV, H],
    [`${p}self_attn.v_proj.weight`]: [KV, H],
    [`${p}self_attn.o_proj.weight`]: [H, Q],
    [`${p}mlp.gate_proj.weight`]: [F, H],
    [`${p}mlp.up_proj.weight`]: [F, H],
    [`${p}mlp.down_proj.weight`]: [H, F],
  });
}

describe('architecture table', () => {
  it('expected tensors and shapes equal the hand-written list (GQA, explicit head_dim)', () => {
    const e = expectedTensors(c);
    expect(Object.fromEntries(e.map((t) => [t.name, t.shape]))).toEqual(handShapes);
    expect(e.length).toBe(3 + 9 * 2);
    expect(layerRolesOf(c).length).toBe(9);
    expect(LAYER_ROLES.length).toBe(14); // with the optional tensors of other families
  });
  it('optional tensors follow the family: tied head, Qwen2 q/k/v biases, Qwen3 q/k norms', () => {
    const qwen2 = makeConfig({
      hiddenSize: 8,
      intermediateSize: 6,
      numLayers: 1,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 2,
      vocabSize: 5,
      family: 'qwen2',
      tieWordEmbeddings: true,
    });
    const shapes2 = Object.fromEntries(expectedTensors(qwen2).map((t) => [t.name, t.shape]));
    expect(shapes2['model.layers.0.self_attn.q_proj.bias']).toEqual([8]);
    expect(shapes2['model.layers.0.self_attn.k_proj.bias']).toEqual([4]);
    expect(shapes2['model.layers.0.self_attn.v_proj.bias']).toEqual([4]);
    expect(shapes2['lm_head.weight']).toBeUndefined();
    expect(headRole(qwen2)).toBe('embed');
    const qwen3 = makeConfig({
      hiddenSize: 8,
      intermediateSize: 6,
      numLayers: 1,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 6,
      vocabSize: 5,
      family: 'qwen3',
    });
    const shapes3 = Object.fromEntries(expectedTensors(qwen3).map((t) => [t.name, t.shape]));
    expect(shapes3['model.layers.0.self_attn.q_norm.weight']).toEqual([6]);
    expect(shapes3['model.layers.0.self_attn.k_norm.weight']).toEqual([6]);
    expect(shapes3['model.layers.0.self_attn.q_proj.bias']).toBeUndefined();
    expect(shapes3['lm_head.weight']).toEqual([5, 8]);
    // a tied checkpoint that still carries a head copy is accepted
    const m = new Map(expectedTensors(qwen2).map((t) => [t.name, { shape: t.shape }]));
    m.set('lm_head.weight', { shape: [5, 8] });
    expect(checkTensorsAgainstConfig(qwen2, m)).toEqual([]);
  });
  it('parameterCount = sum of hand shapes', () => {
    expect(parameterCount(c)).toBe(Object.values(handShapes).reduce((a, s) => a + s.reduce((x, y) => x * y, 1), 0));
  });
  it('parseTensorName inverts tensorName, rejects non-canonical names', () => {
    for (const t of expectedTensors(c)) expect(parseTensorName(t.name)).toEqual({ role: t.role, layer: t.layer });
    expect(tensorName('q', 7)).toBe('model.layers.7.self_attn.q_proj.weight');
    expect(parseTensorName('model.layers.01.mlp.up_proj.weight')).toBeUndefined();
    expect(parseTensorName('model.layers.x.mlp.up_proj.weight')).toBeUndefined();
    expect(parseTensorName('model.layers.0.mlp.up_proj.bias')).toBeUndefined();
  });
  it('checkTensorsAgainstConfig: missing, unexpected, wrong shape; RoPE buffers ignored', () => {
    const m = new Map(Object.entries(handShapes).map(([n, s]) => [n, { shape: s }]));
    expect(checkTensorsAgainstConfig(c, m)).toEqual([]);
    m.set('model.layers.0.self_attn.rotary_emb.inv_freq', { shape: [2] });
    expect(checkTensorsAgainstConfig(c, m)).toEqual([]);
    m.delete('model.layers.1.mlp.up_proj.weight');
    m.set('model.layers.0.self_attn.k_proj.weight', { shape: [Q, H] });
    m.set('extra.weight', { shape: [1] });
    const p = checkTensorsAgainstConfig(c, m);
    expect(p).toEqual(
      expect.arrayContaining([
        { name: 'model.layers.1.mlp.up_proj.weight', problem: 'missing', expected: [F, H] },
        { name: 'model.layers.0.self_attn.k_proj.weight', problem: 'shape', expected: [KV, H], actual: [Q, H] },
        { name: 'extra.weight', problem: 'unexpected', actual: [1] },
      ]),
    );
    expect(p.length).toBe(3);
    expect(() => assertTensorsMatchConfig(c, m, 'ck')).toThrow(CheckpointError);
    expect(() => assertTensorsMatchConfig(c, m, 'ck')).toThrow(/k_proj/);
  });
  it('every per-layer tensor names its own LayerWeights field (the model derives LAYER_FIELDS from it)', () => {
    const fields = LLAMA_TENSORS.filter((t) => t.perLayer).map((t) => t.field);
    expect(fields).toEqual([
      'inputNorm',
      'q',
      'k',
      'v',
      'qBias',
      'kBias',
      'vBias',
      'qNorm',
      'kNorm',
      'o',
      'postNorm',
      'gate',
      'up',
      'down',
    ]);
    expect(LLAMA_TENSORS.filter((t) => !t.perLayer).every((t) => t.field === undefined)).toBe(true);
  });
});
