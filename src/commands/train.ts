import type { CommandModule } from 'yargs';
import { COMMAND_LINES } from './index.ts';
import type { BackendName } from '../backend.ts';
import type { Engine } from '../train/engine.ts';
import type { StepMetrics } from '../train/metrics.ts';
import { LR_SCHEDULE_KINDS, type LrScheduleKind } from '../train/lr-schedule.ts';
import type { Progress, ProgressFactory } from '../util/progress.ts';
import { shared, spec } from './options.ts';
import { countLabel, emit } from '../util/format.ts';
import { logLine, progressBars } from './progress.ts';

// torchrun's default port, as src/torch-engine.ts DEFAULT_MASTER_PORT (not imported: the command
// table loads at every start-up, the torch engine module only when training runs)
const DEFAULT_MASTER_PORT = 29500;

const n = (name: string, describe: string, def?: number) =>
  spec(name, 'number', { describe, ...(def !== undefined ? { default: def } : {}) });

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
            "training text (byte-level, or the checkpoint's tokenizer.json) or token file (.bin/.u16 uint16, .u32 uint32)",
        })
        .option('steps', { ...n('steps', 'optimizer steps to run'), demandOption: true })
        .option('lr', n('lr', 'peak learning rate', 1e-3))
        .option('min-lr', n('min-lr', 'floor of the decay (default lr/10)'))
        .option('warmup-steps', n('warmup-steps', 'linear warmup steps', 0))
        .option('schedule', {
          type: 'string',
          choices: [...LR_SCHEDULE_KINDS],
          default: 'cosine',
          describe: 'learning-rate decay after warmup',
        })
        .option('weight-decay', n('weight-decay', 'decoupled (AdamW), matrices only', 0))
        .option('clip-grad', n('clip-grad', 'global gradient-norm clip (0: off)', 1.0))
        .option('beta1', n('beta1', 'AdamW β1', 0.9))
        .option('beta2', n('beta2', 'AdamW β2', 0.95))
        .option('save-every', n('save-every', 'save a checkpoint every N steps (0: only at the end)', 0))
        .option('eval-every', n('eval-every', 'held-out loss every N steps (always at the end)', 0))
        .option('eval-batches', n('eval-batches', 'batches per held-out evaluation', 4))
        .option('eval-fraction', n('eval-fraction', 'tail of the data held out for eval', 0.1))
        .option('resume', {
          type: 'boolean',
          default: false,
          describe: "continue the run in --out from its newest complete checkpoint (--steps counts from the run's first step)",
        })
        .option('overwrite', {
          type: 'boolean',
          default: false,
          describe: 'replace the run --out holds (its checkpoint folders and metrics.jsonl)',
        })
        .option('lr-after-growth', {
          type: 'string',
          choices: ['rewind', 'continue'],
          default: 'rewind',
          describe: "rewind: new warmup+decay from this run's first step; continue: one schedule from global step 0",
        })
        .option('total-steps', n('total-steps', 'length of the "continue" schedule in global steps'))
        .option('keep-checkpoints', n('keep-checkpoints', 'complete checkpoints kept in --out (older ones are deleted)', 2))
        .option(
          'nproc',
          n('nproc', 'torch engine: processes (DDP; one per GPU, or gloo on CPU); the global batch is split between them', 1),
        )
        .option('fsdp', {
          type: 'boolean',
          default: false,
          describe:
            'torch engine: shard weights, gradients and AdamW moments over the processes (FSDP2) instead of DDP; CPU (gloo) or GPUs (nccl)',
        })
        .option(
          'tp',
          n(
            'tp',
            'torch engine: tensor parallelism of this degree (q/k/v, gate/up by columns, o/down by rows, embedding and head by vocabulary); with --fsdp a 2-D mesh',
            1,
          ),
        )
        .option('activation-checkpointing', {
          type: 'boolean',
          default: false,
          describe:
            "torch engine: keep only each decoder layer's input and recompute the layer in the backward pass (less memory)",
        })
        .option('precision', {
          type: 'string',
          choices: ['auto', 'f32', 'bf16', 'f64'],
          describe: 'torch engine: auto (bf16 autocast on GPU, f32 on CPU), f32, bf16 (autocast on CPU or GPU), f64 (reference)',
        })
        .option('sharded-save', {
          type: 'boolean',
          default: false,
          describe:
            'torch engine: checkpoints as torch.distributed.checkpoint shards (each rank writes its parts; resumable at any process count); python -m flm_grow_torch.sharded export makes the HF layout',
        })
        .option('nnodes', n('nnodes', 'torch engine: machines in the job (torchrun, c10d rendezvous at --master-addr)', 1))
        .option('node-rank', n('node-rank', "torch engine: this machine's index 0..nnodes-1 (node 0 hosts the rendezvous)", 0))
        .option('master-addr', {
          type: 'string',
          describe: 'torch engine, --nnodes > 1: address of node 0, reachable from every node',
        })
        .option(
          'master-port',
          n('master-port', 'torch engine, --nnodes > 1: port of the c10d rendezvous on node 0', DEFAULT_MASTER_PORT),
        )
        .option(
          'max-restarts',
          n(
            'max-restarts',
            "torch engine: torchrun's elastic agent restarts all workers this often after a failure, from the newest checkpoint",
            0,
          ),
        ),
      ['json', 'quiet', 'backend', 'engine', 'out', 'seed', 'seq-len', 'batch-size', 'take-over-lock'],
      {
        out: { demandOption: true, describe: 'run folder: checkpoint-<step>/ folders and metrics.jsonl' },
        seed: { default: 0, describe: 'batches are a pure function of (seed, step)' },
        'seq-len': { default: 64 },
        'batch-size': { default: 8 },
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
    const saveEvery = a['save-every'] as number;
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
        checkpoint: a.checkpoint as string,
        data: a.data as string,
        out: a.out as string,
        steps: a.steps as number,
        batchSize: a['batch-size'] as number,
        seqLen: a['seq-len'] as number,
        lr: a.lr as number,
        minLr: a['min-lr'] as number | undefined,
        warmupSteps: a['warmup-steps'] as number,
        schedule: a.schedule as LrScheduleKind,
        weightDecay: a['weight-decay'] as number,
        clipGrad: a['clip-grad'] as number,
        beta1: a.beta1 as number,
        beta2: a.beta2 as number,
        saveEvery,
        evalEvery: a['eval-every'] as number,
        evalBatches: a['eval-batches'] as number,
        evalFraction: a['eval-fraction'] as number,
        seed: a.seed as number,
        backend: a.backend as BackendName,
        resume: a.resume === true,
        overwrite: a.overwrite === true,
        takeOverLock: a['take-over-lock'] === true,
        lrAfterGrowth: a['lr-after-growth'] as 'rewind' | 'continue',
        totalSteps: a['total-steps'] as number | undefined,
        keepCheckpoints: a['keep-checkpoints'] as number,
        quiet,
        progress,
        log: (line) => {
          if (!quiet) logLine(line);
        },
        onStep: (m) => {
          start ??= m.step;
          bar?.update(m.step + 1 - start, { loss: m.loss, lr: m.lr, mask: lowestMask(m) });
          if (quiet) return;
          if (m.evalLoss !== undefined)
            logLine(`train: step ${m.step + 1}: eval loss ${m.evalLoss.toFixed(4)} (train loss ${m.loss.toFixed(4)})`);
          if (saveEvery > 0 && (m.step + 1) % saveEvery === 0)
            logLine(`train: step ${m.step + 1}: saving checkpoint-${String(m.step + 1).padStart(6, '0')}`);
        },
      },
      {
        engine: a.engine as Engine,
        nproc: a.nproc as number,
        fsdp: a.fsdp === true,
        tp: a.tp as number,
        shardedSave: a['sharded-save'] === true,
        activationCheckpointing: a['activation-checkpointing'] === true,
        precision: a.precision as 'auto' | 'f32' | 'bf16' | 'f64' | undefined,
        nnodes: a.nnodes as number,
        nodeRank: a['node-rank'] as number,
        masterAddr: a['master-addr'] as string | undefined,
        masterPort: a['master-port'] as number,
        maxRestarts: a['max-restarts'] as number,
      },
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
