/**
 * The tfjs form of MSG masks (src/checkpoint/masks.ts holds their values, file and schedule): the
 * tensors the model multiplies by (SPEC §2), the training variant of the vocab bias, and the
 * trainer's masks that follow the annealing schedule step by step.
 */
import * as tf from '@tensorflow/tfjs';
import { applyMaskValues, maskValuesAt, type MaskSchedule, type MaskSet } from '../checkpoint/masks.ts';

export interface LayerMaskTensors {
  heads: tf.Tensor1D;
  ffn: tf.Tensor1D;
  residual: tf.Scalar;
}

/** tf versions of a MaskSet (SPEC §2). */
export interface MaskTensors {
  hidden: tf.Tensor1D;
  /**
   * log(m) of the vocab mask m, added to the logits (SPEC §2): 0 at 1, -Infinity at 0 (padding
   * ids, new tokens before annealing), in between it scales the id's softmax weight by m.
   */
  vocabBias: tf.Tensor1D;
  layers: LayerMaskTensors[];
}

export function masksToTensors(m: MaskSet): MaskTensors {
  return {
    hidden: tf.tensor1d(m.hidden, 'float32'),
    vocabBias: tf.tensor1d(
      Float32Array.from(m.vocab, (v) => Math.log(v)),
      'float32',
    ),
    layers: m.layers.map((l) => ({
      heads: tf.tensor1d(l.heads, 'float32'),
      ffn: tf.tensor1d(l.ffn, 'float32'),
      residual: tf.scalar(l.residual, 'float32'),
    })),
  };
}

export function disposeMaskTensors(m: MaskTensors): void {
  tf.dispose([m.hidden, m.vocabBias]);
  for (const l of m.layers) tf.dispose([l.heads, l.ffn, l.residual]);
}

/** The training bias of an id whose vocab mask is 0 (padding, or a new token before annealing). */
export const MASKED_ID_BIAS = -1e30;

/**
 * Masks as the model wants them (vocab bias log(m)), except that ids with m = 0 get a large
 * finite bias instead of -inf: their softmax weight is exactly 0 either way, but -inf · 0 in the
 * target pick would be NaN.
 */
export function trainingMaskTensors(m: MaskSet): MaskTensors {
  const t = masksToTensors(m);
  t.vocabBias.dispose();
  t.vocabBias = tf.tensor1d(
    Float32Array.from(m.vocab, (v) => (v === 0 ? MASKED_ID_BIAS : Math.log(v))),
    'float32',
  );
  return t;
}

/** Mask values follow the schedule; the MaskSet and its tensors are rebuilt only when the values change. */
export class MaskState {
  readonly base: MaskSet | undefined;
  /** The masks of the last `at()` and their tensors (what the loss uses). */
  masks: MaskSet | undefined;
  tensors: MaskTensors | undefined;
  private readonly schedule: MaskSchedule[];
  private readonly stageStart: number;
  private key = '';

  constructor(base: MaskSet | undefined, schedule: MaskSchedule[], stageStart: number) {
    this.base = base;
    this.schedule = schedule;
    this.stageStart = stageStart;
  }

  /** The masks at global `step` (undefined: the checkpoint has none); `tensors` follow. */
  at(step: number): MaskSet | undefined {
    if (this.base === undefined) return undefined;
    const values = maskValuesAt(this.schedule, step - this.stageStart);
    const key = JSON.stringify(values);
    if (key !== this.key || this.masks === undefined) {
      this.key = key;
      this.masks = applyMaskValues(this.base, values);
      if (this.tensors !== undefined) disposeMaskTensors(this.tensors);
      this.tensors = trainingMaskTensors(this.masks);
    }
    return this.masks;
  }

  dispose(): void {
    if (this.tensors !== undefined) disposeMaskTensors(this.tensors);
    this.tensors = undefined;
  }
}
