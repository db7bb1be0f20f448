import type { CommandModule } from 'yargs';
import { parseDtypeName } from '../util/dtype.ts';
import { parameterCount } from '../arch.ts';
import { formatParams } from '../growth/plan-report.ts';
import { LIKE_NAMES, synthCheckpoint } from '../synth.ts';
import { bytesLabel, progressBars } from './progress.ts';

export const synthCommand: CommandModule = {
  command: 'synth <dir>',
  describe: 'Write a random checkpoint of a Tele-FLM stage\'s exact widths, of a family (llama, tele-flm, mistral, qwen2, qwen3) or of any supported config.json (for rehearsals and tests)',
  builder: (y) => y
    .positional('dir', { type: 'string', demandOption: true })
    .option('like', { type: 'string', demandOption: true, describe: `a stage or family (${LIKE_NAMES.join(', ')}) or the path of a config.json` })
    .option('num-hidden-layers', { type: 'number', describe: 'layers (default: the stage\'s)' })
    .option('dtype', { type: 'string', default: 'bf16', describe: 'bf16, f16, f32' })
    .option('seed', { type: 'number', default: 0 })
    .option('out-shard-size', { type: 'string', default: '5GB' })
    .option('overwrite', { type: 'boolean', default: false })
    .option('force-overwrite', { type: 'boolean', default: false, describe: 'with --overwrite: replace the destination even if flm-grow did not write it' })
    .option('quiet', { type: 'boolean', default: false }),
  handler: async (a) => {
    const r = await synthCheckpoint(a.dir as string, {
      like: a.like as string,
      numLayers: a['num-hidden-layers'] as number | undefined,
      dtype: parseDtypeName(a.dtype as string),
      seed: a.seed as number,
      maxShardSize: a['out-shard-size'] as string,
      overwrite: a.overwrite === true,
      forceOverwrite: a['force-overwrite'] === true,
      quiet: a.quiet === true, progress: progressBars(a.quiet === true),
    });
    const mbps = r.bytes / 1e6 / Math.max(r.seconds, 1e-9);
    process.stdout.write(`synth ${a.like as string} -> ${r.dir}: ${r.config.numLayers} layers, ${formatParams(parameterCount(r.config))} parameters, ${bytesLabel(r.bytes)} in ${r.seconds.toFixed(1)} s (${mbps.toFixed(0)} MB/s)\n`);
  },
};
