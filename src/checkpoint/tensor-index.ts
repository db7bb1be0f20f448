/**
 * The tensors of a checkpoint folder, architecture-free (as mergekit's ShardedTensorIndex): either
 * model.safetensors or the shards named in model.safetensors.index.json, validated index against
 * headers, with each tensor's file, dtype, shape and byte range. Opening reads headers only;
 * tensors (or row ranges) are read one at a time. It knows nothing about config.json or roles.
 */
import { existsSync, statSync } from 'node:fs';
import { MAX_JSON_BYTES, readFailure, readTextFile } from '../util/files.ts';
import { join, basename, isAbsolute } from 'node:path';
import { notAFolderMessage } from './locate.ts';
import { CheckpointError } from '../util/errors.ts';
import { SafetensorsFile, numel, type TensorInfo } from './safetensors.ts';
import { bytesToFloat32, dtypeSize } from '../util/dtype.ts';

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

export interface IndexJson {
  metadata?: { total_size?: number; [k: string]: unknown };
  weight_map: Record<string, string>;
}

/** A shard name must be a plain file name inside the checkpoint folder. */
export function assertSafeShardName(name: string, indexPath: string): void {
  if (
    typeof name !== 'string' ||
    name === '' ||
    name.includes('/') ||
    name.includes('\\') ||
    name.includes('://') ||
    name === '.' ||
    name === '..' ||
    name.includes('..') ||
    isAbsolute(name) ||
    name.includes('\0')
  ) {
    throw new CheckpointError(
      'UnsafeShardName',
      `${indexPath}: shard name ${JSON.stringify(name)} escapes the checkpoint folder`,
    );
  }
}

/** index.json's text, from a regular file of bounded size (see util/files.ts). */
function readIndexText(indexPath: string): string {
  try {
    return readTextFile(indexPath, { maxBytes: MAX_JSON_BYTES, what: INDEX_FILE });
  } catch (e) {
    throw new CheckpointError('InvalidIndex', `${indexPath}: ${readFailure(e)}`);
  }
}

/**
 * A NaN or Inf weight turns every logit into NaN; refused where it is read (compute reads go
 * through here), naming the tensor and the first bad element, instead of printing NaN logits.
 * `rowOffset`: the tensor row `a` starts at (for row-range reads), for the element index.
 */
export function assertFiniteWeights(a: Float32Array, dir: string, name: string, rowOffset = 0): Float32Array {
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) {
      throw new CheckpointError(
        'NonFiniteWeights',
        `${dir}: tensor "${name}" holds ${a[i]} at element ${i}${rowOffset > 0 ? ` of the rows from ${rowOffset}` : ''}; weights must be finite`,
      );
    }
  }
  return a;
}

export function parseIndex(text: string, indexPath: string): IndexJson {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError('InvalidIndex', `${indexPath}: invalid JSON: ${(e as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw new CheckpointError('InvalidIndex', `${indexPath}: not a JSON object`);
  const wm = (json as Record<string, unknown>).weight_map;
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm))
    throw new CheckpointError('InvalidIndex', `${indexPath}: "weight_map" must be an object`);
  for (const [k, v] of Object.entries(wm)) {
    if (typeof v !== 'string')
      throw new CheckpointError('InvalidIndex', `${indexPath}: weight_map["${k}"] must be a file name string`);
    assertSafeShardName(v, indexPath);
  }
  const md = (json as Record<string, unknown>).metadata;
  if (md !== undefined && (typeof md !== 'object' || md === null || Array.isArray(md))) {
    throw new CheckpointError('InvalidIndex', `${indexPath}: "metadata" must be an object`);
  }
  return json as IndexJson;
}

export class ShardedTensorIndex {
  readonly dir: string;
  /** Tensor name → (file, dtype, shape, byte range). */
  readonly tensors: Map<string, TensorInfo>;
  /** Paths of the safetensors files, sorted. */
  readonly shards: string[];
  /** The parsed model.safetensors.index.json; undefined for a single model.safetensors. */
  readonly index: IndexJson | undefined;
  private files: Map<string, SafetensorsFile>;

  private constructor(
    dir: string,
    files: Map<string, SafetensorsFile>,
    tensors: Map<string, TensorInfo>,
    index: IndexJson | undefined,
  ) {
    this.dir = dir;
    this.files = files;
    this.tensors = tensors;
    this.index = index;
    this.shards = [...files.keys()];
  }

  /** Open the safetensors files of `dir` (no config.json needed). */
  static async open(dir: string): Promise<ShardedTensorIndex> {
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new CheckpointError('NotACheckpoint', notAFolderMessage(dir));
    const { files, tensors, index } = await openTensorFiles(dir);
    return new ShardedTensorIndex(dir, files, tensors, index);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (t === undefined) throw new CheckpointError('TensorNotFound', `${this.dir}: tensor "${name}" is not in the checkpoint`);
    return t;
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  private fileOf(name: string): SafetensorsFile {
    return this.files.get(this.info(name).file) as SafetensorsFile;
  }

  /** Raw bytes of a tensor; `into` (optional, ≥ its size) is a buffer to reuse (see SafetensorsFile.read). */
  async read(name: string, into?: Uint8Array): Promise<Uint8Array> {
    return this.fileOf(name).read(name, into);
  }

  async readRows(name: string, start: number, end: number, into?: Uint8Array): Promise<Uint8Array> {
    return this.fileOf(name).readRows(name, start, end, into);
  }

  /** A tensor converted to float32 (compute precision), whatever its stored dtype. */
  async readFloat32(name: string): Promise<Float32Array> {
    const t = this.info(name);
    return this.readRowsFloat32(name, 0, t.shape.length === 0 ? 1 : t.shape[0]);
  }

  /**
   * Rows [start, end) of a tensor in float32, checked finite like readFloat32. The result is a
   * fresh array (callers keep it); the raw bytes of other dtypes land in a reused buffer first,
   * so a streamed pass (block after block of rows) allocates only its float32 arrays.
   */
  async readRowsFloat32(name: string, start: number, end: number): Promise<Float32Array> {
    const t = this.info(name);
    const rows = t.shape.length === 0 ? 1 : t.shape[0];
    const n = rows === 0 ? 0 : ((t.end - t.begin) / rows) * Math.max(0, end - start);
    let out: Float32Array;
    if (t.dtype === 'F32') {
      out = new Float32Array(n / 4);
      await this.readRows(name, start, end, new Uint8Array(out.buffer));
    } else {
      const raw = this.takeScratch(n);
      try {
        out = bytesToFloat32(await this.readRows(name, start, end, raw), t.dtype);
      } finally {
        this.scratch.push(raw);
      }
    }
    return assertFiniteWeights(out, this.dir, name, start);
  }

  /** Raw read buffers between reads; one is taken per read in flight, so concurrent reads never share one. */
  private scratch: Uint8Array[] = [];

  /** A buffer of at least n bytes: a kept one if large enough, else a new one replacing the largest kept. */
  private takeScratch(n: number): Uint8Array {
    const k = this.scratch.findIndex((b) => b.byteLength >= n);
    if (k >= 0) return this.scratch.splice(k, 1)[0];
    this.scratch.sort((a, b) => a.byteLength - b.byteLength).pop(); // outgrown: let it go
    return new Uint8Array(n);
  }

  /** Sum of tensor bytes (what index.json calls total_size). */
  get totalBytes(): number {
    let n = 0;
    for (const t of this.tensors.values()) n += t.end - t.begin;
    return n;
  }

  get parameterCount(): number {
    let n = 0;
    for (const t of this.tensors.values()) n += numel(t.shape);
    return n;
  }

  /** Largest single tensor in bytes (the unit of streaming memory). */
  get largestTensorBytes(): number {
    let n = 0;
    for (const t of this.tensors.values()) n = Math.max(n, numel(t.shape) * dtypeSize(t.dtype));
    return n;
  }

  async close(): Promise<void> {
    await Promise.all([...this.files.values()].map((f) => f.close()));
  }
}

/** Open the safetensors files of a folder and validate index vs headers. */
export async function openTensorFiles(
  dir: string,
): Promise<{ files: Map<string, SafetensorsFile>; tensors: Map<string, TensorInfo>; index: IndexJson | undefined }> {
  const indexPath = join(dir, INDEX_FILE);
  const singlePath = join(dir, SINGLE_FILE);
  const files = new Map<string, SafetensorsFile>();
  const tensors = new Map<string, TensorInfo>();
  const closeAll = () => Promise.all([...files.values()].map((f) => f.close()));
  try {
    if (existsSync(indexPath)) {
      const index = parseIndex(readIndexText(indexPath), indexPath);
      const shardNames = [...new Set(Object.values(index.weight_map))].sort();
      for (const s of shardNames) {
        const p = join(dir, s);
        if (!existsSync(p))
          throw new CheckpointError('MissingShard', `${indexPath}: shard "${s}" is listed but ${p} does not exist`);
        files.set(p, await SafetensorsFile.open(p));
      }
      for (const [p, f] of files) {
        for (const [name, t] of f.tensors) {
          const prev = tensors.get(name);
          if (prev !== undefined)
            throw new CheckpointError(
              'DuplicateTensor',
              `${dir}: tensor "${name}" is in two shards: ${basename(prev.file)} and ${basename(p)}`,
            );
          const listed = index.weight_map[name];
          if (listed === undefined)
            throw new CheckpointError('UnlistedTensor', `${p}: tensor "${name}" is in the shard but not in ${INDEX_FILE}`);
          if (listed !== basename(p))
            throw new CheckpointError(
              'WrongShard',
              `${indexPath}: tensor "${name}" is listed in "${listed}" but found in ${basename(p)}`,
            );
          tensors.set(name, t);
        }
      }
      for (const [name, shard] of Object.entries(index.weight_map)) {
        if (!tensors.has(name))
          throw new CheckpointError(
            'TensorNotFound',
            `${indexPath}: tensor "${name}" is listed in "${shard}" but that shard does not contain it`,
          );
      }
      const declared = index.metadata?.total_size;
      if (declared !== undefined) {
        let actual = 0;
        for (const t of tensors.values()) actual += t.end - t.begin;
        if (declared !== actual)
          throw new CheckpointError(
            'TotalSizeMismatch',
            `${indexPath}: metadata.total_size is ${declared} but the tensors hold ${actual} bytes`,
          );
      }
      return { files, tensors, index };
    }
    if (existsSync(singlePath)) {
      const f = await SafetensorsFile.open(singlePath);
      files.set(singlePath, f);
      for (const [name, t] of f.tensors) tensors.set(name, t);
      return { files, tensors, index: undefined };
    }
  } catch (e) {
    await closeAll();
    throw e;
  }
  throw new CheckpointError('NotACheckpoint', `${dir}: neither ${INDEX_FILE} nor ${SINGLE_FILE} found`);
}
