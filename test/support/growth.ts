/**
 * Test support for growth: tiny random checkpoints written with the real writer, weights read
 * back as float maps, and the naive float64 reference forward (test/reference) as the judge.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expectedTensors } from '../../src/spec/arch.ts';
import type { ModelConfig } from '../../src/spec/config.ts';
import { Checkpoint } from '../../src/checkpoint/checkpoint.ts';
import type { DType } from '../../src/util/dtype.ts';
import { mulberry32 } from '../../src/util/random.ts';
import { makeTempDir, normalSampler, writeCheckpoint } from './model.ts';
import { readMasks, MASKS_FILE, type MaskSet } from '../../src/checkpoint/masks.ts';
import { readManifest } from '../../src/checkpoint/manifest.ts';
import { grownBoundary } from '../../src/growth/boundary.ts';
import { naiveForward, type NaiveOutput } from '../reference/naive-llama.ts';

export function tempDir(prefix = 'flm-grow-test-'): { dir: string; cleanup: () => void } {
  return makeTempDir(prefix);
}

export interface SynthOptions {
  seed?: number;
  std?: number;
  /** Layers whose o_proj and down_proj are 0 (identity layers). */
  identityLayers?: number[];
  maxShardSize?: number;
}

/** Write a random checkpoint (norm gains around 1, matrices of std `std`) of `cfg` in `dtype` to `dir`. */
export async function writeRandomCheckpoint(dir: string, cfg: ModelConfig, dtype: DType, o: SynthOptions = {}): Promise<void> {
  const normal = normalSampler(o.seed ?? 1);
  const std = o.std ?? 0.5;
  const arrays = new Map<string, Float32Array>();
  for (const t of expectedTensors(cfg)) {
    const v = new Float32Array(t.shape.reduce((a, b) => a * b, 1));
    const ident = t.layer !== undefined && (o.identityLayers ?? []).includes(t.layer) && (t.role === 'o' || t.role === 'down');
    for (let k = 0; k < v.length; k++) {
      if (ident) v[k] = 0;
      else if (t.role.endsWith('norm')) v[k] = 1 + 0.3 * normal();
      else v[k] = std * normal();
    }
    arrays.set(t.name, v);
  }
  await writeCheckpoint(dir, cfg, arrays, {
    dtype,
    maxShardSize: o.maxShardSize,
    sideFiles: { 'generation_config.json': '{"bos_token_id": 1}\n' },
  });
}

export async function loadAll(dir: string): Promise<{ cfg: ModelConfig; w: Map<string, Float32Array> }> {
  const ck = await Checkpoint.open(dir);
  const w = new Map<string, Float32Array>();
  for (const name of ck.tensors.keys()) w.set(name, await ck.readFloat32(name));
  await ck.close();
  return { cfg: ck.config, w };
}

export function naive(
  cfg: ModelConfig,
  w: Map<string, Float32Array>,
  ids: number[],
  masks?: MaskSet,
  invFreq?: ArrayLike<number>,
): NaiveOutput {
  return naiveForward(
    cfg,
    {
      get: (n) => {
        const v = w.get(n);
        if (v === undefined) throw new Error(`no tensor ${n}`);
        return v;
      },
    },
    ids,
    { masks, invFreq },
  );
}

export function randomIds(n: number, V: number, seed: number): number[] {
  const next = mulberry32(seed);
  return Array.from({ length: n }, () => next() % V);
}

export function writeJson(path: string, v: unknown): void {
  writeFileSync(path, JSON.stringify(v, null, 2));
}

/** Run the source and the grown model on the same ids; return max |Δ| of logits (old vocab) and hidden (old coords). */
export async function compareGrown(
  srcDir: string,
  outDir: string,
  mode: 'masked' | 'zero',
  ids: number[],
): Promise<{ dLogits: number; dHidden: number; scale: number; newNonZero: number }> {
  const s = await loadAll(srcDir);
  const o = await loadAll(outDir);
  const masks = mode === 'masked' ? await readMasks(join(outDir, MASKS_FILE), o.cfg) : undefined;
  const srcMasks = existsSync(join(srcDir, MASKS_FILE)) ? await readMasks(join(srcDir, MASKS_FILE), s.cfg) : undefined;
  const a = naive(s.cfg, s.w, ids, srcMasks);
  const b = naive(o.cfg, o.w, ids, masks);
  const layerMap = (readManifest(outDir)?.layerMap ?? []) as { source: number; inserted: boolean }[];
  let dLogits = 0,
    dHidden = 0,
    scale = 1,
    newNonZero = 0;
  for (let t = 0; t < ids.length; t++) {
    for (let v = 0; v < s.cfg.vocabSize; v++) {
      if (a.logits[t][v] === -Infinity) {
        // masked padding of a masked source stays masked
        if (b.logits[t][v] !== -Infinity) dLogits = Infinity;
        continue;
      }
      dLogits = Math.max(dLogits, Math.abs(a.logits[t][v] - b.logits[t][v]));
      scale = Math.max(scale, Math.abs(a.logits[t][v]));
    }
    for (let n = 0; n <= s.cfg.numLayers; n++) {
      const m = grownBoundary(layerMap, n);
      for (let i = 0; i < s.cfg.hiddenSize; i++) dHidden = Math.max(dHidden, Math.abs(a.hidden[n][t][i] - b.hidden[m][t][i]));
      // new coordinates of the residual stream stay exactly 0
      if (n < s.cfg.numLayers)
        for (let i = s.cfg.hiddenSize; i < o.cfg.hiddenSize; i++) if (b.hidden[m][t][i] !== 0) newNonZero++;
    }
  }
  return { dLogits, dHidden, scale, newNonZero };
}
