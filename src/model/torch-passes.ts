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
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsFile } from '../checkpoint/safetensors.ts';
import { writeSafetensors } from '../checkpoint/safetensors-writer.ts';
import { FlmGrowError, ModelInputError } from '../errors.ts';
import { findTorchPython, PYTHON_DIR, requireTorchPython, torchModuleArgs } from '../torch-engine.ts';
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

/** Write [B, T] ids as input_ids I32 (rows of equal length, as idsToTensor requires). */
async function writeIds(path: string, ids: number[][]): Promise<void> {
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

/** Run passes.py's verb; resolves with its FLM_GROW_RESULT. A failure is one line naming the cause. */
function runPasses(verb: string, args: string[], opts: TorchPassOptions, label: string): Promise<Record<string, unknown>> {
  const t = requireTorchPython();
  const env = { ...process.env, PYTHONPATH: [PYTHON_DIR, process.env.PYTHONPATH].filter(Boolean).join(':') };
  const all = [
    verb,
    ...args,
    ...(opts.masks === false ? ['--no-masks'] : []),
    ...(opts.device !== undefined ? ['--device', opts.device] : []),
    ...(opts.dtype !== undefined ? ['--dtype', opts.dtype] : []),
    ...(opts.maxBlockBytes !== undefined ? ['--max-block-bytes', String(opts.maxBlockBytes)] : []),
    ...(opts.progress === undefined ? ['--quiet'] : []),
  ];
  return new Promise((res, rej) => {
    const child = spawn(t.python, torchModuleArgs('flm_grow_torch.passes', all), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let bar: ReturnType<typeof startProgress> | undefined;
    let stdout = '',
      errTail = '',
      partial = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (line.startsWith(PROGRESS)) {
          const [done, total] = line.slice(PROGRESS.length).split(' ').map(Number);
          bar ??= startProgress(opts.progress, false, label, total, 'bytes');
          bar.update(done);
        } else {
          errTail = line.trim() !== '' ? line : errTail;
          process.stderr.write(line + '\n');
        }
      }
    });
    child.on('error', (e) => rej(new FlmGrowError('TorchEngineFailed', `torch engine (${t.python}): ${e.message}`)));
    child.on('close', (code, signal) => {
      bar?.stop();
      const line = stdout.split('\n').find((l) => l.startsWith(RESULT));
      if (code === 0 && line !== undefined) {
        res(JSON.parse(line.slice(RESULT.length)) as Record<string, unknown>);
        return;
      }
      if (partial.trim() !== '') errTail = partial;
      const why =
        signal !== null
          ? `killed by ${signal}${signal === 'SIGKILL' ? ' (on Linux usually the out-of-memory killer)' : ''}`
          : errTail.replace(/^flm_grow_torch\.passes: /, '');
      // exit 2 is passes.py's bad input (a missing tensor, a bad id, an overflow): the user's to fix
      rej(
        code === 2
          ? new ModelInputError(why)
          : new FlmGrowError('TorchEngineFailed', `torch engine (passes ${verb}) failed: ${why || `exit code ${code}`}`),
      );
    });
  });
}

async function withTemp<R>(f: (dir: string) => Promise<R>): Promise<R> {
  const dir = mkdtempSync(join(tmpdir(), 'flm-grow-passes-'));
  try {
    return await f(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** streamedForward's results, computed by the torch engine. */
export async function torchForward(
  checkpoint: string,
  ids: number[][],
  opts: TorchPassOptions & { collectHidden?: boolean } = {},
): Promise<TorchForwardResult> {
  return withTemp(async (dir) => {
    const input = join(dir, 'ids.safetensors'),
      output = join(dir, 'out.safetensors');
    await writeIds(input, ids);
    const r = await runPasses(
      'forward',
      [checkpoint, '--input', input, '--output', output, ...(opts.collectHidden === true ? ['--hidden'] : [])],
      opts,
      opts.progressLabel ?? 'forward (torch)',
    );
    const f = await SafetensorsFile.open(output);
    try {
      const read = async (name: string) => bytesToFloat32(await f.read(name), 'F32');
      const logits = await read('logits');
      let hidden: Float32Array[] | undefined;
      if (opts.collectHidden === true) {
        hidden = [];
        for (let n = 0; f.tensors.has(`hidden_states.${n}`); n++) hidden.push(await read(`hidden_states.${n}`));
      }
      return {
        logits,
        ...(hidden !== undefined ? { hidden } : {}),
        batch: r.batch as number,
        seqLen: r.seqLen as number,
        masked: r.masked as boolean,
      };
    } finally {
      await f.close();
    }
  });
}

/** Layer selection's distances (distance.ts's definition), computed by the torch engine. */
export async function torchDistances(
  checkpoint: string,
  ids: number[][],
  metric: 'cosine' | 'l2',
  opts: TorchPassOptions = {},
): Promise<number[]> {
  return withTemp(async (dir) => {
    const input = join(dir, 'ids.safetensors');
    await writeIds(input, ids);
    const r = await runPasses(
      'distances',
      [checkpoint, '--input', input, '--metric', metric],
      opts,
      opts.progressLabel ?? 'calibration (layer selection, torch)',
    );
    return r.distances as number[];
  });
}
