/**
 * sha256 of output files computed on a second thread while the main thread builds the next
 * block (hashing on the main thread cost as much CPU as building the tensors: bench/grow.ts).
 * Blocks live in a small pool of SharedArrayBuffers, so the worker reads them without a copy and
 * memory stays bounded: a block returns to the pool once it is both hashed and written.
 */
import { Worker } from 'node:worker_threads';
import { CheckpointWriter, type CheckpointWriterOptions } from '../checkpoint/checkpoint-writer.ts';
import type { TensorDecl } from '../checkpoint/safetensors-writer.ts';

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hashes = new Map();
parentPort.on('message', (m) => {
  if (m.op === 'start') hashes.set(m.id, createHash('sha256'));
  else if (m.op === 'update') { hashes.get(m.id).update(m.data); parentPort.postMessage({ ack: m.seq }); }
  else if (m.op === 'end') { const h = hashes.get(m.id); hashes.delete(m.id); parentPort.postMessage({ id: m.id, hex: h.digest('hex') }); }
});
`;

interface Waiter<T> {
  res: (v: T) => void;
  rej: (e: Error) => void;
}

export class ParallelHasher {
  private worker: Worker;
  private digests = new Map<string, Waiter<string>>();
  private acks = new Map<number, Waiter<void>>();
  private seq = 0;
  private failed: Error | undefined;

  constructor() {
    this.worker = new Worker(WORKER_SOURCE, { eval: true });
    this.worker.on('message', (m: { id?: string; hex?: string; ack?: number }) => {
      if (m.ack !== undefined) {
        this.acks.get(m.ack)?.res();
        this.acks.delete(m.ack);
      } else if (m.id !== undefined) {
        this.digests.get(m.id)?.res(m.hex as string);
        this.digests.delete(m.id);
      }
    });
    this.worker.on('error', (e) => {
      this.failed = e;
      for (const w of [...this.digests.values(), ...this.acks.values()]) w.rej(e);
      this.digests.clear();
      this.acks.clear();
    });
  }

  start(id: string): void {
    this.worker.postMessage({ op: 'start', id });
  }

  /** Resolves once the worker has consumed `data` (SharedArrayBuffer views are not copied). */
  update(id: string, data: Uint8Array): Promise<void> {
    if (this.failed !== undefined) return Promise.reject(this.failed);
    const seq = this.seq++;
    const p = new Promise<void>((res, rej) => this.acks.set(seq, { res, rej }));
    this.worker.postMessage({ op: 'update', id, data, seq });
    return p;
  }

  end(id: string): Promise<string> {
    if (this.failed !== undefined) return Promise.reject(this.failed);
    const p = new Promise<string>((res, rej) => this.digests.set(id, { res, rej }));
    this.worker.postMessage({ op: 'end', id });
    return p;
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

/**
 * A fixed set of shared buffers handed out as views (not cleared). Only blocks of at least
 * `minPooled` bytes come from the pool: the safetensors writer flushes chunks of 8 MB or more
 * before write() resolves, while smaller ones may wait in its queue, so only large blocks can be
 * reused safely once written. Smaller blocks get a fresh buffer.
 */
export class BlockPool {
  private free: SharedArrayBuffer[] = [];
  private waiters: ((b: SharedArrayBuffer) => void)[] = [];
  private owned = new Set<SharedArrayBuffer>();
  readonly size: number;
  readonly minPooled: number;

  constructor(size: number, count: number, minPooled = 8 << 20) {
    this.size = size;
    this.minPooled = minPooled;
    for (let k = 0; k < count; k++) {
      const b = new SharedArrayBuffer(size);
      this.free.push(b);
      this.owned.add(b);
    }
  }

  /** A view of n bytes; pooled views hold stale bytes (the caller writes every byte). */
  async acquire(n: number): Promise<Uint8Array> {
    if (n < this.minPooled || n > this.size) return new Uint8Array(new SharedArrayBuffer(n));
    const b = this.free.pop() ?? (await new Promise<SharedArrayBuffer>((res) => this.waiters.push(res)));
    return new Uint8Array(b, 0, n);
  }

  release(view: Uint8Array): void {
    const b = view.buffer as SharedArrayBuffer;
    if (!this.owned.has(b)) return;
    const w = this.waiters.shift();
    if (w !== undefined) w(b);
    else this.free.push(b);
  }
}

/**
 * Blocks handed to the writer and not yet hashed and written. Four rather than two lets the main
 * thread run ahead through blocks that need little work (copied layers) while the hashing thread
 * catches up during ones that need much (new random entries): the 1.9 GB bench/grow.ts output
 * took 1.86 s instead of 2.10 s (median of 5 interleaved runs each), for 16 MB more peak RSS.
 */
export const DEFAULT_IN_FLIGHT = 4;

/** The pool's size for `inFlight` pending blocks: those, the one being built and one spare. */
export function poolBlocks(inFlight = DEFAULT_IN_FLIGHT): number {
  return inFlight + 2;
}

/**
 * Grow's write pipeline: blocks come from a BlockPool; up to `inFlight` of them are being
 * written (and hashed) while the next is built, so the disk and the hashing thread stay busy
 * while the main thread builds. The writer reserves each block's file offset when write() is
 * called, so the writes may overlap; a block returns to the pool once it is written and hashed
 * (the writer resolves a write of a pooled-size block only then).
 */
export class BlockPipeline {
  private pool: BlockPool;
  private inflight: Promise<void>[] = [];
  private writer: { write(name: string, chunk: Uint8Array): Promise<void> };
  private inFlight: number;
  private onWritten: ((bytes: number) => void) | undefined;

  constructor(
    writer: { write(name: string, chunk: Uint8Array): Promise<void> },
    blockBytes: number,
    opts: { inFlight?: number; onWritten?: (bytes: number) => void } = {},
  ) {
    this.writer = writer;
    this.inFlight = opts.inFlight ?? DEFAULT_IN_FLIGHT;
    this.onWritten = opts.onWritten;
    this.pool = new BlockPool(blockBytes, poolBlocks(this.inFlight));
  }

  /** A block to fill (stale bytes: the caller writes every byte). */
  acquire(n: number): Promise<Uint8Array> {
    return this.pool.acquire(n);
  }

  /** Hand a filled block of tensor `name` to the writer; waits only while `inFlight` are pending. */
  async emit(name: string, block: Uint8Array): Promise<void> {
    while (this.inflight.length >= this.inFlight) await this.inflight.shift();
    const written = this.writer.write(name, block);
    const tracked = written.then(() => this.onWritten?.(block.byteLength));
    tracked.catch(() => undefined); // awaited when the queue is full or in drain()
    this.inflight.push(tracked);
    // back to the pool once written and hashed, even on failure (errors surface through inflight)
    const release = () => this.pool.release(block);
    void written.then(release, release);
  }

  /** Wait for every block handed over; throws the first write error. */
  async drain(): Promise<void> {
    const all = this.inflight;
    this.inflight = [];
    await Promise.all(all);
  }
}

/** A zero-filled block in shared memory. */
export function sharedBlock(bytes: number): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(bytes));
}

/**
 * A CheckpointWriter whose shards are hashed on a second thread as it writes them (blocks are
 * shared memory, so nothing is copied or read back). The caller closes the hasher when done.
 */
export async function createHashedWriter(
  dest: string,
  decls: TensorDecl[],
  opts: Omit<CheckpointWriterOptions, 'hasher'>,
): Promise<{ writer: CheckpointWriter; hasher: ParallelHasher }> {
  const hasher = new ParallelHasher();
  try {
    const writer = await CheckpointWriter.create(dest, decls, {
      ...opts,
      hasher: (file) => {
        hasher.start(file);
        return { update: (d) => hasher.update(file, d), digest: () => hasher.end(file) };
      },
    });
    return { writer, hasher };
  } catch (e) {
    await hasher.close();
    throw e;
  }
}
