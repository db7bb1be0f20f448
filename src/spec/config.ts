/**
 * config.json of a Llama or Tele-FLM checkpoint, parsed into the few numbers the math needs.
 * The raw JSON is kept so a grown config can be written back with every other key intact.
 */
import { join } from 'node:path';
import { ConfigError } from '../util/errors.ts';
import { DATA_DIR, readDataFile } from '../util/data-files.ts';
import { parseDtypeName, type DType } from '../util/dtype.ts';
import { modelSizeProblem } from '../util/limits.ts';
import { MAX_JSON_BYTES, readFailure, readJsonFile } from '../util/files.ts';
import {
  detectFamily,
  FAMILIES,
  MASKED_ARCHITECTURE,
  MASKED_CONFIG_KEY,
  MASKED_MODEL_TYPE,
  ROPE_TYPES,
  type FamilyName,
  type RopeType,
} from './families.ts';

/** The rules of reading a config.json, declared once for both engines (python/flm_grow_torch/_data/config_rules.json). */
export const CONFIG_RULES_FILE = join(DATA_DIR, 'config_rules.json');

interface NumberRule {
  key: string;
  name: string;
  default?: number;
  integer?: boolean;
  positive?: boolean;
  mup?: boolean;
}
interface RopeField {
  key: string;
  name: keyof RopeScaling;
  required?: boolean;
  requiredUnless?: string;
  fallback?: number;
  /** Used by the frequency computation when absent (model/llama.ts); not written into the parsed config. */
  default?: number;
  boolean?: boolean;
}
export interface ConfigRules {
  sizes: { key: string; name: string }[];
  optional: NumberRule[];
  refused: { key: string; allowed: unknown[]; why: string }[];
  rope: Record<RopeType, RopeField[]>;
  messages: Record<
    | 'required'
    | 'notFinite'
    | 'notInteger'
    | 'notPositive'
    | 'notPositiveNumber'
    | 'notBoolean'
    | 'ropeNotBoolean'
    | 'ropeRequired'
    | 'notObject'
    | 'ropeType'
    | 'unsupportedModel'
    | 'maskedBase'
    | 'slidingWindowFlagged'
    | 'layerTypes'
    | 'kvHeadsDivide'
    | 'headDimDerived'
    | 'headDimOdd',
    string
  >;
}

export const CONFIG_RULES = readDataFile<ConfigRules>('config_rules.json');

/** A message of config_rules.json with its {value}, {type}, ... filled in (a plan's target config is held to the same rules). */
export function say(m: keyof ConfigRules['messages'], fill: Record<string, string | number> = {}): string {
  return CONFIG_RULES.messages[m].replace(/\{(\w+)\}/g, (_, k: string) => String(fill[k] ?? ''));
}

/** The read options of an optional config.json number (config_rules.json `optional`). */
function optional(key: string): { int?: boolean; positive?: boolean; def: number } {
  const r = CONFIG_RULES.optional.find((o) => o.key === key);
  if (r === undefined || r.default === undefined) throw new Error(`${CONFIG_RULES_FILE}: no optional field ${key}`);
  return { int: r.integer, positive: r.positive, def: r.default };
}

/** The default of an optional config.json number (rope_theta: 10000, ...). */
export const configDefault = (key: string): number => optional(key).def;

/** The default of a RoPE parameter absent from the file (config_rules.json rope: yarn's beta_fast 32, ...). */
export function ropeDefault(type: RopeType, key: string): number {
  const d = CONFIG_RULES.rope[type].find((f) => f.key === key)?.default;
  if (d === undefined) throw new Error(`${CONFIG_RULES_FILE}: no default of rope ${type}.${key}`);
  return d;
}

/** The refusal rule of a field (config_rules.json `refused`): its message when `v` is neither absent nor allowed. */
function refusal(key: string, v: unknown): string | undefined {
  const r = CONFIG_RULES.refused.find((x) => x.key === key);
  if (r === undefined) throw new Error(`${CONFIG_RULES_FILE}: no refused field ${key}`);
  if (v === undefined || v === null || r.allowed.includes(v)) return undefined;
  return r.why.replace('{value}', JSON.stringify(v));
}

export const SUPPORTED_MODEL_TYPES: readonly string[] = FAMILIES.flatMap((f) => f.modelTypes);
export const SUPPORTED_ARCHITECTURES: readonly string[] = FAMILIES.flatMap((f) => f.architectures);

/**
 * RoPE scaling as transformers computes it (modeling_rope_utils.py). Fields absent from the file
 * are undefined (their defaults are applied where the frequencies are computed, model/llama.ts).
 */
export interface RopeScaling {
  type: RopeType;
  factor?: number;
  /** llama3 */
  lowFreqFactor?: number;
  highFreqFactor?: number;
  /** llama3 (required), yarn (optional; default max_position_embeddings) */
  originalMaxPositionEmbeddings?: number;
  /** yarn */
  attentionFactor?: number;
  betaFast?: number;
  betaSlow?: number;
  mscale?: number;
  mscaleAllDim?: number;
  truncate?: boolean;
}

export interface ModelConfig {
  modelType: string;
  /** The family (src/spec/families.ts) the config was read as. */
  family: FamilyName;
  /** One tensor (model.embed_tokens.weight) is both the embedding and the LM head. */
  tieWordEmbeddings: boolean;
  /** q_proj/k_proj/v_proj have biases (Qwen2). */
  qkvBias: boolean;
  /** Per-layer q_norm/k_norm over head_dim before RoPE (Qwen3). */
  qkNorm: boolean;
  /** RoPE scaling (type 'default': none). */
  rope: RopeScaling;
  /** Sliding-window attention: a query attends to keys less than this many positions back (Mistral); undefined = full causal. */
  slidingWindow: number | undefined;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  maxPositionEmbeddings: number;
  /** Tele-FLM µP: embeds *= inputMult, logits *= outputMult / mupScaleFactor. */
  useMup: boolean;
  inputMult: number;
  outputMult: number;
  mupScaleFactor: number;
  /** Declared storage dtype (torch_dtype / dtype), if any. */
  dtype: DType | undefined;
  /** The config.json object as read, for writing back unknown keys untouched. */
  raw: Record<string, unknown>;
}

function num(
  raw: Record<string, unknown>,
  key: string,
  file: string,
  opts: { int?: boolean; positive?: boolean; def?: number } = {},
): number {
  const v = raw[key];
  if (v === undefined || v === null) {
    if (opts.def !== undefined) return opts.def;
    throw new ConfigError(file, key, say('required'));
  }
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw new ConfigError(file, key, say('notFinite', { value: JSON.stringify(v) }));
  if (opts.int === true && !Number.isInteger(v)) throw new ConfigError(file, key, say('notInteger', { value: String(v) }));
  if (opts.positive === true && v <= 0) throw new ConfigError(file, key, say('notPositive', { value: String(v) }));
  return v;
}

/** Collects every problem of a config.json so one error can list them all. */
class Problems {
  readonly list: ConfigError[] = [];
  constructor(readonly file: string) {}
  add(field: string | undefined, message: string): void {
    this.list.push(new ConfigError(this.file, field, message));
  }
  /** Run `f`; a ConfigError it throws is recorded and `fallback` returned. */
  try<T>(f: () => T, fallback: T): T {
    try {
      return f();
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      this.list.push(e);
      return fallback;
    }
  }
  throwIfAny(): void {
    if (this.list.length === 0) return;
    if (this.list.length === 1) throw this.list[0];
    const fields = this.list.map((e) => e.field ?? '<root>');
    const lines = this.list.map((e) => `  - ${e.message.slice(this.file.length + 2)}`);
    throw new ConfigError(
      this.file,
      undefined,
      `${this.list.length} unsupported or invalid fields:\n${lines.join('\n')}`,
      fields,
    );
  }
}

/**
 * RoPE: theta and scaling. transformers ≤ 4: `rope_theta` and `rope_scaling` ({type | rope_type,
 * factor, ...}); transformers 5: `rope_parameters` ({rope_type, rope_theta, factor, ...}).
 * Problems name the field as written in the file (`rope_scaling.type`, `rope_parameters.rope_type`).
 */
function ropeOf(raw: Record<string, unknown>, file: string, p: Problems): { theta: number; rope: RopeScaling } {
  const key =
    raw.rope_parameters !== undefined && raw.rope_parameters !== null
      ? 'rope_parameters'
      : raw.rope_scaling !== undefined && raw.rope_scaling !== null
        ? 'rope_scaling'
        : undefined;
  const thetaRule = optional('rope_theta');
  let theta = p.try(() => num(raw, 'rope_theta', file, thetaRule), thetaRule.def);
  if (key === undefined) return { theta, rope: { type: 'default' } };
  const rp = raw[key];
  if (typeof rp !== 'object' || Array.isArray(rp)) {
    p.add(key, say('notObject'));
    return { theta, rope: { type: 'default' } };
  }
  const r = rp as Record<string, unknown>;
  if (r.rope_theta !== undefined && r.rope_theta !== null) {
    // named as written: rope_parameters.rope_theta, not the top-level rope_theta
    const v = r.rope_theta;
    if (typeof v === 'number' && Number.isFinite(v) && v > 0) theta = v;
    else p.add(`${key}.rope_theta`, say('notPositiveNumber', { value: JSON.stringify(v) }));
  }
  const typeKey = r.rope_type !== undefined ? 'rope_type' : r.type !== undefined ? 'type' : undefined;
  const type = typeKey === undefined ? 'default' : r[typeKey];
  if (!(ROPE_TYPES as readonly unknown[]).includes(type)) {
    p.add(`${key}.${typeKey ?? 'rope_type'}`, say('ropeType', { value: JSON.stringify(type), supported: ROPE_TYPES.join(', ') }));
    return { theta, rope: { type: 'default' } };
  }
  const t = type as RopeType;
  const partial = refusal('partial_rotary_factor', r.partial_rotary_factor);
  if (partial !== undefined) p.add(`${key}.partial_rotary_factor`, partial);
  // the parameters the type reads (config_rules.json rope): booleans first, then the numbers
  const fields = CONFIG_RULES.rope[t];
  for (const f of fields)
    if (f.boolean === true && r[f.key] !== undefined && r[f.key] !== null && typeof r[f.key] !== 'boolean')
      p.add(`${key}.${f.key}`, say('ropeNotBoolean'));
  const rope: Record<string, unknown> = { type: t };
  for (const f of fields) {
    const v = r[f.key];
    if (f.boolean === true) {
      if (typeof v === 'boolean') rope[f.name] = v;
      continue;
    }
    const need = f.required === true || (f.requiredUnless !== undefined && r[f.requiredUnless] === undefined);
    if (v === undefined || v === null) {
      if (need) p.add(`${key}.${f.key}`, say('ropeRequired', { type: t }));
    } else if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      p.add(`${key}.${f.key}`, say('notPositiveNumber', { value: JSON.stringify(v) }));
    } else {
      rope[f.name] = v;
      continue;
    }
    if (f.fallback !== undefined) rope[f.name] = f.fallback;
  }
  return { theta, rope: rope as unknown as RopeScaling };
}

/** The `auto_map` of a masked folder: its own modeling files (python/flm_grow_torch/hf_remote). */
export const MASKED_AUTO_MAP = {
  AutoConfig: 'configuration_flm_grow.FlmGrowMaskedConfig',
  AutoModelForCausalLM: 'modeling_flm_grow.FlmGrowMaskedForCausalLM',
} as const;

/** What a masked config.json says to whoever opens it (transformers' own refusal only names trust_remote_code). */
export const MASKED_LOAD_NOTE =
  'MSG-masked checkpoint: its masks (masks.safetensors) are part of the model. Load it with ' +
  "AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True) (this folder's modeling_flm_grow.py " +
  'attaches the masks), or write the plain model with `flm-grow bake` once every mask is 1. ' +
  'Loaded as a plain model, its weights compute a different function.';

/**
 * A plain config.json as the masked form (docs/hf-format.md): model_type and architectures
 * replaced by the masked ones, the base family's kept under `flm_grow` (with an auto_map the
 * source had, e.g. Tele-FLM's remote code); every other key as it was.
 */
export function maskedConfigJson(plain: Record<string, unknown>): Record<string, unknown> {
  const { model_type, architectures, auto_map, ...rest } = plain;
  return {
    architectures: [MASKED_ARCHITECTURE],
    model_type: MASKED_MODEL_TYPE,
    auto_map: { ...MASKED_AUTO_MAP },
    [MASKED_CONFIG_KEY]: {
      base_model_type: model_type,
      base_architectures: architectures,
      ...(auto_map !== undefined ? { base_auto_map: auto_map } : {}),
      masks_file: 'masks.safetensors',
      how_to_load: MASKED_LOAD_NOTE,
    },
    ...rest,
  };
}

/** Whether a parsed config.json object is the masked form. */
export function isMaskedConfigJson(raw: unknown): boolean {
  return typeof raw === 'object' && raw !== null && (raw as Record<string, unknown>).model_type === MASKED_MODEL_TYPE;
}

/**
 * The plain config of a masked config.json (the inverse of maskedConfigJson); any other object
 * unchanged. A masked config without its base model_type is refused, naming the field.
 */
export function plainConfigJson(raw: Record<string, unknown>, file = 'config.json'): Record<string, unknown> {
  if (!isMaskedConfigJson(raw)) return raw;
  const meta = raw[MASKED_CONFIG_KEY];
  const m = typeof meta === 'object' && meta !== null && !Array.isArray(meta) ? (meta as Record<string, unknown>) : undefined;
  if (m === undefined || typeof m.base_model_type !== 'string')
    throw new ConfigError(file, `${MASKED_CONFIG_KEY}.base_model_type`, say('maskedBase', { maskedType: MASKED_MODEL_TYPE }));
  const { [MASKED_CONFIG_KEY]: _meta, model_type: _t, architectures: _a, auto_map: _m, ...rest } = raw;
  return {
    ...(Array.isArray(m.base_architectures) ? { architectures: m.base_architectures } : {}),
    model_type: m.base_model_type,
    ...(m.base_auto_map !== undefined ? { auto_map: m.base_auto_map } : {}),
    ...rest,
  };
}

export function parseConfig(raw: unknown, file = 'config.json'): ModelConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new ConfigError(file, undefined, 'is not a JSON object');
  // a masked folder reads as its base family; `raw` (written back by configToJson) is the plain
  // config, which writers wrap again where masks stay below 1 (hf-folder.ts)
  const r = plainConfigJson(raw as Record<string, unknown>, file);
  const p = new Problems(file);
  // a required size (config_rules.json sizes: an integer > 0)
  const sizeField = (key: string) => {
    if (!CONFIG_RULES.sizes.some((f) => f.key === key)) throw new Error(`${CONFIG_RULES_FILE}: no size ${key}`);
    return p.try(() => num(r, key, file, { int: true, positive: true }), 0);
  };
  const modelType = r.model_type;
  const archs = Array.isArray(r.architectures) ? (r.architectures as unknown[]) : [];
  const family = detectFamily(modelType, archs);
  if (family === undefined) {
    p.add(
      'model_type',
      say('unsupportedModel', {
        value: JSON.stringify(modelType),
        architectures: JSON.stringify(archs),
        supportedTypes: SUPPORTED_MODEL_TYPES.join(', '),
        supportedArchitectures: SUPPORTED_ARCHITECTURES.join(', '),
      }),
    );
  }
  const fam = family ?? FAMILIES[0];
  if (r.tie_word_embeddings !== undefined && r.tie_word_embeddings !== null && typeof r.tie_word_embeddings !== 'boolean') {
    p.add('tie_word_embeddings', say('notBoolean', { value: JSON.stringify(r.tie_word_embeddings) }));
  }
  for (const { key, why } of fam.refusedIfTrue) if (r[key] === true) p.add(key, why);
  // values this tool does not model (config_rules.json refused): a new one is a line of data
  for (const { key } of CONFIG_RULES.refused) {
    const why = refusal(key, r[key]);
    if (why !== undefined) p.add(key, why);
  }
  let slidingWindow: number | undefined;
  if (fam.slidingWindow === 'always' && r.sliding_window !== undefined && r.sliding_window !== null) {
    slidingWindow = p.try(() => num(r, 'sliding_window', file, { int: true, positive: true }), undefined);
  } else if (fam.slidingWindow === 'flagged' && r.use_sliding_window === true) {
    p.add('use_sliding_window', say('slidingWindowFlagged', { family: fam.name }));
  }
  if (Array.isArray(r.layer_types) && r.layer_types.some((x) => x !== 'full_attention') && fam.slidingWindow !== 'always') {
    p.add('layer_types', say('layerTypes', { value: JSON.stringify([...new Set(r.layer_types)]) }));
  }
  const hiddenSize = sizeField('hidden_size');
  const numHeads = sizeField('num_attention_heads');
  const numKvHeads = p.try(() => num(r, 'num_key_value_heads', file, { int: true, positive: true, def: numHeads }), 0);
  if (numHeads > 0 && numKvHeads > 0 && numHeads % numKvHeads !== 0) {
    p.add('num_key_value_heads', say('kvHeadsDivide', { value: numKvHeads, heads: numHeads }));
  }
  let headDim = 0;
  if (r.head_dim === undefined || r.head_dim === null) {
    if (fam.headDimDefault !== undefined) headDim = fam.headDimDefault;
    else if (numHeads > 0 && hiddenSize > 0) {
      if (hiddenSize % numHeads !== 0) p.add('head_dim', say('headDimDerived', { hidden: hiddenSize, heads: numHeads }));
      else headDim = hiddenSize / numHeads;
    }
  } else headDim = p.try(() => num(r, 'head_dim', file, { int: true, positive: true }), 0);
  if (headDim % 2 !== 0) p.add('head_dim', say('headDimOdd', { value: headDim }));
  const useMup = r.use_mup === true;
  const dtypeName = r.torch_dtype ?? r.dtype;
  let dtype: DType | undefined;
  if (typeof dtypeName === 'string') {
    try {
      dtype = parseDtypeName(dtypeName);
    } catch {
      p.add(r.torch_dtype !== undefined ? 'torch_dtype' : 'dtype', `unknown dtype "${dtypeName}" (bfloat16, float16 or float32)`);
    }
  }
  const { theta, rope } = ropeOf(r, file, p);
  const opt = (key: string) => p.try(() => num(r, key, file, optional(key)), optional(key).def);
  const c: ModelConfig = {
    modelType: typeof modelType === 'string' ? modelType : 'llama',
    family: fam.name,
    tieWordEmbeddings: r.tie_word_embeddings === true,
    qkvBias: fam.qkvBias,
    qkNorm: fam.qkNorm,
    rope,
    slidingWindow,
    hiddenSize,
    intermediateSize: sizeField('intermediate_size'),
    numLayers: sizeField('num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: sizeField('vocab_size'),
    rmsNormEps: opt('rms_norm_eps'),
    ropeTheta: theta,
    maxPositionEmbeddings: opt('max_position_embeddings'),
    useMup,
    // Tele-FLM µP: read only under use_mup, else their defaults (no scaling)
    inputMult: useMup ? opt('input_mult') : configDefault('input_mult'),
    outputMult: useMup ? opt('output_mult') : configDefault('output_mult'),
    mupScaleFactor: useMup ? opt('mup_scale_factor') : configDefault('mup_scale_factor'),
    dtype,
    raw: r,
  };
  p.throwIfAny();
  // refuse sizes no checkpoint can have before anything lists tensors or allocates per layer
  const size = modelSizeProblem({
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    head_dim: c.headDim,
    vocab_size: c.vocabSize,
  });
  if (size !== undefined) throw new ConfigError(file, size.field, size.message);
  return c;
}

export function readConfigFile(path: string): ModelConfig {
  let json: unknown;
  try {
    json = readJsonFile(path, { maxBytes: MAX_JSON_BYTES, what: 'config.json' });
  } catch (e) {
    throw new ConfigError(path, undefined, readFailure(e));
  }
  return parseConfig(json, path);
}

/** Multiplier applied to the logits (1 without µP). */
export function logitScale(c: ModelConfig): number {
  return c.useMup ? c.outputMult / c.mupScaleFactor : 1;
}

/** Multiplier applied to the embeddings (1 without µP). */
export function inputScale(c: ModelConfig): number {
  return c.useMup ? c.inputMult : 1;
}

/**
 * Write a config back as JSON: the raw keys kept, the sizes overwritten. The RoPE theta goes
 * where the source had it (rope_parameters for transformers 5, rope_theta otherwise).
 */
export function configToJson(c: ModelConfig): Record<string, unknown> {
  const out: Record<string, unknown> = { ...c.raw };
  // where the source was loaded from is not where this config lives
  delete out._name_or_path;
  out.hidden_size = c.hiddenSize;
  out.intermediate_size = c.intermediateSize;
  out.num_hidden_layers = c.numLayers;
  out.num_attention_heads = c.numHeads;
  out.num_key_value_heads = c.numKvHeads;
  out.head_dim = c.headDim;
  out.vocab_size = c.vocabSize;
  // a scaled eps (zero mode) is written as the number it is: 8e-6, not 0.000008000000000000001
  out.rms_norm_eps = Number(c.rmsNormEps.toPrecision(12));
  out.max_position_embeddings = c.maxPositionEmbeddings;
  if (c.raw.rope_parameters !== undefined && c.raw.rope_parameters !== null) {
    out.rope_parameters = { ...(c.raw.rope_parameters as Record<string, unknown>), rope_theta: c.ropeTheta };
  } else out.rope_theta = c.ropeTheta;
  if (c.useMup) {
    out.use_mup = true;
    out.input_mult = c.inputMult;
    out.output_mult = c.outputMult;
    out.mup_scale_factor = c.mupScaleFactor;
  }
  if (c.dtype !== undefined) {
    const key = c.raw.torch_dtype !== undefined ? 'torch_dtype' : 'dtype';
    out[key] = c.dtype === 'BF16' ? 'bfloat16' : c.dtype === 'F16' ? 'float16' : 'float32';
  }
  return out;
}

/** A fresh config of a family (default Llama) for synthetic models in tests, benches, `synth`. */
export function makeConfig(p: {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads?: number;
  headDim?: number;
  vocabSize: number;
  rmsNormEps?: number;
  ropeTheta?: number;
  maxPositionEmbeddings?: number;
  dtype?: DType;
  useMup?: boolean;
  inputMult?: number;
  outputMult?: number;
  mupScaleFactor?: number;
  family?: FamilyName;
  tieWordEmbeddings?: boolean;
  /** RoPE scaling as config.json writes it (e.g. {rope_type: 'llama3', factor: 8, ...}); default none. */
  ropeScaling?: Record<string, unknown>;
  /** Mistral's sliding_window. */
  slidingWindow?: number;
}): ModelConfig {
  const fam = FAMILIES.find((f) => f.name === (p.family ?? 'llama')) ?? FAMILIES[0];
  const raw: Record<string, unknown> = {
    architectures: [fam.architectures[0]],
    model_type: fam.modelTypes[0],
    hidden_act: 'silu',
    tie_word_embeddings: p.tieWordEmbeddings ?? false,
    ...(fam.qkvBias ? {} : { attention_bias: false }),
    mlp_bias: false,
    rope_parameters: { rope_type: 'default', ...(p.ropeScaling ?? {}), rope_theta: p.ropeTheta ?? configDefault('rope_theta') },
    ...(fam.slidingWindow === 'always' ? { sliding_window: p.slidingWindow ?? null } : {}),
    ...(fam.slidingWindow === 'flagged' ? { use_sliding_window: false } : {}),
  };
  const c: ModelConfig = {
    modelType: fam.modelTypes[0],
    family: fam.name,
    tieWordEmbeddings: p.tieWordEmbeddings ?? false,
    qkvBias: fam.qkvBias,
    qkNorm: fam.qkNorm,
    rope: { type: 'default' },
    slidingWindow: p.slidingWindow,
    hiddenSize: p.hiddenSize,
    intermediateSize: p.intermediateSize,
    numLayers: p.numLayers,
    numHeads: p.numHeads,
    numKvHeads: p.numKvHeads ?? p.numHeads,
    headDim: p.headDim ?? p.hiddenSize / p.numHeads,
    vocabSize: p.vocabSize,
    rmsNormEps: p.rmsNormEps ?? 1e-5,
    ropeTheta: p.ropeTheta ?? configDefault('rope_theta'),
    maxPositionEmbeddings: p.maxPositionEmbeddings ?? configDefault('max_position_embeddings'),
    useMup: p.useMup ?? false,
    inputMult: p.inputMult ?? configDefault('input_mult'),
    outputMult: p.outputMult ?? configDefault('output_mult'),
    mupScaleFactor: p.mupScaleFactor ?? configDefault('mup_scale_factor'),
    dtype: p.dtype,
    raw,
  };
  c.raw = configToJson(c);
  return parseConfig(c.raw);
}
