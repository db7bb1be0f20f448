/**
 * AdamW state beside a checkpoint: optimizer.safetensors holds, for every weight `W`,
 * `exp_avg.W` and `exp_avg_sq.W` (F32, the weight's shape), and in its metadata the optimizer
 * step, tokens seen and the hyperparameters. `grow` of a trained checkpoint carries it into the
 * grown model the way MSG does: old slices copied, new entries 0 (growOptimizerFile in growth/moments.ts).
 */
import { bytesToFloat32 } from '../util/dtype.ts';
import { SafetensorsFile } from './safetensors.ts';
import { writeSafetensors } from './safetensors-writer.ts';
import { writeFileAtomic } from './atomic.ts';
import { TrainError } from '../util/errors.ts';

export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const OPTIMIZER_FORMAT = 'flm-grow-adamw';

/** One weight's Adam moments (float32, the weight's shape). */
export interface MomentArrays {
  expAvg: Float32Array;
  expAvgSq: Float32Array;
}

export interface OptimizerMeta {
  step: number;
  tokens: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export interface OptimizerState {
  meta: OptimizerMeta;
  moments: Map<string, MomentArrays>;
}

function bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

export async function writeOptimizerState(
  path: string,
  shapes: ReadonlyMap<string, readonly number[]>,
  st: OptimizerState,
): Promise<void> {
  const tensors: { name: string; dtype: 'F32'; shape: number[]; data: Uint8Array }[] = [];
  for (const [name, shape] of shapes) {
    const mo = st.moments.get(name);
    if (mo === undefined) throw new TrainError('OptimizerState', `${path}: no moments for "${name}"`);
    tensors.push({ name: `exp_avg.${name}`, dtype: 'F32', shape: [...shape], data: bytes(mo.expAvg) });
    tensors.push({ name: `exp_avg_sq.${name}`, dtype: 'F32', shape: [...shape], data: bytes(mo.expAvgSq) });
  }
  const m = st.meta;
  // via a temporary name: a half-written file must never look like optimizer state
  await writeFileAtomic(path, (tmp) =>
    writeSafetensors(tmp, tensors, {
      format: OPTIMIZER_FORMAT,
      step: String(m.step),
      tokens: String(m.tokens),
      beta1: String(m.beta1),
      beta2: String(m.beta2),
      eps: String(m.eps),
      weight_decay: String(m.weightDecay),
    }),
  );
}

function metaNumber(md: Record<string, string> | undefined, key: string, path: string): number {
  const v = Number(md?.[key]);
  if (md?.[key] === undefined || !Number.isFinite(v))
    throw new TrainError('OptimizerState', `${path}: metadata field "${key}" is missing or not a number`);
  return v;
}

/** Read optimizer.safetensors; `names` (weight names) must all be present with these shapes. */
export async function readOptimizerState(path: string, shapes?: ReadonlyMap<string, readonly number[]>): Promise<OptimizerState> {
  const f = await SafetensorsFile.open(path);
  try {
    const md = f.metadata;
    if (md?.format !== OPTIMIZER_FORMAT)
      throw new TrainError(
        'OptimizerState',
        `${path}: not an ${OPTIMIZER_FORMAT} optimizer state (metadata format ${JSON.stringify(md?.format)})`,
      );
    const meta: OptimizerMeta = {
      step: metaNumber(md, 'step', path),
      tokens: metaNumber(md, 'tokens', path),
      beta1: metaNumber(md, 'beta1', path),
      beta2: metaNumber(md, 'beta2', path),
      eps: metaNumber(md, 'eps', path),
      weightDecay: metaNumber(md, 'weight_decay', path),
    };
    const names =
      shapes !== undefined
        ? [...shapes.keys()]
        : [...f.tensors.keys()].filter((n) => n.startsWith('exp_avg.')).map((n) => n.slice('exp_avg.'.length));
    const moments = new Map<string, MomentArrays>();
    for (const name of names) {
      const get = async (key: string): Promise<Float32Array> => {
        const info = f.tensors.get(key);
        if (info === undefined) throw new TrainError('OptimizerState', `${path}: tensor "${key}" is missing`);
        const want = shapes?.get(name);
        if (want !== undefined && (info.shape.length !== want.length || info.shape.some((d, k) => d !== want[k]))) {
          throw new TrainError(
            'OptimizerState',
            `${path}: tensor "${key}" has shape [${info.shape.join(', ')}], the weight has [${want.join(', ')}]`,
          );
        }
        return bytesToFloat32(await f.read(key), info.dtype);
      };
      moments.set(name, { expAvg: await get(`exp_avg.${name}`), expAvgSq: await get(`exp_avg_sq.${name}`) });
    }
    return { meta, moments };
  } finally {
    await f.close();
  }
}
