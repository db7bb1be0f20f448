import type { CommandModule } from 'yargs';
import { basename, dirname } from 'node:path';
import { lossSeriesFromMetrics, plotLossCurves, type PlotSeries } from '../plot.ts';
import { readMetrics } from '../train/metrics.ts';

export const plotCommand: CommandModule = {
  command: 'plot <metrics..>',
  describe: 'Draw loss curves (growth points marked) from metrics.jsonl files to .svg or .png',
  builder: (y) => y
    .positional('metrics', { type: 'string', array: true, demandOption: true, describe: 'metrics.jsonl files' })
    .option('output', { type: 'string', default: 'curve.svg', describe: '.svg or .png' })
    .option('title', { type: 'string', default: 'training loss' })
    .option('merge', { type: 'boolean', default: false, describe: 'treat the files as stages of one run (one curve)' })
    .option('log-y', { type: 'boolean', default: false }),
  handler: async (a) => {
    const files = a.metrics as string[];
    const series: PlotSeries[] = [];
    const marks: number[] = [];
    if (a.merge === true || files.length === 1) {
      const r = lossSeriesFromMetrics(files.flatMap((f) => readMetrics(f)));
      series.push(...r.series);
      marks.push(...r.growthMarks);
    } else {
      for (const f of files) {
        // a run is usually named by its folder (metrics.jsonl inside it)
        const r = lossSeriesFromMetrics(readMetrics(f), `${basename(f) === 'metrics.jsonl' ? basename(dirname(f)) : basename(f)}: `);
        series.push(...r.series);
        marks.push(...r.growthMarks);
      }
    }
    await plotLossCurves(series, { title: a.title as string, xLabel: 'optimizer step', yLabel: 'loss (nats/token)', output: a.output as string, growthMarks: [...new Set(marks)], logY: a['log-y'] === true });
    process.stdout.write(`wrote ${a.output as string}\n`);
  },
};
