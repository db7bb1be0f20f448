import type { CommandModule } from 'yargs';
import { parseSize } from '../checkpoint/checkpoint-writer.ts';
import { bakeCheckpoint } from '../growth/bake.ts';
import { progressBars } from './progress.ts';

export const bakeCommand: CommandModule = {
  command: 'bake <grown> <destination>',
  describe: 'Write a plain checkpoint (no masks) once every mask has reached 1',
  builder: (y) => y
    .positional('grown', { type: 'string', demandOption: true })
    .positional('destination', { type: 'string', demandOption: true })
    .option('force', { type: 'boolean', default: false, describe: 'drop masks still below 1 (changes the model)' })
    .option('overwrite', { type: 'boolean', default: false, describe: 'replace an existing destination that flm-grow wrote (or an empty folder)' })
    .option('force-overwrite', { type: 'boolean', default: false, describe: 'with --overwrite: replace the destination even if flm-grow did not write it' })
    .option('out-shard-size', { type: 'string', default: '5GB' })
    .option('quiet', { type: 'boolean', default: false }),
  handler: async (a) => {
    const r = await bakeCheckpoint(a.grown as string, a.destination as string, {
      force: a.force === true, overwrite: a.overwrite === true, forceOverwrite: a['force-overwrite'] === true, quiet: a.quiet === true, progress: progressBars(a.quiet === true),
      maxShardSize: parseSize(a['out-shard-size'] as string, '--out-shard-size'),
      warn: (m) => process.stderr.write(`flm-grow: warning: ${m}\n`),
    });
    process.stdout.write(`baked ${a.grown as string} -> ${r.dest}${r.droppedGroups.length > 0 ? ' (masks below 1 dropped)' : ''}\n`);
  },
};
