import type { CommandModule } from 'yargs';
import { formatLossTable, runPipeline } from '../pipeline.ts';
import { progressBars } from './progress.ts';

export const runCommand: CommandModule = {
  command: 'run <pipeline>',
  describe: 'Run a stage pipeline (init/train/grow/verify/bake); resumable: complete stages are skipped',
  builder: (y) => y
    .positional('pipeline', { type: 'string', demandOption: true, describe: 'pipeline JSON (e.g. pipelines/tiny-tele-flm.json)' })
    .option('out', { type: 'string', describe: 'output folder (default: pipeline-out beside the pipeline file)' })
    .option('quiet', { type: 'boolean', default: false }),
  handler: async (a) => {
    const t0 = Date.now();
    const r = await runPipeline(a.pipeline as string, { out: a.out as string | undefined, quiet: a.quiet === true, progress: progressBars(a.quiet === true) });
    const lines = [
      '',
      'Loss per stage (the probe is one fixed held-out batch; "before"/"after" growth are the source and the grown model on it):',
      formatLossTable(r),
      '',
      `final checkpoint: ${r.finalCheckpoint}`,
      ...(r.plot !== undefined ? [`loss plot: ${r.plot}`] : []),
      `summary: ${r.out}/summary.json; total ${((Date.now() - t0) / 1000).toFixed(0)} s`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
  },
};
