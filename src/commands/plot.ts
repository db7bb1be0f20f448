import type { CommandModule } from 'yargs';
import { COMMAND_LINES } from './index.ts';
import type { PlotSeries } from '../train/plot.ts';
import { shared } from './options.ts';
import { emit } from '../util/format.ts';

export const plotCommand: CommandModule = {
  ...COMMAND_LINES.plot,
  builder: (y) =>
    shared(
      y
        .positional('metrics', {
          type: 'string',
          array: true,
          describe: 'metrics.jsonl files (one curve per run, or one with --merge)',
          default: undefined,
        })
        .option('title', { type: 'string', default: 'training loss', describe: 'plot title' })
        .option('merge', { type: 'boolean', default: false, describe: 'treat the files as stages of one run (one curve)' })
        .option('log-y', { type: 'boolean', default: false, describe: 'logarithmic loss axis' }),
      ['json', 'out'],
      { out: { default: 'curve.svg', describe: 'image to write: .svg or .png' } },
    ).example('$0 plot demo-out/*/metrics.jsonl --merge --out loss.png', 'one curve over the stages of a pipeline run'),
  handler: async (a) => {
    const [{ basename, dirname }, { lossSeriesFromMetrics, plotLossCurves }, { readMetrics }] = await Promise.all([
      import('node:path'),
      import('../train/plot.ts'),
      import('../train/metrics.ts'),
    ]);
    const files = a.metrics as string[];
    const out = (a.out ?? a.output) as string;
    const series: PlotSeries[] = [];
    const marks: number[] = [];
    if (a.merge === true || files.length === 1) {
      const r = lossSeriesFromMetrics(files.flatMap((f) => readMetrics(f)));
      series.push(...r.series);
      marks.push(...r.growthMarks);
    } else {
      for (const f of files) {
        // a run is usually named by its folder (metrics.jsonl inside it)
        const r = lossSeriesFromMetrics(
          readMetrics(f),
          `${basename(f) === 'metrics.jsonl' ? basename(dirname(f)) : basename(f)}: `,
        );
        series.push(...r.series);
        marks.push(...r.growthMarks);
      }
    }
    const growthMarks = [...new Set(marks)];
    await plotLossCurves(series, {
      title: a.title as string,
      xLabel: 'optimizer step',
      yLabel: 'loss (nats/token)',
      output: out,
      growthMarks,
      logY: a['log-y'] === true,
    });
    emit(a.json, { out, series: series.length, growthMarks }, `wrote ${out}`);
  },
};
