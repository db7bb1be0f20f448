/**
 * A checkpoint folder as one object: config.json and the tensors (Checkpoint over a
 * ShardedTensorIndex), plus the optional parts flm-grow keeps beside them — MSG masks, the
 * manifest, AdamW state and the tokenizer — read lazily, at most once. Callers ask the object
 * instead of joining file names to the folder path.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Checkpoint, TOKENIZER_FILE, type OpenOptions } from './checkpoint.ts';
import type { ShardedTensorIndex } from './tensor-index.ts';
import type { ModelConfig } from '../spec/config.ts';
import { checkManifestAgainstConfig, MANIFEST_FILE, readManifest, type Manifest } from './manifest.ts';
import { MASKS_FILE, readMasks, type MaskSet } from './masks.ts';
import { OPTIMIZER_FILE, readOptimizerState, type OptimizerState } from './optimizer-state.ts';
import type { Tokenizer } from './tokenizer.ts';

export class CheckpointFolder extends Checkpoint {
  private cachedMasks: Promise<MaskSet | undefined> | undefined;
  private cachedManifest: { m: Manifest | undefined } | undefined;
  private cachedTokenizer: Promise<Tokenizer> | undefined;

  protected constructor(dir: string, config: ModelConfig, index: ShardedTensorIndex) {
    super(dir, config, index);
  }

  static override async open(dir: string, opts: OpenOptions = {}): Promise<CheckpointFolder> {
    const { config, index } = await Checkpoint.openParts(dir, opts);
    return new CheckpointFolder(dir, config, index);
  }

  /** The folder view of an open checkpoint (sharing its tensor index: closing either closes both). */
  static of(ck: Checkpoint): CheckpointFolder {
    return ck instanceof CheckpointFolder ? ck : new CheckpointFolder(ck.dir, ck.config, ck.index);
  }

  /** masks.safetensors, if the folder has one. */
  get masksPath(): string | undefined {
    const p = join(this.dir, MASKS_FILE);
    return existsSync(p) ? p : undefined;
  }

  get hasMasks(): boolean {
    return this.masksPath !== undefined;
  }

  /** The MSG masks, checked against config.json; undefined for a plain checkpoint. */
  masks(): Promise<MaskSet | undefined> {
    if (this.cachedMasks === undefined) {
      const p = this.masksPath;
      this.cachedMasks = p === undefined ? Promise.resolve(undefined) : readMasks(p, this.config);
      // a failed read is not cached: the next call reports it again
      this.cachedMasks.catch(() => {
        this.cachedMasks = undefined;
      });
    }
    return this.cachedMasks;
  }

  /** flm-grow's manifest (validated), or undefined for a folder flm-grow did not write. */
  get manifest(): Manifest | undefined {
    if (this.cachedManifest === undefined) {
      const m = readManifest(this.dir);
      if (m !== undefined) checkManifestAgainstConfig(m, this.config, join(this.dir, MANIFEST_FILE));
      this.cachedManifest = { m };
    }
    return this.cachedManifest.m;
  }

  /** optimizer.safetensors (AdamW moments and step), if the folder has one. */
  get optimizerPath(): string | undefined {
    const p = join(this.dir, OPTIMIZER_FILE);
    return existsSync(p) ? p : undefined;
  }

  /** The optimizer state (moments of `shapes`' weights, checked; none for an empty map), or undefined. */
  async optimizer(shapes?: ReadonlyMap<string, readonly number[]>): Promise<OptimizerState | undefined> {
    const p = this.optimizerPath;
    return p === undefined ? undefined : readOptimizerState(p, shapes);
  }

  get hasTokenizer(): boolean {
    return existsSync(join(this.dir, TOKENIZER_FILE));
  }

  /** The folder's tokenizer.json, or the byte tokenizer when it has none (@huggingface/tokenizers loads only here). */
  tokenizer(): Promise<Tokenizer> {
    this.cachedTokenizer ??= import('./tokenizer.ts').then((t) => t.loadTokenizer(this.dir));
    this.cachedTokenizer.catch(() => {
      this.cachedTokenizer = undefined;
    });
    return this.cachedTokenizer;
  }
}
