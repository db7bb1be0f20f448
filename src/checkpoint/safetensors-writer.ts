/**
 * Streaming safetensors writer: the header is computed from declared shapes and written first,
 * then the caller streams each tensor's bytes in declared order, in chunks of any size. A 4 GB
 * tensor is never held twice; small chunks are coalesced into large sequential writes.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { SafetensorsError } from '../util/errors.ts';
import { dtypeSize, type DType } from '../util/dtype.ts';
import { numel } from './safetensors.ts';
import { withErrorPath } from '../util/os-errors.ts';
import { DIRECT_MIN_BYTES, DirectAppendFile } from './direct-file.ts';

export interface TensorDecl {
  name: string;
  dtype: DType;
  shape: readonly number[];
}

export function tensorByteSize(t: TensorDecl): number {
  return numel(t.shape) * dtypeSize(t.dtype);
}

/** Header bytes (JSON padded with spaces to a multiple of 8, as the reference writer does). */
export function encodeHeader(tensors: readonly TensorDecl[], metadata: Record<string, string> | undefined): Uint8Array {
  const obj: Record<string, unknown> = {};
  if (metadata !== undefined) obj.__metadata__ = metadata;
  let off = 0;
  const seen = new Set<string>();
  for (const t of tensors) {
    if (seen.has(t.name) || t.name === '__metadata__')
      throw new SafetensorsError('DuplicateTensor', '<writer>', 'tensor declared twice', t.name);
    seen.add(t.name);
    const n = tensorByteSize(t);
    obj[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [off, off + n] };
    off += n;
  }
  let json = JSON.stringify(obj);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += ' '.repeat(pad);
  return new TextEncoder().encode(json);
}

/** Size of the file a header + these tensors make, without writing it. */
export function safetensorsFileSize(tensors: readonly TensorDecl[], metadata?: Record<string, string>): number {
  let n = 8 + encodeHeader(tensors, metadata).byteLength;
  for (const t of tensors) n += tensorByteSize(t);
  return n;
}

/**
 * A running sha256 of a file's bytes, fed in file order. update() may resolve later (a worker
 * thread); the writer waits for it before a write resolves, so the chunk may then be reused.
 */
export interface StreamHasher {
  update(data: Uint8Array): void | Promise<void>;
  digest(): string | Promise<string>;
}

/** sha256 on this thread (node:crypto). */
export function sha256Hasher(): StreamHasher {
  const h = createHash('sha256');
  return {
    update: (d) => {
      h.update(d);
    },
    digest: () => h.digest('hex'),
  };
}

/**
 * Chunks smaller than this are copied into one buffer and written together (few syscalls);
 * larger ones are written directly, without a copy. Either way the caller may reuse a chunk's
 * memory as soon as write() resolves: small chunks were copied, large ones are already written.
 */
export const COALESCE_BYTES = 8 << 20;

export class SafetensorsWriter {
  readonly path: string;
  /** Large files go through O_DIRECT (direct-file.ts) when the file system allows; else fh. */
  private direct: DirectAppendFile | undefined;
  private fh: FileHandle | undefined;
  private decls: readonly TensorDecl[];
  private index = 0;
  private remaining: number;
  private pos: number;
  private pending: Buffer | undefined;
  private pendingBytes = 0;
  private inflight = new Set<Promise<void>>();
  /** Coalescing buffer size: never more than the file's data, so tiny files stay tiny in memory. */
  private pendingCap: number;
  private hasher: StreamHasher | undefined;

  private constructor(
    path: string,
    out: FileHandle | DirectAppendFile,
    decls: readonly TensorDecl[],
    pos: number,
    hasher: StreamHasher | undefined,
  ) {
    this.path = path;
    if (out instanceof DirectAppendFile) this.direct = out;
    else this.fh = out;
    this.decls = decls;
    this.pos = pos;
    this.hasher = hasher;
    this.remaining = decls.length > 0 ? tensorByteSize(decls[0]) : 0;
    this.pendingCap = Math.max(
      1,
      Math.min(
        COALESCE_BYTES,
        decls.reduce((a, d) => a + tensorByteSize(d), 0),
      ),
    );
    this.skipEmpty();
  }

  /**
   * `hasher` (optional) is fed exactly the bytes written, in file order; close() returns its
   * digest, so a checkpoint's recorded sha256 is of what was written, never of a rebuilt copy.
   */
  static async create(
    path: string,
    tensors: readonly TensorDecl[],
    metadata: Record<string, string> | undefined = { format: 'pt' },
    hasher?: StreamHasher,
  ): Promise<SafetensorsWriter> {
    const header = encodeHeader(tensors, metadata);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.byteLength));
    const size = 8 + header.byteLength + tensors.reduce((a, t) => a + tensorByteSize(t), 0);
    const direct = size >= DIRECT_MIN_BYTES ? await DirectAppendFile.create(path) : undefined;
    const fh = direct === undefined ? await open(path, 'wx') : undefined;
    const hashed: Promise<void>[] = [];
    try {
      if (hasher !== undefined) hashed.push(Promise.resolve(hasher.update(len)), Promise.resolve(hasher.update(header)));
      if (direct !== undefined) {
        await direct.append(len);
        await direct.append(header);
      } else if (fh !== undefined) {
        await fh.write(len, 0, 8, 0);
        await fh.write(header, 0, header.byteLength, 8);
      }
      await Promise.all(hashed);
    } catch (e) {
      await Promise.allSettled(hashed);
      await (direct?.abort() ?? fh?.close());
      throw withErrorPath(e, path);
    }
    return new SafetensorsWriter(path, direct ?? (fh as FileHandle), tensors, 8 + header.byteLength, hasher);
  }

  /** Name of the tensor the next bytes belong to (undefined when all are written). */
  get current(): string | undefined {
    return this.decls[this.index]?.name;
  }

  private skipEmpty(): void {
    while (this.index < this.decls.length && this.remaining === 0) {
      this.index++;
      if (this.index < this.decls.length) this.remaining = tensorByteSize(this.decls[this.index]);
    }
  }

  /**
   * Append bytes of tensor `name`; must follow declared order and never exceed its size.
   * Calls may overlap (a caller can issue the next write before this one resolves): the order
   * check, the file position and the coalescing buffer are all settled synchronously at call
   * time, so concurrent writes land at their own offsets. When a write of a chunk of at least
   * COALESCE_BYTES resolves, that chunk is on disk and its memory may be reused.
   */
  async write(name: string, chunk: Uint8Array): Promise<void> {
    // Empty tensors are skipped when reached, so "writing" one (writeTensor of 0 bytes) is a no-op.
    if (chunk.byteLength === 0 && name !== this.current && this.decls.some((d) => d.name === name && tensorByteSize(d) === 0))
      return;
    if (name !== this.current) {
      throw new SafetensorsError(
        'WriteMismatch',
        this.path,
        `bytes for "${name}" arrived but "${this.current ?? '<none>'}" is next`,
        name,
      );
    }
    if (chunk.byteLength > this.remaining) {
      throw new SafetensorsError(
        'WriteMismatch',
        this.path,
        `${chunk.byteLength} bytes exceed the ${this.remaining} still declared`,
        name,
      );
    }
    this.remaining -= chunk.byteLength;
    const writes: Promise<void>[] = [];
    if (this.hasher !== undefined && chunk.byteLength > 0) {
      // fed at call time, like the file position: overlapping writes hash in file order
      const h = Promise.resolve(this.hasher.update(chunk));
      writes.push(h);
      this.track(h);
    }
    if (this.direct !== undefined) {
      // copied into the aligned staging ring: reusable once this resolves, like a large chunk
      if (chunk.byteLength > 0) writes.push(this.direct.append(chunk));
    } else if (chunk.byteLength >= COALESCE_BYTES) {
      writes.push(this.flush(), this.writeAt(chunk));
    } else {
      let done = 0;
      while (done < chunk.byteLength) {
        this.pending ??= Buffer.allocUnsafe(this.pendingCap);
        const n = Math.min(chunk.byteLength - done, this.pendingCap - this.pendingBytes);
        this.pending.set(chunk.subarray(done, done + n), this.pendingBytes);
        this.pendingBytes += n;
        done += n;
        if (this.pendingBytes === this.pendingCap) writes.push(this.flush());
      }
    }
    if (this.remaining === 0) {
      this.index++;
      if (this.index < this.decls.length) this.remaining = tensorByteSize(this.decls[this.index]);
      this.skipEmpty();
    }
    await Promise.all(writes);
  }

  /** Write a whole tensor at once. */
  async writeTensor(name: string, data: Uint8Array): Promise<void> {
    const d = this.decls[this.index];
    if (d !== undefined && d.name === name && data.byteLength !== tensorByteSize(d)) {
      throw new SafetensorsError(
        'WriteMismatch',
        this.path,
        `got ${data.byteLength} bytes, declared shape needs ${tensorByteSize(d)}`,
        name,
      );
    }
    await this.write(name, data);
  }

  /** Hand the coalescing buffer to a write (a fresh one is allocated for what follows). */
  private flush(): Promise<void> {
    if (this.pendingBytes === 0 || this.pending === undefined) return Promise.resolve();
    const buf = this.pending.subarray(0, this.pendingBytes);
    this.pending = undefined;
    this.pendingBytes = 0;
    return this.writeAt(buf);
  }

  /** Write `buf` at the next free position, reserved now; tracked so close() waits for it. */
  private writeAt(buf: Uint8Array): Promise<void> {
    const at = this.pos;
    this.pos += buf.byteLength;
    const p = (async () => {
      let done = 0;
      try {
        while (done < buf.byteLength) {
          const { bytesWritten } = await (this.fh as FileHandle).write(buf, done, buf.byteLength - done, at + done);
          done += bytesWritten;
        }
      } catch (e) {
        throw withErrorPath(e, this.path);
      }
    })();
    this.track(p);
    return p;
  }

  private track(p: Promise<void>): void {
    this.inflight.add(p);
    const forget = () => {
      this.inflight.delete(p);
    };
    p.then(forget, forget);
  }

  /**
   * Flush, verify every declared byte was written, close; returns the sha256 when hashing.
   * `sync: false` leaves the fsync to the caller (CheckpointWriter syncs all its shards at the
   * end, so the disk writes one shard back while the next is produced).
   */
  async close(opts: { sync?: boolean } = {}): Promise<string | undefined> {
    let closed = false;
    try {
      await this.flush();
      await Promise.all([...this.inflight]);
      if (this.index < this.decls.length) {
        throw new SafetensorsError(
          'WriteMismatch',
          this.path,
          `closed before all tensors were written (${this.decls.length - this.index} left)`,
          this.current,
        );
      }
      if (this.direct !== undefined) {
        closed = true;
        await this.direct.close(opts);
      } else if (opts.sync !== false)
        await this.fh?.sync().catch((e: unknown) => {
          throw withErrorPath(e, this.path);
        });
    } finally {
      if (!closed) await (this.direct?.abort() ?? this.fh?.close());
      else await this.fh?.close();
    }
    return this.hasher === undefined ? undefined : await this.hasher.digest();
  }

  /** Close without the completeness check (the caller deletes the file). */
  async abort(): Promise<void> {
    this.pending = undefined;
    this.pendingBytes = 0;
    await Promise.allSettled([...this.inflight]);
    await this.direct?.abort();
    await this.fh?.close().catch(() => undefined);
  }
}

/** Write a small safetensors file in one call (masks, references, optimizer state of tiny models). */
export async function writeSafetensors(
  path: string,
  tensors: { name: string; dtype: DType; shape: readonly number[]; data: Uint8Array }[],
  metadata?: Record<string, string>,
): Promise<void> {
  const w = await SafetensorsWriter.create(path, tensors, metadata ?? { format: 'pt' });
  try {
    for (const t of tensors) await w.writeTensor(t.name, t.data);
    await w.close();
  } catch (e) {
    await w.abort();
    throw e;
  }
}
