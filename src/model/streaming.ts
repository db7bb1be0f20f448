/**
 * The forward pass with only part of one layer's weights in memory at a time: each layer runs
 * as its attention half then its MLP half, each read from the checkpoint (converted to f32),
 * run and freed; an MLP too large for one block (wasm's heap is 32-bit) runs in blocks of FFN
 * units. Only the embedding rows of the tokens used are read, and the LM head is applied in row
 * blocks. Peak memory is about the larger half-layer in f32 plus activations and the logits.
 * The math is llama.ts's functions, unchanged.
 */
import * as tf from '@tensorflow/tfjs';
import { headRole, tensorName } from '../arch.ts';
import { bytesToFloat32 } from '../util/dtype.ts';
import { assertFiniteWeights, type Checkpoint } from '../checkpoint/checkpoint.ts';
import { MAX_SEQ_LEN, MAX_TOKENS } from '../util/limits.ts';
import type { ModelConfig } from '../config.ts';
import { CheckpointError, ModelInputError } from '../errors.ts';
import type { MaskSet } from '../masks.ts';
import { CheckpointFolder } from '../checkpoint-folder.ts';
import {
  attentionBlock, disposeLayerWeights, disposeMaskTensors, embedTokens, finalHidden, lmHeadLogits, loadLayerWeights, loadTensor,
  ATTENTION_FIELDS, makeRope, masksToTensors, mlpBlock, residualAdd, rmsNorm, swiglu, validateIds, WIDE_BLOCK, type MaskTensors, type Rope, type RopeOptions,
} from './llama.ts';

export const DEFAULT_MAX_BLOCK_BYTES = 1 << 30;

/** Token ids: a [B,T] int32 tensor, or rows of ids. */
export type TokenIds = tf.Tensor2D | ArrayLike<number>[];

export interface StreamOptions {
  /** MSG masks; undefined loads the checkpoint's masks.safetensors when present, null forces the plain model. */
  masks?: MaskSet | null;
  collectHidden?: boolean;
  /** Called after the embedding (0) and after each layer (1..L), with L+1 the total. */
  onLayer?: (done: number, total: number) => void;
  ropeOptions?: RopeOptions;
  /** Rows of lm_head per block (default: at most one layer's f32 size and 4096 rows). */
  lmHeadBlockRows?: number;
  /**
   * Largest f32 weight block held at once (default 1 GiB): an MLP above it runs in blocks of
   * FFN units (summed, so equal to the unblocked pass up to f32 rounding).
   */
  maxBlockBytes?: number;
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

/** Bytes of one decoder layer's weights in f32: the unit of streaming memory. */
export function layerF32Bytes(cfg: ModelConfig): number {
  const H = cfg.hiddenSize, q = cfg.numHeads * cfg.headDim, kv = cfg.numKvHeads * cfg.headDim, F = cfg.intermediateSize;
  return 4 * (2 * H + H * q + 2 * H * kv + q * H + 3 * H * F);
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
  let x: tf.Tensor3D | undefined;
  const [B, T] = idsT.shape;
  // refused before the [group·T, T] causal mask and the [B·T, ·] activations are allocated
  if (T > MAX_SEQ_LEN || B * T > MAX_TOKENS) {
    if (owned) idsT.dispose();
    throw new ModelInputError(`input of ${B} × ${T} tokens: the sequence length must be at most ${MAX_SEQ_LEN} and the tokens at most ${MAX_TOKENS}`);
  }
  const rope = makeRope(cfg, T, opts.ropeOptions);
  const hidden: Float32Array[] | undefined = opts.collectHidden === true ? [] : undefined;
  try {
    validateIds(cfg, idsT);
    masks = maskSet === undefined ? undefined : masksToTensors(maskSet);
    x = await embedIds(ck, idsT, masks);
    if (hidden !== undefined) hidden.push((await x.data()) as Float32Array);
    let residualIn = opts.onResidual !== undefined ? ((await x.data()) as Float32Array) : undefined;
    opts.onLayer?.(0, L + 1);
    for (let l = 0; l < L; l++) {
      x = await streamLayer(ck, l, x, masks, rope, opts.maxBlockBytes ?? DEFAULT_MAX_BLOCK_BYTES);
      if (hidden !== undefined && l < L - 1) hidden.push((await x.data()) as Float32Array);
      if (opts.onResidual !== undefined && residualIn !== undefined) {
        const out = (await x.data()) as Float32Array;
        opts.onResidual(l, residualIn, out);
        residualIn = out;
      }
      opts.onLayer?.(l + 1, L + 1);
    }
    if (opts.skipLogits === true) return { logits: new Float32Array(0), batch: B, seqLen: T, masked: masks !== undefined };
    const normed = await finalHiddenFrom(ck, x, masks);
    try {
      if (hidden !== undefined) hidden.push((await normed.data()) as Float32Array);
      const logits = await blockedLogits(ck, normed, masks, opts.lmHeadBlockRows);
      // finite weights can still overflow (huge norms, f32 range): never hand back NaN logits
      // (-Infinity is how a vocab mask removes padding ids, so it is allowed when masked)
      const bad = logits.findIndex((v) => Number.isNaN(v) || v === Infinity || (v === -Infinity && masks === undefined));
      if (bad >= 0) throw new ModelInputError(`${ck.dir}: logits are non-finite (${logits[bad]} at position ${Math.floor(bad / cfg.vocabSize)}, token ${bad % cfg.vocabSize}): the activations overflowed`);
      return { logits, ...(hidden !== undefined ? { hidden } : {}), batch: B, seqLen: T, masked: masks !== undefined };
    } finally {
      normed.dispose();
    }
  } finally {
    x?.dispose();
    rope.dispose();
    if (masks !== undefined) disposeMaskTensors(masks);
    if (owned) idsT.dispose();
  }
}

/** x_0 [B,T,H]: the embedding rows of the ids used, read from the checkpoint. */
async function embedIds(ck: Checkpoint, idsT: tf.Tensor2D, masks: MaskTensors | undefined): Promise<tf.Tensor3D> {
  const [B, T] = idsT.shape;
  const { table, local } = await readEmbeddingRows(ck, idsT.dataSync() as Int32Array);
  const localT = tf.tensor2d(local, [B, T], 'int32');
  try {
    return embedTokens(ck.config, table, localT, masks);
  } finally {
    tf.dispose([table, localT]);
  }
}

/**
 * Layer l on x (disposed once used). decoderLayer is exactly mlpBlock ∘ attentionBlock; running
 * the halves separately halves the weights held.
 */
async function streamLayer(ck: Checkpoint, l: number, x: tf.Tensor3D, masks: MaskTensors | undefined, rope: Rope, maxBlockBytes: number): Promise<tf.Tensor3D> {
  const cfg = ck.config;
  const aw = await loadLayerWeights(ck, l, ATTENTION_FIELDS);
  let mid: tf.Tensor3D;
  try {
    mid = attentionBlock(cfg, aw, x, l, masks, rope);
  } finally {
    disposeLayerWeights(aw);
  }
  x.dispose();
  try {
    if (4 * 3 * cfg.hiddenSize * cfg.intermediateSize > maxBlockBytes) return await blockedMlp(ck, l, mid, masks, maxBlockBytes);
    const mw = await loadLayerWeights(ck, l, ['postNorm', 'gate', 'up', 'down']);
    try {
      return mlpBlock(cfg, mw, mid, l, masks);
    } finally {
      disposeLayerWeights(mw);
    }
  } finally {
    mid.dispose();
  }
}

/**
 * The MLP half in blocks of FFN units (rows of gate/up, columns of down), for MLPs whose f32
 * weights exceed maxBlockBytes (wasm's heap is 32-bit: 4 GB). The block outputs are summed,
 * so the result equals mlpBlock up to f32 summation order.
 */
async function blockedMlp(c: Checkpoint, l: number, xs: tf.Tensor3D, m: MaskTensors | undefined, maxBytes: number): Promise<tf.Tensor3D> {
  const cfg = c.config;
  const [B, T, H] = xs.shape;
  const F = cfg.intermediateSize;
  const names = { gate: tensorName('gate', l), up: tensorName('up', l), down: tensorName('down', l) };
  for (const n of Object.values(names)) if (!c.has(n)) throw new CheckpointError('TensorNotFound', `${c.dir}: tensor "${n}" is missing`);
  const norm = await loadTensor(c, cfg, 'post_norm', l);
  const downInfo = c.info(names.down);
  const downRaw = await c.read(names.down); // stored dtype, host memory: columns are not contiguous
  const es = downRaw.byteLength / (H * F);
  const rows = Math.max(1, Math.floor(maxBytes / (3 * 4 * H)));
  const x2 = tf.reshape(xs, [B * T, H]);
  const h = rmsNorm(x2, norm, cfg.rmsNormEps, m?.hidden);
  let acc: tf.Tensor | undefined;
  try {
    for (let f0 = 0; f0 < F; f0 += rows) {
      const f1 = Math.min(F, f0 + rows), n = f1 - f0;
      const gate = tf.tensor2d(await c.readRowsFloat32(names.gate, f0, f1), [n, H]);
      const up = tf.tensor2d(await c.readRowsFloat32(names.up, f0, f1), [n, H]);
      const cols = new Float32Array(H * n);
      for (let i = 0; i < H; i++) cols.set(bytesToFloat32(downRaw.subarray((i * F + f0) * es, (i * F + f1) * es), downInfo.dtype), i * n);
      const down = tf.tensor2d(assertFiniteWeights(cols, c.dir, names.down), [H, n]);
      const mask = m === undefined ? undefined : tf.slice(m.layers[l].ffn, [f0], [n]);
      const part = swiglu(h, gate, up, down, mask);
      tf.dispose([gate, up, down, ...(mask !== undefined ? [mask] : [])]);
      const sum: tf.Tensor = acc === undefined ? part : tf.add(acc, part);
      if (acc !== undefined) tf.dispose([acc, part]);
      acc = sum;
    }
    return tf.tidy(() => tf.reshape(residualAdd(x2, acc as tf.Tensor, m, l), [B, T, H]) as tf.Tensor3D);
  } finally {
    tf.dispose([norm, x2, h, ...(acc !== undefined ? [acc] : [])]);
  }
}

async function finalHiddenFrom(c: Checkpoint, xs: tf.Tensor3D, m: MaskTensors | undefined): Promise<tf.Tensor3D> {
  const g = tf.tensor1d(await c.readFloat32(tensorName('final_norm')));
  try {
    return finalHidden(c.config, g, xs, m);
  } finally {
    g.dispose();
  }
}

/** logits [B,T,V] from lm_head read and applied in blocks of rows. */
async function blockedLogits(c: Checkpoint, normed: tf.Tensor3D, m: MaskTensors | undefined, blockRows?: number): Promise<Float32Array> {
  const cfg = c.config;
  const [B, T, H] = normed.shape;
  const V = cfg.vocabSize;
  const name = tensorName(headRole(cfg)); // the embedding when tied
  if (!c.has(name)) throw new CheckpointError('TensorNotFound', `${c.dir}: tensor "${name}" is missing`);
  // Blocks no larger than one layer in f32 so the head never sets the peak, and at most
  // WIDE_BLOCK rows so lmHeadLogits does not split (copy) the block again.
  const rows = Math.max(1, Math.min(V, blockRows ?? Math.min(WIDE_BLOCK, Math.floor(layerF32Bytes(cfg) / (4 * H)))));
  const N = B * T;
  const out = new Float32Array(N * V);
  for (let v0 = 0; v0 < V; v0 += rows) {
    const v1 = Math.min(V, v0 + rows);
    const w = tf.tensor2d(await c.readRowsFloat32(name, v0, v1), [v1 - v0, H]);
    const bias = m === undefined ? undefined : tf.slice(m.vocabBias, [v0], [v1 - v0]);
    const block = lmHeadLogits(cfg, w, normed, bias);
    tf.dispose([w, ...(bias !== undefined ? [bias] : [])]);
    const vals = (await block.data()) as Float32Array;
    block.dispose();
    const width = v1 - v0;
    for (let n = 0; n < N; n++) out.set(vals.subarray(n * width, (n + 1) * width), n * V + v0);
  }
  return out;
}
