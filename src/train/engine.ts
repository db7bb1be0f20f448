/**
 * `flm-grow train --engine tfjs|torch|auto`: the same run on flm-grow's tfjs trainer or on the
 * torch engine (python/flm_grow_torch/train.py, same flags and results, step for step).
 * auto: torch when a Python with torch and a CUDA GPU is found, or when the tfjs backend would
 * not hold the model (estimateTrainMemory); tfjs otherwise.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TrainError } from '../errors.ts';
import { findTorchPython, requireTorchPython, runTorchModule } from '../torch-engine.ts';
import { loadTokenizer } from '../tokenizer.ts';
import { estimateTrainMemory, WASM_HEAP_LIMIT } from './memory.ts';
import { readConfigFile, type ModelConfig } from '../config.ts';
import { tokenDtypeForPath } from '../util/token-files.ts';
import { train, trainArgs, type TrainOptions, type TrainResult } from './trainer.ts';
import { checkRunFolder, clearRun } from './checkpointing.ts';

export const ENGINES = ['tfjs', 'torch', 'auto'] as const;
export type Engine = (typeof ENGINES)[number];

export interface EngineOptions {
  engine?: Engine;
  /** Processes for the torch engine (one per GPU, or CPU processes with gloo). */
  nproc?: number;
  /** For 'auto': true when the tfjs trainer would not fit (see estimateTrainMemory). */
  tfjsTooLarge?: boolean;
}

export function resolveEngine(e: EngineOptions): 'tfjs' | 'torch' {
  const engine = e.engine ?? 'tfjs';
  if (engine !== 'auto') return engine;
  const t = findTorchPython();
  return t !== undefined && (t.cuda || (e.nproc ?? 1) > 1 || e.tfjsTooLarge === true) ? 'torch' : 'tfjs';
}

/**
 * What the torch engine's model (python/flm_grow_torch/model.py) does not cover yet: the
 * features of the other families (issue 13). Empty: it can train this config.
 */
export function torchEngineGaps(c: ModelConfig): string[] {
  const gaps: string[] = [];
  if (c.tieWordEmbeddings) gaps.push('tie_word_embeddings');
  if (c.qkvBias) gaps.push('q/k/v biases (qwen2)');
  if (c.qkNorm) gaps.push('q_norm/k_norm (qwen3)');
  if (c.rope.type !== 'default') gaps.push(`RoPE scaling "${c.rope.type}"`);
  if (c.slidingWindow !== undefined) gaps.push('sliding_window');
  return gaps;
}

/** Train on the chosen engine; the result has the same shape either way. */
export async function trainWithEngine(o: TrainOptions, e: EngineOptions = {}): Promise<TrainResult> {
  // either engine: bad options and an occupied run folder fail before anything is written
  trainArgs(o);
  checkRunFolder(o.out, o);
  const cfgPath = join(o.checkpoint, 'config.json');
  const gaps = existsSync(cfgPath) ? torchEngineGaps(readConfigFile(cfgPath)) : [];
  if (gaps.length > 0) {
    if (e.engine === 'torch')
      throw new TrainError(
        'BadArgs',
        `--engine torch does not cover this checkpoint yet (${gaps.join(', ')}); use --engine tfjs`,
      );
    if (e.engine === 'auto') e = { ...e, engine: 'tfjs' };
  }
  if (e.engine === 'auto' && e.tfjsTooLarge === undefined && existsSync(join(o.checkpoint, 'config.json'))) {
    const est = estimateTrainMemory(readConfigFile(join(o.checkpoint, 'config.json')), o.batchSize ?? 8, o.seqLen ?? 64);
    e = { ...e, tfjsTooLarge: est.total > 0.9 * WASM_HEAP_LIMIT };
  }
  if (resolveEngine(e) === 'tfjs') {
    if ((e.nproc ?? 1) > 1)
      throw new TrainError('BadArgs', '--nproc needs --engine torch (the tfjs trainer runs in one process)');
    return train(o);
  }
  return trainTorch(o, e.nproc ?? 1);
}

/**
 * Text with the checkpoint's own tokenizer.json: tokenized here (the torch engine reads bytes or
 * token files) into <out>/.data-tokens.u32, the same tokens the tfjs trainer would make.
 */
function torchData(o: TrainOptions): string {
  if (tokenDtypeForPath(o.data) !== undefined || !existsSync(join(o.checkpoint, 'tokenizer.json'))) return o.data;
  const tok = loadTokenizer(o.checkpoint);
  const ids = Uint32Array.from(tok.encode(readFileSync(o.data, 'utf8')));
  mkdirSync(o.out, { recursive: true });
  const path = join(o.out, '.data-tokens.u32');
  writeFileSync(path, new Uint8Array(ids.buffer));
  return path;
}

/** The torch trainer's argv (python -m flm_grow_torch.train ...) for these options. */
export function torchTrainArgs(o: TrainOptions): string[] {
  const args: string[] = [o.checkpoint, '--data', torchData(o), '--out', o.out, '--steps', String(o.steps)];
  const flag = (name: string, v: number | string | undefined) => {
    if (v !== undefined) args.push(`--${name}`, String(v));
  };
  flag('batch-size', o.batchSize);
  flag('seq-len', o.seqLen);
  flag('lr', o.lr);
  flag('min-lr', o.minLr);
  flag('warmup-steps', o.warmupSteps);
  flag('schedule', o.schedule);
  flag('weight-decay', o.weightDecay);
  flag('clip-grad', o.clipGrad);
  flag('beta1', o.beta1);
  flag('beta2', o.beta2);
  flag('save-every', o.saveEvery);
  flag('eval-every', o.evalEvery);
  flag('eval-batches', o.evalBatches);
  flag('eval-fraction', o.evalFraction);
  flag('seed', o.seed);
  flag('lr-after-growth', o.lrAfterGrowth);
  flag('total-steps', o.totalSteps);
  flag('keep-checkpoints', o.keepCheckpoints);
  flag('stage', o.stage);
  if (o.resume === true) args.push('--resume');
  if (o.quiet === true) args.push('--quiet');
  return args;
}

async function trainTorch(o: TrainOptions, nproc: number): Promise<TrainResult> {
  requireTorchPython();
  if (o.overwrite === true) clearRun(o.out);
  const args = torchTrainArgs(o);
  const r = await runTorchModule('flm_grow_torch.train', args, { nproc, capture: o.quiet === true });
  if (r.code !== 0 || r.result === undefined) {
    const tail = r.stderr.trim().split('\n').slice(-3).join('\n');
    throw new TrainError('TorchEngineFailed', `torch engine exited with code ${r.code}${tail !== '' ? `:\n${tail}` : ''}`);
  }
  const x = r.result as {
    checkpoint: string;
    startStep: number;
    step: number;
    stageStep: number;
    losses: number[];
    evalLoss: number | null;
    masksAllOne: boolean;
    tokensPerSec: number;
    parameters: number;
    interrupted: boolean;
  };
  return {
    checkpoint: x.checkpoint,
    startStep: x.startStep,
    step: x.step,
    stageStep: x.stageStep,
    losses: x.losses,
    firstLoss: x.losses[0] ?? NaN,
    lastLoss: x.losses[x.losses.length - 1] ?? NaN,
    evalLoss: x.evalLoss ?? undefined,
    masksAllOne: x.masksAllOne,
    tokensPerSec: x.tokensPerSec,
    parameters: x.parameters,
    interrupted: x.interrupted,
  };
}
