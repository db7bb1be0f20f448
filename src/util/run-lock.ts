/**
 * One writer per run folder. A training run (and a pipeline) holds `<folder>/.flm-grow-lock`
 * while it writes there: a second writer — a Slurm requeue, a double submission, a second
 * `--overwrite` or `--resume` — is refused in one line naming the holder, and the first run is
 * untouched.
 *
 * The lock is a file created with O_EXCL holding host, pid, the pid's start time (so a reused pid
 * is not taken for the holder) and the command. It is released on exit (normal end, error,
 * SIGINT/SIGTERM). A lock left by a process that no longer runs on this host is stale and taken
 * over, saying so; a lock of another host cannot be checked from here and is taken over only
 * with `--take-over-lock` (the user says that job is dead).
 *
 * The same protocol is implemented by python/flm_grow_torch/runlock.py for the torch trainer
 * started on its own; when flm-grow starts it, the child is told through FLM_GROW_LOCK_HELD that
 * its parent holds the lock.
 */
import {
  closeSync,
  existsSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { FlmGrowError } from './errors.ts';

export const LOCK_FILE = '.flm-grow-lock';
/** Set in a child's environment to the lock path its parent holds (the child then takes none). */
export const LOCK_HELD_ENV = 'FLM_GROW_LOCK_HELD';

export interface LockHolder {
  host: string;
  pid: number;
  /** The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), or null off Linux. */
  pidStart: number | null;
  startedAt: string;
  command: string;
}

export class RunLockError extends FlmGrowError {
  readonly holder: LockHolder | undefined;
  constructor(message: string, holder?: LockHolder) {
    super('RunLocked', message);
    this.holder = holder;
  }
}

/** Start time of a process (field 22 of /proc/<pid>/stat), or null where /proc cannot tell. */
export function processStartTime(pid: number): number | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name (field 2) is in parentheses and may hold spaces: count fields after it
    const fields = s.slice(s.lastIndexOf(')') + 2).split(' ');
    const v = Number(fields[19]);
    return Number.isFinite(v) ? v : null;
  } catch {
    return null;
  }
}

/** Whether the holder still runs on this host: its pid exists and (where known) started when the lock says. */
export function holderAlive(h: LockHolder): boolean {
  try {
    process.kill(h.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    // EPERM: the pid exists, owned by another user
  }
  if (h.pidStart === null) return true;
  const now = processStartTime(h.pid);
  return now === null || now === h.pidStart;
}

export function describeHolder(h: LockHolder): string {
  return `pid ${h.pid} on ${h.host}, started ${h.startedAt}: ${h.command}`;
}

function readHolder(path: string): LockHolder | undefined {
  try {
    const h = JSON.parse(readFileSync(path, 'utf8')) as LockHolder;
    return typeof h.pid === 'number' && typeof h.host === 'string' ? h : undefined;
  } catch {
    return undefined;
  }
}

export interface RunLock {
  path: string;
  /** Remove the lock (and the folder, if the lock created it and nothing else was written). Idempotent. */
  release(): void;
}

export interface LockOptions {
  /** Take over a lock held by a process on another host (the user says that job is dead). */
  takeOver?: boolean;
  /** Where messages go (a stale lock taken over is said). */
  log?: (line: string) => void;
  /** What is locked, for messages ("run folder", "pipeline output folder"). */
  what?: string;
  /** The flag that the message suggests for a foreign host's lock. */
  takeOverFlag?: string;
}

const held = new Map<string, RunLock>();
let exitHooked = false;

function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  process.on('exit', () => {
    for (const l of [...held.values()]) l.release();
  });
  // a signal's default action skips 'exit' handlers: release, then exit as the shell would
  // report the signal — unless another handler (checkpoint/atomic.ts puts back a destination
  // mid-swap) is still to run: it exits itself, and 'exit' releases anything left
  const codes = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      for (const l of [...held.values()]) l.release();
      if (process.listenerCount(sig) === 0) process.exit(codes[sig]);
    });
  }
}

/**
 * Take the lock of `dir` (creating `dir` when absent; a refused or failed run that created it
 * leaves nothing behind). Throws RunLockError naming the holder when another live writer has it.
 */
export function acquireRunLock(dir: string, o: LockOptions = {}): RunLock {
  const what = o.what ?? 'run folder';
  const path = join(dir, LOCK_FILE);
  if (process.env[LOCK_HELD_ENV] === path) return { path, release: () => undefined };
  const own = held.get(path);
  if (own !== undefined) return { path, release: () => undefined }; // re-entrant: the outer holder releases
  const created = !existsSync(dir);
  mkdirSync(dir, { recursive: true });
  const me: LockHolder = {
    host: hostname(),
    pid: process.pid,
    pidStart: processStartTime(process.pid),
    startedAt: new Date().toISOString(),
    command: process.argv.slice(1).join(' '),
  };
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, 'wx', 0o644);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        if (created) tryRemoveEmpty(dir);
        throw new RunLockError(`cannot create the lock ${path}: ${(e as Error).message}`);
      }
      const h = readHolder(path);
      if (h === undefined) {
        // being written by its creator this instant, or damaged: look again before judging
        if (attempt < 2) {
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
          continue;
        }
        if (created) tryRemoveEmpty(dir);
        throw new RunLockError(
          `${path} exists but is not a flm-grow lock this version can read; if no flm-grow job writes ${dir}, delete it`,
        );
      }
      const sameHost = h.host === me.host;
      if (sameHost && holderAlive(h)) {
        if (created) tryRemoveEmpty(dir);
        throw new RunLockError(
          `${what} ${dir} is in use by another flm-grow job (${describeHolder(h)}); wait for it to end, or give another folder`,
          h,
        );
      }
      if (!sameHost && o.takeOver !== true) {
        if (created) tryRemoveEmpty(dir);
        throw new RunLockError(
          `${what} ${dir} is locked by a flm-grow job on another host (${describeHolder(h)}), which cannot be checked from ${me.host}; ` +
            `if that job is no longer running, pass ${o.takeOverFlag ?? '--take-over-lock'}`,
          h,
        );
      }
      if (!takeOverStale(path, h)) continue; // someone else changed it meanwhile: judge again
      o.log?.(
        `${what} ${dir}: taking over the lock of ${sameHost ? 'a process that no longer runs' : 'a job on another host (--take-over-lock)'} (${describeHolder(h)})`,
      );
      continue;
    }
    try {
      writeSync(fd, JSON.stringify(me) + '\n');
    } finally {
      closeSync(fd);
    }
    let released = false;
    const lock: RunLock = {
      path,
      release: () => {
        if (released) return;
        released = true;
        held.delete(path);
        const h = readHolder(path);
        if (h !== undefined && h.pid === me.pid && h.startedAt === me.startedAt) rmSync(path, { force: true });
        if (created) tryRemoveEmpty(dir);
      },
    };
    held.set(path, lock);
    hookExit();
    return lock;
  }
  if (created) tryRemoveEmpty(dir);
  throw new RunLockError(`cannot take the lock ${path}: it changed hands three times while this job tried; try again`);
}

/**
 * Move a stale lock aside atomically (rename: of two jobs taking it over, one wins), then check
 * that what was moved is the stale lock that was judged; a live lock moved by mistake goes back.
 */
function takeOverStale(path: string, stale: LockHolder): boolean {
  const aside = `${path}.stale-${process.pid}`;
  try {
    renameSync(path, aside);
  } catch {
    return false; // already moved by the other job
  }
  const moved = readHolder(aside);
  if (moved !== undefined && (moved.pid !== stale.pid || moved.startedAt !== stale.startedAt)) {
    try {
      linkSync(aside, path);
      rmSync(aside, { force: true });
    } catch {
      // a third job created a lock meanwhile; the live one we moved stays beside it for the user
      // rather than overwrite either
    }
    return false;
  }
  rmSync(aside, { force: true });
  return true;
}

function tryRemoveEmpty(dir: string): void {
  try {
    if (readdirSync(dir).length === 0) rmdirSync(dir);
  } catch {
    // not empty, or gone: leave it
  }
}

/** Run `fn` holding the lock of `dir`, releasing it however `fn` ends. */
export async function withRunLock<T>(dir: string, o: LockOptions, fn: () => Promise<T>): Promise<T> {
  const lock = acquireRunLock(dir, o);
  try {
    return await fn();
  } finally {
    lock.release();
  }
}
