/**
 * The architecture as data: every tensor of a checkpoint of a supported family (families.ts:
 * Llama, Tele-FLM, Mistral, Qwen2, Qwen3), its shape in config symbols, which axis is which
 * dimension, and the config feature that makes an optional tensor present (lm_head only when
 * untied, q/k/v biases for Qwen2, q_norm/k_norm for Qwen3). inspect, plan, grow, verify and train
 * all read this table instead of hard-coding names (compare mergekit's architectures/llama.json).
 */
import type { ModelConfig } from './config.ts';
import { CheckpointError } from '../util/errors.ts';

/** Dimension symbols: vocab, hidden, FFN, query heads × head_dim, KV heads × head_dim, head_dim. */
export type Dim = 'V' | 'H' | 'F' | 'Q' | 'KV' | 'HD';

export { FAMILIES, FAMILY_NAMES, familyByName, type Family, type FamilyName } from './families.ts';

export type Role =
  | 'embed'
  | 'input_norm'
  | 'q'
  | 'k'
  | 'v'
  | 'o'
  | 'post_norm'
  | 'gate'
  | 'up'
  | 'down'
  | 'final_norm'
  | 'lm_head'
  | 'q_bias'
  | 'k_bias'
  | 'v_bias'
  | 'q_norm'
  | 'k_norm';

/** The config feature an optional tensor depends on. */
export type Feature = 'untied' | 'qkvBias' | 'qkNorm';

export function hasFeature(c: ModelConfig, f: Feature): boolean {
  switch (f) {
    case 'untied':
      return !c.tieWordEmbeddings;
    case 'qkvBias':
      return c.qkvBias;
    case 'qkNorm':
      return c.qkNorm;
  }
}

export interface TensorSpec {
  role: Role;
  /** HF name; `{i}` is the layer index. */
  template: string;
  /** Shape in PyTorch order ([out, in] for Linear). */
  dims: readonly Dim[];
  perLayer: boolean;
  /** Weight-init family used for new entries (see growth init). */
  kind: 'embedding' | 'norm' | 'matrix' | 'bias';
  /** Per-layer tensors: the field of the model's LayerWeights (src/model/llama.ts) that holds it. */
  field?: string;
  /** Present only when the config has this feature (absent: always present). */
  when?: Feature;
}

export const LLAMA_TENSORS: readonly TensorSpec[] = [
  { role: 'embed', template: 'model.embed_tokens.weight', dims: ['V', 'H'], perLayer: false, kind: 'embedding' },
  {
    role: 'input_norm',
    template: 'model.layers.{i}.input_layernorm.weight',
    dims: ['H'],
    perLayer: true,
    kind: 'norm',
    field: 'inputNorm',
  },
  {
    role: 'q',
    template: 'model.layers.{i}.self_attn.q_proj.weight',
    dims: ['Q', 'H'],
    perLayer: true,
    kind: 'matrix',
    field: 'q',
  },
  {
    role: 'k',
    template: 'model.layers.{i}.self_attn.k_proj.weight',
    dims: ['KV', 'H'],
    perLayer: true,
    kind: 'matrix',
    field: 'k',
  },
  {
    role: 'v',
    template: 'model.layers.{i}.self_attn.v_proj.weight',
    dims: ['KV', 'H'],
    perLayer: true,
    kind: 'matrix',
    field: 'v',
  },
  {
    role: 'q_bias',
    template: 'model.layers.{i}.self_attn.q_proj.bias',
    dims: ['Q'],
    perLayer: true,
    kind: 'bias',
    field: 'qBias',
    when: 'qkvBias',
  },
  {
    role: 'k_bias',
    template: 'model.layers.{i}.self_attn.k_proj.bias',
    dims: ['KV'],
    perLayer: true,
    kind: 'bias',
    field: 'kBias',
    when: 'qkvBias',
  },
  {
    role: 'v_bias',
    template: 'model.layers.{i}.self_attn.v_proj.bias',
    dims: ['KV'],
    perLayer: true,
    kind: 'bias',
    field: 'vBias',
    when: 'qkvBias',
  },
  {
    role: 'q_norm',
    template: 'model.layers.{i}.self_attn.q_norm.weight',
    dims: ['HD'],
    perLayer: true,
    kind: 'norm',
    field: 'qNorm',
    when: 'qkNorm',
  },
  {
    role: 'k_norm',
    template: 'model.layers.{i}.self_attn.k_norm.weight',
    dims: ['HD'],
    perLayer: true,
    kind: 'norm',
    field: 'kNorm',
    when: 'qkNorm',
  },
  {
    role: 'o',
    template: 'model.layers.{i}.self_attn.o_proj.weight',
    dims: ['H', 'Q'],
    perLayer: true,
    kind: 'matrix',
    field: 'o',
  },
  {
    role: 'post_norm',
    template: 'model.layers.{i}.post_attention_layernorm.weight',
    dims: ['H'],
    perLayer: true,
    kind: 'norm',
    field: 'postNorm',
  },
  {
    role: 'gate',
    template: 'model.layers.{i}.mlp.gate_proj.weight',
    dims: ['F', 'H'],
    perLayer: true,
    kind: 'matrix',
    field: 'gate',
  },
  { role: 'up', template: 'model.layers.{i}.mlp.up_proj.weight', dims: ['F', 'H'], perLayer: true, kind: 'matrix', field: 'up' },
  {
    role: 'down',
    template: 'model.layers.{i}.mlp.down_proj.weight',
    dims: ['H', 'F'],
    perLayer: true,
    kind: 'matrix',
    field: 'down',
  },
  { role: 'final_norm', template: 'model.norm.weight', dims: ['H'], perLayer: false, kind: 'norm' },
  { role: 'lm_head', template: 'lm_head.weight', dims: ['V', 'H'], perLayer: false, kind: 'matrix', when: 'untied' },
];

/** Whether config `c` has the tensor of this spec. */
export function hasTensor(c: ModelConfig, s: TensorSpec): boolean {
  return s.when === undefined || hasFeature(c, s.when);
}

/** Per-layer roles config `c` has, in table order. */
export function layerRolesOf(c: ModelConfig): Role[] {
  return LLAMA_TENSORS.filter((s) => s.perLayer && hasTensor(c, s)).map((s) => s.role);
}

/** Role of the tensor that serves as LM head: lm_head, or the embedding when tied. */
export function headRole(c: ModelConfig): Role {
  return c.tieWordEmbeddings ? 'embed' : 'lm_head';
}

/** RMSNorm gains over the hidden size (the ones zero mode rescales); q_norm/k_norm are over head_dim. */
export function isHiddenNorm(s: TensorSpec): boolean {
  return s.kind === 'norm' && s.dims[0] === 'H';
}

export const SPEC_BY_ROLE: Readonly<Record<Role, TensorSpec>> = Object.fromEntries(
  LLAMA_TENSORS.map((s) => [s.role, s]),
) as Record<Role, TensorSpec>;

/** Tensors that belong to layer i, in a stable order. */
export const LAYER_ROLES: readonly Role[] = LLAMA_TENSORS.filter((s) => s.perLayer).map((s) => s.role);

/** Some exporters (older transformers, Megatron conversions) carry RoPE buffers; they are derived, never weights. */
const IGNORED_PATTERNS = [/^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/];

export function isIgnoredTensor(name: string): boolean {
  return IGNORED_PATTERNS.some((p) => p.test(name));
}

export function dimSize(c: ModelConfig, d: Dim): number {
  switch (d) {
    case 'V':
      return c.vocabSize;
    case 'H':
      return c.hiddenSize;
    case 'F':
      return c.intermediateSize;
    case 'Q':
      return c.numHeads * c.headDim;
    case 'KV':
      return c.numKvHeads * c.headDim;
    case 'HD':
      return c.headDim;
  }
}

export function tensorName(role: Role, layer?: number): string {
  const s = SPEC_BY_ROLE[role];
  if (!s.perLayer) return s.template;
  if (layer === undefined) throw new Error(`tensor role ${role} needs a layer index`);
  return s.template.replace('{i}', String(layer));
}

export interface ExpectedTensor {
  name: string;
  role: Role;
  layer: number | undefined;
  dims: readonly Dim[];
  shape: number[];
}

export function shapeOf(c: ModelConfig, role: Role): number[] {
  return SPEC_BY_ROLE[role].dims.map((d) => dimSize(c, d));
}

/** All tensors a checkpoint with this config must hold, in HF's natural order. */
export function expectedTensors(c: ModelConfig): ExpectedTensor[] {
  const out: ExpectedTensor[] = [];
  const add = (s: TensorSpec, layer?: number) =>
    out.push({ name: tensorName(s.role, layer), role: s.role, layer, dims: s.dims, shape: s.dims.map((d) => dimSize(c, d)) });
  add(SPEC_BY_ROLE.embed);
  const roles = layerRolesOf(c);
  for (let i = 0; i < c.numLayers; i++) for (const r of roles) add(SPEC_BY_ROLE[r], i);
  add(SPEC_BY_ROLE.final_norm);
  if (hasTensor(c, SPEC_BY_ROLE.lm_head)) add(SPEC_BY_ROLE.lm_head);
  return out;
}

/** Name -> role and layer, or undefined for a name that is not part of the architecture. */
export function parseTensorName(name: string): { role: Role; layer: number | undefined } | undefined {
  for (const s of LLAMA_TENSORS) {
    if (!s.perLayer) {
      if (name === s.template) return { role: s.role, layer: undefined };
      continue;
    }
    const [pre, post] = s.template.split('{i}');
    if (name.startsWith(pre) && name.endsWith(post)) {
      const mid = name.slice(pre.length, name.length - post.length);
      if (/^(0|[1-9]\d*)$/.test(mid)) return { role: s.role, layer: Number(mid) };
    }
  }
  return undefined;
}

export function parameterCount(c: ModelConfig): number {
  let n = 0;
  for (const t of expectedTensors(c)) n += t.shape.reduce((a, b) => a * b, 1);
  return n;
}

export interface TensorMismatch {
  name: string;
  problem: 'missing' | 'unexpected' | 'shape';
  expected?: number[];
  actual?: number[];
}

/** Compare a checkpoint's tensors with what its config implies. */
export function checkTensorsAgainstConfig(
  c: ModelConfig,
  tensors: ReadonlyMap<string, { shape: readonly number[] }>,
): TensorMismatch[] {
  const problems: TensorMismatch[] = [];
  const expected = expectedTensors(c);
  const names = new Set<string>();
  for (const e of expected) {
    names.add(e.name);
    const t = tensors.get(e.name);
    if (t === undefined) problems.push({ name: e.name, problem: 'missing', expected: e.shape });
    else if (t.shape.length !== e.shape.length || t.shape.some((v, k) => v !== e.shape[k])) {
      problems.push({ name: e.name, problem: 'shape', expected: e.shape, actual: [...t.shape] });
    }
  }
  for (const [name, t] of tensors) {
    // a tied checkpoint may still carry a copy of the head (transformers ignores it on load)
    const tiedHead = c.tieWordEmbeddings && name === SPEC_BY_ROLE.lm_head.template;
    if (!names.has(name) && !isIgnoredTensor(name) && !tiedHead)
      problems.push({ name, problem: 'unexpected', actual: [...t.shape] });
  }
  return problems;
}

export function formatMismatch(m: TensorMismatch): string {
  switch (m.problem) {
    case 'missing':
      return `${m.name}: missing (expected shape [${m.expected?.join(', ')}])`;
    case 'unexpected':
      return `${m.name}: not part of the architecture (shape [${m.actual?.join(', ')}])`;
    case 'shape':
      return `${m.name}: shape [${m.actual?.join(', ')}] but config implies [${m.expected?.join(', ')}]`;
  }
}

export function assertTensorsMatchConfig(
  c: ModelConfig,
  tensors: ReadonlyMap<string, { shape: readonly number[] }>,
  where: string,
): void {
  const p = checkTensorsAgainstConfig(c, tensors);
  if (p.length > 0) {
    const shown = p.slice(0, 10).map(formatMismatch).join('\n  ');
    throw new CheckpointError(
      'ConfigMismatch',
      `${where}: tensors do not match config.json (${p.length} problem${p.length > 1 ? 's' : ''}):\n  ${shown}${p.length > 10 ? '\n  ...' : ''}`,
    );
  }
}
