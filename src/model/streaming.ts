/**
 * The forward pass with only part of one layer's weights in memory at a time: each layer runs
 * as its attention half then its MLP half, each read from the checkpoint (converted to f32),
 * run and freed. Only the embedding rows of the tokens used are read, and the LM head is applied
 * in row blocks. The residual stream lives in host memory between halves.
 *
 * wasm's heap is 32-bit (4 GiB), so a half that does not fit runs in blocks (see blockedAttention,
 * blockedMlp): f32 weights per block at most `maxBlockBytes` (attention by groups of KV heads,
 * the MLP by FFN units, o_proj/down_proj/lm_head by row bands) and activations per block at most
 * `maxActivationBytes` (tokens in micro-batches of whole sequences). Small halves run as one
 * block, exactly llama.ts's attentionBlock/mlpBlock. The math is llama.ts's functions, unchanged;
 * blocked results equal the unblocked pass up to f32 summation order. The byte counts behind the
 * blocking, and plan's estimate of this pass's peak, are in stream-memory.ts (no tfjs there).
 */
import * as tf from '@tensorflow/tfjs';
import { headRole, tensorName } from '../spec/arch.ts';
import { startProgress, type Progress, type ProgressFactory } from '../util/progress.ts';
import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import { MAX_SEQ_LEN, MAX_TOKENS } from '../util/limits.ts';
import type { ModelConfig } from '../spec/config.ts';
import { CheckpointError, ModelInputError } from '../util/errors.ts';
import type { MaskSet } from '../checkpoint/masks.ts';
import { CheckpointFolder } from '../checkpoint/checkpoint-folder.ts';
import {
  ATTENTION_FIELDS,
  attention,
  attentionBlock,
  disposeLayerWeights,
  embedTokens,
  finalHidden,
  lmHeadLogits,
  loadLayerWeights,
  loadTensor,
  makeRope,
  matMul2d,
  mlpBlock,
  residualAdd,
  rmsNorm,
  validateIds,
  type Rope,
  type RopeOptions,
} from './llama.ts';
import { disposeMaskTensors, masksToTensors, type MaskTensors } from './mask-tensors.ts';
import {
  attentionBytesPerToken,
  attentionExtraBytes,
  DEFAULT_MAX_ACTIVATION_BYTES,
  DEFAULT_MAX_BLOCK_BYTES,
  layerF32Bytes,
  mlpBytesPerToken,
  WIDE_BLOCK,
  type StreamLimits,
} from './stream-memory.ts';

/** Token ids: a [B,T] int32 tensor, or rows of ids. */
export type TokenIds = tf.Tensor2D | ArrayLike<number>[];

export interface StreamOptions extends StreamLimits {
  /** MSG masks; undefined loads the checkpoint's masks.safetensors when present, null forces the plain model. */
  masks?: MaskSet | null;
  collectHidden?: boolean;
  /** Called after the embedding (0) and after each layer (1..L), with L+1 the total. */
  onLayer?: (done: number, total: number) => void;
  ropeOptions?: RopeOptions;
  /** Rows of lm_head per block (default: at most one layer's f32 size and 4096 rows). */
  lmHeadBlockRows?: number;
  /** Progress over the f32 weight bytes processed (one unit per weight byte per pass). */
  progress?: ProgressFactory;
  progressLabel?: string;
  /**
   * Called with each layer's residual stream before and after it ([B·T, H] row-major, raw: the
   * last layer's output is before the final norm). Distance-based layer selection uses it.
   */
  onResidual?: (layer: number, xIn: Float32Array, xOut: Float32Array) => void;
  /** Skip the final norm and LM head (logits come back empty): for callers that only need onResidual. */
  skipLogits?: boolean;
}

export interface StreamResult {
  /** [B,T,V] row-major. */
  logits: Float32Array;
  /** HF's hidden_states, each [B,T,H]: 0 = embeddings, L = after the final norm. */
  hidden?: Float32Array[];
  batch: number;
  seqLen: number;
  masked: boolean;
}

export function idsToTensor(ids: TokenIds): tf.Tensor2D {
  if (ids instanceof tf.Tensor) return ids;
  if (ids.length === 0) throw new ModelInputError('input_ids: no sequences');
  const T = ids[0].length;
  const flat = new Int32Array(ids.length * T);
  ids.forEach((row, b) => {
    if (row.length !== T) throw new ModelInputError(`input_ids: row ${b} has ${row.length} ids, row 0 has ${T}`);
    for (let t = 0; t < T; t++) {
      const v = row[t];
      if (!Number.isInteger(v)) throw new ModelInputError(`input_ids: row ${b} position ${t}: ${v} is not an integer id`);
      flat[b * T + t] = v;
    }
  });
  return tf.tensor2d(flat, [ids.length, T], 'int32');
}

/** Read only the embedding rows of the ids used, in contiguous runs; ids are remapped onto them. */
async function readEmbeddingRows(ck: Checkpoint, ids: Int32Array): Promise<{ table: tf.Tensor2D; local: Int32Array }> {
  const name = tensorName('embed');
  if (!ck.has(name)) throw new CheckpointError('TensorNotFound', `${ck.dir}: tensor "${name}" is missing`);
  const H = ck.config.hiddenSize;
  const uniq = [...new Set(ids)].sort((a, b) => a - b);
  const slot = new Map<number, number>();
  uniq.forEach((id, k) => slot.set(id, k));
  const data = new Float32Array(uniq.length * H);
  for (let k = 0; k < uniq.length;) {
    let e = k + 1;
    while (e < uniq.length && uniq[e] === uniq[e - 1] + 1) e++;
    data.set(await ck.readRowsFloat32(name, uniq[k], uniq[e - 1] + 1), k * H);
    k = e;
  }
  return { table: tf.tensor2d(data, [uniq.length, H]), local: Int32Array.from(ids, (id) => slot.get(id) as number) };
}

/** The forward pass of a checkpoint, layer by layer. Results come back as host arrays. */
export async function streamedForward(ck: Checkpoint, ids: TokenIds, opts: StreamOptions = {}): Promise<StreamResult> {
  const cfg = ck.config;
  const L = cfg.numLayers;
  const idsT = idsToTensor(ids);
  const owned = idsT !== ids;
  const maskSet = opts.masks === null ? undefined : (opts.masks ?? (await CheckpointFolder.of(ck).masks()));
  let masks: MaskTensors | undefined;
  const [B, T] = idsT.shape;
  // refused before the [group·T, T] causal mask and the [B·T, ·] activations are allocated
  if (T > MAX_SEQ_LEN || B * T > MAX_TOKENS) {
    if (owned) idsT.dispose();
    throw new ModelInputError(
      `input of ${B} × ${T} tokens: the sequence length must be at most ${MAX_SEQ_LEN} and the tokens at most ${MAX_TOKENS}`,
    );
  }
  const rope = makeRope(cfg, T, opts.ropeOptions);
  const hidden: Float32Array[] | undefined = opts.collectHidden === true ? [] : undefined;
  const total = L * layerF32Bytes(cfg) + (opts.skipLogits === true ? 0 : 4 * cfg.vocabSize * cfg.hiddenSize);
  const bar = startProgress(opts.progress, false, opts.progressLabel ?? 'forward', total, 'bytes');
  const run: Run = {
    ck,
    B,
    T,
    masks: undefined,
    rope,
    bar,
    done: 0,
    maxWeights: opts.maxBlockBytes ?? DEFAULT_MAX_BLOCK_BYTES,
    maxActs: opts.maxActivationBytes ?? DEFAULT_MAX_ACTIVATION_BYTES,
  };
  try {
    validateIds(cfg, idsT);
    masks = maskSet === undefined ? undefined : masksToTensors(maskSet);
    run.masks = masks;
    let x = await embedIds(ck, idsT, masks);
    if (hidden !== undefined) hidden.push(x);
    opts.onLayer?.(0, L + 1);
    for (let l = 0; l < L; l++) {
      const xIn = x;
      x = await withLayerContext(l, () => streamLayer(run, l, x));
      if (hidden !== undefined && l < L - 1) hidden.push(x);
      opts.onResidual?.(l, xIn, x);
      opts.onLayer?.(l + 1, L + 1);
    }
    if (opts.skipLogits === true) return { logits: new Float32Array(0), batch: B, seqLen: T, masked: masks !== undefined };
    const normed = await finalHiddenFrom(run, x);
    if (hidden !== undefined) hidden.push(normed);
    const logits = await blockedLogits(run, normed, opts.lmHeadBlockRows);
    // finite weights can still overflow (huge norms, f32 range): never hand back NaN logits
    // (-Infinity is how a vocab mask removes padding ids, so it is allowed when masked)
    const bad = logits.findIndex((v) => Number.isNaN(v) || v === Infinity || (v === -Infinity && masks === undefined));
    if (bad >= 0)
      throw new ModelInputError(
        `${ck.dir}: logits are non-finite (${logits[bad]} at position ${Math.floor(bad / cfg.vocabSize)}, token ${bad % cfg.vocabSize}): the activations overflowed`,
      );
    return { logits, ...(hidden !== undefined ? { hidden } : {}), batch: B, seqLen: T, masked: masks !== undefined };
  } finally {
    bar.stop();
    rope.dispose();
    if (masks !== undefined) disposeMaskTensors(masks);
    if (owned) idsT.dispose();
  }
}

/** One pass's state: the residual stream is host memory [B·T, H] between halves. */
interface Run {
  ck: Checkpoint;
  B: number;
  T: number;
  masks: MaskTensors | undefined;
  rope: Rope;
  bar: Progress;
  done: number;
  maxWeights: number;
  maxActs: number;
}

function tick(run: Run, weightBytes: number): void {
  run.done += weightBytes;
  run.bar.update(run.done);
}

/**
 * A half-layer's bytes done: the blocks inside it already ticked their own share as they ran
 * (so at 1T widths, where a half is minutes of blocks, the bar moves within it); this brings
 * the count to exactly `start + bytes`.
 */
function finishHalf(run: Run, start: number, bytes: number): void {
  run.done = start;
  tick(run, bytes);
}

/** x_0 [B·T, H]: the embedding rows of the ids used, read from the checkpoint. */
async function embedIds(ck: Checkpoint, idsT: tf.Tensor2D, masks: MaskTensors | undefined): Promise<Float32Array> {
  const [B, T] = idsT.shape;
  const { table, local } = await readEmbeddingRows(ck, idsT.dataSync() as Int32Array);
  const localT = tf.tensor2d(local, [B, T], 'int32');
  try {
    const x = embedTokens(ck.config, table, localT, masks);
    try {
      return (await x.data()) as Float32Array;
    } finally {
      x.dispose();
    }
  } finally {
    tf.dispose([table, localT]);
  }
}

/** f32 rows [r0, r1) of a tensor (checked finite by readRowsFloat32), as [r1-r0, cols]. */
async function readRowsF32(ck: Checkpoint, name: string, r0: number, r1: number, cols: number): Promise<tf.Tensor2D> {
  if (!ck.has(name)) throw new CheckpointError('TensorNotFound', `${ck.dir}: tensor "${name}" is missing`);
  return tf.tensor2d(await ck.readRowsFloat32(name, r0, r1), [r1 - r0, cols]);
}

/** Host data of a tensor, which is then disposed. */
async function take(t: tf.Tensor): Promise<Float32Array> {
  try {
    return (await t.data()) as Float32Array;
  } finally {
    t.dispose();
  }
}

/** Copy block [rows, width] into columns [c0, c0+width) of host matrix `dst` (row length `cols`) from row r0. */
function writeColumns(dst: Float32Array, cols: number, r0: number, c0: number, block: Float32Array, width: number): void {
  const rows = block.length / width;
  if (width === cols) {
    dst.set(block, r0 * cols);
    return;
  }
  for (let r = 0; r < rows; r++) dst.set(block.subarray(r * width, (r + 1) * width), (r0 + r) * cols + c0);
}

/** Rows per token micro-batch for `perToken` activation bytes (whole sequences when `whole`). */
function tokenChunk(run: Run, perToken: number, whole: boolean): number {
  const N = run.B * run.T;
  const rows = Math.max(1, Math.floor(run.maxActs / perToken));
  if (!whole) return Math.min(N, rows);
  return Math.min(run.B, Math.max(1, Math.floor(rows / run.T))) * run.T;
}

/** f(rows [r0, r1)) over micro-batches of `chunk` token rows. */
async function overTokens(N: number, chunk: number, f: (r0: number, r1: number) => Promise<void>): Promise<void> {
  for (let r0 = 0; r0 < N; r0 += chunk) await f(r0, Math.min(N, r0 + chunk));
}

/** Layer l on x (host [B·T, H]): attention half then MLP half, each run and its weights freed. */
async function streamLayer(run: Run, l: number, x: Float32Array): Promise<Float32Array> {
  const cfg = run.ck.config;
  const N = run.B * run.T,
    H = cfg.hiddenSize;
  const q = cfg.numHeads * cfg.headDim,
    kv = cfg.numKvHeads * cfg.headDim;
  // q/k/v biases (Qwen2) and q_norm/k_norm gains (Qwen3) are small: counted, never blocked
  const attnBytes = 4 * (H + 2 * H * q + 2 * H * kv) + attentionExtraBytes(cfg);
  const attnStart = run.done;
  let mid: Float32Array;
  if (attnBytes <= run.maxWeights && N * attentionBytesPerToken(cfg, cfg.numHeads, cfg.numKvHeads, run.T) <= run.maxActs) {
    const aw = await loadLayerWeights(run.ck, l, ATTENTION_FIELDS);
    const xT = tf.tensor3d(x, [run.B, run.T, H]);
    try {
      mid = await take(attentionBlock(cfg, aw, xT, l, run.masks, run.rope));
    } finally {
      disposeLayerWeights(aw);
      xT.dispose();
    }
  } else mid = await blockedAttention(run, l, x);
  assertFiniteHidden(run, l, 'self_attn', mid);
  finishHalf(run, attnStart, attnBytes);
  const F = cfg.intermediateSize;
  const mlpBytes = 4 * (H + 3 * H * F);
  const mlpStart = run.done;
  let out: Float32Array;
  if (mlpBytes <= run.maxWeights && N * mlpBytesPerToken(cfg, F) <= run.maxActs) {
    const mw = await loadLayerWeights(run.ck, l, ['postNorm', 'gate', 'up', 'down']);
    const xT = tf.tensor3d(mid, [run.B, run.T, H]);
    try {
      out = await take(mlpBlock(cfg, mw, xT, l, run.masks));
    } finally {
      disposeLayerWeights(mw);
      xT.dispose();
    }
  } else out = await blockedMlp(run, l, mid);
  assertFiniteHidden(run, l, 'mlp', out);
  finishHalf(run, mlpStart, mlpBytes);
  return out;
}

/**
 * The residual stream after one half of layer l must be finite. Weights are checked finite as
 * they are read, so a non-finite value here is an overflow of f32 inside that half (a huge norm
 * gain or weight, activations growing layer after layer): named at the layer and half where it
 * first appears, instead of as NaN logits (or NaN distances in layer selection) at the end.
 */
function assertFiniteHidden(run: Run, l: number, half: 'self_attn' | 'mlp', x: Float32Array): void {
  let bad = -1;
  for (let i = 0; i < x.length; i++)
    if (x[i] - x[i] !== 0) {
      bad = i; // NaN and ±Infinity, the only values for which v - v is not 0
      break;
    }
  if (bad < 0) return;
  const H = run.ck.config.hiddenSize;
  throw new ModelInputError(
    `${run.ck.dir}: the hidden state becomes non-finite in layer ${l} (its ${half} half, model.layers.${l}.${half}.*): ` +
      `${x[bad]} at token ${Math.floor(bad / H)}, dimension ${bad % H} (hidden_states[${l + 1}]); every earlier layer's output is finite ` +
      'and the weights are finite, so the activations overflowed float32 in this half: look for huge weights or norm gains there',
  );
}

/**
 * A non-finite weight is found where it is read (tensor-index's check names the tensor and
 * element); the error also names the decoder layer being run, so messages from blocked reads
 * (rows of a band) point at the layer as the activation check does.
 */
async function withLayerContext<R>(l: number, f: () => Promise<R>): Promise<R> {
  try {
    return await f();
  } catch (e) {
    if (e instanceof CheckpointError && e.code === 'NonFiniteWeights')
      throw new CheckpointError('NonFiniteWeights', `layer ${l}: ${e.message}`);
    throw e;
  }
}

/** rmsNorm(x) ⊙-masked as llama.ts, over token micro-batches: host [N, H]. */
async function normRows(run: Run, x: Float32Array, g: tf.Tensor): Promise<Float32Array> {
  const cfg = run.ck.config;
  const H = cfg.hiddenSize,
    N = x.length / H;
  const out = new Float32Array(N * H);
  await overTokens(N, tokenChunk(run, 4 * 3 * H, false), async (r0, r1) => {
    const xs = tf.tensor2d(x.subarray(r0 * H, r1 * H), [r1 - r0, H]);
    out.set(await take(tf.tidy(() => rmsNorm(xs, g, cfg.rmsNormEps, run.masks?.hidden))), r0 * H);
    xs.dispose();
  });
  return out;
}

/** x + residual(y) (llama.ts's residualAdd, masks included) over token micro-batches. */
async function addResidual(run: Run, l: number, x: Float32Array, y: Float32Array): Promise<Float32Array> {
  const H = run.ck.config.hiddenSize,
    N = x.length / H;
  const out = new Float32Array(N * H);
  await overTokens(N, tokenChunk(run, 4 * 4 * H, false), async (r0, r1) => {
    const xs = tf.tensor2d(x.subarray(r0 * H, r1 * H), [r1 - r0, H]);
    const ys = tf.tensor2d(y.subarray(r0 * H, r1 * H), [r1 - r0, H]);
    out.set(await take(tf.tidy(() => residualAdd(xs, ys, run.masks, l))), r0 * H);
    tf.dispose([xs, ys]);
  });
  return out;
}

/**
 * input [N, K] (host) times the Linear weight `name` [rows, K] (HF layout), read in row bands of
 * at most maxWeights/2 bytes (the band and its transpose) and applied to token micro-batches:
 * host [N, rows]. Each output is the same dot product as linear(); only the blocking differs.
 */
async function bandedLinear(
  run: Run,
  name: string,
  input: Float32Array,
  K: number,
  rowsOut: number,
  maxRows = Infinity,
): Promise<Float32Array> {
  const N = input.length / K;
  const band = Math.max(1, Math.min(rowsOut, maxRows, Math.floor(run.maxWeights / (2 * 4 * K))));
  const out = new Float32Array(N * rowsOut);
  for (let r0 = 0; r0 < rowsOut; r0 += band) {
    const r1 = Math.min(rowsOut, r0 + band),
      n = r1 - r0;
    const w = await readRowsF32(run.ck, name, r0, r1, K);
    const wT = tf.transpose(w);
    w.dispose();
    try {
      await overTokens(N, tokenChunk(run, 4 * (K + 2 * n), false), async (t0, t1) => {
        const xs = tf.tensor2d(input.subarray(t0 * K, t1 * K), [t1 - t0, K]);
        writeColumns(out, rowsOut, t0, r0, await take(matMul2d(xs, wT)), n);
        xs.dispose();
      });
    } finally {
      wT.dispose();
    }
    tick(run, 4 * n * K);
  }
  return out;
}

/**
 * The attention half in blocks: head outputs per group of KV heads (their q/k/v rows; each
 * group's g query heads read only its KV heads) over micro-batches of whole sequences, into host
 * [N, nh·hd]; then o_proj by row bands and the residual add.
 */
async function blockedAttention(run: Run, l: number, x: Float32Array): Promise<Float32Array> {
  const { ck, B, T } = run;
  const cfg = ck.config;
  const H = cfg.hiddenSize,
    hd = cfg.headDim,
    nkv = cfg.numKvHeads,
    g = cfg.numHeads / nkv,
    qW = cfg.numHeads * hd;
  const N = B * T;
  const norm = await loadTensor(ck, cfg, 'input_norm', l);
  let h: Float32Array;
  try {
    h = await normRows(run, x, norm);
  } finally {
    norm.dispose();
  }
  const att = new Float32Array(N * qW);
  const perKv = 4 * H * (g + 2) * hd;
  const kvPer = Math.max(1, Math.min(nkv, Math.floor(run.maxWeights / (2 * perKv))));
  const names = { q: tensorName('q', l), k: tensorName('k', l), v: tensorName('v', l) };
  // the family's small per-layer tensors, whole: q/k/v biases (sliced per group with the weight
  // rows) and the q_norm/k_norm gains over head_dim (the same for every head)
  const small: tf.Tensor[] = [];
  const load = async (role: 'q_bias' | 'k_bias' | 'v_bias' | 'q_norm' | 'k_norm') => {
    const t = await loadTensor(ck, cfg, role, l);
    small.push(t);
    return t;
  };
  try {
    const bias = cfg.qkvBias ? { q: await load('q_bias'), k: await load('k_bias'), v: await load('v_bias') } : undefined;
    const qkNorm = cfg.qkNorm ? { q: await load('q_norm'), k: await load('k_norm') } : undefined;
    for (let j0 = 0; j0 < nkv; j0 += kvPer) {
      const j1 = Math.min(nkv, j0 + kvPer),
        nk = j1 - j0;
      const wq = await readRowsF32(ck, names.q, j0 * g * hd, j1 * g * hd, H);
      const wk = await readRowsF32(ck, names.k, j0 * hd, j1 * hd, H);
      const wv = await readRowsF32(ck, names.v, j0 * hd, j1 * hd, H);
      const w = { q: tf.transpose(wq), k: tf.transpose(wk), v: tf.transpose(wv) };
      tf.dispose([wq, wk, wv]);
      const b =
        bias === undefined
          ? undefined
          : {
              q: tf.slice(bias.q, [j0 * g * hd], [nk * g * hd]),
              k: tf.slice(bias.k, [j0 * hd], [nk * hd]),
              v: tf.slice(bias.v, [j0 * hd], [nk * hd]),
            };
      const headMask =
        run.masks === undefined ? undefined : (tf.slice(run.masks.layers[l].heads, [j0 * g], [nk * g]) as tf.Tensor1D);
      const sub: ModelConfig = { ...cfg, numHeads: nk * g, numKvHeads: nk };
      try {
        await overTokens(N, tokenChunk(run, attentionBytesPerToken(cfg, nk * g, nk, T), true), async (t0, t1) => {
          const hs = tf.tensor2d(h.subarray(t0 * H, t1 * H), [t1 - t0, H]);
          const out = tf.tidy(() => {
            // llama.ts's linearBias on the group's rows: x · w^T (+ bias)
            const proj = (wT: tf.Tensor, bb: tf.Tensor | undefined) => {
              const y = matMul2d(hs, wT);
              return bb === undefined ? y : tf.add(y, bb);
            };
            return attention(
              sub,
              proj(w.q, b?.q),
              proj(w.k, b?.k),
              proj(w.v, b?.v),
              (t1 - t0) / T,
              T,
              run.rope,
              headMask,
              qkNorm,
            );
          });
          hs.dispose();
          writeColumns(att, qW, t0, j0 * g * hd, await take(out), nk * g * hd);
        });
      } finally {
        tf.dispose([w.q, w.k, w.v, ...(b !== undefined ? [b.q, b.k, b.v] : []), ...(headMask !== undefined ? [headMask] : [])]);
      }
      tick(run, 4 * H * (g + 2) * hd * nk);
    }
  } finally {
    tf.dispose(small);
  }
  const y = await bandedLinear(run, tensorName('o', l), att, qW, H);
  return addResidual(run, l, x, y);
}

/**
 * The MLP half in blocks of FFN units (rows of gate/up) over token micro-batches: the SwiGLU
 * product (FFN-masked) into host [N, F], then down_proj by row bands and the residual add.
 */
async function blockedMlp(run: Run, l: number, x: Float32Array): Promise<Float32Array> {
  const { ck } = run;
  const cfg = ck.config;
  const H = cfg.hiddenSize,
    F = cfg.intermediateSize,
    N = x.length / H;
  const norm = await loadTensor(ck, cfg, 'post_norm', l);
  let h: Float32Array;
  try {
    h = await normRows(run, x, norm);
  } finally {
    norm.dispose();
  }
  const names = { gate: tensorName('gate', l), up: tensorName('up', l), down: tensorName('down', l) };
  for (const n of Object.values(names))
    if (!ck.has(n)) throw new CheckpointError('TensorNotFound', `${ck.dir}: tensor "${n}" is missing`);
  const act = new Float32Array(N * F);
  const units = Math.max(1, Math.min(F, Math.floor(run.maxWeights / (2 * 2 * 4 * H))));
  for (let f0 = 0; f0 < F; f0 += units) {
    const f1 = Math.min(F, f0 + units),
      n = f1 - f0;
    const gate = await readRowsF32(ck, names.gate, f0, f1, H);
    const up = await readRowsF32(ck, names.up, f0, f1, H);
    const gT = tf.transpose(gate),
      uT = tf.transpose(up);
    tf.dispose([gate, up]);
    const mask = run.masks === undefined ? undefined : tf.slice(run.masks.layers[l].ffn, [f0], [n]);
    try {
      await overTokens(N, tokenChunk(run, mlpBytesPerToken(cfg, n), false), async (t0, t1) => {
        const hs = tf.tensor2d(h.subarray(t0 * H, t1 * H), [t1 - t0, H]);
        const a = tf.tidy(() => {
          const gv = matMul2d(hs, gT);
          const p = tf.mul(tf.mul(gv, tf.sigmoid(gv)), matMul2d(hs, uT)); // swiglu's product, as llama.ts
          return mask === undefined ? p : tf.mul(p, mask);
        });
        hs.dispose();
        writeColumns(act, F, t0, f0, await take(a), n);
      });
    } finally {
      tf.dispose([gT, uT, ...(mask !== undefined ? [mask] : [])]);
    }
    tick(run, 2 * 4 * H * n);
  }
  const y = await bandedLinear(run, names.down, act, F, H);
  return addResidual(run, l, x, y);
}

async function finalHiddenFrom(run: Run, x: Float32Array): Promise<Float32Array> {
  const cfg = run.ck.config;
  const H = cfg.hiddenSize,
    N = x.length / H;
  const g = tf.tensor1d(await run.ck.readFloat32(tensorName('final_norm')));
  const out = new Float32Array(N * H);
  try {
    await overTokens(N, tokenChunk(run, 4 * 3 * H, false), async (r0, r1) => {
      const xs = tf.tensor3d(x.subarray(r0 * H, r1 * H), [1, r1 - r0, H]);
      out.set(await take(finalHidden(cfg, g, xs, run.masks)), r0 * H);
      xs.dispose();
    });
  } finally {
    g.dispose();
  }
  return out;
}

/** logits [B,T,V] from lm_head read and applied in blocks of rows, over token micro-batches. */
async function blockedLogits(run: Run, normed: Float32Array, blockRows?: number): Promise<Float32Array> {
  const { ck: c, masks: m } = run;
  const cfg = c.config;
  const H = cfg.hiddenSize,
    N = normed.length / H;
  const V = cfg.vocabSize;
  const name = tensorName(headRole(cfg)); // the embedding when tied
  if (!c.has(name)) throw new CheckpointError('TensorNotFound', `${c.dir}: tensor "${name}" is missing`);
  // Blocks no larger than one layer in f32 (and the weight block limit) so the head never sets
  // the peak, and at most WIDE_BLOCK rows so lmHeadLogits does not split (copy) the block again.
  const rows = Math.max(
    1,
    Math.min(
      V,
      blockRows ?? Math.min(WIDE_BLOCK, Math.floor(layerF32Bytes(cfg) / (4 * H)), Math.floor(run.maxWeights / (2 * 4 * H))),
    ),
  );
  const out = new Float32Array(N * V);
  for (let v0 = 0; v0 < V; v0 += rows) {
    const v1 = Math.min(V, v0 + rows),
      width = v1 - v0;
    const w = await readRowsF32(c, name, v0, v1, H);
    const bias = m === undefined ? undefined : (tf.slice(m.vocabBias, [v0], [width]) as tf.Tensor1D);
    try {
      await overTokens(N, tokenChunk(run, 4 * (H + 3 * width), false), async (t0, t1) => {
        const xs = tf.tensor3d(normed.subarray(t0 * H, t1 * H), [1, t1 - t0, H]);
        writeColumns(out, V, t0, v0, await take(lmHeadLogits(cfg, w, xs, bias)), width);
        xs.dispose();
      });
    } finally {
      tf.dispose([w, ...(bias !== undefined ? [bias] : [])]);
    }
    tick(run, 4 * width * H);
  }
  return out;
}
