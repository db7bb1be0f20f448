/**
 * Reads source tensor rows into reusable buffers (two, ping-pong: the block in use and the one
 * prefetched), so grow's memory does not depend on how quickly the garbage collector returns
 * 32 MB read buffers. Uses the offsets the checkpoint reader validated; files opened read-only.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import { CheckpointError } from '../util/errors.ts';
import type { DType } from '../util/dtype.ts';

export interface SourceRows {
  dtype: DType;
  /** Bytes of one source row (a 1-D tensor is one row). */
  rowBytes: number;
  /** Rows [a, b) of the source tensor, into buffer slot `slot` when given. */
  readRows(a: number, b: number, slot?: number): Promise<Uint8Array>;
  /**
   * Rows [a, b) scattered by the kernel straight into `parts` (views of the caller's memory, in
   * file order, their lengths summing to the rows' bytes): one vectored read, no copy through
   * JavaScript.
   */
  readRowsInto?(a: number, b: number, parts: Uint8Array[]): Promise<void>;
}

/** Most iovecs one preadv takes (Linux's IOV_MAX); libuv would read only the first that many. */
const IOV_MAX = 1024;

export class SourceReader {
  private files = new Map<string, Promise<FileHandle>>();
  private buffers: Uint8Array[] = [];
  private ck: Checkpoint;

  constructor(ck: Checkpoint) {
    this.ck = ck;
  }

  private buffer(slot: number, n: number): Uint8Array {
    let b = this.buffers[slot];
    if (b === undefined || b.byteLength < n) {
      b = new Uint8Array(n);
      this.buffers[slot] = b;
    }
    return b.subarray(0, n);
  }

  rows(name: string): SourceRows {
    const t = this.ck.info(name);
    const rows = t.shape.length <= 1 ? 1 : t.shape[0];
    const rowBytes = (t.end - t.begin) / rows;
    const truncated = () => new CheckpointError('TruncatedShard', `${t.file}: unexpected end of file reading "${name}"`);
    return {
      dtype: t.dtype,
      rowBytes,
      readRows: async (a, b, slot) => {
        const n = (b - a) * rowBytes;
        const buf = slot === undefined ? new Uint8Array(n) : this.buffer(slot, n);
        const h = await this.handle(t.file);
        let done = 0;
        while (done < n) {
          const { bytesRead } = await h.read(buf, done, n - done, t.begin + a * rowBytes + done);
          if (bytesRead === 0) throw truncated();
          done += bytesRead;
        }
        return buf;
      },
      readRowsInto: async (a, b, parts) => {
        const h = await this.handle(t.file);
        let at = t.begin + a * rowBytes;
        const end = t.begin + b * rowBytes;
        let k = 0;
        let part = parts[0];
        while (at < end) {
          const iov = [part, ...parts.slice(k + 1, k + IOV_MAX)];
          const { bytesRead } = await h.readv(iov, at);
          if (bytesRead === 0) throw truncated();
          at += bytesRead;
          // a short read stops anywhere: skip the parts it filled, continue inside the one it cut
          let left = bytesRead;
          while (k < parts.length && left >= part.byteLength) {
            left -= part.byteLength;
            part = parts[++k];
          }
          if (left > 0) part = part.subarray(left);
        }
      },
    };
  }

  private handle(file: string): Promise<FileHandle> {
    let fh = this.files.get(file);
    if (fh === undefined) {
      fh = open(file, 'r');
      this.files.set(file, fh);
    }
    return fh;
  }

  async close(): Promise<void> {
    const hs = await Promise.allSettled([...this.files.values()]);
    await Promise.all(hs.map((h) => (h.status === 'fulfilled' ? h.value.close() : undefined)));
    this.files.clear();
  }
}
