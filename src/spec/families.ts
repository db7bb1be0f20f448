/**
 * The supported model families, one entry each, declared once as data in
 * python/flm_grow_torch/_data/families.json (compare mergekit's `_data/architectures/*.json`),
 * which the torch engine loads too: how a config.json names the family, which optional tensors it
 * has, which config fields it reads, and which it refuses. config.ts parses a config.json against
 * this table and arch.ts lists the tensors a parsed config implies; nothing else names a family.
 * It sits below config.ts (it imports only node:) so both can read it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The family names as a type (TypeScript cannot type-check names read from JSON; checked equal to families.json at load). */
const NAMES = ['llama', 'tele-flm', 'mistral', 'qwen2', 'qwen3'] as const;
export type FamilyName = (typeof NAMES)[number];

/** RoPE types implemented (transformers' modeling_rope_utils.ROPE_INIT_FUNCTIONS keys). */
export const ROPE_TYPES = ['default', 'linear', 'dynamic', 'llama3', 'yarn'] as const;
// (kept as a literal tuple for the RopeType type; families.json's ropeTypes is checked equal to it
// by test/torch/families-table.test.ts, and Python reads the JSON)
export type RopeType = (typeof ROPE_TYPES)[number];

export interface Family {
  name: FamilyName;
  /** config.json `model_type` values (lower case). */
  modelTypes: readonly string[];
  /** config.json `architectures` entries. */
  architectures: readonly string[];
  /** transformers' own model class of the family (null: none; Tele-FLM's µP runs on Llama's class in the remote code). */
  transformersClass: string | null;
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

/** The declaration both engines load (python/flm_grow_torch/_data/families.json). */
export const FAMILIES_FILE = join(import.meta.dirname, '..', '..', 'python', 'flm_grow_torch', '_data', 'families.json');

interface FamiliesFile {
  ropeTypes: string[];
  masked: { modelType: string; architecture: string; configKey: string };
  refusalReasons: Record<string, string>;
  tinyBase: Record<string, unknown>;
  families: (Omit<Family, 'refusedIfTrue' | 'headDimDefault'> & { refusedIfTrue: string[]; headDimDefault: number | null })[];
}

const DATA = JSON.parse(readFileSync(FAMILIES_FILE, 'utf8')) as FamiliesFile;

if (
  JSON.stringify(DATA.families.map((f) => f.name)) !== JSON.stringify(NAMES) ||
  JSON.stringify(DATA.ropeTypes) !== JSON.stringify(ROPE_TYPES)
)
  throw new Error(
    `${FAMILIES_FILE}: family names or ropeTypes differ from src/spec/families.ts's types (add the name there too)`,
  );

export const FAMILIES: readonly Family[] = DATA.families.map((f) => ({
  ...f,
  headDimDefault: f.headDimDefault ?? undefined,
  refusedIfTrue: f.refusedIfTrue.map((key) => ({ key, why: DATA.refusalReasons[key] })),
  tiny: { ...DATA.tinyBase, ...f.tiny },
}));

/**
 * A masked grown checkpoint's config.json (docs/hf-format.md): `model_type` MASKED_MODEL_TYPE,
 * which plain transformers does not know (so it refuses the folder instead of loading a different
 * function), `architectures` [MASKED_ARCHITECTURE], `auto_map` to the folder's modeling files, and
 * the base family's own model_type / architectures under MASKED_CONFIG_KEY. config.ts reads such a
 * config as its base family.
 */
export const MASKED_MODEL_TYPE: string = DATA.masked.modelType;
export const MASKED_ARCHITECTURE: string = DATA.masked.architecture;
export const MASKED_CONFIG_KEY: string = DATA.masked.configKey;

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
