import type { CommandModule } from 'yargs';
import { COMMAND_LINES } from './index.ts';
import { destinationArg, shared } from './options.ts';
import { bytesLabel, emit, secondsLabel } from '../util/format.ts';
import { barsEnabled, logLine, progressBar, type Progress } from './progress.ts';

export const exportCommand: CommandModule = {
  ...COMMAND_LINES.export,
  builder: (y) =>
    shared(
      y
        .positional('checkpoint', {
          type: 'string',
          demandOption: true,
          describe: 'a checkpoint folder saved with --sharded-save (its sharded/ holds the torch.distributed.checkpoint shards)',
        })
        .positional('destination', { type: 'string', describe: 'checkpoint folder to write (same as --out)' }),
      ['json', 'quiet', 'out', 'overwrite', 'force-overwrite'],
      { out: { describe: 'checkpoint folder to write, in the HF layout (or the <destination> positional)' } },
    ).example(
      '$0 export run/checkpoint-001000 --out run-hf',
      'model.safetensors + optimizer.safetensors + masks, as a one-process run writes them',
    ),
  handler: async (a) => {
    const { exportSharded } = await import('../train/export.ts');
    const src = a.checkpoint as string;
    const dest = destinationArg('export', a, 'destination');
    const quiet = a.quiet === true;
    const t0 = Date.now();
    let bar: Progress | undefined;
    let shown = 0; // without a terminal: a log line at every quarter
    const r = await exportSharded(src, dest, {
      overwrite: a.overwrite === true,
      forceOverwrite: a['force-overwrite'] === true,
      onProgress: (done, total) => {
        if (quiet) return;
        if (barsEnabled(quiet)) {
          bar ??= progressBar('export', total, { unit: 'bytes' });
          bar.update(done);
        } else if (done >= total * ((shown + 1) / 4)) {
          shown = Math.floor((4 * done) / Math.max(1, total));
          logLine(`export: ${bytesLabel(done)} of ${bytesLabel(total)} (${Math.round((100 * done) / Math.max(1, total))}%)`);
        }
      },
    });
    bar?.stop();
    const ms = Date.now() - t0;
    emit(
      a.json,
      { ...r, seconds: ms / 1000 },
      `exported ${src} -> ${r.dest}: ${r.tensors} tensors (weights and AdamW moments), ${bytesLabel(r.bytes)}, step ${r.step}, in ${secondsLabel(ms)}`,
    );
  },
};
