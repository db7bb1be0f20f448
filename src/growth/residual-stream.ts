/**
 * The source model's residual stream, one layer in memory at a time, built from the model's own
 * pieces (src/model/llama.ts: embedTokens, decoderLayer, loadLayerWeights). streamedForward's
 * hidden states end with the final norm applied, while layer selection needs the last layer's
 * raw output; and only two consecutive states are kept, so memory does not grow with depth.
 */
import * as tf from '@tensorflow/tfjs';
import { tensorName } from '../arch.ts';
import { bytesToFloat32 } from '../checkpoint/dtype.ts';
import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import { loadMasksIfAny } from '../masks.ts';
import { initBackend } from '../backend.ts';
import {
  decoderLayer, disposeLayerWeights, disposeMaskTensors, embedTokens, loadLayerWeights, makeRope, masksToTensors, validateIds,
  type MaskTensors,
} from '../model/llama.ts';
import { idsToTensor } from '../model/streaming.ts';

/** Calls visit(l, x_l, x_{l+1}) for every layer l ([B·T, H] row-major, masked model if masks exist). */
export async function residualStream(ck: Checkpoint, batch: number[][], visit: (l: number, xIn: Float32Array, xOut: Float32Array) => void): Promise<void> {
  if (tf.engine().backendName === null || tf.engine().backendName === undefined) await initBackend('auto');
  const cfg = ck.config;
  const idsT = idsToTensor(batch);
  const [B, T] = idsT.shape;
  const maskSet = await loadMasksIfAny(ck.dir, cfg);
  let masks: MaskTensors | undefined;
  const rope = makeRope(cfg, T);
  let x: tf.Tensor3D | undefined;
  try {
    validateIds(cfg, idsT);
    masks = maskSet === undefined ? undefined : masksToTensors(maskSet);
    // only the embedding rows of the ids used
    const ids = idsT.dataSync() as Int32Array;
    const uniq = [...new Set(ids)].sort((a, b) => a - b);
    const H = cfg.hiddenSize;
    const rows = new Float32Array(uniq.length * H);
    const name = tensorName('embed');
    const dtype = ck.info(name).dtype;
    for (let k = 0; k < uniq.length; k++) rows.set(bytesToFloat32(await ck.readRows(name, uniq[k], uniq[k] + 1), dtype), k * H);
    const slot = new Map(uniq.map((id, k) => [id, k]));
    const table = tf.tensor2d(rows, [uniq.length, H]);
    const local = tf.tensor2d(Int32Array.from(ids, (id) => slot.get(id) as number), [B, T], 'int32');
    x = embedTokens(cfg, table, local, masks);
    tf.dispose([table, local]);
    let prev = (await x.data()) as Float32Array;
    for (let l = 0; l < cfg.numLayers; l++) {
      const lw = await loadLayerWeights(ck, l);
      let next: tf.Tensor3D;
      try {
        next = decoderLayer(cfg, lw, x, l, masks, rope);
      } finally {
        disposeLayerWeights(lw);
      }
      x.dispose();
      x = next;
      const cur = (await x.data()) as Float32Array;
      visit(l, prev, cur);
      prev = cur;
    }
  } finally {
    x?.dispose();
    rope.dispose();
    if (masks !== undefined) disposeMaskTensors(masks);
    idsT.dispose();
  }
}
