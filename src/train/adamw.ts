/**
 * AdamW (Loshchilov & Hutter) on tf variables: bias-corrected moments and decoupled weight decay
 *   m ← β1 m + (1-β1) g,  v ← β2 v + (1-β2) g²,
 *   p ← p − lr · ( m/(1-β1^t) / (sqrt(v/(1-β2^t)) + ε) + λ p )
 * Written out instead of tf.train.adam because the moments must be readable and writable by name
 * (saved beside the checkpoint and grown with the weights), and decay must be decoupled.
 */
import * as tf from '@tensorflow/tfjs';
import { TrainError } from '../util/errors.ts';
import type { MomentArrays } from '../checkpoint/optimizer-state.ts';
import { trainDefault } from './options.ts';

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Which parameters get weight decay (default: matrices only; norm gains are not decayed). */
  decay?: (name: string, shape: readonly number[]) => boolean;
}

export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** Optimizer steps taken so far (t of the bias correction after the next step is step+1). */
  step = 0;
  readonly params: Map<string, tf.Variable>;
  private readonly m = new Map<string, tf.Variable>();
  private readonly v = new Map<string, tf.Variable>();
  private readonly decays = new Map<string, boolean>();

  constructor(params: Map<string, tf.Variable>, opts: AdamWOptions = {}) {
    this.beta1 = opts.beta1 ?? trainDefault('beta1');
    this.beta2 = opts.beta2 ?? trainDefault('beta2');
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? trainDefault('weight-decay');
    this.params = params;
    const decay = opts.decay ?? ((_n: string, shape: readonly number[]) => shape.length >= 2);
    for (const [name, p] of params) {
      this.m.set(name, tf.variable(tf.zerosLike(p), false));
      this.v.set(name, tf.variable(tf.zerosLike(p), false));
      this.decays.set(name, decay(name, p.shape));
    }
  }

  /** One update with gradients keyed like `params` (missing = zero gradient). */
  apply(grads: ReadonlyMap<string, tf.Tensor>, lr: number): void {
    this.step++;
    const t = this.step;
    const bc1 = 1 - Math.pow(this.beta1, t);
    const bc2 = 1 - Math.pow(this.beta2, t);
    for (const [name, p] of this.params) {
      const g = grads.get(name);
      const m = this.m.get(name) as tf.Variable;
      const v = this.v.get(name) as tf.Variable;
      tf.tidy(() => {
        const gg = g ?? tf.zerosLike(p);
        const m2 = tf.add(tf.mul(m, this.beta1), tf.mul(gg, 1 - this.beta1));
        const v2 = tf.add(tf.mul(v, this.beta2), tf.mul(tf.square(gg), 1 - this.beta2));
        m.assign(m2);
        v.assign(v2);
        const update = tf.div(tf.div(m2, bc1), tf.add(tf.sqrt(tf.div(v2, bc2)), this.eps));
        let next = tf.sub(p, tf.mul(update, lr));
        if (this.weightDecay !== 0 && this.decays.get(name) === true) next = tf.sub(next, tf.mul(p, lr * this.weightDecay));
        p.assign(next);
      });
    }
  }

  async getMoments(name: string): Promise<MomentArrays> {
    const m = this.m.get(name),
      v = this.v.get(name);
    if (m === undefined || v === undefined) throw new TrainError('OptimizerState', `optimizer: no moments for "${name}"`);
    return { expAvg: (await m.data()) as Float32Array, expAvgSq: (await v.data()) as Float32Array };
  }

  setMoments(name: string, mo: MomentArrays): void {
    const m = this.m.get(name),
      v = this.v.get(name);
    if (m === undefined || v === undefined)
      throw new TrainError('OptimizerState', `optimizer: "${name}" is not a parameter of this model`);
    const n = m.size;
    if (mo.expAvg.length !== n || mo.expAvgSq.length !== n) {
      throw new TrainError(
        'OptimizerState',
        `optimizer state for "${name}" has ${mo.expAvg.length}/${mo.expAvgSq.length} entries, the weight has ${n}`,
      );
    }
    tf.tidy(() => {
      m.assign(tf.tensor(mo.expAvg, m.shape, 'float32'));
      v.assign(tf.tensor(mo.expAvgSq, v.shape, 'float32'));
    });
  }

  dispose(): void {
    tf.dispose([...this.m.values(), ...this.v.values()]);
  }
}
