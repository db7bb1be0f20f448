import type { CommandModule } from 'yargs';
import { COMMAND_LINES } from './index.ts';
import { destinationArg, shared } from './options.ts';
import { emit } from '../util/format.ts';
import { logLine, progressBars } from './progress.ts';

export const bakeCommand: CommandModule = {
  ...COMMAND_LINES.bake,
  builder: (y) =>
    shared(
      y
        .positional('grown', { type: 'string', demandOption: true, describe: 'grown (and trained) checkpoint folder' })
        .positional('destination', { type: 'string', describe: 'checkpoint folder to write (same as --out)' })
        .option('force', { type: 'boolean', default: false, describe: 'drop masks still below 1 (changes the model)' }),
      ['json', 'quiet', 'out', 'overwrite', 'force-overwrite', 'out-shard-size'],
      { out: { describe: 'checkpoint folder to write (or the <destination> positional)' }, 'out-shard-size': { default: '5GB' } },
    ).example('$0 bake /tmp/run2/checkpoint-000300 --out /tmp/stage2-plain', 'refuses while any mask is below 1'),
  handler: async (a) => {
    const [{ parseSize }, { bakeCheckpoint }] = await Promise.all([
      import('../checkpoint/checkpoint-writer.ts'),
      import('../growth/bake.ts'),
    ]);
    const r = await bakeCheckpoint(a.grown as string, destinationArg('bake', a, 'destination'), {
      force: a.force === true,
      overwrite: a.overwrite === true,
      forceOverwrite: a['force-overwrite'] === true,
      quiet: a.quiet === true,
      progress: progressBars(a.quiet === true),
      maxShardSize: parseSize(a['out-shard-size'] as string, '--out-shard-size'),
      warn: (m) => logLine(`flm-grow: warning: ${m}`),
    });
    emit(
      a.json,
      { source: a.grown, dest: r.dest, droppedGroups: r.droppedGroups },
      `baked ${a.grown as string} -> ${r.dest}${r.droppedGroups.length > 0 ? ' (masks below 1 dropped)' : ''}`,
    );
  },
};
