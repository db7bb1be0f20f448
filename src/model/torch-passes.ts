/**
 * The compute passes on the torch engine (python/flm_grow_torch/passes.py): the layer-streamed
 * forward (logits, hidden states) and layer selection's distances, run as a child Python process
 * on every CPU core or the GPU. The token ids are made here, in TS, and handed over as a
 * safetensors file, so both engines see the same calibration stream; results come back as a
 * safetensors file (forward) or the FLM_GROW_RESULT line (distances). Progress lines on the
 * child's stderr (FLM_GROW_PROGRESS done total, f32 weight bytes as the tfjs pass counts them)
 * drive the same bars; everything else it writes to stderr is passed through.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsFile } from '../checkpoint/safetensors.ts';
import { writeSafetensors } from '../checkpoint/safetensors-writer.ts';
import { FlmGrowError, ModelInputError } from '../util/errors.ts';
import { findTorchPython, PYTHON_DIR, requireTorchPython, torchModuleArgs } from '../engines/torch-process.ts';
import { bytesToFloat32 } from '../util/dtype.ts';
import { startProgress, type ProgressFactory } from '../util/progress.ts';

export const PASS_ENGINES = ['tfjs', 'torch', 'auto'] as const;
export type PassEngine = (typeof PASS_ENGINES)[number];

/** auto: torch when a Python that imports torch is found (it is faster on every core or a GPU), else tfjs. */
export function resolvePassEngine(engine: PassEngine | undefined): 'tfjs' | 'torch' {
  const e = engine ?? 'tfjs';
  if (e !== 'auto') return e;
  return findTorchPython() !== undefined ? 'torch' : 'tfjs';
}

export interface TorchPassOptions {
  /** Apply the checkpoint's masks.safetensors when present (default true). */
  masks?: boolean;
  /** cpu, cuda or auto (default: cuda when torch sees a GPU). */
  device?: string;
  /** Compute dtype (default f32; distances always sum in f64). */
  dtype?: 'f32' | 'bf16';
  /** Largest f32 weight band read at once (passes.py's default: 1 GiB). */
  maxBlockBytes?: number;
  progress?: ProgressFactory;
  progressLabel?: string;
}

export interface TorchForwardResult {
  logits: Float32Array;
  hidden?: Float32Array[];
  batch: number;
  seqLen: number;
  masked: boolean;
}

const PROGRESS = 'FLM_GROW_PROGRESS ';
const RESULT = 'FLM_GROW_RESULT ';
/** passes.py's one-line failure. */
const ERROR = 'flm_grow_torch.passes: ';

/** Write [B, T] ids as input_ids I32 (rows of equal length, as idsToTensor requires). */
export async function writeIds(path: string, ids: number[][]): Promise<void> {
  if (ids.length === 0) throw new ModelInputError('input_ids: no sequences');
  const T = ids[0].length;
  const flat = new Int32Array(ids.length * T);
  ids.forEach((row, b) => {
    if (row.length !== T) throw new ModelInputError(`input_ids: row ${b} has ${row.length} ids, row 0 has ${T}`);
    row.forEach((v, t) => {
      if (!Number.isInteger(v) || v < 0)
        throw new ModelInputError(`input_ids: row ${b} position ${t}: ${v} is not a non-negative integer id`);
      flat[b * T + t] = v;
    });
  });
  await writeSafetensors(path, [{ name: 'input_ids', dtype: 'I32', shape: [ids.length, T], data: new Uint8Array(flat.buffer) }]);
}

/** One job of passes.py's batch verb (its run_job). */
export interface PassJob {
  verb: 'forward' | 'distances';
  checkpoint: string;
  input: string;
  output?: string;
  hidden?: boolean;
  metric?: 'cosine' | 'l2';
  masks?: boolean;
  device?: string;
  dtype?: 'f32' | 'bf16';
  maxBlockBytes?: number;
}

/**
 * Run jobs in ONE Python process (torch is imported once: a second or more), each with its own
 * progress bar labelled `labels[i]`; resolves with the jobs' results in order. A failure is one
 * line naming the cause (exit 2 of passes.py: bad input, a ModelInputError here).
 */
export function runPassJobs(
  jobs: PassJob[],
  progress: ProgressFactory | undefined,
  labels: string[],
): Promise<Record<string, unknown>[]> {
  const t = requireTorchPython();
  const env = { ...process.env, PYTHONPATH: [PYTHON_DIR, process.env.PYTHONPATH].filter(Boolean).join(':') };
  const dir = mkdtempSync(join(tmpdir(), 'flm-grow-jobs-'));
  const file = join(dir, 'jobs.json');
  writeFileSync(file, JSON.stringify(jobs));
  const args = ['batch', file, ...(progress === undefined ? ['--quiet'] : [])];
  return new Promise<Record<string, unknown>[]>((res, rej) => {
    const child = spawn(t.python, torchModuleArgs('flm_grow_torch.passes', args), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const bars = new Map<number, ReturnType<typeof startProgress>>();
    let stdout = '',
      errTail = '',
      partial = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (line.startsWith(PROGRESS)) {
          const [job, done, total] = line.slice(PROGRESS.length).split(' ').map(Number);
          for (const [k, b] of bars)
            if (k < job) {
              b.stop(); // the earlier job is done: one bar at a time
              bars.delete(k);
            }
          let bar = bars.get(job);
          if (bar === undefined)
            bars.set(job, (bar = startProgress(progress, false, labels[job] ?? 'torch pass', total, 'bytes')));
          bar.update(done);
        } else if (line.startsWith(ERROR)) {
          errTail = line.slice(ERROR.length); // reported once, by the caller's error
        } else {
          if (line.trim() !== '') errTail = line;
          process.stderr.write(line + '\n');
        }
      }
    });
    child.on('error', (e) => rej(new FlmGrowError('TorchEngineFailed', `torch engine (${t.python}): ${e.message}`)));
    child.on('close', (code, signal) => {
      for (const b of bars.values()) b.stop();
      const line = stdout.split('\n').find((l) => l.startsWith(RESULT));
      if (code === 0 && line !== undefined) {
        res((JSON.parse(line.slice(RESULT.length)) as { results: Record<string, unknown>[] }).results);
        return;
      }
      if (partial.trim() !== '') errTail = partial;
      const why =
        signal !== null
          ? `killed by ${signal}${signal === 'SIGKILL' ? ' (on Linux usually the out-of-memory killer)' : ''}`
          : errTail;
      rej(
        code === 2
          ? new ModelInputError(why)
          : new FlmGrowError('TorchEngineFailed', `torch engine (flm_grow_torch.passes) failed: ${why || `exit code ${code}`}`),
      );
    });
  }).finally(() => rmSync(dir, { recursive: true, force: true }));
}

async function withTemp<R>(f: (dir: string) => Promise<R>): Promise<R> {
  const dir = mkdtempSync(join(tmpdir(), 'flm-grow-passes-'));
  try {
    return await f(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function jobOptions(o: TorchPassOptions): Partial<PassJob> {
  return {
    ...(o.masks === false ? { masks: false } : {}),
    ...(o.device !== undefined ? { device: o.device } : {}),
    ...(o.dtype !== undefined ? { dtype: o.dtype } : {}),
    ...(o.maxBlockBytes !== undefined ? { maxBlockBytes: o.maxBlockBytes } : {}),
  };
}

/** A forward pass's output file, read back. */
export async function readForwardOutput(path: string, r: Record<string, unknown>, hidden: boolean): Promise<TorchForwardResult> {
  const f = await SafetensorsFile.open(path);
  try {
    const read = async (name: string) => bytesToFloat32(await f.read(name), 'F32');
    const logits = await read('logits');
    let hs: Float32Array[] | undefined;
    if (hidden) {
      hs = [];
      for (let n = 0; f.tensors.has(`hidden_states.${n}`); n++) hs.push(await read(`hidden_states.${n}`));
    }
    return {
      logits,
      ...(hs !== undefined ? { hidden: hs } : {}),
      batch: r.batch as number,
      seqLen: r.seqLen as number,
      masked: r.masked as boolean,
    };
  } finally {
    await f.close();
  }
}

/**
 * streamedForward's results on the torch engine, for one or more checkpoints on the same ids in
 * one process (verify's source and grown model). opts[i].masks: apply checkpoint i's masks.
 */
export async function torchForwardMany(
  checkpoints: string[],
  ids: number[][],
  opts: (TorchPassOptions & { collectHidden?: boolean })[],
): Promise<TorchForwardResult[]> {
  return withTemp(async (dir) => {
    const input = join(dir, 'ids.safetensors');
    await writeIds(input, ids);
    const jobs: PassJob[] = checkpoints.map((checkpoint, i) => ({
      verb: 'forward',
      checkpoint,
      input,
      output: join(dir, `out-${i}.safetensors`),
      hidden: opts[i].collectHidden === true,
      ...jobOptions(opts[i]),
    }));
    const results = await runPassJobs(
      jobs,
      opts[0]?.progress,
      opts.map((o) => o.progressLabel ?? 'forward (torch)'),
    );
    const out: TorchForwardResult[] = [];
    for (let i = 0; i < jobs.length; i++)
      out.push(await readForwardOutput(jobs[i].output as string, results[i], opts[i].collectHidden === true));
    return out;
  });
}

/** streamedForward's results, computed by the torch engine. */
export async function torchForward(
  checkpoint: string,
  ids: number[][],
  opts: TorchPassOptions & { collectHidden?: boolean } = {},
): Promise<TorchForwardResult> {
  return (await torchForwardMany([checkpoint], ids, [opts]))[0];
}

/** Layer selection's distances (distance.ts's definition; null where non-finite), computed by the torch engine. */
export async function torchDistances(
  checkpoint: string,
  ids: number[][],
  metric: 'cosine' | 'l2',
  opts: TorchPassOptions = {},
): Promise<(number | null)[]> {
  return withTemp(async (dir) => {
    const input = join(dir, 'ids.safetensors');
    await writeIds(input, ids);
    const [r] = await runPassJobs([{ verb: 'distances', checkpoint, input, metric, ...jobOptions(opts) }], opts.progress, [
      opts.progressLabel ?? 'calibration (layer selection, torch)',
    ]);
    return r.distances as (number | null)[];
  });
}
