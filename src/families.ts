/**
 * The supported model families as data, one entry each (compare mergekit's
 * `_data/architectures/*.json`): how a config.json names the family, which optional tensors it
 * has, which config fields it reads, and which it refuses. config.ts parses a config.json against
 * this table and arch.ts lists the tensors a parsed config implies; nothing else names a family.
 * It sits below config.ts (it imports nothing) so both can read it.
 *
 * Facts per family are from transformers' modeling code: models/llama/modeling_llama.py,
 * models/mistral/modeling_mistral.py (sliding window), models/qwen2/modeling_qwen2.py (q/k/v
 * biases hard-wired `bias=True`, o_proj without), models/qwen3/modeling_qwen3.py (q_norm / k_norm:
 * one RMSNorm over head_dim per layer, shared by all heads, applied before RoPE, eps
 * rms_norm_eps; no biases unless attention_bias), and their configuration_*.py defaults.
 */

export type FamilyName = 'llama' | 'tele-flm' | 'mistral' | 'qwen2' | 'qwen3';

/** RoPE types implemented (transformers' modeling_rope_utils.ROPE_INIT_FUNCTIONS keys). */
export const ROPE_TYPES = ['default', 'linear', 'dynamic', 'llama3', 'yarn'] as const;
export type RopeType = (typeof ROPE_TYPES)[number];

export interface Family {
  name: FamilyName;
  /** config.json `model_type` values (lower case). */
  modelTypes: readonly string[];
  /** config.json `architectures` entries. */
  architectures: readonly string[];
  /** q_proj/k_proj/v_proj carry biases ([nh·hd], [nkv·hd], [nkv·hd]); Qwen2 hard-wires them. */
  qkvBias: boolean;
  /** Per-layer q_norm / k_norm (RMSNorm over head_dim, gains [hd], before RoPE). */
  qkNorm: boolean;
  /**
   * Sliding-window attention. 'always': `sliding_window` (null = none) applies to every layer
   * (Mistral). 'flagged': only under `use_sliding_window: true`, then per layer from
   * `max_window_layers` (Qwen2/Qwen3): refused when set. 'none': the field is not read.
   */
  slidingWindow: 'always' | 'flagged' | 'none';
  /** Tele-FLM µP fields (use_mup, input_mult, output_mult, mup_scale_factor) are read. */
  mup: boolean;
  /** head_dim when config.json has none (transformers' config default; undefined = hidden/heads). */
  headDimDefault?: number;
  /** Boolean config keys that must not be true: each adds parameters this tool does not model. */
  refusedIfTrue: readonly { key: string; why: string }[];
  /** Published checkpoints of the family (for the README and `synth --like`). */
  examples: readonly string[];
  /** A tiny config.json of the family (`synth --like <family>`, tests). */
  tiny: Readonly<Record<string, unknown>>;
}

const O_BIAS = { key: 'attention_bias', why: 'attention biases (incl. o_proj) are not supported for this family' };
const MLP_BIAS = { key: 'mlp_bias', why: 'MLP biases are not supported' };

const TINY = {
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 16,
  vocab_size: 256,
  max_position_embeddings: 64,
  rms_norm_eps: 1e-6,
  hidden_act: 'silu',
};

export const FAMILIES: readonly Family[] = [
  {
    name: 'llama',
    modelTypes: ['llama'],
    architectures: ['LlamaForCausalLM'],
    qkvBias: false,
    qkNorm: false,
    slidingWindow: 'none',
    mup: false,
    refusedIfTrue: [O_BIAS, MLP_BIAS],
    examples: [
      'meta-llama/Llama-3.1-8B',
      'meta-llama/Llama-3.2-1B',
      'HuggingFaceTB/SmolLM-135M',
      'TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T',
    ],
    tiny: {
      ...TINY,
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      tie_word_embeddings: true,
      rope_theta: 500000,
      rope_scaling: {
        rope_type: 'llama3',
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 16,
      },
    },
  },
  {
    name: 'tele-flm',
    modelTypes: ['teleflm', 'tele_flm', 'flm'],
    architectures: ['TeleFLMForCausalLM', 'FLMForCausalLM'],
    qkvBias: false,
    qkNorm: false,
    slidingWindow: 'none',
    mup: true,
    refusedIfTrue: [O_BIAS, MLP_BIAS],
    examples: ['CofeAI/Tele-FLM', 'CofeAI/Tele-FLM-1T'],
    tiny: {
      ...TINY,
      architectures: ['TeleFLMForCausalLM'],
      model_type: 'teleflm',
      tie_word_embeddings: false,
      rope_theta: 10000,
      use_mup: true,
      input_mult: 1,
      output_mult: 0.5,
      mup_scale_factor: 4,
    },
  },
  {
    name: 'mistral',
    modelTypes: ['mistral'],
    architectures: ['MistralForCausalLM'],
    qkvBias: false,
    qkNorm: false,
    slidingWindow: 'always',
    mup: false,
    refusedIfTrue: [O_BIAS, MLP_BIAS],
    examples: ['mistralai/Mistral-7B-v0.1', 'mistralai/Mistral-7B-v0.3'],
    tiny: {
      ...TINY,
      architectures: ['MistralForCausalLM'],
      model_type: 'mistral',
      tie_word_embeddings: false,
      rope_theta: 10000,
      sliding_window: 8,
    },
  },
  {
    name: 'qwen2',
    modelTypes: ['qwen2'],
    architectures: ['Qwen2ForCausalLM'],
    qkvBias: true,
    qkNorm: false,
    slidingWindow: 'flagged',
    mup: false,
    refusedIfTrue: [MLP_BIAS],
    examples: ['Qwen/Qwen2.5-0.5B', 'Qwen/Qwen2.5-7B'],
    tiny: {
      ...TINY,
      architectures: ['Qwen2ForCausalLM'],
      model_type: 'qwen2',
      tie_word_embeddings: true,
      rope_theta: 1000000,
      use_sliding_window: false,
      sliding_window: 32,
      max_window_layers: 2,
    },
  },
  {
    name: 'qwen3',
    modelTypes: ['qwen3'],
    architectures: ['Qwen3ForCausalLM'],
    qkvBias: false,
    qkNorm: true,
    slidingWindow: 'flagged',
    mup: false,
    headDimDefault: 128,
    refusedIfTrue: [O_BIAS, MLP_BIAS],
    examples: ['Qwen/Qwen3-0.6B', 'Qwen/Qwen3-8B'],
    tiny: {
      ...TINY,
      architectures: ['Qwen3ForCausalLM'],
      model_type: 'qwen3',
      tie_word_embeddings: true,
      rope_theta: 1000000,
      use_sliding_window: false,
      sliding_window: null,
      max_window_layers: 2,
      attention_bias: false,
      rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 16 },
    },
  },
];

/**
 * A masked grown checkpoint's config.json (docs/hf-format.md): `model_type` MASKED_MODEL_TYPE,
 * which plain transformers does not know (so it refuses the folder instead of loading a different
 * function), `architectures` [MASKED_ARCHITECTURE], `auto_map` to the folder's modeling files, and
 * the base family's own model_type / architectures under MASKED_CONFIG_KEY. config.ts reads such a
 * config as its base family.
 */
export const MASKED_MODEL_TYPE = 'flm_grow_masked';
export const MASKED_ARCHITECTURE = 'FlmGrowMaskedForCausalLM';
export const MASKED_CONFIG_KEY = 'flm_grow';

export const FAMILY_NAMES: readonly FamilyName[] = FAMILIES.map((f) => f.name);

export function familyByName(name: FamilyName): Family {
  return FAMILIES.find((f) => f.name === name) as Family;
}

/** The family of a config.json: by model_type first, then by architectures. */
export function detectFamily(modelType: unknown, architectures: readonly unknown[]): Family | undefined {
  if (typeof modelType === 'string') {
    const f = FAMILIES.find((x) => x.modelTypes.includes(modelType.toLowerCase()));
    if (f !== undefined) return f;
  }
  return FAMILIES.find((x) => architectures.some((a) => x.architectures.includes(a as string)));
}
