/**
 * A freshly initialised model to start a pipeline from (the first stage trains it): normal
 * weights of std `std` (residual-writing projections o/down scaled by 1/sqrt(2L), GPT-2 style,
 * so the residual stream does not grow with depth), norm gains 1, stored as F32.
 */
import { mkdirSync } from 'node:fs';
import { expectedTensors } from '../arch.ts';
import { configToJson, makeConfig, parseConfig, type ModelConfig } from '../config.ts';
import { CheckpointWriter } from '../checkpoint/checkpoint-writer.ts';
import { float32ToBytes } from '../util/dtype.ts';
import { MANIFEST_FORMAT } from '../manifest.ts';
import { writeManifestLast } from './checkpointing.ts';
import { hashSeed, mulberry32 } from '../util/random.ts';

import { dirname } from 'node:path';

export interface RandomInitOptions {
  seed?: number;
  /** Default: the config's initializer_range, else 0.02. */
  std?: number;
  overwrite?: boolean;
}

/** HF config keys (hidden_size, ...) or a ready ModelConfig. */
export function initConfig(json: Record<string, unknown>): ModelConfig {
  const base = makeConfig({ hiddenSize: 8, intermediateSize: 8, numLayers: 1, numHeads: 1, vocabSize: 8 });
  return parseConfig({ ...base.raw, dtype: 'float32', ...json }, 'init config');
}

function normals(n: number, std: number, seed: number): Float32Array {
  const next = mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = (next() + 0.5) / 4294967296, v = (next() + 0.5) / 4294967296;
    const r = Math.sqrt(-2 * Math.log(u)) * std;
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

export async function writeRandomInit(dir: string, cfg: ModelConfig, opts: RandomInitOptions = {}): Promise<void> {
  const ir = cfg.raw.initializer_range;
  const std = opts.std ?? (typeof ir === 'number' && ir > 0 ? ir : 0.02);
  const seed = opts.seed ?? 0;
  const tensors = expectedTensors(cfg);
  mkdirSync(dirname(dir), { recursive: true });
  const w = await CheckpointWriter.create(dir, tensors.map((t) => ({ name: t.name, dtype: 'F32' as const, shape: t.shape })), { overwrite: opts.overwrite });
  try {
    for (const t of tensors) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      let v: Float32Array;
      if (t.shape.length === 1) v = new Float32Array(n).fill(1);
      else {
        const scale = t.role === 'o' || t.role === 'down' ? 1 / Math.sqrt(2 * cfg.numLayers) : 1;
        v = normals(n, std * scale, hashSeed(seed, ...Array.from(t.name, (ch) => ch.charCodeAt(0))));
      }
      await w.writeTensor(t.name, float32ToBytes(v, 'F32'));
    }
    await w.writeSideFile('config.json', JSON.stringify(configToJson({ ...cfg, dtype: 'F32' }), null, 2) + '\n');
    await w.commit();
  } catch (e) {
    await w.abort();
    throw e;
  }
  await writeManifestLast(dir, {
    format: MANIFEST_FORMAT, kind: 'synth', created: new Date().toISOString(), tool: { name: 'flm-grow', version: '0.1.0' },
    extra: { init: 'random-normal', std, seed, dtype: 'F32' },
  });
}
