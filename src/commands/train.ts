import type { CommandModule } from 'yargs';
import { BACKEND_NAMES, type BackendName } from '../backend.ts';
import { LR_SCHEDULE_KINDS, type LrScheduleKind } from '../train/lr-schedule.ts';
import { ENGINES, trainWithEngine, type Engine } from '../train/engine.ts';
import { progressBars } from './progress.ts';

export const trainCommand: CommandModule = {
  command: 'train <checkpoint>',
  describe: 'Continue pre-training a (grown) checkpoint: AdamW, MSG mask annealing from its manifest, checkpoints with optimizer state',
  builder: (y) => y
    .positional('checkpoint', { type: 'string', demandOption: true, describe: 'HF checkpoint folder (grown, trained or plain)' })
    .option('data', { type: 'string', demandOption: true, describe: 'training text (byte-level, or the checkpoint\'s tokenizer.json) or token file (.bin/.u16 uint16, .u32 uint32)' })
    .option('out', { type: 'string', demandOption: true, describe: 'run folder: checkpoint-<step>/ folders and metrics.jsonl' })
    .option('steps', { type: 'number', demandOption: true, describe: 'optimizer steps to run' })
    .option('batch-size', { type: 'number', default: 8 })
    .option('seq-len', { type: 'number', default: 64 })
    .option('lr', { type: 'number', default: 1e-3, describe: 'peak learning rate' })
    .option('min-lr', { type: 'number', describe: 'floor of the decay (default lr/10)' })
    .option('warmup-steps', { type: 'number', default: 0 })
    .option('schedule', { type: 'string', choices: LR_SCHEDULE_KINDS, default: 'cosine' })
    .option('weight-decay', { type: 'number', default: 0, describe: 'decoupled (AdamW), matrices only' })
    .option('clip-grad', { type: 'number', default: 1.0, describe: 'global gradient-norm clip (0: off)' })
    .option('beta1', { type: 'number', default: 0.9 })
    .option('beta2', { type: 'number', default: 0.95 })
    .option('save-every', { type: 'number', default: 0, describe: 'save a checkpoint every N steps (0: only at the end)' })
    .option('eval-every', { type: 'number', default: 0, describe: 'held-out loss every N steps (always at the end)' })
    .option('eval-batches', { type: 'number', default: 4 })
    .option('eval-fraction', { type: 'number', default: 0.1, describe: 'tail of the data held out for eval' })
    .option('seed', { type: 'number', default: 0, describe: 'batches are a pure function of (seed, step)' })
    .option('backend', { type: 'string', choices: BACKEND_NAMES, default: 'auto' })
    .option('resume', { type: 'boolean', default: false, describe: 'continue the run in --out from its newest complete checkpoint, up to the run\'s first step + --steps' })
    .option('overwrite', { type: 'boolean', default: false, describe: 'replace the run --out holds (its checkpoint folders and metrics.jsonl)' })
    .option('lr-after-growth', { type: 'string', choices: ['rewind', 'continue'], default: 'rewind', describe: 'rewind: new warmup+decay from this run\'s first step; continue: one schedule from global step 0' })
    .option('total-steps', { type: 'number', describe: 'length of the "continue" schedule in global steps' })
    .option('keep-checkpoints', { type: 'number', default: 2 })
    .option('quiet', { type: 'boolean', default: false })
    .option('engine', { type: 'string', choices: ENGINES, default: 'auto', describe: 'tfjs (in-process), torch (python/flm_grow_torch; same results), auto: torch on a CUDA GPU or when tfjs cannot hold the model' })
    .option('nproc', { type: 'number', default: 1, describe: 'torch engine: processes (DDP; one per GPU, or gloo on CPU); the global batch is split between them' }),
  handler: async (a) => {
    const r = await trainWithEngine({
      checkpoint: a.checkpoint as string, data: a.data as string, out: a.out as string, steps: a.steps as number,
      batchSize: a['batch-size'] as number, seqLen: a['seq-len'] as number, lr: a.lr as number, minLr: a['min-lr'] as number | undefined,
      warmupSteps: a['warmup-steps'] as number, schedule: a.schedule as LrScheduleKind, weightDecay: a['weight-decay'] as number,
      clipGrad: a['clip-grad'] as number, beta1: a.beta1 as number, beta2: a.beta2 as number, saveEvery: a['save-every'] as number,
      evalEvery: a['eval-every'] as number, evalBatches: a['eval-batches'] as number, evalFraction: a['eval-fraction'] as number,
      seed: a.seed as number, backend: a.backend as BackendName, resume: a.resume === true, overwrite: a.overwrite === true,
      lrAfterGrowth: a['lr-after-growth'] as 'rewind' | 'continue', totalSteps: a['total-steps'] as number | undefined,
      keepCheckpoints: a['keep-checkpoints'] as number, quiet: a.quiet === true, progress: progressBars(a.quiet === true),
    }, { engine: a.engine as Engine, nproc: a.nproc as number });
    const lines = r.step === r.startStep ? [`nothing trained: ${r.checkpoint} is already at step ${r.step}`] : [
      `trained ${r.parameters.toLocaleString('en-US')} parameters, steps ${r.startStep} -> ${r.step}: loss ${r.firstLoss.toFixed(4)} -> ${r.lastLoss.toFixed(4)}` +
        `${r.evalLoss !== undefined ? `, eval loss ${r.evalLoss.toFixed(4)}` : ''}, ${r.tokensPerSec.toFixed(0)} tokens/s`,
      `checkpoint (F32 weights, masks, optimizer state): ${r.checkpoint}`,
    ];
    lines.push(r.masksAllOne ? 'all masks are 1: this checkpoint can be baked (flm-grow bake)' : `masks still annealing (stage step ${r.stageStep}); train further before baking`);
    process.stdout.write(lines.join('\n') + '\n');
  },
};
