import type { CommandModule } from 'yargs';
import { COMMAND_LINES } from './index.ts';
import { FlmGrowError } from '../util/errors.ts';
import type { BackendName } from '../engines/tfjs-backend.ts';
import type { PassEngine } from '../model/torch-passes.ts';
import { destinationArg, shared } from './options.ts';
import { withPlanOptions } from './plan-options.ts';
import { bytesLabel, countLabel, emit, secondsLabel } from '../util/format.ts';
import { progressBars } from './progress.ts';

/** "i/n" (1-based part i of n) for --part. */
export function parsePart(s: string): { index: number; count: number } {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(s);
  const index = m === null ? NaN : Number(m[1]);
  const count = m === null ? NaN : Number(m[2]);
  if (!(count >= 1 && index >= 1 && index <= count))
    throw new FlmGrowError('BadPart', `--part: expected i/n with 1 <= i <= n (e.g. 2/8), got "${s}"`);
  return { index, count };
}

export const growCommand: CommandModule = {
  ...COMMAND_LINES.grow,
  builder: (y) =>
    shared(
      withPlanOptions(y)
        .positional('source', { type: 'string', demandOption: true, describe: 'checkpoint folder to grow' })
        .positional('destination', { type: 'string', describe: 'checkpoint folder to write (same as --out)' })
        .option('part', {
          type: 'string',
          describe: 'split grow: write only part i of n (1-based, e.g. 2/8); join the parts with `flm-grow assemble`',
        }),
      ['json', 'quiet', 'backend', 'engine', 'out', 'dtype', 'overwrite', 'force-overwrite', 'out-shard-size'],
      {
        engine: {
          default: 'tfjs',
          describe:
            'engine of the calibration pass (distance placement): tfjs, torch (every core or the GPU) or auto (torch when found)',
        },
        out: { describe: 'checkpoint folder to write (or the <destination> positional)' },
        dtype: { describe: "output dtype (default: the source's)" },
        'out-shard-size': { default: '5GB' },
        backend: { default: 'auto', describe: 'tfjs backend for the calibration forward pass (distance placement)' },
      },
    )
      .example(
        '$0 grow fixtures/hf/llama-tiny-f32 /tmp/stage2 --plan growth-plans/tiny-stage1-to-stage2.json',
        'grow by a plan file',
      )
      .example(
        '$0 grow src dst --hidden-size 80 --num-attention-heads 5 --num-hidden-layers 6',
        'grow by flags (HF config names, kebab-case)',
      ),
  handler: async (a) => {
    const [
      { parseDtypeName },
      { parseSize },
      { planFromArgs, requirePlanOrTarget },
      { growCheckpoint },
      { parameterCount },
      { describeCalibration },
      { resolvePassEngine },
    ] = await Promise.all([
      import('../util/dtype.ts'),
      import('../checkpoint/checkpoint-writer.ts'),
      import('../growth/plan-flags.ts'),
      import('../growth/grow.ts'),
      import('../spec/arch.ts'),
      import('../growth/select-layers.ts'),
      import('../model/torch-passes.ts'),
    ]);
    requirePlanOrTarget(a);
    const plan = planFromArgs(a);
    const t0 = Date.now();
    const r = await growCheckpoint(a.source as string, destinationArg('grow', a, 'destination'), plan, {
      dtype: a.dtype === undefined ? undefined : parseDtypeName(a.dtype as string),
      maxShardSize: parseSize(a['out-shard-size'] as string, '--out-shard-size'),
      overwrite: a.overwrite === true,
      forceOverwrite: a['force-overwrite'] === true,
      quiet: a.quiet === true,
      progress: progressBars(a.quiet === true),
      backend: a.backend as BackendName,
      engine: resolvePassEngine(a.engine as PassEngine),
      ...(a.part === undefined ? {} : { writerOptions: { part: parsePart(a.part as string) } }),
    });
    if (a.json === true) {
      emit(
        true,
        {
          dest: r.dest,
          layerMap: r.layerMap,
          selection: r.selection,
          ...(r.selection !== undefined ? { calibration: describeCalibration(plan.calibration) } : {}),
          notes: r.resolved.notes,
          files: r.files,
          outputBytes: r.outputBytes,
        },
        '',
      );
      return;
    }
    const lines = [
      `grew ${a.source as string} -> ${r.dest}: ${countLabel(parameterCount(r.target))} parameters, ${bytesLabel(r.outputBytes)} in ${secondsLabel(Date.now() - t0)} (${plan.mode} mode)`,
    ];
    if (r.resolved.zeroNorm !== undefined) lines.push(`zero mode: ${r.resolved.zeroNorm.note}`);
    for (const n of r.resolved.notes) lines.push(`note: ${n}`);
    if (r.selection !== undefined) {
      lines.push(`layer selection over ${describeCalibration(plan.calibration)}`);
      lines.push(
        `layer distances (${r.selection.metric}): ${r.selection.distances.map((d, i) => `${i}:${d.toPrecision(4)}`).join(' ')}`,
      );
      lines.push(`duplicated layers (${r.selection.order} first): ${r.selection.picks.join(', ')}`);
    }
    if (r.layerMap.some((e) => e.inserted))
      lines.push(
        `layer map (${plan.placement.method}): ${r.layerMap.map((e) => `${e.source}${e.inserted ? '*' : ''}`).join(' ')}  (source layer of each output layer, * inserted)`,
      );
    process.stdout.write(lines.join('\n') + '\n');
  },
};
