/**
 * The torch engine (python/flm_grow_torch): finding a Python that imports torch, and running its
 * trainer / forward pass as a child process. Discovery order: $FLM_GROW_PYTHON, the project's
 * own environment (.venv, made by `npm test` / scripts/python-env.mjs), `python3` on PATH,
 * /usr/bin/python3 — the first that imports torch wins.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { FlmGrowError } from '../util/errors.ts';

/** The python/ folder holding the flm_grow_torch package (put on PYTHONPATH). */
export const PYTHON_DIR = join(import.meta.dirname, '..', '..', 'python');
/** The interpreter of the project's own virtual environment (scripts/python-env.mjs). */
export const VENV_PYTHON = join(import.meta.dirname, '..', '..', '.venv', 'bin', 'python');

export interface TorchPython {
  python: string;
  torchVersion: string;
  cuda: boolean;
}

let cached: { found: TorchPython | undefined } | undefined;

export function pythonCandidates(env: NodeJS.ProcessEnv = process.env): string[] {
  const venv = existsSync(VENV_PYTHON) ? VENV_PYTHON : undefined;
  const c = [env.FLM_GROW_PYTHON, venv, 'python3', '/usr/bin/python3'].filter((p): p is string => p !== undefined && p !== '');
  return [...new Set(c)];
}

/**
 * The first candidate interpreter that imports torch, or undefined. Cached per process, and a
 * positive answer also on disk (probeCachePath): importing torch takes a second or more, and
 * `flm-grow --version` names the interpreter without paying that each time.
 */
export function findTorchPython(): TorchPython | undefined {
  if (cached !== undefined) return cached.found;
  let found = readProbeCache();
  if (found === undefined) {
    for (const python of pythonCandidates()) {
      const r = spawnSync(python, ['-c', 'import torch; print(torch.__version__, torch.cuda.is_available(), torch.__file__)'], {
        encoding: 'utf8',
        timeout: 60_000,
      });
      if (r.status === 0) {
        const [v, cuda, file] = r.stdout.trim().split(/\s+/);
        found = { python, torchVersion: v, cuda: cuda === 'True' };
        writeProbeCache(found, file);
        break;
      }
    }
  }
  cached = { found };
  return found;
}

/** Where a positive probe is kept: $XDG_CACHE_HOME/flm-grow (default ~/.cache/flm-grow). */
export function probeCachePath(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CACHE_HOME !== undefined && env.XDG_CACHE_HOME !== '' ? env.XDG_CACHE_HOME : join(homedir(), '.cache');
  return join(base, 'flm-grow', 'torch-python.json');
}

/**
 * What the answer depends on besides the interpreter itself: the candidates (FLM_GROW_PYTHON and
 * PATH decide which python3 is tried first) and whether a GPU is visible (torch.cuda).
 */
function probeKey(): string {
  const gpu = existsSync('/dev/nvidia0') || existsSync('/proc/driver/nvidia/version');
  return JSON.stringify({ candidates: pythonCandidates(), path: process.env.PATH ?? '', gpu });
}

interface ProbeCache extends TorchPython {
  key: string;
  /** torch/__init__.py and its mtime: reinstalling, upgrading or removing torch invalidates the entry. */
  torchFile: string;
  torchFileMtimeMs: number;
}

function readProbeCache(): TorchPython | undefined {
  try {
    const c = JSON.parse(readFileSync(probeCachePath(), 'utf8')) as ProbeCache;
    if (c.key !== probeKey() || statSync(c.torchFile).mtimeMs !== c.torchFileMtimeMs) return undefined;
    return { python: c.python, torchVersion: c.torchVersion, cuda: c.cuda };
  } catch {
    return undefined; // no cache, or unreadable (a write in progress elsewhere): probe
  }
}

/**
 * Best effort: a cache that cannot be written only costs the next run a probe. Written in place,
 * not through an atomic rename, because a torn read is just a miss (readProbeCache).
 */
function writeProbeCache(t: TorchPython, torchFile: string | undefined): void {
  if (torchFile === undefined) return;
  try {
    const entry: ProbeCache = { ...t, key: probeKey(), torchFile, torchFileMtimeMs: statSync(torchFile).mtimeMs };
    mkdirSync(dirname(probeCachePath()), { recursive: true });
    writeFileSync(probeCachePath(), JSON.stringify(entry) + '\n');
  } catch {
    // read-only home, no home: fine
  }
}

/** One line for `--version` and logs. */
export function torchEngineLabel(): string {
  const t = findTorchPython();
  return t === undefined
    ? 'torch engine: not available (no Python with torch found)'
    : `torch engine: ${t.python} (torch ${t.torchVersion}${t.cuda ? ', CUDA' : ', CPU'})`;
}

export const NO_TORCH_HELP =
  'no Python interpreter that imports torch was found (tried $FLM_GROW_PYTHON, the project .venv, python3, /usr/bin/python3). ' +
  'Create the project environment (node scripts/python-env.mjs, as npm test does), or pip install ./python (torch >= 2) and point FLM_GROW_PYTHON at that Python; ' +
  'or use --engine tfjs.';

export function requireTorchPython(): TorchPython {
  const t = findTorchPython();
  if (t === undefined) throw new FlmGrowError('NoTorch', NO_TORCH_HELP);
  return t;
}

/**
 * How many processes on how many machines: torchrun's own flags. One process on one machine runs
 * the module directly; anything else runs under torchrun (flm_grow_torch.elastic: torch's
 * torch.distributed.run with failures reported by name).
 */
export interface TorchLaunch {
  /** Processes on this machine (one per GPU, or CPU processes with gloo). */
  nproc?: number;
  /** Machines in the job; each runs the same command with its own nodeRank. */
  nnodes?: number;
  /** This machine's index, 0..nnodes-1; node 0 hosts the c10d rendezvous store. */
  nodeRank?: number;
  /** Where node 0 is reachable (rendezvous endpoint), and its port. */
  masterAddr?: string;
  masterPort?: number;
  /** torchrun's elastic agent restarts every worker this many times after a failure (0: stop). */
  maxRestarts?: number;
}

export const DEFAULT_MASTER_PORT = 29500;

/** True when the launch needs torchrun (more than one process, or restarts). */
export function usesTorchrun(l: TorchLaunch): boolean {
  return (l.nproc ?? 1) > 1 || (l.nnodes ?? 1) > 1 || (l.maxRestarts ?? 0) > 0;
}

/**
 * argv for a Python module; under torchrun when usesTorchrun. One machine: --standalone (c10d
 * rendezvous on a free local port). Several: c10d rendezvous at masterAddr:masterPort, hosted by
 * node 0 (is_host), the job id derived from the endpoint so that every node names the same one.
 */
export function torchModuleArgs(module: string, args: string[], launch: TorchLaunch = {}): string[] {
  if (!usesTorchrun(launch)) return ['-m', module, ...args];
  const nnodes = launch.nnodes ?? 1;
  const tr = ['-m', 'flm_grow_torch.elastic', '--nproc-per-node', String(launch.nproc ?? 1)];
  if (nnodes === 1) tr.push('--standalone');
  else {
    const addr = launch.masterAddr ?? '127.0.0.1';
    const port = launch.masterPort ?? DEFAULT_MASTER_PORT;
    tr.push(
      '--nnodes',
      String(nnodes),
      '--rdzv-backend',
      'c10d',
      '--rdzv-endpoint',
      `${addr}:${port}`,
      '--rdzv-id',
      `flm-grow-${addr}-${port}`,
      '--rdzv-conf',
      `is_host=${(launch.nodeRank ?? 0) === 0 ? 1 : 0}`,
    );
  }
  tr.push('--max-restarts', String(launch.maxRestarts ?? 0), '-m', module, ...args);
  return tr;
}

/** A worker failure as torchrun reported it (flm_grow_torch/elastic.py's FLM_GROW_WORKER_FAILURE line). */
export interface WorkerFailure {
  rank: number;
  localRank: number;
  pid: number;
  exitCode: number;
  signal?: string;
  /** true: the kernel log names the OOM killer; false: it does not; null: not readable. */
  oomKiller?: boolean | null;
  maxRestarts: number;
  failed: number[];
}

const FAILURE_PREFIX = 'FLM_GROW_WORKER_FAILURE ';

export interface TorchRunResult {
  code: number;
  /** The signal that ended the process, if one did (SIGKILL: on Linux usually the out-of-memory killer). */
  signal?: string;
  stdout: string;
  stderr: string;
  /** The trainer's FLM_GROW_RESULT line, parsed. */
  result?: Record<string, unknown>;
  /** Under torchrun: the worker whose failure stopped the job. */
  workerFailure?: WorkerFailure;
}

/** Run `python -m module args` (its stdout and stderr streamed to our stderr unless `capture`), resolving with its output. */
export function runTorchModule(
  module: string,
  args: string[],
  opts: {
    launch?: TorchLaunch;
    capture?: boolean;
    env?: NodeJS.ProcessEnv;
    /** Each whole line of the child's stdout as it arrives (progress lines). */
    onStdoutLine?: (line: string) => void;
  } = {},
): Promise<TorchRunResult> {
  const t = requireTorchPython();
  const env = { ...process.env, ...opts.env, PYTHONPATH: [PYTHON_DIR, process.env.PYTHONPATH].filter(Boolean).join(':') };
  return new Promise((res, rej) => {
    const child = spawn(t.python, torchModuleArgs(module, args, opts.launch), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '',
      stderr = '',
      partial = '';
    child.stdout.on('data', (d: Buffer) => {
      const s = d.toString();
      stdout += s;
      if (opts.onStdoutLine !== undefined) {
        const lines = (partial + s).split('\n');
        partial = lines.pop() ?? '';
        for (const l of lines) opts.onStdoutLine(l);
      }
      // the child's log lines go to our stderr: our stdout carries only the command's result
      // (one JSON object under --json), never the engine's progress
      if (opts.capture !== true)
        process.stderr.write(
          s
            .split('\n')
            .filter((l) => !l.startsWith('FLM_GROW_RESULT '))
            .join('\n'),
        );
    });
    child.stderr.on('data', (d: Buffer) => {
      const s = d.toString();
      stderr += s;
      if (opts.capture !== true)
        process.stderr.write(
          s
            .split('\n')
            .filter((l) => !l.startsWith(FAILURE_PREFIX))
            .join('\n'),
        );
    });
    child.on('error', rej);
    child.on('close', (code, signal) => {
      const line = stdout.split('\n').find((l) => l.startsWith('FLM_GROW_RESULT '));
      const failure = stderr.split('\n').find((l) => l.startsWith(FAILURE_PREFIX));
      res({
        code: code ?? 1,
        signal: signal ?? undefined,
        stdout,
        stderr,
        result: line === undefined ? undefined : (JSON.parse(line.slice('FLM_GROW_RESULT '.length)) as Record<string, unknown>),
        workerFailure: failure === undefined ? undefined : (JSON.parse(failure.slice(FAILURE_PREFIX.length)) as WorkerFailure),
      });
    });
  });
}
