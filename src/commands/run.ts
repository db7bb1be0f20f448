import type { CommandModule } from 'yargs';
import { COMMAND_LINES } from './index.ts';
import { shared } from './options.ts';
import { emit } from '../util/format.ts';
import { logLine, progressBars } from './progress.ts';
import { trainOption } from '../train/options.ts';
import { yargsOption } from './train.ts';

/** Train options `flm-grow run` takes as flags for every train stage (over the pipeline file's keys). */
const RUN_TRAIN_FLAGS = ['log-every'] as const;

export const runCommand: CommandModule = {
  ...COMMAND_LINES.run,
  builder: (y) =>
    shared(
      y.positional('pipeline', {
        type: 'string',
        demandOption: true,
        describe: 'pipeline JSON (e.g. pipelines/tiny-tele-flm.json)',
      }),
      ['json', 'quiet', 'out', 'take-over-lock'],
      { out: { describe: 'output folder (default: pipeline-out beside the pipeline file)' } },
    )
      .options(
        Object.fromEntries(
          RUN_TRAIN_FLAGS.map((f) => {
            const o = trainOption(f);
            return [f, yargsOption(o, `each train stage's ${f.replace(/-/g, '_')}, else ${String(o.default)}`)];
          }),
        ),
      )
      .example(
        '$0 run pipelines/tiny-tele-flm.json --out demo-out',
        'train, grow twice, verify, anneal and bake a tiny model; rerun to resume',
      ),
  handler: async (a) => {
    const { formatLossTable, runPipeline } = await import('../pipeline.ts');
    const t0 = Date.now();
    const r = await runPipeline(a.pipeline as string, {
      out: a.out as string | undefined,
      quiet: a.quiet === true,
      takeOverLock: a['take-over-lock'] === true,
      logEvery: a['log-every'] as number | undefined,
      progress: progressBars(a.quiet === true),
      log: logLine,
    });
    if (a.json === true) {
      emit(true, r, '');
      return;
    }
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
