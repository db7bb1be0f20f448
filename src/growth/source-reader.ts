/**
 * Reads source tensor rows into reusable buffers (two, ping-pong: the block in use and the one
 * prefetched), so grow's memory does not depend on how quickly the garbage collector returns
 * 32 MB read buffers. Uses the offsets the checkpoint reader validated; files opened read-only.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import { CheckpointError } from '../errors.ts';
import type { DType } from '../util/dtype.ts';

export interface SourceRows {
  dtype: DType;
  /** Rows [a, b) of the source tensor (a 1-D tensor is one row), into buffer slot `slot` when given. */
  readRows(a: number, b: number, slot?: number): Promise<Uint8Array>;
}

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
    return {
      dtype: t.dtype,
      readRows: async (a, b, slot) => {
        const n = (b - a) * rowBytes;
        const buf = slot === undefined ? new Uint8Array(n) : this.buffer(slot, n);
        let fh = this.files.get(t.file);
        if (fh === undefined) {
          fh = open(t.file, 'r');
          this.files.set(t.file, fh);
        }
        const h = await fh;
        let done = 0;
        while (done < n) {
          const { bytesRead } = await h.read(buf, done, n - done, t.begin + a * rowBytes + done);
          if (bytesRead === 0) throw new CheckpointError('TruncatedShard', `${t.file}: unexpected end of file reading "${name}"`);
          done += bytesRead;
        }
        return buf;
      },
    };
  }

  async close(): Promise<void> {
    const hs = await Promise.allSettled([...this.files.values()]);
    await Promise.all(hs.map((h) => (h.status === 'fulfilled' ? h.value.close() : undefined)));
    this.files.clear();
  }
}
