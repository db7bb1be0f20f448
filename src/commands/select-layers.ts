import type { CommandModule } from 'yargs';
import { Checkpoint } from '../checkpoint/checkpoint.ts';
import { calibrationIds, selectLayers } from '../growth/select-layers.ts';
import { defaultPlan } from '../growth/plan.ts';
import { PlanError } from '../errors.ts';
import { BACKEND_NAMES, initBackend, type BackendName } from '../backend.ts';
import { progressBars } from './progress.ts';
import { describeCalibration } from '../growth/select-layers.ts';

export const selectLayersCommand: CommandModule = {
  command: 'select-layers <checkpoint>',
  describe: 'Per-layer input->output distances on calibration tokens (layer-streamed) and the layers a growth would duplicate',
  builder: (y) => y
    .positional('checkpoint', { type: 'string', demandOption: true })
    .option('input', { type: 'string', describe: 'file of token ids (JSON array or whitespace-separated)' })
    .option('text', { type: 'string', describe: 'calibration text (checkpoint tokenizer, else bytes)' })
    .option('tokens', { type: 'number', default: 256, describe: 'random calibration tokens (without --input/--text)' })
    .option('seq', { type: 'number', default: 64, describe: 'sequence length' })
    .option('seed', { type: 'number', default: 0 })
    .option('metric', { type: 'string', choices: ['cosine', 'l2'], default: 'cosine' })
    .option('order', { type: 'string', choices: ['smallest', 'largest'], default: 'smallest' })
    .option('count', { type: 'number', describe: 'how many layers to pick (default: a quarter of the layers, as 64 -> 80)' })
    .option('backend', { type: 'string', choices: BACKEND_NAMES, default: 'auto' })
    .option('json', { type: 'boolean', default: false })
    .option('quiet', { type: 'boolean', default: false }),
  handler: async (a) => {
    for (const k of ['tokens', 'seq'] as const) {
      const v = a[k] as number;
      if (!Number.isInteger(v) || v < 1) throw new PlanError(`--${k}`, `must be a positive integer, got ${v}`, 'select-layers');
    }
    await initBackend(a.backend as BackendName);
    const ck = await Checkpoint.open(a.checkpoint as string);
    try {
      const cal = { ...defaultPlan().calibration, tokens: a.tokens as number, seq: a.seq as number, seed: a.seed as number,
        ...(a.input !== undefined ? { file: a.input as string } : {}), ...(a.text !== undefined ? { text: a.text as string } : {}) };
      const ids = await calibrationIds(ck, cal);
      const count = (a.count as number | undefined) ?? Math.max(1, Math.round(ck.config.numLayers / 4));
      const metric = a.metric as 'cosine' | 'l2';
      const order = a.order as 'smallest' | 'largest';
      const r = await selectLayers(ck, ids, { metric, order, count, progress: progressBars(a.quiet === true) });
      if (a.json === true) {
        process.stdout.write(JSON.stringify({ metric, order, tokens: ids.flat().length, ...r }, null, 2) + '\n');
        return;
      }
      const lines = [`${metric} distance (input -> output of each layer) over ${ids.flat().length} tokens: ${describeCalibration(cal)}`];
      r.distances.forEach((d, l) => lines.push(`  layer ${String(l).padStart(3)}  ${d.toExponential(4)}${r.picks.includes(l) ? '  *' : ''}`));
      lines.push(`picks (${count}, ${order} first): ${r.picks.join(', ')}`);
      process.stdout.write(lines.join('\n') + '\n');
    } finally {
      await ck.close();
    }
  },
};
