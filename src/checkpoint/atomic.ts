/**
 * Outputs appear atomically: everything is written into a hidden temporary folder beside the
 * destination (same filesystem, so rename is atomic) and renamed into place only when complete.
 * An interrupted run leaves only the temporary folder, which never looks like a checkpoint; the
 * next run on the same destination removes it (or restores the old destination, see commit()).
 */
import { existsSync, lstatSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { CheckpointError } from '../util/errors.ts';
import { MANIFEST_FILE } from './checkpoint.ts';
import { assertOutputApart } from './paths.ts';

export const TMP_PREFIX = '.flm-grow-tmp-';
/** Suffix of the old destination, moved aside while --overwrite swaps the new one in. */
export const BACKUP_SUFFIX = '.old';

/**
 * The host goes into temporary names so that a later run only ever judges (by pid) folders of
 * its own machine: on a shared filesystem another machine's pid says nothing about liveness.
 */
const HOST = hostname().replace(/[^A-Za-z0-9._]/g, '_') || 'host';

const live = new Set<string>();
/** Swaps in progress: the old destination sits at `backup` until the new one is renamed in. */
const swapping = new Map<string, { dest: string; backup: string }>();
let hooked = false;

/** On Ctrl-C / SIGTERM put back any old destination mid-swap, remove our temporary folders, exit. */
function hookSignals(): void {
  if (hooked) return;
  hooked = true;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      for (const { dest, backup } of swapping.values()) {
        try {
          if (!existsSync(dest) && existsSync(backup)) renameSync(backup, dest);
        } catch {
          /* best effort; the next run restores it */
        }
      }
      for (const d of live) {
        try {
          rmSync(d, { recursive: true, force: true });
        } catch {
          /* best effort */
        }
      }
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
}

function pathExists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Bytes under `p` (files only; symlinks not followed). */
export function treeBytes(p: string): number {
  const stats = lstatSync(p, { throwIfNoEntry: false });
  if (stats === undefined) return 0;
  if (!stats.isDirectory()) return stats.size;
  let n = 0;
  for (const f of readdirSync(p)) n += treeBytes(join(p, f));
  return n;
}

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

export interface TempFolder {
  path: string;
  pid: number;
  /** Written on this machine (or by a version that did not record the host). */
  local: boolean;
  /** A live process on this machine may still be writing it. */
  alive: boolean;
  /** The old destination moved aside by an --overwrite swap. */
  backup: boolean;
}

/**
 * Temporary folders of `dest` left beside it: `.flm-grow-tmp-<name>-[<host>-]<pid>-<hex>[.old]`
 * (older versions wrote no host).
 */
export function tempFoldersOf(dest: string): TempFolder[] {
  const abs = resolve(dest);
  const parent = dirname(abs);
  const prefix = `${TMP_PREFIX}${basename(abs)}-`;
  if (!existsSync(parent)) return [];
  const out: TempFolder[] = [];
  for (const name of readdirSync(parent)) {
    if (!name.startsWith(prefix)) continue;
    const m = /^(?:(.+)-)?(\d+)-([0-9a-f]{8})(\.old)?$/.exec(name.slice(prefix.length));
    if (m === null) continue;
    const local = m[1] === undefined || m[1] === HOST;
    const pid = Number(m[2]);
    out.push({
      path: join(parent, name),
      pid,
      local,
      alive: local && pid !== process.pid ? pidAlive(pid) : local,
      backup: m[4] !== undefined,
    });
  }
  return out;
}

/**
 * Undo what killed runs left at `dest`: an old destination moved aside by an interrupted swap is
 * put back when nothing is at `dest` (the killed run never finished, so its output is dropped);
 * other leftovers of dead local runs are removed. Folders of live runs or other machines are
 * only reported, with their size.
 */
export function recoverDestination(dest: string, notice: (msg: string) => void): void {
  const abs = resolve(dest);
  const temps = tempFoldersOf(abs).sort((a, b) => Number(b.backup) - Number(a.backup)); // backups first
  for (const t of temps) {
    if (t.alive || !t.local) {
      notice(
        `${t.path}: left by ${t.local ? `a running flm-grow (pid ${t.pid})` : 'another machine'}, ${mb(treeBytes(t.path))}; not touched`,
      );
      continue;
    }
    if (t.backup && !pathExists(abs)) {
      renameSync(t.path, abs);
      notice(`${abs}: restored from ${basename(t.path)} (an --overwrite was killed mid-swap; its new output is discarded)`);
      continue;
    }
    const bytes = treeBytes(t.path);
    rmSync(t.path, { recursive: true, force: true });
    notice(`${t.path}: removed, left by a killed run (pid ${t.pid}), ${mb(bytes)} freed`);
  }
}

/**
 * Whether --overwrite may replace `dest`: a folder flm-grow wrote (its manifest is there) or an
 * empty one. Anything else may be the user's data; only `force` replaces it.
 */
export function assertReplaceable(dest: string, force: boolean): void {
  if (force) return;
  const stats = lstatSync(dest);
  if (stats.isDirectory() && (existsSync(join(dest, MANIFEST_FILE)) || readdirSync(dest).length === 0)) return;
  throw new CheckpointError(
    'DestinationNotOurs',
    `${dest}: exists and is not a folder flm-grow wrote (no ${MANIFEST_FILE}); --overwrite replaces only those (pass --force-overwrite to replace it anyway)`,
  );
}

export interface DestinationOptions {
  overwrite?: boolean;
  /** With overwrite: replace even a destination flm-grow did not write. */
  force?: boolean;
  /** Inputs (folders or files) the destination must not be, contain, or be inside. */
  sources?: string[];
}

/** Every rule for a destination, checked before any work (commands call it early to fail fast). */
export function checkDestination(dest: string, opts: DestinationOptions): void {
  assertOutputApart(dest, opts.sources ?? []);
  if (pathExists(resolve(dest))) {
    if (opts.overwrite !== true)
      throw new CheckpointError('DestinationExists', `${dest}: already exists (pass --overwrite to replace it)`);
    assertReplaceable(resolve(dest), opts.force === true);
  }
}

export interface AtomicDirOptions extends DestinationOptions {
  /** Where to say what was recovered or cleaned up (default: stderr). */
  notice?: (msg: string) => void;
  /**
   * Fault injection for tests: called between moving the old destination aside and renaming the
   * new one into place (the only moment neither is at the destination).
   */
  onSwap?: () => void | Promise<void>;
}

const stderrNotice = (msg: string): void => {
  process.stderr.write(`flm-grow: ${msg}\n`);
};

export class AtomicDir {
  readonly dest: string;
  readonly tmp: string;
  private opts: AtomicDirOptions;
  private done = false;

  private constructor(dest: string, tmp: string, opts: AtomicDirOptions) {
    this.dest = dest;
    this.tmp = tmp;
    this.opts = opts;
  }

  static async create(dest: string, opts: AtomicDirOptions = {}): Promise<AtomicDir> {
    const abs = resolve(dest);
    assertOutputApart(dest, opts.sources ?? []);
    recoverDestination(abs, opts.notice ?? stderrNotice);
    checkDestination(dest, opts);
    await mkdir(dirname(abs), { recursive: true });
    const tmp = join(dirname(abs), `${TMP_PREFIX}${basename(abs)}-${HOST}-${process.pid}-${randomBytes(4).toString('hex')}`);
    await mkdir(tmp);
    live.add(tmp);
    hookSignals();
    return new AtomicDir(abs, tmp, opts);
  }

  path(rel: string): string {
    return join(this.tmp, rel);
  }

  /**
   * Rename into place. Replacing an existing destination takes two renames (old aside, new in);
   * a run killed between them leaves the old one at `<tmp>.old`, which the next run on this
   * destination (or our signal handler) renames back, so the destination is never lost.
   */
  async commit(): Promise<void> {
    if (this.done) return;
    if (pathExists(this.dest)) {
      if (this.opts.overwrite !== true)
        throw new CheckpointError('DestinationExists', `${this.dest}: appeared while writing; not replacing it`);
      assertReplaceable(this.dest, this.opts.force === true);
      const backup = `${this.tmp}${BACKUP_SUFFIX}`;
      swapping.set(this.tmp, { dest: this.dest, backup });
      await rename(this.dest, backup);
      try {
        await this.opts.onSwap?.();
        await rename(this.tmp, this.dest);
      } catch (e) {
        await rename(backup, this.dest).catch(() => undefined);
        throw e;
      } finally {
        swapping.delete(this.tmp);
      }
      live.delete(this.tmp);
      this.done = true;
      await rm(backup, { recursive: true, force: true });
    } else {
      await rename(this.tmp, this.dest);
      live.delete(this.tmp);
      this.done = true;
    }
  }

  async abort(): Promise<void> {
    if (this.done) return;
    await rm(this.tmp, { recursive: true, force: true });
    live.delete(this.tmp);
    this.done = true;
  }
}

/** Run `fn` with a temporary folder; commit on success, remove on any error. */
export async function writeAtomically<T>(dest: string, opts: AtomicDirOptions, fn: (dir: AtomicDir) => Promise<T>): Promise<T> {
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
 * Write one file so that a reader sees the old content or the whole new one, never a torn one:
 * the bytes go to a hidden temporary file beside it (same folder, same filesystem), are fsync'd,
 * and the file is renamed over `path`. `data` is the content, or a function that writes the file
 * at the temporary path it is given (large files, streamed). The temporary file is removed on
 * failure. Every single-file write that a later run parses goes through here.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array | ((tmp: string) => Promise<void>)): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    if (typeof data === 'function') await data(tmp);
    else {
      const fh = await open(tmp, 'wx');
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}
