import type { CommandModule } from 'yargs';
import { COMMAND_LINES } from './index.ts';
import { destinationArg, shared, spec } from './options.ts';
import { bytesLabel, countLabel, emit, plural } from '../util/format.ts';
import { progressBars } from './progress.ts';

/** The stages synth knows (checked against synth.ts's STAGE_NAMES by test/cli/options.test.ts). */
export const STAGE_CHOICES = ['tele-flm-52b', 'tele-flm-102b', 'tele-flm-1t', 'tele-flm-mup-proxy'];

/** The families synth knows (checked against families.ts by test/cli/options.test.ts). */
export const FAMILY_CHOICES = ['llama', 'tele-flm', 'mistral', 'qwen2', 'qwen3'];

export const synthCommand: CommandModule = {
  ...COMMAND_LINES.synth,
  builder: (y) =>
    shared(
      y
        .positional('dir', { type: 'string', describe: 'checkpoint folder to write (same as --out)' })
        .option('like', {
          type: 'string',
          demandOption: true,
          describe: `a Tele-FLM stage (${STAGE_CHOICES.join(', ')}), a family (${FAMILY_CHOICES.join(', ')}) or the path of a config.json`,
        })
        .option('num-hidden-layers', spec('num-hidden-layers', 'number', { describe: "layers (default: the stage's)" })),
      ['json', 'quiet', 'out', 'dtype', 'seed', 'overwrite', 'force-overwrite', 'out-shard-size'],
      {
        out: { describe: 'checkpoint folder to write (or the <dir> positional)' },
        dtype: { default: 'bf16' },
        seed: { default: 0 },
        'out-shard-size': { default: '5GB' },
      },
    )
      .example(
        '$0 synth /data/flm52b --like tele-flm-52b --num-hidden-layers 2',
        'two full-width Tele-FLM 52B layers of random weights',
      )
      .example('$0 synth --out /tmp/q3 --like qwen3', 'a tiny random Qwen3 checkpoint (qk-norm, tied embeddings)')
      .example(
        '$0 synth /tmp/l31 --like fixtures/configs/Llama-3.2-1B.json --num-hidden-layers 1',
        'one layer of a published config',
      ),
  handler: async (a) => {
    const [{ parseDtypeName }, { parameterCount }, { synthCheckpoint }] = await Promise.all([
      import('../util/dtype.ts'),
      import('../spec/arch.ts'),
      import('../growth/synth.ts'),
    ]);
    const r = await synthCheckpoint(destinationArg('synth', a, 'dir'), {
      like: a.like as string,
      numLayers: a['num-hidden-layers'] as number | undefined,
      dtype: parseDtypeName(a.dtype as string),
      seed: a.seed as number,
      maxShardSize: a['out-shard-size'] as string,
      overwrite: a.overwrite === true,
      forceOverwrite: a['force-overwrite'] === true,
      quiet: a.quiet === true,
      progress: progressBars(a.quiet === true),
    });
    const mbps = r.bytes / 1e6 / Math.max(r.seconds, 1e-9);
    const parameters = parameterCount(r.config);
    emit(
      a.json,
      { dir: r.dir, like: a.like, layers: r.config.numLayers, parameters, bytes: r.bytes, seconds: r.seconds },
      `synth ${a.like as string} -> ${r.dir}: ${plural(r.config.numLayers, 'layer')}, ${countLabel(parameters)} parameters, ${bytesLabel(r.bytes)} in ${r.seconds.toFixed(1)} s (${mbps.toFixed(0)} MB/s)`,
    );
  },
};
