/**
 * A freshly initialised model to start a pipeline from (the first stage trains it): normal
 * weights of std `std` (the one initialiser of util/init.ts) (residual-writing projections o/down scaled by 1/sqrt(2L), GPT-2 style,
 * so the residual stream does not grow with depth), norm gains 1, stored as F32.
 */
import { mkdirSync } from 'node:fs';
import { expectedTensors } from '../spec/arch.ts';
import { configToJson, makeConfig, parseConfig, type ModelConfig } from '../spec/config.ts';
import { CheckpointWriter } from '../checkpoint/checkpoint-writer.ts';
import { float32ToBytes } from '../util/dtype.ts';
import { MANIFEST_FORMAT, TOOL_VERSION } from '../checkpoint/manifest.ts';
import { finishWithManifest } from './checkpointing.ts';
import { defaultInitStd, NormalStream } from '../util/init.ts';

import { dirname } from 'node:path';

export interface RandomInitOptions {
  seed?: number;
  /** Default: the config's initializer_range, else Tele-FLM's 4e-3 (defaultInitStd). */
  std?: number;
  overwrite?: boolean;
}

/** HF config keys (hidden_size, ...) or a ready ModelConfig. */
export function initConfig(json: Record<string, unknown>): ModelConfig {
  const base = makeConfig({ hiddenSize: 8, intermediateSize: 8, numLayers: 1, numHeads: 1, vocabSize: 8 });
  return parseConfig({ ...base.raw, dtype: 'float32', ...json }, 'init config');
}

export async function writeRandomInit(dir: string, cfg: ModelConfig, opts: RandomInitOptions = {}): Promise<void> {
  const std = opts.std ?? defaultInitStd(cfg.raw.initializer_range);
  const seed = opts.seed ?? 0;
  const tensors = expectedTensors(cfg);
  mkdirSync(dirname(dir), { recursive: true });
  const w = await CheckpointWriter.create(
    dir,
    tensors.map((t) => ({ name: t.name, dtype: 'F32' as const, shape: t.shape })),
    { overwrite: opts.overwrite },
  );
  try {
    for (const t of tensors) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (t.shape.length === 1) {
        await w.writeTensor(t.name, float32ToBytes(new Float32Array(n).fill(1), 'F32'));
        continue;
      }
      const scale = t.role === 'o' || t.role === 'down' ? 1 / Math.sqrt(2 * cfg.numLayers) : 1;
      const bytes = new Uint8Array(4 * n);
      new NormalStream(seed, t.name, std * scale, 'F32').fill(bytes);
      await w.writeTensor(t.name, bytes);
    }
    await w.writeSideFile('config.json', JSON.stringify(configToJson({ ...cfg, dtype: 'F32' }), null, 2) + '\n');
    // the manifest goes in before the rename, so the folder appears complete or not at all
    await finishWithManifest(w, {
      format: MANIFEST_FORMAT,
      kind: 'synth',
      created: new Date().toISOString(),
      tool: { name: 'flm-grow', version: TOOL_VERSION },
      extra: { init: 'random-normal', std, seed, dtype: 'F32' },
    });
    await w.commit();
  } catch (e) {
    await w.abort();
    throw e;
  }
}
