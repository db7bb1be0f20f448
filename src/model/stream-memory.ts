/**
 * The memory arithmetic of the layer-streamed forward pass (streaming.ts): its block limits, the
 * bytes of a layer and of a token's activations, and the peak estimate `flm-grow plan` prints for
 * a calibration pass. Kept apart from streaming.ts and llama.ts, and free of tfjs, so that `plan`
 * does not load tfjs (half a second of start-up) to do arithmetic on a config.
 */
import type { ModelConfig } from '../spec/config.ts';
import { dtypeSize } from '../util/dtype.ts';

/** Largest f32 weight block held at once (its transposed copy doubles it while in use). */
export const DEFAULT_MAX_BLOCK_BYTES = 512 * 2 ** 20;
/** Largest activation estimate per block: tokens run in micro-batches below it. */
export const DEFAULT_MAX_ACTIVATION_BYTES = 256 * 2 ** 20;

/** The block limits of a streamed pass (part of streaming.ts's StreamOptions). */
export interface StreamLimits {
  /**
   * Largest f32 weight block held at once (default 512 MiB): a half-layer above it runs in
   * blocks (KV-head groups, FFN units, row bands), equal to the unblocked pass up to f32 rounding.
   */
  maxBlockBytes?: number;
  /** Largest activation estimate per block (default 256 MiB): tokens above it run in micro-batches. */
  maxActivationBytes?: number;
}

/** Output columns per product for very wide weights (the LM head; llama.ts splits them): XNNPACK runs ~1.5× faster on them. */
export const WIDE_BLOCK = 4096;

/** Bytes of one decoder layer's weights in f32: the unit of streaming memory. */
export function layerF32Bytes(cfg: ModelConfig): number {
  const H = cfg.hiddenSize,
    q = cfg.numHeads * cfg.headDim,
    kv = cfg.numKvHeads * cfg.headDim,
    F = cfg.intermediateSize;
  return 4 * (2 * H + H * q + 2 * H * kv + q * H + 3 * H * F) + attentionExtraBytes(cfg);
}

/** f32 bytes of a layer's small attention tensors: q/k/v biases (Qwen2), q_norm/k_norm gains (Qwen3). */
export function attentionExtraBytes(cfg: ModelConfig): number {
  const q = cfg.numHeads * cfg.headDim,
    kv = cfg.numKvHeads * cfg.headDim;
  return 4 * ((cfg.qkvBias ? q + 2 * kv : 0) + (cfg.qkNorm ? 2 * cfg.headDim : 0));
}

/** Activation bytes per token of attentionBlock on nh query / nkv KV heads (q, k, v, RoPE, scores ×4 over T keys). */
export function attentionBytesPerToken(cfg: ModelConfig, nh: number, nkv: number, T: number): number {
  return 4 * (3 * cfg.hiddenSize + 5 * (nh + 2 * nkv) * cfg.headDim + 4 * nh * T);
}

/** Activation bytes per token of SwiGLU over f FFN units (gate, sigmoid, up, products). */
export function mlpBytesPerToken(cfg: ModelConfig, f: number): number {
  return 4 * (3 * cfg.hiddenSize + 5 * f);
}

/**
 * Estimated peak memory of streamedForward on `tokens` tokens in sequences of `seq` (for `plan`):
 * tfjs's wasm heap, which keeps its high-water mark (the largest block's f32 weights, their
 * transposed copies and its activations), plus the host arrays of the residual stream (input,
 * output and the half's intermediates: normed input, head outputs or the SwiGLU product).
 * Mirrors streaming.ts's blocking decisions; process overhead is the caller's.
 */
export function streamedForwardPeakBytes(
  cfg: ModelConfig,
  tokens: number,
  seq: number,
  opts: StreamLimits & { skipLogits?: boolean } = {},
): number {
  const maxW = opts.maxBlockBytes ?? DEFAULT_MAX_BLOCK_BYTES,
    maxA = opts.maxActivationBytes ?? DEFAULT_MAX_ACTIVATION_BYTES;
  const T = Math.min(seq, tokens),
    B = Math.max(1, Math.floor(tokens / T)),
    N = B * T;
  const H = cfg.hiddenSize,
    hd = cfg.headDim,
    nkv = cfg.numKvHeads,
    g = cfg.numHeads / nkv,
    q = cfg.numHeads * hd,
    kv = nkv * hd,
    F = cfg.intermediateSize;
  const chunk = (perToken: number, whole: boolean) => {
    const rows = Math.max(1, Math.floor(maxA / perToken));
    return whole ? Math.min(B, Math.max(1, Math.floor(rows / T))) * T : Math.min(N, rows);
  };
  const bandOf = (K: number, rows: number) => Math.max(1, Math.min(rows, Math.floor(maxW / (2 * 4 * K))));
  const banded = (K: number, rows: number) => {
    const band = bandOf(K, rows);
    return 2 * 4 * band * K + chunk(4 * (K + 2 * band), false) * 4 * (K + 2 * band);
  };
  // f32 weight bytes read at once (one block, or a whole half when it runs unblocked)
  let read: number;
  const attnW = 4 * (H + 2 * H * q + 2 * H * kv),
    mlpW = 4 * (H + 3 * H * F);
  let heap: number, hostExtra: number;
  // attention half
  if (attnW <= maxW && N * attentionBytesPerToken(cfg, cfg.numHeads, nkv, T) <= maxA) {
    heap = attnW + 4 * H * q + N * attentionBytesPerToken(cfg, cfg.numHeads, nkv, T);
    hostExtra = 0;
    read = attnW;
  } else {
    const kvPer = Math.max(1, Math.min(nkv, Math.floor(maxW / (2 * 4 * H * (g + 2) * hd))));
    read = Math.max(4 * H * (g + 2) * hd * kvPer, 4 * bandOf(q, H) * q);
    const group =
      2 * 4 * H * (g + 2) * hd * kvPer +
      chunk(attentionBytesPerToken(cfg, kvPer * g, kvPer, T), true) * attentionBytesPerToken(cfg, kvPer * g, kvPer, T);
    heap = Math.max(group, banded(q, H));
    hostExtra = 4 * N * (H + q + H);
  }
  // MLP half
  if (mlpW <= maxW && N * mlpBytesPerToken(cfg, F) <= maxA) {
    heap = Math.max(heap, mlpW + 4 * H * F + N * mlpBytesPerToken(cfg, F));
    read = Math.max(read, mlpW);
  } else {
    const units = Math.max(1, Math.min(F, Math.floor(maxW / (2 * 2 * 4 * H))));
    read = Math.max(read, 2 * 4 * H * units, 4 * bandOf(F, H) * F);
    heap = Math.max(
      heap,
      2 * 2 * 4 * H * units + chunk(mlpBytesPerToken(cfg, units), false) * mlpBytesPerToken(cfg, units),
      banded(F, H),
    );
    hostExtra = Math.max(hostExtra, 4 * N * (H + F + H));
  }
  // embedding rows (at most N) and the residual stream's input and output on the host
  heap = Math.max(heap, 2 * 4 * N * H);
  let host = 3 * 4 * N * H + hostExtra;
  if (opts.skipLogits !== true) {
    const rows = Math.max(
      1,
      Math.min(cfg.vocabSize, WIDE_BLOCK, Math.floor(layerF32Bytes(cfg) / (4 * H)), Math.floor(maxW / (2 * 4 * H))),
    );
    heap = Math.max(heap, 4 * rows * H + chunk(4 * (H + 3 * rows), false) * 4 * (H + 3 * rows));
    host += 4 * N * cfg.vocabSize;
    read = Math.max(read, 4 * rows * H);
  }
  // Each read holds the stored bytes and their f32 conversion on the host before tfjs copies
  // them into its heap; those arrays are garbage from then on but only freed by V8's next GC,
  // so measured peaks (52B widths: 1.48 GB forward on 8 tokens, 1.56 GB layer selection on 512)
  // hold about two blocks' worth of them beside the heap.
  host += 2 * read * (1 + dtypeSize(cfg.dtype ?? 'F32') / 4);
  return heap + host;
}

/** RSS of a Python process with torch, safetensors and flm_grow_torch.passes imported (measured: 0.23 GB; rounded up). */
export const TORCH_BASE_RSS = 300e6;
/** passes.py's default band: the largest f32 weight block read at once (--max-block-bytes). */
export const TORCH_MAX_BLOCK_BYTES = 2 ** 30;

/**
 * Estimated peak memory of the torch engine's streamed pass (python/flm_grow_torch/passes.py) on
 * `tokens` tokens in sequences of `seq`, process included: one weight band in f32 (at most
 * TORCH_MAX_BLOCK_BYTES; a tensor below it is read whole) plus the stored bytes it was converted
 * from, the residual stream (a layer's input, its middle and output), one layer's activations
 * (normed input, q, k and v with the KV heads repeated to every query head, the attention output;
 * the SwiGLU product [N, F] and a gate/up block), and with logits the [N, V] output and one vocab
 * block. SDPA on CPU runs flash attention in tiles: no [T, T] scores per head are held.
 * Independent of depth; `hidden` adds the L+1 kept hidden states (forward --out, verify).
 */
export function torchPassPeakBytes(
  cfg: ModelConfig,
  tokens: number,
  seq: number,
  opts: { skipLogits?: boolean; hidden?: boolean; maxBlockBytes?: number; computeBytes?: number } = {},
): number {
  const maxW = opts.maxBlockBytes ?? TORCH_MAX_BLOCK_BYTES;
  const c = opts.computeBytes ?? 4;
  const T = Math.min(seq, tokens),
    N = Math.max(1, Math.floor(tokens / T)) * T;
  const H = cfg.hiddenSize,
    q = cfg.numHeads * cfg.headDim,
    kv = cfg.numKvHeads * cfg.headDim,
    F = cfg.intermediateSize;
  const largest =
    4 * Math.max(H * Math.max(q, F), 2 * H * F, ...(opts.skipLogits === true ? [] : [Math.min(cfg.vocabSize, 4096) * H]));
  const band = Math.min(maxW, largest);
  const weights = band * (1 + dtypeSize(cfg.dtype ?? 'F32') / 4);
  const stream = 3 * 4 * N * H;
  const attention = c * N * (H + 2 * q + 2 * kv + 2 * q + q + H);
  const mlp = c * N * (H + F + 3 * Math.min(F, Math.max(1, Math.floor(maxW / (8 * H)))) + H);
  let peak = TORCH_BASE_RSS + weights + stream + Math.max(attention, mlp);
  if (opts.skipLogits !== true) peak += 4 * N * cfg.vocabSize + 4 * N * Math.min(cfg.vocabSize, 4096);
  if (opts.hidden === true) peak += 4 * (cfg.numLayers + 1) * N * H;
  return peak;
}
