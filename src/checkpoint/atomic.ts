/**
 * Outputs appear atomically: everything is written into a hidden temporary folder beside the
 * destination (same filesystem, so rename is atomic) and renamed into place only when complete.
 * An interrupted run leaves only the temporary folder, which never looks like a checkpoint.
 */
import { closeSync, existsSync, fsyncSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CheckpointError } from '../errors.ts';

export const TMP_PREFIX = '.flm-grow-tmp-';

const live = new Set<string>();
let hooked = false;

/** On Ctrl-C / SIGTERM remove our temporary folders before exiting. */
function hookSignals(): void {
  if (hooked) return;
  hooked = true;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      for (const d of live) {
        try {
          rmSync(d, { recursive: true, force: true });
        } catch { /* best effort */ }
      }
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
}

export class AtomicDir {
  readonly dest: string;
  readonly tmp: string;
  private overwrite: boolean;
  private done = false;

  private constructor(dest: string, tmp: string, overwrite: boolean) {
    this.dest = dest;
    this.tmp = tmp;
    this.overwrite = overwrite;
  }

  static async create(dest: string, opts: { overwrite?: boolean; sources?: string[] } = {}): Promise<AtomicDir> {
    const abs = resolve(dest);
    for (const s of opts.sources ?? []) {
      if (resolve(s) === abs) throw new CheckpointError('DestinationIsSource', `${dest}: destination is the source checkpoint; refusing to write over it`);
    }
    if (existsSync(abs) && opts.overwrite !== true) {
      throw new CheckpointError('DestinationExists', `${dest}: already exists (pass --overwrite to replace it)`);
    }
    await mkdir(dirname(abs), { recursive: true });
    const tmp = join(dirname(abs), `${TMP_PREFIX}${basename(abs)}-${process.pid}-${randomBytes(4).toString('hex')}`);
    await mkdir(tmp);
    live.add(tmp);
    hookSignals();
    return new AtomicDir(abs, tmp, opts.overwrite === true);
  }

  path(rel: string): string {
    return join(this.tmp, rel);
  }

  async commit(): Promise<void> {
    if (this.done) return;
    if (existsSync(this.dest)) {
      if (!this.overwrite) throw new CheckpointError('DestinationExists', `${this.dest}: appeared while writing; not replacing it`);
      const trash = `${this.tmp}.old`;
      await rename(this.dest, trash);
      await rename(this.tmp, this.dest);
      await rm(trash, { recursive: true, force: true });
    } else {
      await rename(this.tmp, this.dest);
    }
    live.delete(this.tmp);
    this.done = true;
  }

  async abort(): Promise<void> {
    if (this.done) return;
    await rm(this.tmp, { recursive: true, force: true });
    live.delete(this.tmp);
    this.done = true;
  }
}

/** Run `fn` with a temporary folder; commit on success, remove on any error. */
export async function writeAtomically<T>(dest: string, opts: { overwrite?: boolean; sources?: string[] }, fn: (dir: AtomicDir) => Promise<T>): Promise<T> {
  const d = await AtomicDir.create(dest, opts);
  try {
    const r = await fn(d);
    await d.commit();
    return r;
  } catch (e) {
    await d.abort();
    throw e;
  }
}

/**
 * Write one file so that a reader sees the old content or the new, never a torn one: the bytes
 * go to a temporary file beside it (same folder, same filesystem), are fsync'd, and the file is
 * renamed over the destination. On any error the temporary file is removed. For the small files
 * a later run parses (verify reports, summaries).
 */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const tmp = join(dirname(path), `${TMP_PREFIX}${basename(path)}-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    const fd = openSync(tmp, 'wx');
    try {
      writeFileSync(fd, data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
