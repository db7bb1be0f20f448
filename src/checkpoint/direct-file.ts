/**
 * A new file written front to back through O_DIRECT: the bytes go from our memory to the disk
 * without a copy into the page cache. Buffered writes cost a kernel copy of every byte (1.7 s of
 * system time for a 1.9 GB grow, as much as building the tensors: bench/grow.ts) and leave the
 * whole output dirty in RAM for the final fsync; direct writes cost almost no CPU and keep the
 * disk busy while the next bytes are made.
 *
 * O_DIRECT needs the memory, the file offset and the length aligned to the device's block size.
 * Callers' chunks are neither, so appended bytes are copied into a ring of aligned staging slots
 * (shared WebAssembly memory: its base is page-aligned, unlike a Buffer's); each full slot is one
 * aligned write, and the last partial slot is written padded to ALIGN and the file truncated
 * back to its length. Where the file system refuses O_DIRECT (tmpfs: EINVAL at open; some refuse
 * at the first write), the same writes go through a buffered descriptor instead, so callers
 * never see the difference except in speed.
 */
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { withErrorPath } from '../util/os-errors.ts';

/** Alignment of offsets and lengths: 4096 covers 512-byte and 4K-native devices. */
const ALIGN = 4096;
/** One aligned write; several are in flight (libuv's pool has 4 threads). */
const SLOT_BYTES = 8 << 20;
const SLOTS = 4;
/** Memory of one direct-written file's staging ring. */
export const DIRECT_RING_BYTES = SLOT_BYTES * SLOTS;
const WASM_PAGE = 65536;

/** The one WebAssembly API used here (this project's TypeScript lib has no WebAssembly types). */
const wasmMemory = (
  globalThis as unknown as {
    WebAssembly: { Memory: new (d: { initial: number; maximum: number; shared: boolean }) => { buffer: SharedArrayBuffer } };
  }
).WebAssembly.Memory;

/** Files smaller than this are written buffered: the staging ring would cost more than it saves. */
export const DIRECT_MIN_BYTES = 64 << 20;

export class DirectAppendFile {
  readonly path: string;
  private fh: FileHandle;
  /** Opened once the file system refused an O_DIRECT write: the rest goes through it. */
  private buffered: Promise<FileHandle> | undefined;
  private ring: Uint8Array;
  /** The slot being filled, its fill level, and its offset in the file. */
  private slot = 0;
  private fill = 0;
  private slotAt = 0;
  /** Write in flight per slot (a slot is refilled only after its last write is done). */
  private writing: (Promise<void> | undefined)[] = new Array<Promise<void> | undefined>(SLOTS).fill(undefined);
  private failed: unknown;
  /** Appends run one after another in call order, whatever their callers await. */
  private queue: Promise<void> = Promise.resolve();

  private constructor(path: string, fh: FileHandle) {
    this.path = path;
    this.fh = fh;
    const pages = DIRECT_RING_BYTES / WASM_PAGE;
    this.ring = new Uint8Array(new wasmMemory({ initial: pages, maximum: pages, shared: true }).buffer);
  }

  /**
   * Create `path` (it must not exist) for direct writing; undefined where O_DIRECT is not
   * available (no such flag on this platform, or the file system refuses it).
   */
  static async create(path: string): Promise<DirectAppendFile | undefined> {
    const direct = (constants as { O_DIRECT?: number }).O_DIRECT;
    if (direct === undefined) return undefined;
    const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | direct;
    let fh: FileHandle;
    try {
      fh = await open(path, flags, 0o644);
    } catch (e) {
      if ((e as { code?: string }).code === 'EINVAL') return undefined;
      throw withErrorPath(e, path);
    }
    return new DirectAppendFile(path, fh);
  }

  /**
   * Append `bytes`. Resolves once they are copied into the staging ring (the caller may reuse
   * its memory then); waits while every slot is still being written. A failed write surfaces
   * here or in close().
   */
  append(bytes: Uint8Array): Promise<void> {
    const p = this.queue.then(() => this.copyIn(bytes));
    this.queue = p.catch(() => undefined);
    return p;
  }

  private async copyIn(bytes: Uint8Array): Promise<void> {
    let done = 0;
    while (done < bytes.byteLength) {
      if (this.failed !== undefined) throw this.failed;
      if (this.fill === 0) await this.writing[this.slot]; // the slot's previous contents are on disk
      const n = Math.min(bytes.byteLength - done, SLOT_BYTES - this.fill);
      this.ring.set(bytes.subarray(done, done + n), this.slot * SLOT_BYTES + this.fill);
      this.fill += n;
      done += n;
      if (this.fill === SLOT_BYTES) this.submit(SLOT_BYTES);
    }
  }

  /** Write the current slot's first `len` bytes (a multiple of ALIGN) at its file offset; move on. */
  private submit(len: number): void {
    const k = this.slot;
    const view = this.ring.subarray(k * SLOT_BYTES, k * SLOT_BYTES + len);
    const p = this.writeFully(view, this.slotAt);
    p.catch((e: unknown) => {
      this.failed ??= e;
    });
    this.writing[k] = p.catch(() => undefined);
    this.slotAt += this.fill;
    this.fill = 0;
    this.slot = (k + 1) % SLOTS;
  }

  private async writeFully(view: Uint8Array, at: number): Promise<void> {
    let done = 0;
    try {
      while (done < view.byteLength) {
        const buffered = this.buffered;
        const fh = buffered === undefined ? this.fh : await buffered;
        let n: number;
        try {
          n = (await fh.write(view, done, view.byteLength - done, at + done)).bytesWritten;
        } catch (e) {
          // the file system took O_DIRECT at open but not for writes: go on buffered (one
          // descriptor, whichever of the writes in flight saw the refusal first)
          if ((e as { code?: string }).code !== 'EINVAL' || buffered !== undefined) throw e;
          this.buffered ??= open(this.path, 'r+');
          continue;
        }
        if (n === 0) throw new Error('the device accepted no bytes');
        done += n;
      }
    } catch (e) {
      throw withErrorPath(e, this.path);
    }
  }

  /** Write what is left, trim the padding, optionally fsync, close. */
  async close(opts: { sync?: boolean } = {}): Promise<void> {
    try {
      await this.queue;
      const size = this.slotAt + this.fill;
      if (this.fill > 0) {
        const padded = Math.ceil(this.fill / ALIGN) * ALIGN;
        this.ring.fill(0, this.slot * SLOT_BYTES + this.fill, this.slot * SLOT_BYTES + padded);
        this.submit(padded);
      }
      await Promise.all(this.writing);
      if (this.failed !== undefined) throw this.failed;
      await this.fh.truncate(size).catch((e: unknown) => {
        throw withErrorPath(e, this.path);
      });
      if (opts.sync !== false) {
        for (const fh of [this.fh, await this.buffered]) {
          await fh?.sync().catch((e: unknown) => {
            throw withErrorPath(e, this.path);
          });
        }
      }
    } finally {
      await this.closeHandles();
    }
  }

  /** Stop: wait for writes in flight (ignoring their errors) and close; the caller deletes the file. */
  async abort(): Promise<void> {
    await this.queue;
    await Promise.allSettled(this.writing);
    await this.closeHandles();
  }

  private async closeHandles(): Promise<void> {
    const buffered = this.buffered;
    this.buffered = undefined;
    await buffered?.then((fh) => fh.close()).catch(() => undefined);
    await this.fh.close().catch(() => undefined);
  }
}
