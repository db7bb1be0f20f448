/**
 * MSG masks (SPEC §2), the one home of their values: the types, the masks.safetensors file, the
 * annealing schedule and its application. Their tfjs form (what the model multiplies by) is
 * src/model/mask-tensors.ts; the torch engine's counterpart is python/flm_grow_torch/masks.py.
 *
 * A grown checkpoint stores them beside it as masks.safetensors (F32):
 *   hidden [H]  vocab [V]  layers.{i}.heads [nh]  layers.{i}.ffn [F]  layers.{i}.residual [1]
 *   vocab_tokens [V] (only when the vocabulary grew with `vocab.new: "tokens"`)
 * Old units are 1; new units hold the current annealing value c (0 right after growth);
 * vocab padding ids are 0 for good. A unit is "new" exactly while its value is below 1, so a
 * mask file saved mid-annealing is self-describing and training can resume from it.
 *
 * The vocab mask m enters the logits as the additive bias log(m) (the softmax weight of id v is
 * multiplied by m[v]): -inf at 0, 0 at 1. Padding ids and new token ids both start at 0, so
 * `vocab_tokens` (1 = a learnable new token, annealed by the "vocab" group; 0 = an old id or
 * padding) says which ids rise; without it no vocab entry anneals (padding, as before tokens existed).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelConfig } from '../spec/config.ts';
import { FlmGrowError } from '../util/errors.ts';
import { SafetensorsFile } from './safetensors.ts';
import { writeSafetensors } from './safetensors-writer.ts';
import { bytesToFloat32 } from '../util/dtype.ts';
import { MANIFEST_RULES } from './checkpoint.ts';

export const MASKS_FILE = 'masks.safetensors';

/**
 * Groups annealed independently (each may have its own schedule in the manifest). Written here
 * as a literal tuple for the MaskGroup type; checked equal to manifest.json's maskGroups at load.
 */
export const MASK_GROUPS = ['hidden', 'heads', 'ffn', 'layers', 'vocab'] as const;
export type MaskGroup = (typeof MASK_GROUPS)[number];
/** masks.schedule[].shape (the same kind of check against manifest.json). */
export const SCHEDULE_SHAPES = ['linear', 'cosine'] as const;
for (const [name, mine, data] of [
  ['maskGroups', MASK_GROUPS, MANIFEST_RULES.maskGroups],
  ['scheduleShapes', SCHEDULE_SHAPES, MANIFEST_RULES.scheduleShapes],
] as const)
  if (JSON.stringify(mine) !== JSON.stringify(data))
    throw new Error(
      `python/flm_grow_torch/_data/manifest.json: ${name} differ from src/checkpoint/masks.ts's types (change both)`,
    );

/** One group's annealing (the manifest's masks.schedule entries). */
export interface MaskSchedule {
  group: MaskGroup;
  /**
   * Optimizer step (counted from the start of training the grown model) where annealing starts;
   * negative for a schedule carried from a source that was still annealing (it began earlier).
   */
  startStep: number;
  /** Steps from 0 to 1 (MSG's default: 5000). */
  length: number;
  shape: (typeof SCHEDULE_SHAPES)[number];
}

export interface LayerMasks {
  heads: Float32Array;
  ffn: Float32Array;
  /** Scales every write of the layer into the residual stream; 0 for a freshly inserted layer. */
  residual: number;
}

export interface MaskSet {
  hidden: Float32Array;
  vocab: Float32Array;
  layers: LayerMasks[];
  /** 1 for vocab ids that are learnable new tokens (annealed by the "vocab" group), 0 elsewhere; absent: none. */
  vocabTokens?: Float32Array;
}

export function onesMasks(c: ModelConfig): MaskSet {
  return {
    hidden: new Float32Array(c.hiddenSize).fill(1),
    vocab: new Float32Array(c.vocabSize).fill(1),
    layers: Array.from({ length: c.numLayers }, () => ({
      heads: new Float32Array(c.numHeads).fill(1),
      ffn: new Float32Array(c.intermediateSize).fill(1),
      residual: 1,
    })),
  };
}

export function masksPath(checkpointDir: string): string {
  return join(checkpointDir, MASKS_FILE);
}

export function hasMasks(checkpointDir: string): boolean {
  return existsSync(masksPath(checkpointDir));
}

function f32(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

export async function writeMasks(path: string, m: MaskSet): Promise<void> {
  const t: { name: string; dtype: 'F32'; shape: number[]; data: Uint8Array }[] = [
    { name: 'hidden', dtype: 'F32', shape: [m.hidden.length], data: f32(m.hidden) },
    { name: 'vocab', dtype: 'F32', shape: [m.vocab.length], data: f32(m.vocab) },
  ];
  m.layers.forEach((l, i) => {
    t.push({ name: `layers.${i}.heads`, dtype: 'F32', shape: [l.heads.length], data: f32(l.heads) });
    t.push({ name: `layers.${i}.ffn`, dtype: 'F32', shape: [l.ffn.length], data: f32(l.ffn) });
    t.push({ name: `layers.${i}.residual`, dtype: 'F32', shape: [1], data: f32(Float32Array.of(l.residual)) });
  });
  if (m.vocabTokens !== undefined)
    t.push({ name: 'vocab_tokens', dtype: 'F32', shape: [m.vocabTokens.length], data: f32(m.vocabTokens) });
  await writeSafetensors(path, t, { format: 'flm-grow-masks' });
}

/** Read a mask file and check its sizes against the config it belongs to. */
export async function readMasks(path: string, c: ModelConfig): Promise<MaskSet> {
  const f = await SafetensorsFile.open(path);
  try {
    const get = async (name: string, len: number): Promise<Float32Array> => {
      const info = f.tensors.get(name);
      if (info === undefined) throw new FlmGrowError('MaskMissing', `${path}: mask "${name}" is missing`);
      const n = info.shape.reduce((a, b) => a * b, 1);
      if (n !== len) throw new FlmGrowError('MaskShape', `${path}: mask "${name}" has ${n} entries, config needs ${len}`);
      const v = bytesToFloat32(await f.read(name), info.dtype);
      for (let k = 0; k < v.length; k++) {
        if (!(v[k] >= 0 && v[k] <= 1))
          throw new FlmGrowError('MaskValue', `${path}: mask "${name}"[${k}] = ${v[k]} is outside [0, 1]`);
      }
      return v;
    };
    const layers: LayerMasks[] = [];
    for (let i = 0; i < c.numLayers; i++) {
      layers.push({
        heads: await get(`layers.${i}.heads`, c.numHeads),
        ffn: await get(`layers.${i}.ffn`, c.intermediateSize),
        residual: (await get(`layers.${i}.residual`, 1))[0],
      });
    }
    const vocabTokens = f.tensors.has('vocab_tokens') ? await get('vocab_tokens', c.vocabSize) : undefined;
    return {
      hidden: await get('hidden', c.hiddenSize),
      vocab: await get('vocab', c.vocabSize),
      layers,
      ...(vocabTokens !== undefined ? { vocabTokens } : {}),
    };
  } finally {
    await f.close();
  }
}

/** Masks of a checkpoint folder, or undefined for a plain checkpoint. */
export async function loadMasksIfAny(checkpointDir: string, c: ModelConfig): Promise<MaskSet | undefined> {
  return hasMasks(checkpointDir) ? readMasks(masksPath(checkpointDir), c) : undefined;
}

/** Which annealed groups still have entries below 1 (vocab: new tokens only; padding stays 0). */
/**
 * A float32 value as the shortest decimal that reads back as the same float32: masks are stored
 * as F32, and 0.1 stored is 0.10000000149011612 as a double, which is not what anyone wrote.
 */
export function float32Shortest(v: number): number {
  if (!Number.isFinite(v)) return v;
  const f = Math.fround(v);
  for (let p = 1; p <= 9; p++) {
    const x = Number(f.toPrecision(p));
    if (Math.fround(x) === f) return x;
  }
  return f;
}

export function groupsBelowOne(m: MaskSet): { group: MaskGroup; minValue: number; count: number }[] {
  const out: { group: MaskGroup; minValue: number; count: number }[] = [];
  const scan = (group: MaskGroup, arrays: ArrayLike<number>[]) => {
    let min = 1;
    let count = 0;
    for (const a of arrays)
      for (let k = 0; k < a.length; k++)
        if (a[k] < 1) {
          count++;
          min = Math.min(min, a[k]);
        }
    if (count > 0) out.push({ group, minValue: float32Shortest(min), count });
  };
  scan('hidden', [m.hidden]);
  scan(
    'heads',
    m.layers.map((l) => l.heads),
  );
  scan(
    'ffn',
    m.layers.map((l) => l.ffn),
  );
  scan('layers', [m.layers.map((l) => l.residual)]);
  const tokens = m.vocabTokens;
  if (tokens !== undefined) scan('vocab', [Float32Array.from(m.vocab, (v, k) => (tokens[k] === 1 ? v : 1))]);
  return out;
}

/**
 * Set every new unit (value below 1) of each group to that group's annealing value c.
 * c only rises, so units stay identifiable as new until their group reaches 1.
 */
export function applyMaskValues(m: MaskSet, values: Partial<Record<MaskGroup, number>>): MaskSet {
  const set = (a: Float32Array, c: number | undefined) => {
    if (c === undefined) return a;
    const out = a.slice();
    for (let k = 0; k < out.length; k++) if (out[k] < 1) out[k] = Math.max(out[k], c);
    return out;
  };
  const tokens = m.vocabTokens;
  const c = values.vocab;
  return {
    hidden: set(m.hidden, values.hidden),
    // only new tokens rise with the vocab group; padding ids stay 0
    vocab:
      tokens === undefined || c === undefined
        ? m.vocab
        : Float32Array.from(m.vocab, (v, k) => (tokens[k] === 1 && v < 1 ? Math.max(v, c) : v)),
    ...(tokens !== undefined ? { vocabTokens: tokens } : {}),
    layers: m.layers.map((l) => ({
      heads: set(l.heads, values.heads),
      ffn: set(l.ffn, values.ffn),
      residual: l.residual < 1 && values.layers !== undefined ? Math.max(l.residual, values.layers) : l.residual,
    })),
  };
}

// ---- the annealing schedule ----------------------------------------------------------------
// MSG annealing: each mask group rises from 0 to 1 over its schedule entry, counted in optimizer
// steps since the growth (the manifest's masks.schedule). Masks are not trained: the trainer sets
// them from these functions before every step, so a resumed run sees the same values.

/** Value of one schedule entry at `stageStep` (steps since growth), in [0, 1]. */
export function scheduleValue(s: MaskSchedule, stageStep: number): number {
  if (s.length <= 0) return 1;
  const t = Math.min(1, Math.max(0, (stageStep - s.startStep) / s.length));
  return s.shape === 'cosine' ? 0.5 * (1 - Math.cos(Math.PI * t)) : t;
}

/** The annealing value of every scheduled group at `stageStep`. */
export function maskValuesAt(schedule: readonly MaskSchedule[], stageStep: number): Partial<Record<MaskGroup, number>> {
  const out: Partial<Record<MaskGroup, number>> = {};
  for (const s of schedule) out[s.group] = scheduleValue(s, stageStep);
  return out;
}

/** First stage step at which every group has reached 1 (0 for an empty schedule). */
export function annealingEndStep(schedule: readonly MaskSchedule[]): number {
  return schedule.reduce((a, s) => Math.max(a, s.startStep + s.length), 0);
}
