import type { CommandModule } from 'yargs';
import { COMMAND_LINES } from './index.ts';
import { assembleArgs, shared } from './options.ts';
import { bytesLabel, emit, plural, secondsLabel } from '../util/format.ts';
import { logLine, progressBars } from './progress.ts';

export const assembleCommand: CommandModule = {
  ...COMMAND_LINES.assemble,
  builder: (y) =>
    shared(
      y
        .positional('destination', {
          type: 'string',
          describe: 'checkpoint folder to write (with --out, every positional is a part)',
        })
        .positional('parts', { type: 'string', array: true, describe: 'the n part folders, in any order', default: undefined })
        .option('move', {
          type: 'boolean',
          default: false,
          describe: 'move shard files instead of copying (part folders are removed after success)',
        })
        .option('verify', {
          type: 'boolean',
          default: true,
          describe: 're-hash every shard against its part manifest (--no-verify: check only that each shard is whole)',
        }),
      ['json', 'quiet', 'out', 'overwrite', 'force-overwrite'],
      { out: { describe: 'checkpoint folder to write (or the first positional)' } },
    )
      .example('$0 assemble --out /data/grown /data/part-*', 'the same with --out: every positional is then a part folder')
      .example(
        '$0 assemble /data/grown /data/part-1 /data/part-2',
        'join the two parts written by `grow --part 1/2` and `--part 2/2`',
      ),
  handler: async (a) => {
    const { assembleParts } = await import('../growth/split.ts');
    const t0 = Date.now();
    const { dest, parts } = assembleArgs(a);
    const r = await assembleParts(dest, parts, {
      move: a.move === true,
      verify: a.verify !== false,
      overwrite: a.overwrite === true,
      forceOverwrite: a['force-overwrite'] === true,
      quiet: a.quiet === true,
      progress: progressBars(a.quiet === true),
      log: (m) => logLine(`flm-grow: ${m}`),
    });
    const ms = Date.now() - t0;
    emit(
      a.json,
      { dest: r.dest, parts: parts.length, shards: r.shards, bytes: r.bytes, seconds: ms / 1000, verified: a.verify !== false },
      () =>
        `assembled ${plural(parts.length, 'part')} -> ${r.dest}: ${plural(r.shards, 'shard')}, ${bytesLabel(r.bytes)} in ${secondsLabel(ms)} ${a.verify !== false ? '(sha256 of every file checked against the part manifests)' : '(shard hashes taken from the part manifests)'}`,
    );
  },
};
