/**
 * Test support shared by model, verify, growth and training tests: tiny random checkpoints
 * written with the real CheckpointWriter, and in-memory weights built from plain arrays.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { expectedTensors, headRole, layerRolesOf, tensorName } from '../../src/spec/arch.ts';
import { configToJson, makeConfig, type ModelConfig } from '../../src/spec/config.ts';
import { CheckpointWriter } from '../../src/checkpoint/checkpoint-writer.ts';
import { float32ToBytes, roundToDtype, type DType } from '../../src/util/dtype.ts';
import { mulberry32 } from '../../src/util/random.ts';
import { LAYER_FIELDS, type LlamaWeights } from '../../src/model/llama.ts';
import { initConfig } from '../../src/train/random-init.ts';

/** The tiny byte-vocabulary model of the training tests (fortunes.txt is byte-tokenized), in config.json keys. */
export const TINY_BYTE_CONFIG = {
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 2,
  head_dim: 8,
  vocab_size: 256,
  max_position_embeddings: 64,
};

/** TINY_BYTE_CONFIG as a ModelConfig, with `over` (config.json keys) changed. */
export function tinyByteConfig(over: Record<string, unknown> = {}): ModelConfig {
  return initConfig({ ...TINY_BYTE_CONFIG, ...over });
}

export function makeTempDir(prefix = 'flm-grow-model-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Seeded standard normal samples (Box–Muller on mulberry32). */
export function normalSampler(seed: number): () => number {
  const next = mulberry32(seed);
  return () => {
    const u = (next() + 0.5) / 4294967296;
    const v = (next() + 0.5) / 4294967296;
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
}

/**
 * Random weights by HF name, already rounded to `dtype` (so they equal what a checkpoint of that
 * dtype holds). Norm gains are 1 ± 0.3 so a wrong gain shows; matrices have std 1/sqrt(fan_in)
 * times `std` so activations keep a sane scale through a few layers.
 */
export function randomWeightArrays(
  cfg: ModelConfig,
  opts: { seed?: number; dtype?: DType; std?: number } = {},
): Map<string, Float32Array> {
  const rnd = normalSampler(opts.seed ?? 1);
  const out = new Map<string, Float32Array>();
  for (const t of expectedTensors(cfg)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const v = new Float32Array(n);
    const isNorm = t.role.endsWith('norm');
    const std = (opts.std ?? 1) * (t.role === 'embed' ? 1 : 1 / Math.sqrt(t.shape[t.shape.length - 1]));
    for (let k = 0; k < n; k++) v[k] = isNorm ? 1 + 0.3 * rnd() : std * rnd();
    out.set(t.name, roundToDtype(v, opts.dtype ?? 'F32'));
  }
  return out;
}

/** Write a checkpoint of `cfg` holding `arrays` (by HF name) in `dtype`. */
export async function writeCheckpoint(
  dir: string,
  cfg: ModelConfig,
  arrays: Map<string, Float32Array>,
  opts: { dtype?: DType; maxShardSize?: number; sideFiles?: Record<string, string> } = {},
): Promise<void> {
  const dtype = opts.dtype ?? 'F32';
  const tensors = expectedTensors(cfg);
  const w = await CheckpointWriter.create(
    dir,
    tensors.map((t) => ({ name: t.name, dtype, shape: t.shape })),
    { maxShardSize: opts.maxShardSize ?? 1e9, overwrite: true, force: true },
  );
  for (const t of tensors) {
    const v = arrays.get(t.name);
    if (v === undefined) throw new Error(`writeCheckpoint: no array for ${t.name}`);
    await w.writeTensor(t.name, float32ToBytes(v, dtype));
  }
  await w.writeSideFile('config.json', JSON.stringify(configToJson({ ...cfg, dtype }), null, 2));
  for (const [name, text] of Object.entries(opts.sideFiles ?? {})) await w.writeSideFile(name, text);
  await w.commit();
}

/** A random checkpoint of `cfg` in `dtype` (default F32) at `dir`; returns the arrays written. */
export async function writeRandomCheckpoint(
  dir: string,
  cfg: ModelConfig,
  opts: { seed?: number; dtype?: DType; std?: number; maxShardSize?: number } = {},
): Promise<Map<string, Float32Array>> {
  const arrays = randomWeightArrays(cfg, opts);
  await writeCheckpoint(dir, cfg, arrays, opts);
  return arrays;
}

/** tf weights from arrays by HF name (the caller disposes them with disposeWeights). */
export function weightsFromArrays(cfg: ModelConfig, arrays: Map<string, Float32Array>): LlamaWeights {
  const t = (name: string, shape: number[]) => {
    const v = arrays.get(name);
    if (v === undefined) throw new Error(`weightsFromArrays: no array for ${name}`);
    return tf.tensor(v, shape, 'float32');
  };
  const byName = new Map(expectedTensors(cfg).map((e) => [e.name, e.shape]));
  const get = (name: string) => t(name, byName.get(name) as number[]);
  const present = new Set(layerRolesOf(cfg));
  return {
    embed: get(tensorName('embed')),
    finalNorm: get(tensorName('final_norm')),
    lmHead: get(tensorName(headRole(cfg))),
    layers: Array.from(
      { length: cfg.numLayers },
      (_, i) =>
        Object.fromEntries(
          LAYER_FIELDS.filter(([, role]) => present.has(role)).map(([field, role]) => [field, get(tensorName(role, i))]),
        ) as unknown as LlamaWeights['layers'][number],
    ),
  };
}

/** Seeded token ids [B][T] in [0, vocab). */
export function randomIdRows(B: number, T: number, vocab: number, seed: number): number[][] {
  const next = mulberry32(seed);
  return Array.from({ length: B }, () => Array.from({ length: T }, () => next() % vocab));
}

/**
 * A grown model built by hand, independent of src/growth: extra hidden coordinates, an extra
 * attention head, extra FFN units (all at interleaved positions), an inserted layer, vocab
 * padding. Every new weight is random (not zero); the masks alone must hide them (SPEC §2).
 */
export interface HandGrown {
  cfg: ModelConfig;
  arrays: Map<string, Float32Array>;
  masks: import('../../src/checkpoint/masks.ts').MaskSet;
  /** Grown position of each old hidden coordinate. */
  hiddenPos: number[];
  /** For each grown layer: the source layer, and whether it was inserted. */
  layerMap: { source: number; inserted: boolean }[];
}

export function buildHandGrown(src: ModelConfig, srcArrays: Map<string, Float32Array>, seed = 99): HandGrown {
  const rnd = normalSampler(seed);
  const H = src.hiddenSize,
    F = src.intermediateSize,
    V = src.vocabSize,
    nh = src.numHeads,
    hd = src.headDim,
    nkv = src.numKvHeads;
  if (nkv !== 1) throw new Error('buildHandGrown: keeps every query head in the single KV group; use nkv = 1');
  const H2 = H + 4,
    F2 = F + 5,
    V2 = V + 8,
    nh2 = nh + 1,
    L2 = src.numLayers + 1;
  // interleaved positions of the new units
  const spread = (oldN: number, newN: number) => {
    const total = oldN + newN;
    const isNew = new Set(Array.from({ length: newN }, (_, k) => Math.floor(((k + 0.5) * total) / newN)));
    return Array.from({ length: total }, (_, p) => p).filter((p) => !isNew.has(p));
  };
  const hiddenPos = spread(H, 4);
  const ffnPos = spread(F, 5);
  const headPos = Array.from({ length: nh }, (_, j) => (j === 0 ? 0 : j + 1)); // new head at grown index 1
  const cfg = makeConfigLike(src, { hiddenSize: H2, intermediateSize: F2, numHeads: nh2, numLayers: L2, vocabSize: V2 });
  const layerMap = Array.from({ length: L2 }, (_, l) =>
    l <= 0 ? { source: 0, inserted: false } : l === 1 ? { source: 0, inserted: true } : { source: l - 1, inserted: false },
  );
  const arrays = new Map<string, Float32Array>();
  const random = (n: number) => Float32Array.from({ length: n }, () => 0.3 * rnd());
  // place old [rows, cols] into grown [rows2, cols2] with maps (undefined = identity)
  const place = (
    old: Float32Array,
    rows: number,
    cols: number,
    rows2: number,
    cols2: number,
    rowMap: (r: number) => number,
    colMap: (c: number) => number,
  ) => {
    const out = random(rows2 * cols2);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[rowMap(r) * cols2 + colMap(c)] = old[r * cols + c];
    return out;
  };
  const id = (x: number) => x;
  const hp = (i: number) => hiddenPos[i];
  const headRow = (r: number) => headPos[Math.floor(r / hd)] * hd + (r % hd);
  const get = (n: string) => srcArrays.get(n) as Float32Array;
  arrays.set(tensorName('embed'), place(get(tensorName('embed')), V, H, V2, H2, id, hp));
  arrays.set(tensorName('lm_head'), place(get(tensorName('lm_head')), V, H, V2, H2, id, hp));
  arrays.set(tensorName('final_norm'), place(get(tensorName('final_norm')), 1, H, 1, H2, id, hp));
  for (let l = 0; l < L2; l++) {
    const e = layerMap[l];
    const n = (role: Parameters<typeof tensorName>[0]) => tensorName(role, l);
    if (e.inserted) {
      for (const [role, r, c] of [
        ['input_norm', 1, H2],
        ['q', nh2 * hd, H2],
        ['k', hd, H2],
        ['v', hd, H2],
        ['o', H2, nh2 * hd],
        ['post_norm', 1, H2],
        ['gate', F2, H2],
        ['up', F2, H2],
        ['down', H2, F2],
      ] as const)
        arrays.set(n(role), random(r * c));
      continue;
    }
    const s = (role: Parameters<typeof tensorName>[0]) => get(tensorName(role, e.source));
    arrays.set(n('input_norm'), place(s('input_norm'), 1, H, 1, H2, id, hp));
    arrays.set(n('post_norm'), place(s('post_norm'), 1, H, 1, H2, id, hp));
    arrays.set(n('q'), place(s('q'), nh * hd, H, nh2 * hd, H2, headRow, hp));
    arrays.set(n('k'), place(s('k'), hd, H, hd, H2, id, hp));
    arrays.set(n('v'), place(s('v'), hd, H, hd, H2, id, hp));
    arrays.set(n('o'), place(s('o'), H, nh * hd, H2, nh2 * hd, hp, headRow));
    arrays.set(
      n('gate'),
      place(s('gate'), F, H, F2, H2, (f) => ffnPos[f], hp),
    );
    arrays.set(
      n('up'),
      place(s('up'), F, H, F2, H2, (f) => ffnPos[f], hp),
    );
    arrays.set(
      n('down'),
      place(s('down'), H, F, H2, F2, hp, (f) => ffnPos[f]),
    );
  }
  const hidden = new Float32Array(H2);
  for (const p of hiddenPos) hidden[p] = 1;
  const ffn = new Float32Array(F2);
  for (const p of ffnPos) ffn[p] = 1;
  const heads = new Float32Array(nh2);
  for (const p of headPos) heads[p] = 1;
  const vocab = new Float32Array(V2);
  vocab.fill(1, 0, V);
  const masks = {
    hidden,
    vocab,
    layers: layerMap.map((e) =>
      e.inserted
        ? { heads: new Float32Array(nh2).fill(1), ffn: new Float32Array(F2).fill(1), residual: 0 }
        : { heads: heads.slice(), ffn: ffn.slice(), residual: 1 },
    ),
  };
  return { cfg, arrays, masks, hiddenPos, layerMap };
}

function makeConfigLike(
  src: ModelConfig,
  p: { hiddenSize: number; intermediateSize: number; numHeads: number; numLayers: number; vocabSize: number },
): ModelConfig {
  return makeConfig({
    ...p,
    numKvHeads: src.numKvHeads,
    headDim: src.headDim,
    rmsNormEps: src.rmsNormEps,
    ropeTheta: src.ropeTheta,
    useMup: src.useMup,
    inputMult: src.inputMult,
    outputMult: src.outputMult,
    mupScaleFactor: src.mupScaleFactor,
  });
}
