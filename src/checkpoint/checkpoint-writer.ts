/**
 * Sharded checkpoint writer (compare mergekit's io/tensor_writer.py): tensors are declared up
 * front so shard names (model-0000k-of-0000n) and the index are known before any data is
 * written; data is then streamed in declared order. Output is atomic (see atomic.ts).
 */
import { writeFile, copyFile, open } from 'node:fs/promises';
import { withErrorPath } from '../util/os-errors.ts';
import { FlmGrowError } from '../util/errors.ts';
import { sha256Bytes, sha256File } from '../util/hash.ts';
import { AtomicDir, type AtomicDirOptions } from './atomic.ts';
import { sideFileSource } from './paths.ts';
import { SafetensorsWriter, sha256Hasher, tensorByteSize, type StreamHasher, type TensorDecl } from './safetensors-writer.ts';
import { INDEX_FILE, SINGLE_FILE } from './checkpoint.ts';

/** "5GB", "500MB", "200KB", "1GiB", plain bytes. Decimal units as HF's max_shard_size. */
export function parseSize(s: string | number, what = 'size'): number {
  if (typeof s === 'number') return s;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$/i.exec(s);
  if (m === null) throw new FlmGrowError('BadSize', `${what}: cannot parse "${s}" (examples: 5GB, 500MB, 1GiB)`);
  const v = Number(m[1]);
  const u = (m[2] ?? 'b').toLowerCase();
  const mult: Record<string, number> = {
    b: 1,
    k: 1e3,
    kb: 1e3,
    m: 1e6,
    mb: 1e6,
    g: 1e9,
    gb: 1e9,
    t: 1e12,
    tb: 1e12,
    ki: 1024,
    kib: 1024,
    mi: 1024 ** 2,
    mib: 1024 ** 2,
    gi: 1024 ** 3,
    gib: 1024 ** 3,
    ti: 1024 ** 4,
    tib: 1024 ** 4,
  };
  return Math.floor(v * mult[u]);
}

export interface ShardPlan {
  file: string;
  tensors: TensorDecl[];
  bytes: number;
}

/** Greedy in declared order; a tensor larger than the limit gets a shard of its own. */
export function planShards(decls: readonly TensorDecl[], maxShardSize: number): ShardPlan[] {
  const groups: TensorDecl[][] = [];
  let cur: TensorDecl[] = [];
  let curBytes = 0;
  for (const d of decls) {
    const n = tensorByteSize(d);
    if (cur.length > 0 && curBytes + n > maxShardSize) {
      groups.push(cur);
      cur = [];
      curBytes = 0;
    }
    cur.push(d);
    curBytes += n;
  }
  if (cur.length > 0 || groups.length === 0) groups.push(cur);
  const total = groups.length;
  return groups.map((tensors, k) => ({
    file: total === 1 ? SINGLE_FILE : shardName(k, total),
    tensors,
    bytes: tensors.reduce((a, t) => a + tensorByteSize(t), 0),
  }));
}

export function shardName(k: number, total: number): string {
  const pad = (n: number) => String(n).padStart(5, '0');
  return `model-${pad(k + 1)}-of-${pad(total)}.safetensors`;
}

/** A shard as the index sees it: a ShardPlan, or a shard of a part's part.json (tensor names). */
export interface IndexShard {
  file: string;
  bytes: number;
  tensors: readonly (string | { readonly name: string })[];
}

/**
 * The text of model.safetensors.index.json, the one place it is built: the writer writes it,
 * `assemble` rebuilds it from part.json (and checks it against the hash a part recorded).
 */
export function indexText(shards: readonly IndexShard[]): string {
  const weight_map: Record<string, string> = {};
  let total = 0;
  for (const s of shards) {
    for (const t of s.tensors) weight_map[typeof t === 'string' ? t : t.name] = s.file;
    total += s.bytes;
  }
  const sorted = Object.fromEntries(Object.entries(weight_map).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return JSON.stringify({ metadata: { total_size: total }, weight_map: sorted }, null, 2) + '\n';
}

export interface CheckpointWriterOptions extends Pick<AtomicDirOptions, 'force' | 'notice' | 'onSwap'> {
  overwrite?: boolean;
  maxShardSize?: number;
  /** Source folders the destination must not be, contain or be inside. */
  sources?: string[];
  /** Always write an index, even for one shard (default: only when sharded). */
  alwaysIndex?: boolean;
  /**
   * Split grow: this writer is part `index` (1-based) of `count`. Every part plans the same
   * shards; it writes only the shards assigned to it (assignShards) plus part.json, no index.
   */
  part?: { index: number; count: number };
  /** Hasher of each shard's bytes as written (default: sha256 on this thread). */
  hasher?: (file: string) => StreamHasher;
}

/** Written by a part writer instead of the index; `flm-grow assemble` reads it. */
export const PART_FILE = 'part.json';

export interface PartJson {
  index: number;
  count: number;
  shards: { file: string; bytes: number; tensors: string[] }[];
  /** Files of the shards this part wrote. */
  mine: string[];
}

/**
 * Deterministic byte-balanced assignment of shards to `count` parts (LPT greedy: largest shard
 * first, ties by shard index, onto the least-loaded part, ties by part index). Returns, for each
 * shard, its 0-based part.
 */
export function assignShards(shards: readonly { bytes: number }[], count: number): number[] {
  const order = shards.map((s, k) => k).sort((a, b) => shards[b].bytes - shards[a].bytes || a - b);
  const load = new Array<number>(count).fill(0);
  const owner = new Array<number>(shards.length).fill(0);
  for (const k of order) {
    let best = 0;
    for (let p = 1; p < count; p++) if (load[p] < load[best]) best = p;
    owner[k] = best;
    load[best] += shards[k].bytes;
  }
  return owner;
}

export class CheckpointWriter {
  readonly dir: AtomicDir;
  readonly shards: ShardPlan[];
  private shardOf = new Map<string, number>();
  private writer: SafetensorsWriter | undefined;
  private writerShard = -1;
  private alwaysIndex: boolean;
  readonly part: { index: number; count: number } | undefined;
  /** Shards this writer writes (all of them unless it is one part of a split grow). */
  private mine: Set<number>;
  private hasher: (file: string) => StreamHasher;
  /** sha256 of what was written: shards by index, other files in the order written. */
  private shardHashes = new Map<number, string>();
  private fileHashes: Record<string, string> = {};
  private finished: Record<string, string> | undefined;

  private constructor(
    dir: AtomicDir,
    shards: ShardPlan[],
    alwaysIndex: boolean,
    part: { index: number; count: number } | undefined,
    hasher: (file: string) => StreamHasher,
  ) {
    this.dir = dir;
    this.shards = shards;
    this.alwaysIndex = alwaysIndex;
    this.part = part;
    this.hasher = hasher;
    shards.forEach((s, k) => s.tensors.forEach((t) => this.shardOf.set(t.name, k)));
    const owner = part === undefined ? undefined : assignShards(shards, part.count);
    this.mine = new Set(
      shards.map((_, k) => k).filter((k) => owner === undefined || part === undefined || owner[k] === part.index - 1),
    );
  }

  static async create(dest: string, decls: readonly TensorDecl[], opts: CheckpointWriterOptions = {}): Promise<CheckpointWriter> {
    const p = opts.part;
    if (
      p !== undefined &&
      !(Number.isInteger(p.index) && Number.isInteger(p.count) && p.count >= 1 && p.index >= 1 && p.index <= p.count)
    ) {
      throw new FlmGrowError('BadPart', `${dest}: part ${p.index}/${p.count} is not i/n with 1 <= i <= n`);
    }
    const shards = planShards(decls, opts.maxShardSize ?? 5e9);
    const dir = await AtomicDir.create(dest, {
      overwrite: opts.overwrite,
      force: opts.force,
      sources: opts.sources,
      notice: opts.notice,
      onSwap: opts.onSwap,
    });
    return new CheckpointWriter(dir, shards, opts.alwaysIndex === true, p, opts.hasher ?? (() => sha256Hasher()));
  }

  /** Path inside the (temporary) output folder, for side files. */
  path(rel: string): string {
    return this.dir.path(rel);
  }

  private async writerFor(name: string): Promise<SafetensorsWriter> {
    const k = this.shardOf.get(name);
    if (k === undefined) throw new FlmGrowError('WriteMismatch', `${this.dir.dest}: tensor "${name}" was not declared`);
    if (!this.mine.has(k)) throw new FlmGrowError('WriteMismatch', `${this.dir.dest}: tensor "${name}" belongs to another part`);
    if (k !== this.writerShard) {
      if (k < this.writerShard)
        throw new FlmGrowError('WriteMismatch', `${this.dir.dest}: tensor "${name}" written out of order`);
      await this.closeShardsBefore(k);
      this.writer = await this.openShard(k);
      this.writerShard = k;
    }
    return this.writer as SafetensorsWriter;
  }

  private openShard(k: number): Promise<SafetensorsWriter> {
    const file = this.shards[k].file;
    return SafetensorsWriter.create(this.path(file), this.shards[k].tensors, { format: 'pt' }, this.hasher(file));
  }

  /** Close the open shard and write the (empty-tensor-only) shards of this writer before shard k. */
  private async closeShardsBefore(k: number): Promise<void> {
    if (this.writer !== undefined) this.shardHashes.set(this.writerShard, (await this.closeShard(this.writer)) as string);
    this.writer = undefined;
    for (let j = this.writerShard + 1; j < k; j++) {
      if (!this.mine.has(j)) continue;
      // shards with only empty tensors still need their file; close() throws unless they are all empty
      this.shardHashes.set(j, (await this.closeShard(await this.openShard(j))) as string);
    }
  }

  /** Shards closed but not yet fsync'd: finish() syncs them together. */
  private unsynced: string[] = [];

  /**
   * Close a shard without waiting for the disk: an fsync per shard stalled production at every
   * shard boundary (docs/scaling.md), while the kernel writes the closed shard back anyway.
   */
  private async closeShard(w: SafetensorsWriter): Promise<string | undefined> {
    const hex = await w.close({ sync: false });
    this.unsynced.push(w.path);
    return hex;
  }

  /** fsync every shard closed so far (all at once: the disk orders the writeback). */
  private async syncShards(): Promise<void> {
    const paths = this.unsynced;
    this.unsynced = [];
    await Promise.all(
      paths.map(async (p) => {
        const fh = await open(p, 'r');
        try {
          await fh.sync();
        } catch (e) {
          throw withErrorPath(e, p);
        } finally {
          await fh.close();
        }
      }),
    );
  }

  /**
   * Whether this writer writes tensor `name` (false for tensors of shards that belong to another
   * part of a split grow); callers skip producing tensors it does not want.
   */
  wants(name: string): boolean {
    const k = this.shardOf.get(name);
    return k !== undefined && this.mine.has(k);
  }

  /** Stream a chunk of tensor `name` (declared order). */
  /**
   * Writes may overlap (issue the next before this one resolves, in declared order): shard
   * switches are serialised here, and each shard writer settles order and offsets at call time.
   */
  async write(name: string, chunk: Uint8Array): Promise<void> {
    await (await this.acquire(name)).write(name, chunk);
  }

  async writeTensor(name: string, data: Uint8Array): Promise<void> {
    await (await this.acquire(name)).writeTensor(name, data);
  }

  private acquiring: Promise<unknown> = Promise.resolve();

  private acquire(name: string): Promise<SafetensorsWriter> {
    const w = this.acquiring.then(() => this.writerFor(name));
    this.acquiring = w.catch(() => undefined);
    return w;
  }

  async writeSideFile(rel: string, content: string | Uint8Array): Promise<void> {
    await writeFile(this.path(rel), content);
    this.fileHashes[rel] = sha256Bytes(content);
  }

  /** Copy a side file in (a symlink only if it stays inside its checkpoint: see sideFileSource). */
  async copySideFile(src: string, rel: string): Promise<void> {
    await copyFile(sideFileSource(src), this.path(rel));
    await this.recordFile(rel);
  }

  /** Hash a file that other code wrote into the folder (masks, optimizer state), as it is on disk. */
  async recordFile(rel: string): Promise<string> {
    const hex = await sha256File(this.path(rel));
    this.fileHashes[rel] = hex;
    return hex;
  }

  /**
   * Close the last shard and write the index (a part of a split grow: part.json instead). Returns
   * the sha256 of every file written so far: this writer's shards in plan order, the side files
   * in the order written, then the index. A part records the hash of the index its assembly
   * writes (indexText of the same plan; `assemble` checks the rebuilt one against it).
   */
  async finish(): Promise<Record<string, string>> {
    if (this.finished !== undefined) return this.finished;
    await this.closeShardsBefore(this.shards.length);
    await this.syncShards();
    const index = this.shards.length > 1 || this.alwaysIndex ? indexText(this.shards) : undefined;
    if (this.part !== undefined) await writeFile(this.path(PART_FILE), JSON.stringify(this.partJson(), null, 2) + '\n');
    else if (index !== undefined) await writeFile(this.path(INDEX_FILE), index);
    const files: Record<string, string> = {};
    this.shards.forEach((s, k) => {
      if (this.mine.has(k)) files[s.file] = this.shardHashes.get(k) as string;
    });
    Object.assign(files, this.fileHashes);
    if (index !== undefined) files[INDEX_FILE] = sha256Bytes(index);
    this.finished = files;
    return files;
  }

  /** finish() if not yet done, then rename into place. */
  async commit(): Promise<void> {
    try {
      await this.finish();
      await this.dir.commit();
    } catch (e) {
      await this.abort();
      throw e;
    }
  }

  private partJson(): PartJson {
    const p = this.part as { index: number; count: number };
    return {
      index: p.index,
      count: p.count,
      shards: this.shards.map((s) => ({ file: s.file, bytes: s.bytes, tensors: s.tensors.map((t) => t.name) })),
      mine: this.shards.filter((_, k) => this.mine.has(k)).map((s) => s.file),
    };
  }

  async abort(): Promise<void> {
    if (this.writer !== undefined) await this.writer.abort();
    this.writer = undefined;
    await this.dir.abort();
  }
}
