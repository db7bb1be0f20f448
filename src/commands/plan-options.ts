/**
 * The growth plan's flags (shared by `plan` and `grow`): named like the HF config keys in
 * kebab-case (`--hidden-size` <-> `targets.hidden_size`); --plan FILE first, flags win.
 */
import type { Argv } from 'yargs';
import { SELECTION_OPTIONS, shared, spec } from './options.ts';
import { WIDTH_INITS } from '../growth/operators.ts';

const T = "Targets (override the plan's targets.*):";
const G = 'Growth:';
const L = 'Layers and calibration:';

export function withPlanOptions<T>(y: Argv<T>): Argv<T> {
  const withShared = shared(
    y.option('plan', { type: 'string', describe: 'growth plan JSON (growth-plans/*.json); the flags below override it' }),
    ['seed', ...SELECTION_OPTIONS],
    {
      seed: { group: G, describe: 'seed of new random weights (plan key: seed)' },
      'calibration-tokens': { group: L },
      'calibration-seq': { group: L },
      'calibration-seed': { group: L },
      'calibration-file': { group: L },
      'calibration-text': { group: L },
      metric: { group: L },
      order: { group: L },
    },
  );
  return withShared
    .option('hidden-size', spec('hidden-size', 'number', { group: T, describe: 'model width' }))
    .option('intermediate-size', spec('intermediate-size', 'number', { group: T, describe: 'FFN width' }))
    .option('num-attention-heads', spec('num-attention-heads', 'number', { group: T, describe: 'query heads' }))
    .option('num-key-value-heads', spec('num-key-value-heads', 'number', { group: T, describe: 'key/value heads (GQA)' }))
    .option('num-hidden-layers', spec('num-hidden-layers', 'number', { group: T, describe: 'layers' }))
    .option(
      'head-dim',
      spec('head-dim', 'number', { group: T, describe: "per-head width (only the source's is accepted: growth keeps head_dim)" }),
    )
    .option('vocab-size', spec('vocab-size', 'number', { group: T, describe: 'vocabulary' }))
    .option(
      'mup-scale-factor',
      spec('mup-scale-factor', 'number', { group: T, describe: 'new µP logit divisor (output_mult scaled by the same ratio)' }),
    )
    .option('mode', {
      type: 'string',
      choices: ['masked', 'zero'],
      group: G,
      describe: 'masked (MSG, default) or zero (mask-free, SPEC §3)',
    })
    .option('init', {
      type: 'string',
      choices: [...WIDTH_INITS],
      group: G,
      describe:
        'new width units: random or zero entries, or clone (copies of seeded units, Net2Net/HyperCloning) (plan key: init.new)',
    })
    .option(
      'init-noise',
      spec('init-noise', 'number', {
        group: G,
        describe: 'clone only: symmetry-breaking noise relative to each row std, function-preserving (plan key: init.noise)',
      }),
    )
    .option('layer-init', {
      type: 'string',
      choices: ['copy', 'random'],
      group: G,
      describe: 'inserted layers, copy = MSG default (plan key: init.layers)',
    })
    .option(
      'std',
      spec('std', 'number', { group: G, describe: 'default std of new random weights (plan key: init.std.default)' }),
    )
    .option('anneal-steps', spec('anneal-steps', 'number', { group: G, describe: 'mask annealing length (default 5000)' }))
    .option('placement', {
      type: 'string',
      choices: ['distance', 'explicit', 'uniform', 'top', 'bottom', 'stack', 'interleave'],
      group: L,
      describe: 'where inserted layers go; only distance runs a calibration pass (plan key: placement.method)',
    })
    .option(
      'placement-every',
      spec('placement-every', 'number', {
        group: L,
        describe: 'interleave: a copy after every k-th layer (default floor(L / new layers); plan key: placement.every)',
      }),
    )
    .option('positions', {
      type: 'string',
      group: L,
      describe: 'source layers to insert after, e.g. 1,3,3 (plan key: placement.positions)',
    });
}
