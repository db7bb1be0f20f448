import type { CommandModule } from 'yargs';
import { assembleParts } from '../split.ts';
import { bytesLabel, progressBars } from './progress.ts';

export const assembleCommand: CommandModule = {
  command: 'assemble <destination> <parts..>',
  describe: 'Join the part folders of a split grow (`grow --part i/n`) into one checkpoint, byte-identical to a single-machine grow',
  builder: (y) => y
    .positional('destination', { type: 'string', demandOption: true })
    .positional('parts', { type: 'string', array: true, demandOption: true, describe: 'the n part folders, in any order' })
    .option('move', { type: 'boolean', default: false, describe: 'move shard files instead of copying (part folders are removed after success)' })
    .option('verify', { type: 'boolean', default: true, describe: 're-hash every shard against its part manifest (--no-verify: check only that each shard is whole)' })
    .option('overwrite', { type: 'boolean', default: false, describe: 'replace an existing destination that flm-grow wrote (or an empty folder)' })
    .option('force-overwrite', { type: 'boolean', default: false, describe: 'with --overwrite: replace the destination even if flm-grow did not write it' })
    .option('quiet', { type: 'boolean', default: false }),
  handler: async (a) => {
    const t0 = Date.now();
    const r = await assembleParts(a.destination as string, a.parts as string[], { move: a.move === true, verify: a.verify !== false, overwrite: a.overwrite === true, forceOverwrite: a['force-overwrite'] === true, quiet: a.quiet === true, progress: progressBars(a.quiet === true), log: (m) => process.stderr.write(`flm-grow: ${m}\n`) });
    process.stdout.write(`assembled ${(a.parts as string[]).length} parts -> ${r.dest}: ${r.shards} shards, ${bytesLabel(r.bytes)} in ${((Date.now() - t0) / 1000).toFixed(1)} s ${a.verify !== false ? '(sha256 of every file checked against the part manifests)' : '(shard hashes taken from the part manifests)'}\n`);
  },
};
