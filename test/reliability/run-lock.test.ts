/**
 * One writer per run folder (src/util/run-lock.ts). Before the lock, a second
 * `train --out R --overwrite` started while a first run trained into R deleted the first run's
 * checkpoints, and the first died with ENOENT; these tests failed then (the second run was let in).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { makeTempDir, tinyByteConfig } from '../support/model.ts';
import { initBackend } from '../../src/engines/tfjs-backend.ts';
import { writeRandomInit } from '../../src/train/random-init.ts';
import { listCheckpoints } from '../../src/train/checkpointing.ts';
import { acquireRunLock, LOCK_FILE, processStartTime, RunLockError } from '../../src/util/run-lock.ts';
import { findTorchPython, PYTHON_DIR } from '../../src/engines/torch-process.ts';

const ROOT = join(import.meta.dirname, '../..');
const BIN = join(ROOT, 'bin/flm-grow.js');
const CORPUS = join(ROOT, 'fixtures/corpus/fortunes.txt');
const tmp = makeTempDir('flm-grow-run-lock-');
afterAll(() => tmp.cleanup());
let init: string;

beforeAll(async () => {
  await initBackend('wasm');
  init = join(tmp.dir, 'init');
  await writeRandomInit(init, tinyByteConfig({ num_hidden_layers: 1 }), { seed: 1 });
});

const trainArgs = (out: string, steps: number, ...more: string[]) => [
  'train',
  init,
  '--data',
  CORPUS,
  '--out',
  out,
  '--steps',
  String(steps),
  '--batch-size',
  '2',
  '--seq-len',
  '8',
  '--engine',
  'tfjs',
  '--backend',
  'wasm',
  '--quiet',
  ...more,
];

function cli(args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
}

async function until(cond: () => boolean, what: string, ms = 60_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function exited(c: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((res) => {
    if (c.exitCode !== null || c.signalCode !== null) res({ code: c.exitCode, signal: c.signalCode });
    else c.once('exit', (code, signal) => res({ code, signal }));
  });
}

/** A lock file as another job would have left it. */
function plantLock(dir: string, holder: { host: string; pid: number; pidStart: number | null }): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, LOCK_FILE),
    JSON.stringify({ ...holder, startedAt: '2026-01-01T00:00:00.000Z', command: 'flm-grow train (planted by the test)' }) + '\n',
  );
}

/** The pid of a process that has ended (so no live process has it, barring reuse). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

describe('a run folder has one writer', () => {
  it('a second train --overwrite or --resume on a folder a running job trains into is refused, naming it; the first run is untouched', async () => {
    const out = join(tmp.dir, 'two-writers');
    const first = spawn(process.execPath, [BIN, ...trainArgs(out, 1_000_000, '--save-every', '5', '--keep-checkpoints', '100')], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let firstErr = '';
    first.stderr!.on('data', (d: Buffer) => (firstErr += d.toString()));
    try {
      await until(
        () => listCheckpoints(out).some((c) => existsSync(join(c.dir, 'flm-grow-manifest.json'))),
        'the first checkpoint',
      );
      const holder = JSON.parse(readFileSync(join(out, LOCK_FILE), 'utf8')) as { pid: number; host: string };
      expect(holder.pid).toBe(first.pid);
      expect(holder.host).toBe(hostname());
      const before = listCheckpoints(out).map((c) => c.step);
      for (const mode of ['--overwrite', '--resume']) {
        const second = cli(trainArgs(out, 3, mode));
        expect(second.status, second.stderr).toBe(2);
        expect(second.stderr).toContain(`run folder ${out} is in use by another flm-grow job (pid ${first.pid} on ${hostname()}`);
        expect(second.stderr.trim().split('\n')).toHaveLength(1);
      }
      // the first run kept its checkpoints and is still training
      expect(first.exitCode).toBeNull();
      const after = listCheckpoints(out).map((c) => c.step);
      expect(after.slice(0, before.length)).toEqual(before);
      await until(() => listCheckpoints(out).length > before.length, 'a later checkpoint of the first run');
    } finally {
      first.kill('SIGINT');
    }
    const end = await exited(first);
    expect(end.code === 130 || end.signal === 'SIGINT', firstErr).toBe(true);
    expect(firstErr).not.toContain('ENOENT');
    // released on Ctrl-C: the next job takes the folder
    expect(existsSync(join(out, LOCK_FILE))).toBe(false);
    const next = cli(trainArgs(out, 2, '--overwrite'));
    expect(next.status, next.stderr).toBe(0);
    expect(existsSync(join(out, LOCK_FILE))).toBe(false);
  });

  it("a dead process's lock on this host is taken over, saying so", () => {
    const out = join(tmp.dir, 'stale');
    const pid = deadPid();
    plantLock(out, { host: hostname(), pid, pidStart: null });
    const r = cli(trainArgs(out, 2).filter((a) => a !== '--quiet'));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr + r.stdout).toContain(`taking over the lock of a process that no longer runs (pid ${pid} on ${hostname()}`);
    expect(existsSync(join(out, LOCK_FILE))).toBe(false);
    expect(listCheckpoints(out).map((c) => c.step)).toEqual([2]);
  });

  it('a reused pid (same number, other start time) is not taken for the holder', () => {
    const out = join(tmp.dir, 'reused-pid');
    // our own pid is alive, but the planted start time is not ours: the holder is gone
    plantLock(out, { host: hostname(), pid: process.pid, pidStart: (processStartTime(process.pid) ?? 0) + 12345 });
    const lock = acquireRunLock(out, { log: () => undefined });
    expect(JSON.parse(readFileSync(lock.path, 'utf8')).pidStart).toBe(processStartTime(process.pid));
    lock.release();
  });

  it("another host's lock is refused with the flag that takes it over; --take-over-lock proceeds", () => {
    const out = join(tmp.dir, 'foreign');
    plantLock(out, { host: 'node-0042.cluster', pid: 4242, pidStart: 1 });
    const r = cli(trainArgs(out, 2));
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('locked by a flm-grow job on another host (pid 4242 on node-0042.cluster');
    expect(r.stderr).toContain('--take-over-lock');
    expect(readdirSync(out)).toEqual([LOCK_FILE]);
    const t = cli(trainArgs(out, 2, '--take-over-lock'));
    expect(t.status, t.stderr).toBe(0);
    expect(listCheckpoints(out).map((c) => c.step)).toEqual([2]);
    expect(existsSync(join(out, LOCK_FILE))).toBe(false);
  });

  it('a refused or failed run that created the folder leaves nothing behind', () => {
    const out = join(tmp.dir, 'never-made');
    const r = cli(trainArgs(out, 2, '--seq-len', '100000'));
    expect(r.status).toBe(2);
    expect(existsSync(out)).toBe(false);
  });

  it('a pipeline output folder in use is refused before anything there is read or removed', async () => {
    const out = join(tmp.dir, 'pipeline-out');
    const holder = spawn('sleep', ['60']);
    try {
      await until(() => processStartTime(holder.pid!) !== null, 'the holder');
      plantLock(out, { host: hostname(), pid: holder.pid!, pidStart: processStartTime(holder.pid!) });
      writeFileSync(join(out, 'keep.txt'), 'mine\n');
      const r = cli(['run', join(ROOT, 'pipelines/tiny-tele-flm.json'), '--out', out, '--quiet']);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(
        `pipeline output folder ${out} is in use by another flm-grow job (pid ${holder.pid} on ${hostname()}`,
      );
      expect(readdirSync(out).sort()).toEqual([LOCK_FILE, 'keep.txt']);
    } finally {
      holder.kill();
    }
  });

  it('two lockers in one process: the second is refused while the first holds it (unit)', () => {
    const dir = join(tmp.dir, 'unit');
    const a = acquireRunLock(dir);
    // a re-entrant take by the same process is allowed (train inside trainWithEngine)
    acquireRunLock(dir).release();
    expect(existsSync(a.path)).toBe(true);
    a.release();
    expect(existsSync(dir)).toBe(false); // it created the folder and nothing else was written
    expect(() => {
      plantLock(dir, { host: hostname(), pid: process.ppid, pidStart: processStartTime(process.ppid) });
      acquireRunLock(dir);
    }).toThrow(RunLockError);
  });

  it.skipIf(findTorchPython() === undefined)('the torch trainer started on its own honours the same lock', async () => {
    const out = join(tmp.dir, 'torch-direct');
    const holder = spawn('sleep', ['60']);
    try {
      await until(() => processStartTime(holder.pid!) !== null, 'the holder');
      plantLock(out, { host: hostname(), pid: holder.pid!, pidStart: processStartTime(holder.pid!) });
      const py = findTorchPython()!.python;
      const r = spawnSync(
        py,
        [
          '-m',
          'flm_grow_torch.train',
          init,
          '--data',
          CORPUS,
          '--out',
          out,
          '--steps',
          '2',
          '--batch-size',
          '2',
          '--seq-len',
          '8',
        ],
        {
          encoding: 'utf8',
          env: { ...process.env, PYTHONPATH: PYTHON_DIR },
        },
      );
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain(`run folder ${out} is in use by another flm-grow job (pid ${holder.pid} on ${hostname()}`);
      expect(readdirSync(out)).toEqual([LOCK_FILE]);
    } finally {
      holder.kill();
    }
  });
});
