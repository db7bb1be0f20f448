import type { CommandModule, Options } from 'yargs';
import { COMMAND_LINES } from './index.ts';
import type { BackendName } from '../engines/tfjs-backend.ts';
import type { Engine, EngineOptions } from '../train/engine.ts';
import type { StepMetrics } from '../train/metrics.ts';
import { camelKey, TRAIN_OPTIONS, trainOption, type TrainOptionSpec } from '../train/options.ts';
import type { TrainOptions } from '../train/trainer.ts';
import type { Progress, ProgressFactory } from '../util/progress.ts';
import { shared, spec } from './options.ts';
import { countLabel, emit } from '../util/format.ts';
import { logLine, progressBars } from './progress.ts';

/** Train options that are also shared options (commands/options.ts: same meaning in other commands). */
const SHARED_TRAIN_FLAGS = ['seed', 'seq-len', 'batch-size', 'take-over-lock'] as const;

/**
 * A declared train option as a yargs option (numbers echo a bad value as typed: options.ts spec).
 * `defaultText`: instead of the declared default, this text (`flm-grow run`: the pipeline's key).
 */
export function yargsOption(o: TrainOptionSpec, defaultText?: string): Options {
  const shown = defaultText ?? o.defaultText;
  const describe = o.help + (shown !== undefined ? ` (default ${shown})` : '');
  const base = {
    describe,
    ...(o.default !== undefined && defaultText === undefined ? { default: o.default } : {}),
    ...(o.required === true ? { demandOption: true } : {}),
  };
  if (o.type === 'int' || o.type === 'number') return { ...spec(o.flag, 'number', base) };
  if (o.type === 'boolean') return { type: 'boolean', ...base };
  return { type: 'string', ...base, ...(o.choices !== undefined ? { choices: o.choices } : {}) };
}

/** Every declared train option that is a flag of `flm-grow train` and not a shared option. */
function trainFlags(): Record<string, Options> {
  return Object.fromEntries(
    TRAIN_OPTIONS.filter((o) => o.cli !== false && !(SHARED_TRAIN_FLAGS as readonly string[]).includes(o.flag)).map((o) => [
      o.flag,
      yargsOption(o),
    ]),
  );
}

/** The parsed flags as TrainOptions values (camelCase keys), for every declared option. */
function trainOptionValues(a: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(TRAIN_OPTIONS.filter((o) => a[o.flag] !== undefined).map((o) => [camelKey(o.flag), a[o.flag]]));
}

/** The lowest mask value of a step (the one still furthest from 1), or undefined without masks. */
function lowestMask(m: StepMetrics): number | undefined {
  const v = Object.values(m.masks ?? {});
  return v.length === 0 ? undefined : Math.min(...v);
}

export const trainCommand: CommandModule = {
  ...COMMAND_LINES.train,
  builder: (y) =>
    shared(
      y
        .positional('checkpoint', {
          type: 'string',
          demandOption: true,
          describe: 'HF checkpoint folder (grown, trained or plain)',
        })
        .option('data', {
          type: 'string',
          demandOption: true,
          describe:
            'training data: text (the checkpoint\'s tokenizer.json, else bytes), a JSONL or Parquet corpus ({"text": ...} per line, a text column; ' +
            'a file, or a folder or glob of shards such as data/train-*.parquet; tokenized once and cached; --text-field names another field), ' +
            'a token file (.bin/.u16 uint16, .u32 uint32; a .bin with a Megatron .idx beside it is read per the index), ' +
            'or a weighted mix of token files: a.bin:0.7,b.bin:0.3',
        })
        .options(trainFlags()),
      ['json', 'quiet', 'backend', 'engine', 'out', ...SHARED_TRAIN_FLAGS],
      {
        out: { demandOption: true, describe: 'run folder: checkpoint-<step>/ folders and metrics.jsonl' },
        ...Object.fromEntries(SHARED_TRAIN_FLAGS.map((f) => [f, yargsOption(trainOption(f))])),
        backend: { default: 'auto' },
        engine: {
          default: 'auto',
          describe:
            'tfjs (in-process), torch (python/flm_grow_torch; same results), auto: torch on a CUDA GPU or when tfjs cannot hold the model',
        },
      },
    )
      .example(
        '$0 train /tmp/stage2 --data fixtures/corpus/fortunes.txt --out /tmp/run2 --steps 300',
        'masks anneal per the manifest; checkpoint-000300 at the end',
      )
      .example(
        '$0 train /tmp/stage2 --data corpus.u16 --out /tmp/run2 --steps 5000 --save-every 500 --eval-every 100 --resume',
        'long run: resumable, held-out loss every 100 steps',
      ),
  handler: async (a) => {
    const { trainWithEngine } = await import('../train/engine.ts');
    const quiet = a.quiet === true;
    // the trainer's bar is drawn here; onStep adds loss, lr and the lowest mask to it
    let bar: Progress | undefined;
    let start: number | undefined;
    const bars = progressBars(
      quiet,
      () => (p) =>
        `loss ${Number(p.loss).toFixed(4)} | lr ${Number(p.lr).toExponential(2)}${p.mask !== undefined ? ` | mask ${Number(p.mask).toFixed(3)}` : ''}`,
    );
    const progress: ProgressFactory = (label, total, opts) => (bar = bars(label, total, opts));
    const r = await trainWithEngine(
      {
        ...(trainOptionValues(a) as unknown as Omit<TrainOptions, 'checkpoint' | 'data' | 'out'>),
        checkpoint: a.checkpoint as string,
        data: a.data as string,
        out: a.out as string,
        backend: a.backend as BackendName,
        quiet,
        progress,
        log: (line) => {
          if (!quiet) logLine(line);
        },
        onStep: (m) => {
          // m.step counts updates done (the HF Trainer's global_step): 1 after the first
          start ??= m.step - 1;
          bar?.update(m.step - start, { loss: m.loss, lr: m.lr, mask: lowestMask(m) });
          // the eval and save lines are the trainer's (trainer.ts stepEvents), as the torch engine's
        },
      },
      // the engine and launch options (nproc, fsdp, tp, nnodes, ...) are declared options too
      { ...(trainOptionValues(a) as EngineOptions), engine: a.engine as Engine },
    );
    const lines =
      r.step === r.startStep
        ? [`nothing trained: ${r.checkpoint} is already at step ${r.step}`]
        : [
            `trained ${countLabel(r.parameters)} parameters, steps ${r.startStep} -> ${r.step}: loss ${r.firstLoss.toFixed(4)} -> ${r.lastLoss.toFixed(4)}` +
              `${r.evalLoss !== undefined ? `, eval loss ${r.evalLoss.toFixed(4)}` : ''}, ${r.tokensPerSec.toFixed(0)} tokens/s`,
            `checkpoint (F32 weights, masks, optimizer state): ${r.checkpoint}`,
          ];
    lines.push(
      r.masksAllOne
        ? 'all masks are 1: this checkpoint can be baked (flm-grow bake)'
        : `masks still annealing (stage step ${r.stageStep}); train further before baking`,
    );
    emit(a.json, r, lines.join('\n'));
  },
};
