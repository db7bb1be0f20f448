/**
 * The source model's residual stream for layer selection: streamedForward (one half-layer of
 * weights in memory at a time, masked model if masks exist) reports each layer's raw input and
 * output; only two consecutive states are alive, so memory does not grow with depth.
 */
import * as tf from '@tensorflow/tfjs';
import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import { initBackend } from '../engines/tfjs-backend.ts';
import { streamedForward } from '../model/streaming.ts';
import type { ProgressFactory } from '../util/progress.ts';

/** Calls visit(l, x_l, x_{l+1}) for every layer l ([B·T, H] row-major, masked model if masks exist). */
export async function residualStream(
  ck: Checkpoint,
  batch: number[][],
  visit: (l: number, xIn: Float32Array, xOut: Float32Array) => void,
  progress?: ProgressFactory,
): Promise<void> {
  if (tf.engine().backendName === null || tf.engine().backendName === undefined) await initBackend('auto');
  await streamedForward(ck, batch, {
    onResidual: visit,
    skipLogits: true,
    progress,
    progressLabel: 'calibration (layer selection)',
  });
}
