/**
 * A Hugging Face checkpoint: config.json plus its tensors (a ShardedTensorIndex over
 * model.safetensors or the shards named in model.safetensors.index.json), checked against each
 * other. Opening reads headers only; tensors are read one at a time. The optional parts beside
 * it (masks, manifest, optimizer state, tokenizer) are CheckpointFolder's (checkpoint-folder.ts).
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { notAFolderMessage } from './locate.ts';
import { CheckpointError } from '../util/errors.ts';
import { readDataFile } from '../util/data-files.ts';
import { readConfigFile, type ModelConfig } from '../spec/config.ts';
import { assertTensorsMatchConfig } from '../spec/arch.ts';
import type { TensorInfo } from './safetensors.ts';
import { ShardedTensorIndex } from './tensor-index.ts';

export {
  INDEX_FILE,
  SINGLE_FILE,
  assertFiniteWeights,
  assertSafeShardName,
  parseIndex,
  openTensorFiles,
  ShardedTensorIndex,
  type IndexJson,
} from './tensor-index.ts';
export const CONFIG_FILE = 'config.json';
/** The manifest's declaration (python/flm_grow_torch/_data/manifest.json), which both engines load. */
export interface ManifestRules {
  file: string;
  /** the folder of a `--sharded-save` checkpoint's torch.distributed.checkpoint shards */
  shardedDir: string;
  format: string;
  kinds: string[];
  maskGroups: string[];
  scheduleShapes: string[];
  carriedHow: string[];
  trainCounters: string[];
  sideFilePattern: string;
}
export const MANIFEST_RULES = readDataFile<ManifestRules>('manifest.json');
/** flm-grow's manifest: its presence marks a folder flm-grow wrote (see manifest.ts for the contents). */
export const MANIFEST_FILE = MANIFEST_RULES.file;
/** The Hugging Face tokenizer (tokenizer.ts reads it). */
export const TOKENIZER_FILE = 'tokenizer.json';

export interface OpenOptions {
  /** Check every tensor against config.json (default true). */
  checkConfig?: boolean;
}

export class Checkpoint {
  readonly dir: string;
  readonly config: ModelConfig;
  /** The tensors, architecture-free. */
  readonly index: ShardedTensorIndex;
  readonly tensors: Map<string, TensorInfo>;
  readonly shards: string[];

  protected constructor(dir: string, config: ModelConfig, index: ShardedTensorIndex) {
    this.dir = dir;
    this.config = config;
    this.index = index;
    this.tensors = index.tensors;
    this.shards = index.shards;
  }

  static async open(dir: string, opts: OpenOptions = {}): Promise<Checkpoint> {
    const { config, index } = await Checkpoint.openParts(dir, opts);
    return new Checkpoint(dir, config, index);
  }

  /** config.json and the tensor index of `dir`, checked against each other unless opts.checkConfig is false. */
  protected static async openParts(dir: string, opts: OpenOptions): Promise<{ config: ModelConfig; index: ShardedTensorIndex }> {
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new CheckpointError('NotACheckpoint', notAFolderMessage(dir));
    const configPath = join(dir, CONFIG_FILE);
    if (!existsSync(configPath)) throw new CheckpointError('NotACheckpoint', `${dir}: no ${CONFIG_FILE}`);
    const config = readConfigFile(configPath);
    // a `train --sharded-save` checkpoint holds torch.distributed.checkpoint shards, not safetensors:
    // say what reads it rather than that no weights were found
    if (existsSync(join(dir, MANIFEST_RULES.shardedDir, '.metadata')) && !existsSync(join(dir, 'model.safetensors')))
      throw new CheckpointError(
        'NotACheckpoint',
        `${dir}: a sharded training checkpoint (torch.distributed.checkpoint shards in ${MANIFEST_RULES.shardedDir}/): ` +
          `train --resume continues it; other commands read its HF-layout export (flm-grow export ${dir} --out <dir>)`,
      );
    const index = await ShardedTensorIndex.open(dir);
    if (opts.checkConfig !== false) {
      try {
        assertTensorsMatchConfig(config, index.tensors, dir);
      } catch (e) {
        await index.close();
        throw e;
      }
    }
    return { config, index };
  }

  info(name: string): TensorInfo {
    return this.index.info(name);
  }

  has(name: string): boolean {
    return this.index.has(name);
  }

  /** Raw bytes of a tensor; `into` (optional, ≥ its size) is a buffer to reuse (see SafetensorsFile.read). */
  async read(name: string, into?: Uint8Array): Promise<Uint8Array> {
    return this.index.read(name, into);
  }

  async readRows(name: string, start: number, end: number, into?: Uint8Array): Promise<Uint8Array> {
    return this.index.readRows(name, start, end, into);
  }

  /** A tensor converted to float32 (compute precision), whatever its stored dtype. */
  async readFloat32(name: string): Promise<Float32Array> {
    return this.index.readFloat32(name);
  }

  /** Rows [start, end) of a tensor in float32, checked finite like readFloat32. */
  async readRowsFloat32(name: string, start: number, end: number): Promise<Float32Array> {
    return this.index.readRowsFloat32(name, start, end);
  }

  /** Sum of tensor bytes (what index.json calls total_size). */
  get totalBytes(): number {
    return this.index.totalBytes;
  }

  get parameterCount(): number {
    return this.index.parameterCount;
  }

  /** Largest single tensor in bytes (the unit of streaming memory). */
  get largestTensorBytes(): number {
    return this.index.largestTensorBytes;
  }

  async close(): Promise<void> {
    await this.index.close();
  }
}
