/**
 * config.json of a Llama or Tele-FLM checkpoint, parsed into the few numbers the math needs.
 * The raw JSON is kept so a grown config can be written back with every other key intact.
 */
import { ConfigError } from './errors.ts';
import { parseDtypeName, type DType } from './util/dtype.ts';
import { modelSizeProblem } from './util/limits.ts';
import { MAX_JSON_BYTES, readFailure, readJsonFile } from './util/files.ts';

export const SUPPORTED_MODEL_TYPES = ['llama', 'teleflm', 'tele_flm', 'flm'] as const;
export const SUPPORTED_ARCHITECTURES = ['LlamaForCausalLM', 'TeleFLMForCausalLM', 'FLMForCausalLM'] as const;

export interface ModelConfig {
  modelType: string;
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

function num(raw: Record<string, unknown>, key: string, file: string, opts: { int?: boolean; positive?: boolean; def?: number } = {}): number {
  const v = raw[key];
  if (v === undefined || v === null) {
    if (opts.def !== undefined) return opts.def;
    throw new ConfigError(file, key, 'is required');
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(file, key, `must be a finite number, got ${JSON.stringify(v)}`);
  if (opts.int === true && !Number.isInteger(v)) throw new ConfigError(file, key, `must be an integer, got ${v}`);
  if (opts.positive === true && v <= 0) throw new ConfigError(file, key, `must be > 0, got ${v}`);
  return v;
}

/** RoPE theta: transformers ≤ 4 `rope_theta`, transformers 5 `rope_parameters.rope_theta`. */
function ropeTheta(raw: Record<string, unknown>, file: string): number {
  const rp = raw.rope_parameters ?? raw.rope_scaling;
  if (rp !== undefined && rp !== null) {
    if (typeof rp !== 'object') throw new ConfigError(file, 'rope_parameters', 'must be an object');
    const r = rp as Record<string, unknown>;
    const type = r.rope_type ?? r.type ?? 'default';
    if (type !== 'default') {
      throw new ConfigError(file, 'rope_parameters.rope_type', `"${String(type)}" RoPE scaling is not supported (only "default")`);
    }
    if (r.rope_theta !== undefined) return num(r, 'rope_theta', file, { positive: true });
  }
  return num(raw, 'rope_theta', file, { positive: true, def: 10000 });
}

export function parseConfig(raw: unknown, file = 'config.json'): ModelConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(file, undefined, 'is not a JSON object');
  const r = raw as Record<string, unknown>;
  const modelType = r.model_type;
  const archs = Array.isArray(r.architectures) ? (r.architectures as unknown[]) : [];
  const typeOk = typeof modelType === 'string' && (SUPPORTED_MODEL_TYPES as readonly string[]).includes(modelType.toLowerCase());
  const archOk = archs.some((a) => (SUPPORTED_ARCHITECTURES as readonly unknown[]).includes(a));
  if (!typeOk && !archOk) {
    throw new ConfigError(file, 'model_type',
      `unsupported model ${JSON.stringify(modelType)} / architectures ${JSON.stringify(archs)}; supported model_type: ${SUPPORTED_MODEL_TYPES.join(', ')}; architectures: ${SUPPORTED_ARCHITECTURES.join(', ')}`);
  }
  if (r.tie_word_embeddings === true) {
    throw new ConfigError(file, 'tie_word_embeddings', 'tied embeddings are not supported: Llama/Tele-FLM growth here assumes an untied lm_head');
  }
  for (const k of ['attention_bias', 'mlp_bias'] as const) {
    if (r[k] === true) throw new ConfigError(file, k, 'linear biases are not supported (Llama/Tele-FLM have none)');
  }
  const act = r.hidden_act ?? 'silu';
  if (act !== 'silu') throw new ConfigError(file, 'hidden_act', `only "silu" (SwiGLU) is supported, got ${JSON.stringify(act)}`);
  const hiddenSize = num(r, 'hidden_size', file, { int: true, positive: true });
  const numHeads = num(r, 'num_attention_heads', file, { int: true, positive: true });
  const numKvHeads = num(r, 'num_key_value_heads', file, { int: true, positive: true, def: numHeads });
  if (numHeads % numKvHeads !== 0) {
    throw new ConfigError(file, 'num_key_value_heads', `${numKvHeads} does not divide num_attention_heads ${numHeads}`);
  }
  let headDim: number;
  if (r.head_dim === undefined || r.head_dim === null) {
    if (hiddenSize % numHeads !== 0) throw new ConfigError(file, 'head_dim', `absent and hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
    headDim = hiddenSize / numHeads;
  } else headDim = num(r, 'head_dim', file, { int: true, positive: true });
  if (headDim % 2 !== 0) throw new ConfigError(file, 'head_dim', `must be even for RoPE, got ${headDim}`);
  const useMup = r.use_mup === true;
  const dtypeName = r.torch_dtype ?? r.dtype;
  let dtype: DType | undefined;
  if (typeof dtypeName === 'string') {
    try { dtype = parseDtypeName(dtypeName); } catch {
      throw new ConfigError(file, r.torch_dtype !== undefined ? 'torch_dtype' : 'dtype', `unknown dtype "${dtypeName}" (bfloat16, float16 or float32)`);
    }
  }
  const intermediateSize = num(r, 'intermediate_size', file, { int: true, positive: true });
  const numLayers = num(r, 'num_hidden_layers', file, { int: true, positive: true });
  const vocabSize = num(r, 'vocab_size', file, { int: true, positive: true });
  // refuse sizes no checkpoint can have before anything lists tensors or allocates per layer
  const size = modelSizeProblem({
    hidden_size: hiddenSize, intermediate_size: intermediateSize, num_hidden_layers: numLayers, num_attention_heads: numHeads,
    num_key_value_heads: numKvHeads, head_dim: headDim, vocab_size: vocabSize,
  });
  if (size !== undefined) throw new ConfigError(file, size.field, size.message);
  return {
    modelType: typeof modelType === 'string' ? modelType : 'llama',
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    rmsNormEps: num(r, 'rms_norm_eps', file, { positive: true, def: 1e-6 }),
    ropeTheta: ropeTheta(r, file),
    maxPositionEmbeddings: num(r, 'max_position_embeddings', file, { int: true, positive: true, def: 2048 }),
    useMup,
    inputMult: useMup ? num(r, 'input_mult', file, { def: 1 }) : 1,
    outputMult: useMup ? num(r, 'output_mult', file, { def: 1 }) : 1,
    mupScaleFactor: useMup ? num(r, 'mup_scale_factor', file, { positive: true, def: 1 }) : 1,
    dtype,
    raw: r,
  };
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

/** A fresh Llama config (for synthetic models in tests, benches, `synth`). */
export function makeConfig(p: {
  hiddenSize: number; intermediateSize: number; numLayers: number; numHeads: number; numKvHeads?: number; headDim?: number;
  vocabSize: number; rmsNormEps?: number; ropeTheta?: number; maxPositionEmbeddings?: number; dtype?: DType;
  useMup?: boolean; inputMult?: number; outputMult?: number; mupScaleFactor?: number;
}): ModelConfig {
  const raw: Record<string, unknown> = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_act: 'silu', tie_word_embeddings: false,
    attention_bias: false, mlp_bias: false, rope_parameters: { rope_type: 'default', rope_theta: p.ropeTheta ?? 10000 },
  };
  const c: ModelConfig = {
    modelType: 'llama', hiddenSize: p.hiddenSize, intermediateSize: p.intermediateSize, numLayers: p.numLayers,
    numHeads: p.numHeads, numKvHeads: p.numKvHeads ?? p.numHeads, headDim: p.headDim ?? p.hiddenSize / p.numHeads,
    vocabSize: p.vocabSize, rmsNormEps: p.rmsNormEps ?? 1e-5, ropeTheta: p.ropeTheta ?? 10000,
    maxPositionEmbeddings: p.maxPositionEmbeddings ?? 2048, useMup: p.useMup ?? false, inputMult: p.inputMult ?? 1,
    outputMult: p.outputMult ?? 1, mupScaleFactor: p.mupScaleFactor ?? 1, dtype: p.dtype, raw,
  };
  c.raw = configToJson(c);
  return parseConfig(c.raw);
}
