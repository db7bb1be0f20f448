/**
 * `flm-grow export <sharded-checkpoint> --out <dir>`: a checkpoint saved with `--sharded-save`
 * (torch.distributed.checkpoint shards, one part per rank) turned into flm-grow's HF layout
 * (model.safetensors, optimizer.safetensors, masks, config, manifest), which bake, grow, forward,
 * verify and train read. The work is python/flm_grow_torch/sharded.py's export, run through the
 * torch engine's process machinery: it streams one tensor at a time into the temporary folder of
 * an AtomicDir, which is renamed into place only when the export is complete, so an existing
 * --out is replaced (with --overwrite) or left alone, never half-written.
 */
import { TrainError } from '../util/errors.ts';
import { writeAtomically } from '../checkpoint/atomic.ts';
import { requireTorchPython, runTorchModule } from '../engines/torch-process.ts';

export interface ExportOptions {
  overwrite?: boolean;
  forceOverwrite?: boolean;
  /** Bytes of tensor data written so far, of the total, and the tensor just written. */
  onProgress?: (done: number, total: number, tensor: string) => void;
}

export interface ExportResult {
  source: string;
  dest: string;
  tensors: number;
  bytes: number;
  step: number;
}

const PROGRESS = 'FLM_GROW_PROGRESS ';

export async function exportSharded(src: string, dest: string, opts: ExportOptions = {}): Promise<ExportResult> {
  requireTorchPython();
  return writeAtomically(dest, { overwrite: opts.overwrite, force: opts.forceOverwrite, sources: [src] }, async (d) => {
    const r = await runTorchModule('flm_grow_torch.sharded', ['export', src, d.tmp, '--into', '--progress'], {
      capture: true,
      onStdoutLine: (line) => {
        if (!line.startsWith(PROGRESS)) return;
        const p = JSON.parse(line.slice(PROGRESS.length)) as { done: number; total: number; tensor: string };
        opts.onProgress?.(p.done, p.total, p.tensor);
      },
    });
    if (r.code !== 0 || r.signal !== undefined || r.result === undefined) {
      // the exporter's own refusal is one line "export: <file or tensor>: why"; the temporary
      // folder's name is the user's destination
      const said = r.stderr
        .trim()
        .split('\n')
        .reverse()
        .find((l) => l.startsWith('export: '));
      const why =
        said !== undefined
          ? said.slice('export: '.length).split(d.tmp).join(dest)
          : r.signal !== undefined
            ? `the exporter was killed by ${r.signal}`
            : `the exporter exited with code ${r.code}: ${r.stderr.trim().split('\n').slice(-1)[0] ?? ''}`;
      throw new TrainError('ExportFailed', `export ${src}: ${why}`);
    }
    const x = r.result as unknown as ExportResult;
    return { ...x, source: src, dest };
  });
}
