/**
 * What sizes can exist, checked before anything is allocated: a config or plan with absurd
 * numbers (hidden_size 1e9, 1e9 layers, vocab_size 1e300) is refused in milliseconds with the
 * field named, instead of allocating gigabytes, dying in V8, or failing inside a typed array.
 * Pure functions returning a problem; callers throw their own error class (ConfigError, PlanError).
 */
import { totalmem } from 'node:os';

/** Per dimension: axis maps are Int32Arrays and rows are typed arrays indexed by int32. */
export const MAX_DIM = 2 ** 31 - 1;
/**
 * Layers: the deepest published LLMs have a few hundred. Per-layer bookkeeping (9 tensor names,
 * layer maps, index entries) is what 1e9 layers would allocate; 65,536 leaves vast headroom while
 * keeping every per-layer list a few megabytes.
 */
export const MAX_LAYERS = 65_536;
/**
 * Vocabulary: the largest published tokenizers have about 256 K ids (Gemma) and token files store
 * ids as uint32. Per-id bookkeeping (the vocab mask, its axis map, the padding bias) is what a
 * vocab of 2e9 would allocate (8 GB and minutes before any error); 2^24 ids is 64× the largest.
 */
export const MAX_VOCAB = 2 ** 24;
/** Tokens of calibration/verify input: held as JS id arrays and [tokens, H] f32 activations. */
export const MAX_TOKENS = 2 ** 24;
/** Sequence length of forward/verify/calibration: attention materialises [group·T, T] f32 masks and scores. */
export const MAX_SEQ_LEN = 8192;
/** Environment override of the memory the machine offers (bytes), for containers whose cgroup limit is below the host's RAM. */
export const MEMORY_LIMIT_ENV = 'FLM_GROW_MEMORY_LIMIT';

export interface SizeProblem {
  field: string;
  message: string;
}

/** The sizes of a model, in HF config keys. */
export interface ModelDims {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  vocab_size: number;
}

/** Parameters of a Llama model, computed from the sizes (never by listing tensors). */
export function parameterCountOf(d: ModelDims): number {
  const H = d.hidden_size,
    F = d.intermediate_size,
    Q = d.num_attention_heads * d.head_dim,
    KV = d.num_key_value_heads * d.head_dim;
  const perLayer = 2 * H + 2 * Q * H + 2 * KV * H + 3 * F * H;
  return 2 * d.vocab_size * H + H + d.num_hidden_layers * perLayer;
}

/** Every dimension an integer in range, parameters and f32 bytes exactly representable. */
export function modelSizeProblem(d: ModelDims, prefix = ''): SizeProblem | undefined {
  for (const [k, v] of Object.entries(d) as [keyof ModelDims, number][]) {
    const max = k === 'num_hidden_layers' ? MAX_LAYERS : k === 'vocab_size' ? MAX_VOCAB : MAX_DIM;
    if (!Number.isInteger(v) || v < 1 || v > max)
      return { field: `${prefix}${k}`, message: `must be an integer in [1, ${max}], got ${v}` };
  }
  for (const [k, v] of [
    ['num_attention_heads', d.num_attention_heads * d.head_dim],
    ['num_key_value_heads', d.num_key_value_heads * d.head_dim],
  ] as const) {
    if (v > MAX_DIM) return { field: `${prefix}${k}`, message: `× head_dim = ${v} exceeds the largest dimension ${MAX_DIM}` };
  }
  const params = parameterCountOf(d);
  // 4 bytes: the widest stored dtype (F32); byte offsets must be exact doubles
  if (!Number.isSafeInteger(params * 4)) {
    return {
      field: `${prefix}${largestDim(d)}`,
      message: `gives ${params.toExponential(3)} parameters, whose byte size is beyond 2^53 (no checkpoint can hold it)`,
    };
  }
  return undefined;
}

function largestDim(d: ModelDims): keyof ModelDims {
  const k: (keyof ModelDims)[] = ['vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers'];
  return k.reduce((a, b) => (d[b] > d[a] ? b : a));
}

/** Bytes the machine offers: FLM_GROW_MEMORY_LIMIT when set, else the total RAM. */
export function memoryBudget(): number {
  const env = process.env[MEMORY_LIMIT_ENV];
  if (env !== undefined && env !== '') {
    const v = Number(env);
    if (Number.isFinite(v) && v > 0) return v;
  }
  return totalmem();
}

/**
 * The memory growing to `d` needs whatever the streaming: an Int32 axis map (and its inverse)
 * per grown dimension, and about nine f32 rows of the widest matrix in flight (see
 * estimatePeakMemory in growth/plan-report.ts). Checked before the layout is built, since the
 * layout is itself that allocation.
 */
export function growMemoryProblem(d: ModelDims, prefix = ''): SizeProblem | undefined {
  const Q = d.num_attention_heads * d.head_dim,
    KV = d.num_key_value_heads * d.head_dim;
  const terms: [keyof ModelDims, number][] = [
    ['vocab_size', d.vocab_size * 8],
    ['hidden_size', d.hidden_size * 8 + 9 * 4 * d.hidden_size],
    ['intermediate_size', d.intermediate_size * 8 + 9 * 4 * d.intermediate_size],
    ['num_attention_heads', Q * 8 + 9 * 4 * Q],
    ['num_key_value_heads', KV * 8],
  ];
  const need = terms.reduce((a, [, b]) => a + b, 0);
  const budget = memoryBudget();
  if (need <= budget) return undefined;
  const worst = terms.reduce((a, b) => (b[1] > a[1] ? b : a));
  return {
    field: `${prefix}${worst[0]}`,
    message: `${d[worst[0]]} needs at least ${(need / 1e9).toFixed(1)} GB of memory to grow, more than the ${(budget / 1e9).toFixed(1)} GB this machine has (${MEMORY_LIMIT_ENV} overrides)`,
  };
}

/** A token count or sequence length within MAX_TOKENS / MAX_SEQ_LEN; `what` names the flag or field. */
export function countProblem(v: unknown, max: number, field: string, min = 1): SizeProblem | undefined {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    return { field, message: `must be an integer in [${min}, ${max}], got ${JSON.stringify(v)}` };
  }
  return undefined;
}
