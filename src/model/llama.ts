/**
 * The Llama / Tele-FLM decoder in tfjs, written to compute exactly what Hugging Face
 * transformers' LlamaForCausalLM computes (SPEC §1), plus MSG's masked model (SPEC §2).
 * One file, nanoGPT style: the in-memory pass, the layer-streamed pass (streaming.ts) and
 * training all call these same functions. Weights stay in HF layout ([out, in]); compute is f32.
 *
 * Memory: every op here allocates tensors. Each layer runs inside tf.tidy; forward() disposes
 * what it no longer needs, so callers only own what it returns. Under a gradient tape tfjs
 * keeps its own copies of the tensors the backward pass needs, so disposing is still safe.
 */
import * as tf from '@tensorflow/tfjs';
import { inputScale, logitScale, ropeDefault, type ModelConfig } from '../spec/config.ts';
import { ModelInputError, CheckpointError } from '../util/errors.ts';
import { hasTensor, LLAMA_TENSORS, shapeOf, SPEC_BY_ROLE, tensorName, type Role } from '../spec/arch.ts';
import { WIDE_BLOCK } from './stream-memory.ts';
import { roundToDtype, type DType } from '../util/dtype.ts';
import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import type { MaskTensors } from './mask-tensors.ts';

// ---- weights -----------------------------------------------------------------------------

export interface LayerWeights {
  inputNorm: tf.Tensor;
  q: tf.Tensor;
  k: tf.Tensor;
  v: tf.Tensor;
  o: tf.Tensor;
  postNorm: tf.Tensor;
  gate: tf.Tensor;
  up: tf.Tensor;
  down: tf.Tensor;
  /** Qwen2: q/k/v biases [nh·hd], [nkv·hd], [nkv·hd]. */
  qBias?: tf.Tensor;
  kBias?: tf.Tensor;
  vBias?: tf.Tensor;
  /** Qwen3: RMSNorm gains [hd] over each head's q / k, before RoPE. */
  qNorm?: tf.Tensor;
  kNorm?: tf.Tensor;
}

export interface LlamaWeights {
  embed: tf.Tensor;
  finalNorm: tf.Tensor;
  /** The LM head; with tied embeddings the same tensor as `embed`. */
  lmHead: tf.Tensor;
  layers: LayerWeights[];
}

/** LayerWeights field -> tensor role, from arch.ts (TensorSpec.field). */
export const LAYER_FIELDS: readonly [keyof LayerWeights, Role][] = LLAMA_TENSORS.filter((s) => s.perLayer).map((s) => [
  s.field as keyof LayerWeights,
  s.role,
]);

export async function loadTensor(ck: Checkpoint, cfg: ModelConfig, role: Role, layer?: number): Promise<tf.Tensor> {
  const name = tensorName(role, layer);
  if (!ck.has(name)) throw new CheckpointError('TensorNotFound', `${ck.dir}: tensor "${name}" is missing`);
  const want = shapeOf(cfg, role);
  const got = ck.info(name).shape;
  if (got.length !== want.length || got.some((d, k) => d !== want[k])) {
    throw new CheckpointError(
      'ConfigMismatch',
      `${ck.dir}: tensor "${name}" has shape [${got.join(', ')}] but config.json implies [${want.join(', ')}]`,
    );
  }
  return tf.tensor(await ck.readFloat32(name), want, 'float32');
}

/** Some of layer i's weights in f32 (all of them by default). */
export async function loadLayerWeights(ck: Checkpoint, i: number): Promise<LayerWeights>;
export async function loadLayerWeights<K extends keyof LayerWeights>(
  ck: Checkpoint,
  i: number,
  fields: readonly K[],
): Promise<Pick<LayerWeights, K>>;
export async function loadLayerWeights(
  ck: Checkpoint,
  i: number,
  fields?: readonly (keyof LayerWeights)[],
): Promise<Partial<LayerWeights>> {
  const out: Partial<LayerWeights> = {};
  try {
    for (const [field, role] of LAYER_FIELDS) {
      if (!hasTensor(ck.config, SPEC_BY_ROLE[role])) continue; // optional tensors of other families
      if (fields === undefined || fields.includes(field)) out[field] = await loadTensor(ck, ck.config, role, i);
    }
  } catch (e) {
    for (const t of Object.values(out)) t.dispose();
    throw e;
  }
  return out;
}

/** Every weight in f32 (small models, training). */
export async function loadWeights(ck: Checkpoint): Promise<LlamaWeights> {
  const cfg = ck.config;
  const loaded: tf.Tensor[] = [];
  try {
    const embed = await loadTensor(ck, cfg, 'embed');
    loaded.push(embed);
    const layers: LayerWeights[] = [];
    for (let i = 0; i < cfg.numLayers; i++) {
      const lw = await loadLayerWeights(ck, i);
      loaded.push(...Object.values(lw));
      layers.push(lw);
    }
    const finalNorm = await loadTensor(ck, cfg, 'final_norm');
    loaded.push(finalNorm);
    const lmHead = cfg.tieWordEmbeddings ? embed : await loadTensor(ck, cfg, 'lm_head');
    return { embed, finalNorm, lmHead, layers };
  } catch (e) {
    tf.dispose(loaded);
    throw e;
  }
}

export function disposeLayerWeights(lw: Partial<LayerWeights>): void {
  tf.dispose(Object.values(lw));
}

export function disposeWeights(w: LlamaWeights): void {
  tf.dispose([w.embed, w.finalNorm, w.lmHead]);
  for (const l of w.layers) disposeLayerWeights(l);
}

// ---- positions: RoPE tables and the causal mask ------------------------------------------

/**
 * RoPE frequencies as transformers computes them in float32:
 * inv_freq = 1 / theta^(arange(0, d, 2) / d). `dtype` rounds them as `model.to(dtype)` does
 * to transformers' inv_freq buffer (the bf16 fixture was computed that way).
 */
export function ropeInvFreq(headDim: number, theta: number, dtype: DType = 'F32'): Float32Array {
  const f = new Float32Array(headDim / 2);
  for (let i = 0; i < headDim / 2; i++) {
    const e = Math.fround((2 * i) / headDim);
    f[i] = Math.fround(1 / Math.fround(Math.pow(theta, e)));
  }
  return roundToDtype(f, dtype);
}

/** Everything that depends on the sequence length only: cos/sin tables and the causal bias. */
export interface Rope {
  seqLen: number;
  /** [T, hd]: HF's cat(freqs, freqs) layout. */
  cos: tf.Tensor2D;
  sin: tf.Tensor2D;
  /** [g*T, T] with g = nh/nkv: 0 where key position ≤ query position (and within the sliding window), else -1e30. */
  causal: tf.Tensor2D;
  /** [hd, hd] signed permutation: x · rotate = rotate_half(x). */
  rotate: tf.Tensor2D;
  /** The query heads per KV head (g) the causal bias was laid out for. */
  group: number;
  dispose(): void;
}

/**
 * inv_freq and the cos/sin scale of a config's RoPE for a sequence of length seqLen, as
 * transformers' modeling_rope_utils.py computes them (`_compute_default_rope_parameters`,
 * `_compute_linear_scaling_rope_parameters`, `_compute_dynamic_ntk_parameters`,
 * `_compute_llama3_parameters`, `_compute_yarn_parameters`), rounded to f32 at the end.
 * 'default' is ropeInvFreq's f32 computation exactly (the HF fixtures pin it).
 */
export function ropeFrequencies(
  cfg: ModelConfig,
  seqLen: number,
  dtype: DType = 'F32',
): { invFreq: Float32Array; attentionScaling: number } {
  const d = cfg.headDim;
  const base = cfg.ropeTheta;
  const r = cfg.rope;
  if (r.type === 'default') return { invFreq: ropeInvFreq(d, base, dtype), attentionScaling: 1 };
  const plain = (theta: number) => Array.from({ length: d / 2 }, (_, i) => 1 / Math.pow(theta, (2 * i) / d));
  // required for linear, dynamic and llama3 (config_rules.json: the parse refuses a config without it); yarn derives its own
  const factor = r.factor as number;
  let inv: number[];
  let scaling = 1;
  switch (r.type) {
    case 'linear':
      inv = plain(base).map((f) => f / factor);
      break;
    case 'dynamic': {
      // the NTK base grows with the sequence once it exceeds max_position_embeddings
      const len = Math.max(seqLen, cfg.maxPositionEmbeddings);
      inv = plain(base * Math.pow((factor * len) / cfg.maxPositionEmbeddings - (factor - 1), d / (d - 2)));
      break;
    }
    case 'llama3': {
      const old = r.originalMaxPositionEmbeddings as number;
      const lo = r.lowFreqFactor as number,
        hi = r.highFreqFactor as number;
      const loWave = old / lo,
        hiWave = old / hi;
      inv = plain(base).map((f) => {
        const wave = (2 * Math.PI) / f;
        if (wave < hiWave) return f;
        if (wave > loWave) return f / factor;
        const smooth = (old / wave - lo) / (hi - lo);
        return (1 - smooth) * (f / factor) + smooth * f;
      });
      break;
    }
    case 'yarn': {
      const orig = r.originalMaxPositionEmbeddings ?? cfg.maxPositionEmbeddings;
      const fac = r.factor ?? cfg.maxPositionEmbeddings / orig;
      const mscale = (s: number, m = 1) => (s <= 1 ? 1 : 0.1 * m * Math.log(s) + 1);
      scaling =
        r.attentionFactor ??
        (r.mscale !== undefined && r.mscaleAllDim !== undefined && r.mscale !== 0 && r.mscaleAllDim !== 0
          ? mscale(fac, r.mscale) / mscale(fac, r.mscaleAllDim)
          : mscale(fac));
      const corr = (rot: number) => (d * Math.log(orig / (rot * 2 * Math.PI))) / (2 * Math.log(base));
      let low = corr(r.betaFast ?? ropeDefault('yarn', 'beta_fast')),
        high = corr(r.betaSlow ?? ropeDefault('yarn', 'beta_slow'));
      if (r.truncate !== false) {
        low = Math.floor(low);
        high = Math.ceil(high);
      }
      low = Math.max(low, 0);
      high = Math.min(high, d - 1);
      if (low === high) high += 0.001;
      inv = plain(base).map((f, i) => {
        const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
        const extra = 1 - ramp; // share of the unscaled (extrapolated) frequency
        return (f / fac) * (1 - extra) + f * extra;
      });
      break;
    }
  }
  return { invFreq: roundToDtype(Float32Array.from(inv), dtype), attentionScaling: scaling };
}

export interface RopeOptions {
  /** Round inv_freq to this dtype first (to reproduce a reference computed that way). */
  invFreqDtype?: DType;
}

export function makeRope(cfg: ModelConfig, seqLen: number, opts: RopeOptions = {}): Rope {
  const hd = cfg.headDim;
  const half = hd / 2;
  const { invFreq: inv, attentionScaling } = ropeFrequencies(cfg, seqLen, opts.invFreqDtype ?? 'F32');
  const cos = new Float32Array(seqLen * hd);
  const sin = new Float32Array(seqLen * hd);
  for (let t = 0; t < seqLen; t++) {
    for (let i = 0; i < half; i++) {
      // transformers forms the angle as an f32 product, then takes cos/sin of that f32 value.
      const ang = Math.fround(t * inv[i]);
      const c = Math.fround(Math.cos(ang)) * attentionScaling,
        s = Math.fround(Math.sin(ang)) * attentionScaling;
      cos[t * hd + i] = c;
      cos[t * hd + i + half] = c;
      sin[t * hd + i] = s;
      sin[t * hd + i + half] = s;
    }
  }
  const g = cfg.numHeads / cfg.numKvHeads;
  const causal = new Float32Array(g * seqLen * seqLen);
  const w = cfg.slidingWindow;
  for (let r = 0; r < g * seqLen; r++) {
    const t = r % seqLen;
    for (let s = t + 1; s < seqLen; s++) causal[r * seqLen + s] = -1e30;
    // Mistral: key s is visible from query t only when t - s < sliding_window (masking_utils.sliding_window_overlay)
    if (w !== undefined) for (let s = 0; s <= t - w; s++) causal[r * seqLen + s] = -1e30;
  }
  const rotate = new Float32Array(hd * hd); // x · rotate = cat(-x2, x1)
  for (let c = 0; c < half; c++) {
    rotate[(c + half) * hd + c] = -1;
    rotate[c * hd + c + half] = 1;
  }
  const tensors = {
    rotate: tf.tensor2d(rotate, [hd, hd]),
    cos: tf.tensor2d(cos, [seqLen, hd]),
    sin: tf.tensor2d(sin, [seqLen, hd]),
    causal: tf.tensor2d(causal, [g * seqLen, seqLen]),
  };
  return { seqLen, group: g, ...tensors, dispose: () => tf.dispose(Object.values(tensors)) };
}

// ---- building blocks ---------------------------------------------------------------------

/** Reject ids the model cannot embed, with a message that says what is wrong. */
export function validateIds(cfg: ModelConfig, ids: tf.Tensor, what = 'input_ids'): void {
  if (ids.rank !== 2) throw new ModelInputError(`${what}: expected rank 2 [batch, seq], got shape [${ids.shape.join(', ')}]`);
  if (ids.dtype !== 'int32') throw new ModelInputError(`${what}: expected int32 token ids, got ${ids.dtype}`);
  if (ids.shape[0] === 0 || ids.shape[1] === 0) throw new ModelInputError(`${what}: empty shape [${ids.shape.join(', ')}]`);
  const v = ids.dataSync();
  for (let k = 0; k < v.length; k++) {
    if (v[k] < 0 || v[k] >= cfg.vocabSize) {
      throw new ModelInputError(`${what}: token id ${v[k]} at position ${k} is outside the vocabulary [0, ${cfg.vocabSize})`);
    }
  }
}

/**
 * Row gather with a hand-written gradient: the wasm backend has no UnsortedSegmentSum, which
 * tf.gather's built-in gradient needs. Backward scatters dy back onto the rows; scatterND adds
 * duplicate indices, so a token that occurs twice gets both contributions.
 */
export function gatherRows(table: tf.Tensor, idx: tf.Tensor1D): tf.Tensor2D {
  const [rows, cols] = table.shape;
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const t = args[0] as tf.Tensor;
    const save = args[1] as tf.GradSaveFunc;
    save([idx]);
    return {
      value: tf.gather(t, idx) as tf.Tensor2D,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.scatterND(tf.expandDims(saved[0], 1), dy, [rows, cols]),
    };
  });
  return f(table) as tf.Tensor2D;
}

/** Embedding output x0 [B,T,H] = embed[ids] * input_mult ⊙ m_h. */
export function embedTokens(cfg: ModelConfig, embed: tf.Tensor, ids: tf.Tensor2D, masks?: MaskTensors): tf.Tensor3D {
  return tf.tidy(() => {
    const [B, T] = ids.shape;
    let x: tf.Tensor = gatherRows(embed, tf.reshape(ids, [B * T]) as tf.Tensor1D);
    const s = inputScale(cfg);
    if (s !== 1) x = tf.mul(x, s);
    if (masks !== undefined) x = tf.mul(x, masks.hidden);
    return tf.reshape(x, [B, T, embed.shape[1] as number]) as tf.Tensor3D;
  });
}

/**
 * RMSNorm as transformers: x * rsqrt(mean(x²) + eps) * g. With a hidden mask the statistics
 * see only unmasked coordinates: sum(m·x²) / sum(m) (SPEC §2).
 */
export function rmsNorm(x: tf.Tensor, g: tf.Tensor, eps: number, hiddenMask?: tf.Tensor1D): tf.Tensor {
  return tf.tidy(() => {
    const sq = tf.square(x);
    const variance =
      hiddenMask === undefined ? tf.mean(sq, -1, true) : tf.div(tf.sum(tf.mul(sq, hiddenMask), -1, true), tf.sum(hiddenMask));
    return tf.mul(tf.mul(x, tf.rsqrt(tf.add(variance, eps))), g);
  });
}

/**
 * HF's rotate_half layout: x * cos + cat(-x2, x1) * sin on the last axis; x [B,T,heads,hd].
 * cat(-x2, x1) is x · R with R a signed permutation matrix: one fast 2-D product, exact (each
 * output is one input times ±1), where slicing would copy the whole tensor per slice on wasm.
 */
function applyRope(x: tf.Tensor4D, rope: Rope): tf.Tensor4D {
  const [B, T, nh, hd] = x.shape;
  const rotated = tf.reshape(matMul2d(tf.reshape(x, [B * T * nh, hd]), rope.rotate), [B, T, nh, hd]);
  const cos = tf.reshape(rope.cos, [1, T, 1, hd]);
  const sin = tf.reshape(rope.sin, [1, T, 1, hd]);
  return tf.add(tf.mul(x, cos), tf.mul(rotated, sin)) as tf.Tensor4D;
}

/**
 * 2-D matMul a [m,k] · b [k,n] on untransposed operands, forward and backward. The wasm backend
 * reaches XNNPACK only for a rank-2 product without transpose flags; anything else (a transpose
 * flag, a batch dimension, and so the built-in gradient, which uses the flags) falls back to a
 * loop about 13× slower. Explicit transposes cost O(size) against the product's O(size·k).
 */
export const matMul2d = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const a = args[0] as tf.Tensor2D,
    b = args[1] as tf.Tensor2D;
  (args[2] as tf.GradSaveFunc)([a, b]);
  return {
    value: tf.matMul(a, b),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [
      tf.matMul(dy as tf.Tensor2D, tf.transpose(saved[1]) as tf.Tensor2D),
      tf.matMul(tf.transpose(saved[0]) as tf.Tensor2D, dy as tf.Tensor2D),
    ],
  };
}) as (a: tf.Tensor, b: tf.Tensor) => tf.Tensor2D;

/**
 * The n matrices [r, c] of x [n, r, c] as separate tensors. tf.unstack/tf.slice on wasm copy the
 * whole input once per piece (O(n²)); a row gather copies only the piece.
 */
function pieces(x: tf.Tensor, n: number, r: number, c: number): tf.Tensor2D[] {
  if (n === 1) return [tf.reshape(x, [r, c])];
  const flat = tf.reshape(x, [n, r * c]);
  return Array.from({ length: n }, (_, i) => tf.reshape(gatherRows(flat, tf.tensor1d([i], 'int32')), [r, c]) as tf.Tensor2D);
}

/** x [N, in] times a Linear weight in HF layout [out, in]; the transposed copy lives only for this product. */
export function linear(x: tf.Tensor, w: tf.Tensor): tf.Tensor2D {
  return tf.tidy(() => matMul2d(x, tf.transpose(w)));
}

function wideLinear(x: tf.Tensor, w: tf.Tensor): tf.Tensor2D {
  const out = w.shape[0];
  if (out <= 2 * WIDE_BLOCK) return linear(x, w);
  const sizes: number[] = [];
  for (let o = 0; o < out; o += WIDE_BLOCK) sizes.push(Math.min(WIDE_BLOCK, out - o));
  return tf.concat(
    tf.split(w, sizes, 0).map((blk) => linear(x, blk)),
    1,
  ) as tf.Tensor2D;
}

/**
 * Causal self-attention with grouped-query attention. Query head j reads KV head ⌊j/g⌋ with
 * g = nh/nkv; the g query heads of one group are contiguous, so [B, nh, T, hd] reshapes to
 * [B·nkv, g·T, hd] and one batched matMul per group serves them all without repeating K/V.
 * q [N, nh*hd], k/v [N, nkv*hd]; returns the head outputs (head-masked) as [N, nh*hd].
 */
export function attention(
  cfg: ModelConfig,
  q: tf.Tensor,
  k: tf.Tensor,
  v: tf.Tensor,
  B: number,
  T: number,
  rope: Rope,
  headMask?: tf.Tensor1D,
  qkNorm?: { q: tf.Tensor; k: tf.Tensor },
): tf.Tensor2D {
  const nh = cfg.numHeads,
    nkv = cfg.numKvHeads,
    hd = cfg.headDim,
    g = nh / nkv;
  // Qwen3: RMSNorm over each head's head_dim coordinates, before RoPE
  const headNorm = (x: tf.Tensor, gain: tf.Tensor | undefined, heads: number) =>
    gain === undefined ? x : rmsNorm(tf.reshape(x, [B * T * heads, hd]), gain, cfg.rmsNormEps);
  const qr = applyRope(tf.reshape(headNorm(q, qkNorm?.q, nh), [B, T, nh, hd]) as tf.Tensor4D, rope);
  const kr = applyRope(tf.reshape(headNorm(k, qkNorm?.k, nkv), [B, T, nkv, hd]) as tf.Tensor4D, rope);
  const qh = tf.reshape(tf.transpose(qr, [0, 2, 1, 3]), [B * nkv, g * T, hd]) as tf.Tensor3D;
  const khT = tf.reshape(tf.transpose(kr, [0, 2, 3, 1]), [B * nkv, hd, T]) as tf.Tensor3D; // K^T per KV head
  const vh = tf.reshape(tf.transpose(tf.reshape(v, [B, T, nkv, hd]), [0, 2, 1, 3]), [B * nkv, T, hd]) as tf.Tensor3D;
  // one (batch, KV head) at a time: wasm's batched matMul is ~10× slower than its 2-D product
  const n = B * nkv;
  const qs = pieces(qh, n, g * T, hd),
    ks = pieces(khT, n, hd, T),
    vs = pieces(vh, n, T, hd);
  const outs = qs.map((qi, i) =>
    matMul2d(tf.softmax(tf.add(tf.mul(matMul2d(qi, ks[i]), 1 / Math.sqrt(hd)), rope.causal)), vs[i]),
  );
  let out: tf.Tensor = tf.reshape(n === 1 ? outs[0] : tf.concat(outs, 0), [B, nh, T, hd]);
  if (headMask !== undefined) out = tf.mul(out, tf.reshape(headMask, [1, nh, 1, 1]));
  return tf.reshape(tf.transpose(out, [0, 2, 1, 3]), [B * T, nh * hd]) as tf.Tensor2D;
}

/** x + r_l · (m_h ⊙ y): every write into the residual stream (plain model: x + y). */
export function residualAdd(x: tf.Tensor, y: tf.Tensor, masks: MaskTensors | undefined, layerIndex: number): tf.Tensor {
  if (masks === undefined) return tf.add(x, y);
  return tf.add(x, tf.mul(tf.mul(y, masks.hidden), masks.layers[layerIndex].residual));
}

export type AttentionWeights = Pick<
  LayerWeights,
  'inputNorm' | 'q' | 'k' | 'v' | 'o' | 'qBias' | 'kBias' | 'vBias' | 'qNorm' | 'kNorm'
>;

/** The LayerWeights fields the attention half reads (optional ones load only where the family has them). */
export const ATTENTION_FIELDS: readonly (keyof AttentionWeights)[] = [
  'inputNorm',
  'q',
  'k',
  'v',
  'o',
  'qBias',
  'kBias',
  'vBias',
  'qNorm',
  'kNorm',
];

/** x [N, in] · w^T (+ bias [out]). */
function linearBias(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor | undefined): tf.Tensor2D {
  const y = linear(x, w);
  return b === undefined ? y : (tf.add(y, b) as tf.Tensor2D);
}
export type MlpWeights = Pick<LayerWeights, 'postNorm' | 'gate' | 'up' | 'down'>;

/** x + attention(rmsnorm(x)): the first half of a decoder layer; x [B,T,H]. */
export function attentionBlock(
  cfg: ModelConfig,
  w: AttentionWeights,
  x: tf.Tensor3D,
  layerIndex: number,
  masks: MaskTensors | undefined,
  rope: Rope,
): tf.Tensor3D {
  return tf.tidy(() => {
    const [B, T, H] = x.shape;
    if (rope.seqLen !== T) throw new ModelInputError(`RoPE tables are for sequence length ${rope.seqLen}, input has ${T}`);
    if (rope.group !== cfg.numHeads / cfg.numKvHeads)
      throw new ModelInputError(
        `RoPE tables were made for ${rope.group} query heads per KV head, the config has ${cfg.numHeads / cfg.numKvHeads}`,
      );
    const x2 = tf.reshape(x, [B * T, H]);
    const h = rmsNorm(x2, w.inputNorm, cfg.rmsNormEps, masks?.hidden);
    if (cfg.qkvBias && (w.qBias === undefined || w.kBias === undefined || w.vBias === undefined))
      throw new ModelInputError('the config has q/k/v biases; the weights lack them');
    if (cfg.qkNorm && (w.qNorm === undefined || w.kNorm === undefined))
      throw new ModelInputError('the config has q_norm/k_norm; the weights lack them');
    const qk = cfg.qkNorm ? { q: w.qNorm as tf.Tensor, k: w.kNorm as tf.Tensor } : undefined;
    const att = attention(
      cfg,
      linearBias(h, w.q, w.qBias),
      linearBias(h, w.k, w.kBias),
      linearBias(h, w.v, w.vBias),
      B,
      T,
      rope,
      masks?.layers[layerIndex].heads,
      qk,
    );
    return tf.reshape(residualAdd(x2, linear(att, w.o), masks, layerIndex), [B, T, H]) as tf.Tensor3D;
  });
}

/**
 * SwiGLU on normed h [N,H] for FFN units given by the rows of gate/up (and columns of down):
 * down(silu(gate h) · up h ⊙ m_f). The streamed pass may call it on blocks of units and sum.
 */
export function swiglu(h: tf.Tensor, gate: tf.Tensor, up: tf.Tensor, down: tf.Tensor, ffnMask?: tf.Tensor1D): tf.Tensor2D {
  return tf.tidy(() => {
    const g = linear(h, gate);
    let act: tf.Tensor = tf.mul(tf.mul(g, tf.sigmoid(g)), linear(h, up));
    if (ffnMask !== undefined) act = tf.mul(act, ffnMask);
    return linear(act, down);
  });
}

/** x + mlp(rmsnorm(x)): the second half of a decoder layer; x [B,T,H]. */
export function mlpBlock(
  cfg: ModelConfig,
  w: MlpWeights,
  x: tf.Tensor3D,
  layerIndex: number,
  masks: MaskTensors | undefined,
): tf.Tensor3D {
  return tf.tidy(() => {
    const [B, T, H] = x.shape;
    const x2 = tf.reshape(x, [B * T, H]);
    const h = rmsNorm(x2, w.postNorm, cfg.rmsNormEps, masks?.hidden);
    return tf.reshape(residualAdd(x2, swiglu(h, w.gate, w.up, w.down, masks?.layers[layerIndex].ffn), masks, layerIndex), [
      B,
      T,
      H,
    ]) as tf.Tensor3D;
  });
}

/** One pre-norm decoder layer: attention then SwiGLU MLP, each added to the residual stream. */
export function decoderLayer(
  cfg: ModelConfig,
  lw: LayerWeights,
  x: tf.Tensor3D,
  layerIndex: number,
  masks: MaskTensors | undefined,
  rope: Rope,
): tf.Tensor3D {
  return tf.tidy(() => mlpBlock(cfg, lw, attentionBlock(cfg, lw, x, layerIndex, masks, rope), layerIndex, masks));
}

/** The final RMSNorm (HF's hidden_states[L]); x [B,T,H]. */
export function finalHidden(cfg: ModelConfig, finalNorm: tf.Tensor, x: tf.Tensor3D, masks?: MaskTensors): tf.Tensor3D {
  return rmsNorm(x, finalNorm, cfg.rmsNormEps, masks?.hidden) as tf.Tensor3D;
}

/**
 * Logits from the normed hidden states; `lmHead` may be a block of rows [Vb, H] of the full
 * head (the streamed pass), `vocabBias` then the matching slice.
 */
export function lmHeadLogits(cfg: ModelConfig, lmHead: tf.Tensor, normed: tf.Tensor3D, vocabBias?: tf.Tensor1D): tf.Tensor3D {
  return tf.tidy(() => {
    const [B, T, H] = normed.shape;
    let logits: tf.Tensor = wideLinear(tf.reshape(normed, [B * T, H]), lmHead);
    const s = logitScale(cfg);
    if (s !== 1) logits = tf.mul(logits, s);
    if (vocabBias !== undefined) logits = tf.add(logits, vocabBias);
    return tf.reshape(logits, [B, T, lmHead.shape[0]]) as tf.Tensor3D;
  });
}

/** Final norm then LM head, µP scale and vocab mask: logits [B,T,V]. */
export function finalLogits(
  cfg: ModelConfig,
  finalNorm: tf.Tensor,
  lmHead: tf.Tensor,
  x: tf.Tensor3D,
  masks?: MaskTensors,
): tf.Tensor3D {
  return tf.tidy(() => lmHeadLogits(cfg, lmHead, finalHidden(cfg, finalNorm, x, masks), masks?.vocabBias));
}

// ---- the whole model ---------------------------------------------------------------------

export interface ForwardOptions {
  masks?: MaskTensors;
  /** Return HF's hidden_states: L+1 tensors [B,T,H], 0 = embeddings, L = after the final norm. */
  collectHidden?: boolean;
  /** Precomputed tables for this sequence length (reused across calls, e.g. in training). */
  rope?: Rope;
  ropeOptions?: RopeOptions;
  /** Skip the host-side id check (training loops that validated their data once). */
  skipIdCheck?: boolean;
}

export interface ForwardResult {
  logits: tf.Tensor3D;
  hidden?: tf.Tensor3D[];
}

/** The full forward pass; differentiable. The caller owns (and disposes) what is returned. */
export function forward(cfg: ModelConfig, w: LlamaWeights, ids: tf.Tensor2D, opts: ForwardOptions = {}): ForwardResult {
  if (opts.skipIdCheck !== true) validateIds(cfg, ids);
  if (w.layers.length !== cfg.numLayers)
    throw new ModelInputError(`weights have ${w.layers.length} layers, config ${cfg.numLayers}`);
  if (opts.masks !== undefined && opts.masks.layers.length !== cfg.numLayers) {
    throw new ModelInputError(`masks have ${opts.masks.layers.length} layers, config ${cfg.numLayers}`);
  }
  const T = ids.shape[1];
  const rope = opts.rope ?? makeRope(cfg, T, opts.ropeOptions);
  const collect = opts.collectHidden === true;
  const hidden: tf.Tensor3D[] = [];
  try {
    let x = embedTokens(cfg, w.embed, ids, opts.masks);
    if (collect) hidden.push(x);
    for (let l = 0; l < cfg.numLayers; l++) {
      const next = decoderLayer(cfg, w.layers[l], x, l, opts.masks, rope);
      // Collected states stay alive for the caller; the rest is freed as soon as it is consumed.
      if (!collect) x.dispose();
      else if (l < cfg.numLayers - 1) hidden.push(next);
      x = next;
    }
    const normed = finalHidden(cfg, w.finalNorm, x, opts.masks);
    x.dispose();
    const logits = lmHeadLogits(cfg, w.lmHead, normed, opts.masks?.vocabBias);
    if (collect) hidden.push(normed);
    else normed.dispose();
    return collect ? { logits, hidden } : { logits };
  } finally {
    if (opts.rope === undefined) rope.dispose();
  }
}
