import type { CommandModule } from 'yargs';
import { parseDtypeName } from '../util/dtype.ts';
import { parseSize } from '../checkpoint/checkpoint-writer.ts';
import { planFromArgs, requirePlanOrTarget, withPlanOptions } from '../growth/plan-flags.ts';
import { describeCalibration } from '../growth/select-layers.ts';
import { growCheckpoint } from '../growth/grow.ts';
import { formatParams } from '../growth/plan-report.ts';
import { parameterCount } from '../arch.ts';
import { bytesLabel, progressBars } from './progress.ts';
import { FlmGrowError } from '../errors.ts';
import { BACKEND_NAMES, type BackendName } from '../backend.ts';

/** "i/n" (1-based part i of n) for --part. */
export function parsePart(s: string): { index: number; count: number } {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(s);
  const index = m === null ? NaN : Number(m[1]);
  const count = m === null ? NaN : Number(m[2]);
  if (!(count >= 1 && index >= 1 && index <= count)) throw new FlmGrowError('BadPart', `--part: expected i/n with 1 <= i <= n (e.g. 2/8), got "${s}"`);
  return { index, count };
}

export const growCommand: CommandModule = {
  command: 'grow <source> <destination>',
  describe: 'Grow a checkpoint function-preservingly (MSG): streams tensor by tensor, writes masks and a manifest',
  builder: (y) => withPlanOptions(y)
    .positional('source', { type: 'string', demandOption: true })
    .positional('destination', { type: 'string', demandOption: true })
    .option('dtype', { type: 'string', describe: 'output dtype: bf16, f16, f32 (default: the source\'s)' })
    .option('out-shard-size', { type: 'string', default: '5GB' })
    .option('overwrite', { type: 'boolean', default: false, describe: 'replace an existing destination that flm-grow wrote (or an empty folder)' })
    .option('force-overwrite', { type: 'boolean', default: false, describe: 'with --overwrite: replace the destination even if flm-grow did not write it' })
    .option('backend', { type: 'string', choices: BACKEND_NAMES, default: 'auto', describe: 'tfjs backend for the calibration forward pass (distance placement)' })
    .option('part', { type: 'string', describe: 'split grow: write only part i of n (1-based, e.g. 2/8); join the parts with `flm-grow assemble`' })
    .option('quiet', { type: 'boolean', default: false })
    .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON' }),
  handler: async (a) => {
    requirePlanOrTarget(a);
    const plan = planFromArgs(a);
    const t0 = Date.now();
    const r = await growCheckpoint(a.source as string, a.destination as string, plan, {
      dtype: a.dtype === undefined ? undefined : parseDtypeName(a.dtype as string),
      maxShardSize: parseSize(a['out-shard-size'] as string, '--out-shard-size'),
      overwrite: a.overwrite === true,
      forceOverwrite: a['force-overwrite'] === true,
      quiet: a.quiet === true, progress: progressBars(a.quiet === true),
      backend: a.backend as BackendName,
      ...(a.part === undefined ? {} : { writerOptions: { part: parsePart(a.part as string) } }),
    });
    if (a.json === true) {
      process.stdout.write(JSON.stringify({ dest: r.dest, layerMap: r.layerMap, selection: r.selection, ...(r.selection !== undefined ? { calibration: describeCalibration(plan.calibration) } : {}), notes: r.resolved.notes, files: r.files, outputBytes: r.outputBytes }, null, 2) + '\n');
      return;
    }
    const secs = (Date.now() - t0) / 1000;
    const lines = [
      `grew ${a.source as string} -> ${r.dest}: ${formatParams(parameterCount(r.target))} parameters, ${bytesLabel(r.outputBytes)} in ${secs.toFixed(1)} s (${plan.mode} mode)`,
    ];
    if (r.resolved.zeroNorm !== undefined) lines.push(`zero mode: ${r.resolved.zeroNorm.note}`);
    for (const n of r.resolved.notes) lines.push(`note: ${n}`);
    if (r.selection !== undefined) {
      lines.push(`layer selection over ${describeCalibration(plan.calibration)}`);
      lines.push(`layer distances (${r.selection.metric}): ${r.selection.distances.map((d, i) => `${i}:${d.toPrecision(4)}`).join(' ')}`);
      lines.push(`duplicated layers (${r.selection.order} first): ${r.selection.picks.join(', ')}`);
    }
    process.stdout.write(lines.join('\n') + '\n');
  },
};
