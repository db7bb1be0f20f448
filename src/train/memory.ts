/**
 * How much memory one tfjs training step needs, checked before the first step: the wasm
 * backend's heap cannot grow past 4 GiB (tfjs-backend-wasm's getHeapMax), and running out shows
 * up as "RuntimeError: memory access out of bounds" deep inside a kernel, minutes into the run.
 *
 * The coefficients are calibrated, not derived: tf.profile peaks of one step of this trainer
 * (H 512, F 1344, 4 heads of 128) were 1255 MB (V 20000, 1 layer, B·T 16), 1604 MB (2 layers)
 * and 1127 MB (V 8000, 1 layer, B·T 256). Beyond weights, moments and gradients, the tape keeps
 * every transposed weight copy and the backward pass's intermediates until the step ends, and
 * AdamW's temporaries for the largest tensor: about 11× the embedding + LM-head bytes, 28× a
 * layer's weight bytes, and ~50 vocab-sized f32 rows per token (logits, softmax, one-hot and
 * their gradients) plus the attention scores.
 */
import type { ModelConfig } from '../spec/config.ts';

export const WASM_HEAP_LIMIT = 4 * 2 ** 30;

export interface TrainMemoryEstimate {
  weights: number;
  optimizer: number;
  gradients: number;
  activations: number;
  total: number;
}

export function estimateTrainMemory(cfg: ModelConfig, batchSize: number, seqLen: number): TrainMemoryEstimate {
  const H = cfg.hiddenSize,
    V = cfg.vocabSize,
    L = cfg.numLayers,
    hd = cfg.headDim;
  const edges = 2 * V * H * 4;
  const layer = (H * cfg.numHeads * hd * 2 + H * cfg.numKvHeads * hd * 2 + 3 * H * cfg.intermediateSize + 2 * H) * 4;
  const weights = edges + L * layer + H * 4;
  const N = batchSize * seqLen;
  // measured totals split into the named parts: 1× weights, 2× moments, 1× gradients, the rest is the tape
  const tape = 11 * edges + 28 * L * layer - 4 * weights;
  const activations = N * (50 * V * 4 + L * 64 * H * 4) + L * batchSize * cfg.numHeads * seqLen * seqLen * 4 * 4;
  return {
    weights,
    optimizer: 2 * weights,
    gradients: weights,
    activations: activations + Math.max(0, tape),
    total: 4 * weights + Math.max(0, tape) + activations,
  };
}
