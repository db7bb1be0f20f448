import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { configToJson, inputScale, logitScale, makeConfig, parseConfig, readConfigFile } from './config.ts';
import { ConfigError } from '../util/errors.ts';

const base = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 64,
  intermediate_size: 176,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  vocab_size: 100,
  rms_norm_eps: 1e-5,
  rope_theta: 500000,
  tie_word_embeddings: false,
};

function expectConfigError(raw: unknown, field: string | undefined, ...mentions: string[]): void {
  let err: unknown;
  try {
    parseConfig(raw, 'cfg.json');
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as ConfigError).field).toBe(field);
  expect((err as Error).message).toContain('cfg.json');
  for (const m of mentions) expect((err as Error).message).toContain(m);
}

describe('parseConfig', () => {
  it('reads the fixture (transformers 5 rope_parameters, explicit head_dim)', () => {
    const p = join(import.meta.dirname, '..', '..', 'fixtures', 'hf', 'llama-tiny-bf16', 'config.json');
    const raw = JSON.parse(readFileSync(p, 'utf8'));
    const c = readConfigFile(p);
    expect(c).toMatchObject({
      hiddenSize: raw.hidden_size,
      intermediateSize: raw.intermediate_size,
      numLayers: raw.num_hidden_layers,
      numHeads: raw.num_attention_heads,
      numKvHeads: raw.num_key_value_heads,
      headDim: raw.head_dim,
      vocabSize: raw.vocab_size,
      ropeTheta: raw.rope_parameters.rope_theta,
      rmsNormEps: raw.rms_norm_eps,
      dtype: 'BF16',
      useMup: false,
    });
  });
  it('rope_theta (transformers 4) and rope_parameters (5); rope_parameters wins', () => {
    expect(parseConfig(base).ropeTheta).toBe(500000);
    expect(
      parseConfig({ ...base, rope_theta: undefined, rope_parameters: { rope_type: 'default', rope_theta: 1234 } }).ropeTheta,
    ).toBe(1234);
    expect(parseConfig({ ...base, rope_parameters: { rope_type: 'default', rope_theta: 77 } }).ropeTheta).toBe(77);
    expect(parseConfig({ ...base, rope_theta: undefined }).ropeTheta).toBe(10000);
  });
  it('RoPE scaling: linear, dynamic, llama3, yarn read from rope_scaling (4) or rope_parameters (5); others refused naming the field as written', () => {
    expect(parseConfig({ ...base, rope_scaling: { type: 'linear', factor: 2 } }).rope).toEqual({ type: 'linear', factor: 2 });
    expect(parseConfig({ ...base, rope_parameters: { rope_type: 'dynamic', factor: 3, rope_theta: 5 } })).toMatchObject({
      rope: { type: 'dynamic', factor: 3 },
      ropeTheta: 5,
    });
    expect(
      parseConfig({
        ...base,
        rope_scaling: {
          rope_type: 'llama3',
          factor: 8,
          low_freq_factor: 1,
          high_freq_factor: 4,
          original_max_position_embeddings: 8192,
        },
      }).rope,
    ).toEqual({ type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
    expect(
      parseConfig({
        ...base,
        rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 32768, attention_factor: 1.2 },
      }).rope,
    ).toEqual({ type: 'yarn', factor: 4, originalMaxPositionEmbeddings: 32768, attentionFactor: 1.2 });
    expectConfigError(
      { ...base, rope_scaling: { rope_type: 'longrope', long_factor: [1], short_factor: [1] } },
      'rope_scaling.rope_type',
      'longrope',
    );
    expectConfigError({ ...base, rope_scaling: { type: 'su', factor: 2 } }, 'rope_scaling.type', '"su"');
    expectConfigError(
      { ...base, rope_parameters: { rope_type: 'longrope', rope_theta: 1 } },
      'rope_parameters.rope_type',
      'longrope',
    );
    expectConfigError(
      { ...base, rope_scaling: { rope_type: 'llama3', factor: 8 } },
      undefined,
      'rope_scaling.low_freq_factor',
      'rope_scaling.original_max_position_embeddings',
    );
  });
  it('published configs of every family parse (fixtures/configs)', () => {
    const dir = join(import.meta.dirname, '..', '..', 'fixtures', 'configs');
    const want: Record<string, Partial<ReturnType<typeof parseConfig>>> = {
      'Llama-3.1-8B.json': {
        family: 'llama',
        tieWordEmbeddings: false,
        rope: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
      },
      'Llama-3.2-1B.json': { family: 'llama', tieWordEmbeddings: true, headDim: 64 },
      'SmolLM-135M.json': { family: 'llama', tieWordEmbeddings: true, numKvHeads: 3, rope: { type: 'default' } },
      'TinyLlama-1.1B.json': { family: 'llama', tieWordEmbeddings: false, numKvHeads: 4 },
      'Qwen2.5-0.5B.json': {
        family: 'qwen2',
        tieWordEmbeddings: true,
        qkvBias: true,
        qkNorm: false,
        slidingWindow: undefined,
        headDim: 64,
      },
      'Qwen3-0.6B.json': { family: 'qwen3', tieWordEmbeddings: true, qkvBias: false, qkNorm: true, headDim: 128 },
      'Mistral-7B-v0.1.json': { family: 'mistral', tieWordEmbeddings: false, slidingWindow: 4096 },
    };
    for (const [f, w] of Object.entries(want)) expect(readConfigFile(join(dir, f)), f).toMatchObject(w);
  });
  it('every unsupported field is reported at once, each named as in the file', () => {
    let err: unknown;
    try {
      parseConfig(
        {
          ...base,
          model_type: 'qwen2',
          architectures: ['Qwen2ForCausalLM'],
          use_sliding_window: true,
          mlp_bias: true,
          hidden_act: 'gelu',
          rope_scaling: { type: 'longrope' },
        },
        'cfg.json',
      );
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).fields).toEqual(['mlp_bias', 'hidden_act', 'use_sliding_window', 'rope_scaling.type']);
    expect((err as Error).message).toContain('4 unsupported or invalid fields');
    expectConfigError(
      { ...base, model_type: 'mistral', architectures: ['MistralForCausalLM'], attention_bias: true },
      'attention_bias',
    );
    expectConfigError(
      { ...base, model_type: 'qwen3', architectures: ['Qwen3ForCausalLM'], layer_types: ['full_attention', 'sliding_attention'] },
      'layer_types',
      'sliding_attention',
    );
  });
  it('head_dim defaults to hidden/heads; num_key_value_heads defaults to heads', () => {
    const c = parseConfig(base);
    expect(c.headDim).toBe(16);
    expect(c.numKvHeads).toBe(4);
    const d = parseConfig({ ...base, head_dim: 32, num_key_value_heads: 2 });
    expect(d.headDim).toBe(32);
    expect(d.numKvHeads).toBe(2);
    expectConfigError({ ...base, num_key_value_heads: 3 }, 'num_key_value_heads');
    expectConfigError({ ...base, hidden_size: 66, num_attention_heads: 4 }, 'head_dim');
  });
  it('tie_word_embeddings true is read', () =>
    expect(parseConfig({ ...base, tie_word_embeddings: true }).tieWordEmbeddings).toBe(true));
  it('unknown model_type lists what is supported', () =>
    expectConfigError(
      { ...base, model_type: 'gpt2', architectures: ['GPT2LMHeadModel'] },
      'model_type',
      'gpt2',
      'llama',
      'LlamaForCausalLM',
    ));
  it('an unknown dtype name is refused, not ignored', () => {
    expectConfigError({ ...base, torch_dtype: 'float8' }, 'torch_dtype', 'unknown dtype "float8"');
    expectConfigError({ ...base, dtype: 'int4' }, 'dtype', 'unknown dtype "int4"');
    expect(parseConfig({ ...base, torch_dtype: 'bfloat16' }).dtype).toBe('BF16');
  });
  it('architecture alone is enough', () => expect(parseConfig({ ...base, model_type: 'custom' }).modelType).toBe('custom'));
  it('missing and mistyped required fields are named', () => {
    expectConfigError({ ...base, hidden_size: undefined }, 'hidden_size');
    expectConfigError({ ...base, vocab_size: '100' }, 'vocab_size');
    expectConfigError({ ...base, num_hidden_layers: 1.5 }, 'num_hidden_layers');
    expectConfigError([1], undefined);
  });
  it('Tele-FLM µP fields', () => {
    const c = parseConfig({
      ...base,
      model_type: 'teleflm',
      architectures: ['TeleFLMForCausalLM'],
      use_mup: true,
      input_mult: 2,
      output_mult: 3,
      mup_scale_factor: 4,
    });
    expect([c.useMup, c.inputMult, c.outputMult, c.mupScaleFactor]).toEqual([true, 2, 3, 4]);
    expect(logitScale(c)).toBe(3 / 4);
    expect(inputScale(c)).toBe(2);
    const off = parseConfig({ ...base, input_mult: 2, output_mult: 3 });
    expect([logitScale(off), inputScale(off)]).toEqual([1, 1]);
  });
  it('configToJson writes back unknown keys and new sizes, theta where it was', () => {
    const c = parseConfig({ ...base, custom_key: 'keep' });
    const j = configToJson({ ...c, hiddenSize: 128, headDim: 32 });
    expect(j.custom_key).toBe('keep');
    expect(j.hidden_size).toBe(128);
    expect(j.rope_theta).toBe(500000);
    const back = parseConfig(j);
    expect(back.hiddenSize).toBe(128);
    const m = makeConfig({ hiddenSize: 8, intermediateSize: 16, numLayers: 1, numHeads: 2, vocabSize: 10, ropeTheta: 99 });
    expect((configToJson(m).rope_parameters as { rope_theta: number }).rope_theta).toBe(99);
  });
});
