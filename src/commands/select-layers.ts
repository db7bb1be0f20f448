import type { CommandModule } from 'yargs';
import { COMMAND_LINES } from './index.ts';
import type { BackendName } from '../engines/tfjs-backend.ts';
import type { PassEngine } from '../model/torch-passes.ts';
import { PlanError } from '../util/errors.ts';
import { countProblem, MAX_LAYERS, MAX_SEQ_LEN, MAX_TOKENS } from '../util/limits.ts';
import { deprecatedAlias, SELECTION_OPTIONS, shared, spec } from './options.ts';
import { emit, plural } from '../util/format.ts';
import { progressBars } from './progress.ts';

export const selectLayersCommand: CommandModule = {
  ...COMMAND_LINES['select-layers'],
  builder: (y) =>
    deprecatedAlias(
      shared(
        y
          .positional('checkpoint', { type: 'string', demandOption: true, describe: 'checkpoint folder' })
          .option(
            'count',
            spec('count', 'number', { describe: 'how many layers to pick (default: a quarter of the layers, as 64 -> 80)' }),
          ),
        ['json', 'quiet', 'backend', 'engine', 'seed', ...SELECTION_OPTIONS],
        {
          backend: { default: 'auto' },
          engine: {
            default: 'tfjs',
            describe:
              'tfjs, torch (python/flm_grow_torch/passes.py: every core or the GPU, layer-streamed) or auto (torch when found)',
          },
          metric: { default: 'cosine' },
          order: { default: 'smallest' },
          seed: { describe: 'same as --calibration-seed (the only random numbers drawn here)' },
          'calibration-tokens': { default: 256 },
          'calibration-seq': { default: 64 },
        },
      ),
      'input',
      'calibration-file',
      'string',
    )
      .example('$0 select-layers fixtures/hf/llama-tiny-f32 --count 2', 'the 2 layers closest to identity on 256 random tokens')
      .example('$0 select-layers ckpt --calibration-text "$(cat corpus.txt)" --metric l2 --json', 'on your own text, as JSON'),
  handler: async (a) => {
    for (const [k, max] of [
      ['calibration-tokens', MAX_TOKENS],
      ['calibration-seq', MAX_SEQ_LEN],
    ] as const) {
      const bad = countProblem(a[k], max, `--${k}`);
      if (bad !== undefined) throw new PlanError(bad.field, bad.message, 'select-layers');
    }
    if (a.count !== undefined) {
      const bad = countProblem(a.count, MAX_LAYERS, '--count');
      if (bad !== undefined) throw new PlanError(bad.field, bad.message, 'select-layers');
    }
    const [
      { initBackend },
      { Checkpoint },
      { calibrationIds, describeCalibration, selectLayers },
      { defaultPlan },
      { resolvePassEngine },
    ] = await Promise.all([
      import('../engines/tfjs-backend.ts'),
      import('../checkpoint/checkpoint.ts'),
      import('../growth/select-layers.ts'),
      import('../growth/plan.ts'),
      import('../model/torch-passes.ts'),
    ]);
    const engine = resolvePassEngine(a.engine as PassEngine);
    if (engine === 'tfjs') await initBackend(a.backend as BackendName);
    const ck = await Checkpoint.open(a.checkpoint as string);
    try {
      const file = (a['calibration-file'] ?? a.input) as string | undefined;
      const text = a['calibration-text'] as string | undefined;
      const cal = {
        ...defaultPlan().calibration,
        tokens: a['calibration-tokens'] as number,
        seq: a['calibration-seq'] as number,
        seed: ((a['calibration-seed'] ?? a.seed) as number | undefined) ?? 0,
        ...(file !== undefined ? { file } : {}),
        ...(text !== undefined ? { text } : {}),
      };
      const ids = await calibrationIds(ck, cal);
      const count = (a.count as number | undefined) ?? Math.max(1, Math.round(ck.config.numLayers / 4));
      const metric = a.metric as 'cosine' | 'l2';
      const order = a.order as 'smallest' | 'largest';
      const r = await selectLayers(ck, ids, {
        metric,
        order,
        count,
        progress: progressBars(a.quiet === true || a.json === true),
        engine,
      });
      const tokens = ids.flat().length;
      emit(a.json, { metric, order, tokens, ...r }, () => {
        const lines = [
          `${metric} distance (input -> output of each layer) over ${plural(tokens, 'token')}: ${describeCalibration(cal)}`,
        ];
        r.distances.forEach((d, l) =>
          lines.push(`  layer ${String(l).padStart(3)}  ${d.toExponential(4)}${r.picks.includes(l) ? '  *' : ''}`),
        );
        lines.push(`picks (${count}, ${order} first): ${r.picks.join(', ')}`);
        return lines.join('\n');
      });
    } finally {
      await ck.close();
    }
  },
};
