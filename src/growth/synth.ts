/**
 * `synth`: a random checkpoint with a Tele-FLM stage's exact widths and any number of layers, for
 * rehearsing growth at full width without the real weights. Values come from a 65,536-entry table
 * of normal quantiles already encoded in the output dtype, indexed by 16 random bits: one xorshift
 * step gives two values and nothing is converted from float, so generation keeps ahead of the disk.
 */
import { existsSync } from 'node:fs';
import { expectedTensors, FAMILIES, FAMILY_NAMES, type ExpectedTensor } from '../spec/arch.ts';
import { configToJson, makeConfig, parseConfig, readConfigFile, type ModelConfig } from '../spec/config.ts';
import { parseSize } from '../checkpoint/checkpoint-writer.ts';
import { CONFIG_FILE } from '../checkpoint/checkpoint.ts';
import { dtypeSize, float32ToBytes, type DType } from '../util/dtype.ts';
import { startProgress, type ProgressFactory } from '../util/progress.ts';
import { DEFAULT_INIT_STD, inverseNormalCdf, NormalStream } from '../util/init.ts';
import { FlmGrowError } from '../util/errors.ts';
import { MANIFEST_FILE, MANIFEST_FORMAT, TOOL_VERSION, type Manifest } from '../checkpoint/manifest.ts';
import { BlockPool, createHashedWriter } from './hash-worker.ts';

/** Embedding std and matrix std of the Tele-FLM model card (SPEC §6). */
export const SYNTH_EMBED_STD = DEFAULT_INIT_STD;
export const SYNTH_MATRIX_STD = 4.242e-3;

export interface StagePreset {
  numLayers: number;
  numHeads: number;
  hiddenSize: number;
  intermediateSize: number;
  vocabSize: number;
  outputMult: number;
  mupScaleFactor: number;
  /** Why these numbers (shown by --help / docs). */
  note: string;
}

/**
 * Widths from the model cards (SPEC §6), head_dim 128 everywhere. Vocab is padded as the released
 * configs pad it (80,000 tokens -> 80,384 for 52B, 81,920 for 1T). 102B was never released: it
 * gets 80,384 because it was grown from 52B and the shipped 52B->102B plan keeps the vocabulary
 * (and the µP fields, so its logit scale 0.5/16 is the 52B's, as function preservation demands).
 * The µP proxy is the width-512 base model: mup_scale_factor 1, output_mult 0.5 (52B: 8192/512 = 16).
 */
export const STAGES: Readonly<Record<string, StagePreset>> = {
  'tele-flm-52b': {
    numLayers: 64,
    numHeads: 64,
    hiddenSize: 8192,
    intermediateSize: 21824,
    vocabSize: 80384,
    outputMult: 0.5,
    mupScaleFactor: 16,
    note: 'released config',
  },
  'tele-flm-102b': {
    numLayers: 80,
    numHeads: 80,
    hiddenSize: 10240,
    intermediateSize: 27264,
    vocabSize: 80384,
    outputMult: 0.5,
    mupScaleFactor: 16,
    note: 'unreleased: vocab and µP fields as the 52B->102B plan produces them',
  },
  'tele-flm-1t': {
    numLayers: 140,
    numHeads: 160,
    hiddenSize: 20480,
    intermediateSize: 98304,
    vocabSize: 81920,
    outputMult: 2.0,
    mupScaleFactor: 80,
    note: 'released config',
  },
  'tele-flm-mup-proxy': {
    numLayers: 64,
    numHeads: 4,
    hiddenSize: 512,
    intermediateSize: 1344,
    vocabSize: 80384,
    outputMult: 0.5,
    mupScaleFactor: 1,
    note: 'µP base width 512',
  },
};

export const STAGE_NAMES = Object.keys(STAGES);

/** What --like accepts: a Tele-FLM stage, a family (its tiny config, families.ts), or a config.json path. */
export const LIKE_NAMES = [...STAGE_NAMES, ...FAMILY_NAMES];

/**
 * The config `--like` names: a Tele-FLM stage (STAGES), a family name (a tiny config of that
 * family with its features on: tied head, biases, qk-norm, window, RoPE scaling), or the path
 * of any supported config.json (e.g. a published checkpoint's; fixtures/configs has some).
 */
export function stageConfig(like: string, opts: { numLayers?: number; dtype?: DType } = {}): ModelConfig {
  const s = STAGES[like];
  if (opts.numLayers !== undefined && (!Number.isInteger(opts.numLayers) || opts.numLayers < 1)) {
    throw new FlmGrowError('BadLayers', `--num-hidden-layers: must be an integer >= 1, got ${opts.numLayers}`);
  }
  if (s === undefined) {
    const fam = FAMILIES.find((f) => f.name === like);
    let base: ModelConfig;
    if (fam !== undefined) base = parseConfig({ ...fam.tiny }, `--like ${like}`);
    else if (existsSync(like)) base = readConfigFile(like);
    else
      throw new FlmGrowError(
        'UnknownStage',
        `--like: "${like}" is neither a stage, a family nor a config.json file (stages and families: ${LIKE_NAMES.join(', ')})`,
      );
    const cfg = { ...base, numLayers: opts.numLayers ?? base.numLayers, dtype: opts.dtype ?? base.dtype ?? 'BF16' };
    return parseConfig(configToJson(cfg), `--like ${like}`);
  }
  const numLayers = opts.numLayers ?? s.numLayers;
  return makeConfig({
    hiddenSize: s.hiddenSize,
    intermediateSize: s.intermediateSize,
    numLayers,
    numHeads: s.numHeads,
    headDim: 128,
    vocabSize: s.vocabSize,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    maxPositionEmbeddings: 4096,
    dtype: opts.dtype ?? 'BF16',
    useMup: true,
    inputMult: 1,
    outputMult: s.outputMult,
    mupScaleFactor: s.mupScaleFactor,
  });
}

export interface SynthOptions {
  /** A stage name (STAGES) or an explicit config. */
  like?: string;
  config?: ModelConfig;
  numLayers?: number;
  dtype?: DType;
  seed?: number;
  maxShardSize?: number | string;
  overwrite?: boolean;
  /** With overwrite: replace even a destination flm-grow did not write. */
  forceOverwrite?: boolean;
  quiet?: boolean;
  /** Where progress goes (commands/ passes terminal bars); none by default. */
  progress?: ProgressFactory;
  /** Bytes per generated chunk (whole rows; default 32 MB). */
  chunkBytes?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface SynthResult {
  dir: string;
  config: ModelConfig;
  bytes: number;
  seconds: number;
}

/** The quantile function behind the one quantised-normal initialiser (util/init.ts). */
export const normalQuantile = inverseNormalCdf;

/** Fills byte buffers with values of one tensor; deterministic in (seed, tensor name). */
function valueStream(
  seed: number,
  name: string,
  kind: 'norm' | 'embedding' | 'matrix',
  dtype: DType,
): { fill(out: Uint8Array): void } {
  if (kind !== 'norm') return new NormalStream(seed, name, kind === 'embedding' ? SYNTH_EMBED_STD : SYNTH_MATRIX_STD, dtype);
  const one = float32ToBytes(new Float32Array([1]), dtype);
  return {
    fill: (out) => {
      for (let i = 0; i < out.byteLength; i += one.byteLength) out.set(one, i);
    },
  };
}

function kindOf(t: ExpectedTensor): 'norm' | 'embedding' | 'matrix' {
  if (t.role.endsWith('norm')) return 'norm';
  return t.role === 'embed' ? 'embedding' : 'matrix';
}

/** Write a random checkpoint of a stage's widths to `dir` (atomic; shards of maxShardSize). */
export async function synthCheckpoint(dir: string, opts: SynthOptions = {}): Promise<SynthResult> {
  const t0 = performance.now();
  const dtype = opts.dtype ?? 'BF16';
  let cfg: ModelConfig;
  if (opts.config !== undefined) cfg = { ...opts.config, dtype };
  else cfg = stageConfig(opts.like ?? 'tele-flm-mup-proxy', { numLayers: opts.numLayers, dtype });
  const tensors = expectedTensors(cfg);
  const decls = tensors.map((t) => ({ name: t.name, dtype, shape: t.shape }));
  const esize = dtypeSize(dtype);
  const total = decls.reduce((a, d) => a + d.shape.reduce((x, y) => x * y, 1) * esize, 0);
  // sha256 of each shard for the manifest (which makes the folder flm-grow's: --overwrite may
  // replace it), hashed on a worker as the writer writes it, so the data is never read back
  const { writer, hasher } = await createHashedWriter(dir, decls, {
    maxShardSize: parseSize(opts.maxShardSize ?? '5GB', '--out-shard-size'),
    overwrite: opts.overwrite,
    force: opts.forceOverwrite,
  });
  const bar = startProgress(opts.progress, opts.quiet, 'synth', total, 'bytes');
  const chunkBytes = opts.chunkBytes ?? 32 << 20;
  const seed = opts.seed ?? 0;
  let done = 0;
  try {
    // One write in flight while the next chunk is generated. Chunks come from a pool of three
    // shared buffers and return to it once written and hashed: a fresh SharedArrayBuffer per
    // chunk was freed only when both the main thread and the hash worker collected it, which the
    // worker (allocating almost nothing) rarely did, so RSS grew with the bytes written (5.5 GB
    // for the 5.9 GB 52B-width synth; the 22 GB 1T-width one would not have fit in 24 GB).
    // BlockPool hands out fresh buffers for the small chunks the writer may still hold queued.
    const pool = new BlockPool(chunkBytes, 3);
    let inflight: Promise<void> = Promise.resolve();
    for (const t of tensors) {
      const rowBytes = (t.shape.length > 1 ? t.shape[t.shape.length - 1] : t.shape[0]) * esize;
      const bytes = t.shape.reduce((a, b) => a * b, 1) * esize;
      const step = Math.max(rowBytes, Math.floor(chunkBytes / rowBytes) * rowBytes);
      const vs = valueStream(seed, t.name, kindOf(t), dtype);
      for (let off = 0; off < bytes; off += step) {
        const chunk = await pool.acquire(Math.min(step, bytes - off)); // shared: the hasher reads it uncopied
        vs.fill(chunk);
        await inflight;
        const written = writer.write(t.name, chunk);
        void written.then(
          () => pool.release(chunk),
          () => pool.release(chunk),
        );
        inflight = written.then(() => {
          done += chunk.byteLength;
          bar.update(done);
          opts.onProgress?.(done, total);
        });
        inflight.catch(() => undefined);
      }
    }
    await inflight;
    const configText = JSON.stringify(configToJson(cfg), null, 2) + '\n';
    await writer.writeSideFile(CONFIG_FILE, configText);
    const files = await writer.finish();
    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      kind: 'synth',
      created: new Date().toISOString(),
      tool: { name: 'flm-grow', version: TOOL_VERSION },
      extra: { like: opts.config === undefined ? (opts.like ?? 'tele-flm-mup-proxy') : undefined, seed, dtype },
      files,
    };
    await writer.writeSideFile(MANIFEST_FILE, JSON.stringify(manifest, null, 2) + '\n');
    await writer.commit();
  } catch (e) {
    await writer.abort();
    throw e;
  } finally {
    bar.stop();
    await hasher.close();
  }
  return { dir, config: cfg, bytes: total, seconds: (performance.now() - t0) / 1000 };
}
