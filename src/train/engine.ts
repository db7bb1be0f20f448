/**
 * `flm-grow train --engine tfjs|torch|auto`: the same run on flm-grow's tfjs trainer or on the
 * torch engine (python/flm_grow_torch/train.py, same flags and results, step for step).
 * auto: torch when a Python with torch and a CUDA GPU is found, or when the tfjs backend would
 * not hold the model (estimateTrainMemory); tfjs otherwise.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TrainError } from '../errors.ts';
import { findTorchPython, requireTorchPython, runTorchModule } from '../torch-engine.ts';
import { loadTokenizer } from '../tokenizer.ts';
import { estimateTrainMemory, WASM_HEAP_LIMIT } from './memory.ts';
import { readConfigFile } from '../config.ts';
import { tokenDtypeForPath } from '../util/token-files.ts';
import { train, trainArgs, type TrainOptions, type TrainResult } from './trainer.ts';
import { checkRunFolder, clearRun } from './checkpointing.ts';
import { camelKey, TRAIN_OPTIONS, trainDefault } from './options.ts';
import { checkDataFile, dataFiles, parseDataMix, TokenDataset } from './data.ts';
import { corpusTokens, isTextCorpus } from './corpus.ts';
import { LOCK_FILE, LOCK_HELD_ENV, withRunLock } from '../util/run-lock.ts';
import { CheckpointFolder } from '../checkpoint-folder.ts';

export const ENGINES = ['tfjs', 'torch', 'auto'] as const;
export type Engine = (typeof ENGINES)[number];

export interface EngineOptions {
  engine?: Engine;
  /** Processes for the torch engine (one per GPU, or CPU processes with gloo). */
  nproc?: number;
  /** torch engine: FullyShardedDataParallel instead of DDP (CUDA only; the engine refuses it on CPU). */
  fsdp?: boolean;
  /** For 'auto': true when the tfjs trainer would not fit (see estimateTrainMemory). */
  tfjsTooLarge?: boolean;
}

export function resolveEngine(e: EngineOptions): 'tfjs' | 'torch' {
  const engine = e.engine ?? 'tfjs';
  if (engine !== 'auto') return engine;
  const t = findTorchPython();
  return t !== undefined && (t.cuda || (e.nproc ?? trainDefault('nproc')) > 1 || e.fsdp === true || e.tfjsTooLarge === true)
    ? 'torch'
    : 'tfjs';
}

/** Train on the chosen engine; the result has the same shape either way. */
export async function trainWithEngine(o: TrainOptions, e: EngineOptions = {}): Promise<TrainResult> {
  // either engine: bad options and an occupied run folder fail before anything is written
  trainArgs(o);
  for (const f of dataFiles(o.data)) checkDataFile(f);
  // one writer per run folder: taken before the folder is judged or cleared (--overwrite), so a
  // second job never deletes or interleaves with the checkpoints of a running one
  return withRunLock(o.out, { takeOver: o.takeOverLock, log: o.log }, () => trainLocked(o, e));
}

async function trainLocked(o: TrainOptions, e: EngineOptions): Promise<TrainResult> {
  checkRunFolder(o.out, o);
  // a JSONL corpus: tokenized once (streamed, cached) into the token file both engines read
  if (isTextCorpus(o.data)) o = { ...o, data: await corpusTokenFile(o.data, o.checkpoint, o.log) };
  if (e.engine === 'auto' && e.tfjsTooLarge === undefined && existsSync(join(o.checkpoint, 'config.json'))) {
    const est = estimateTrainMemory(
      readConfigFile(join(o.checkpoint, 'config.json')),
      o.batchSize ?? trainDefault('batch-size'),
      o.seqLen ?? trainDefault('seq-len'),
    );
    e = { ...e, tfjsTooLarge: est.total > 0.9 * WASM_HEAP_LIMIT };
  }
  if (resolveEngine(e) === 'tfjs') {
    if ((e.nproc ?? trainDefault('nproc')) > 1)
      throw new TrainError('BadArgs', '--nproc needs --engine torch (the tfjs trainer runs in one process)');
    if (e.fsdp === true) throw new TrainError('BadArgs', '--fsdp needs --engine torch (the tfjs trainer does not shard)');
    return train(o);
  }
  return trainTorch(o, e.nproc ?? trainDefault('nproc'), e.fsdp === true);
}

/** The cached token file of a JSONL corpus for this checkpoint's tokenizer (train/corpus.ts). */
export async function corpusTokenFile(corpus: string, checkpoint: string, log?: (line: string) => void): Promise<string> {
  const tokFile = join(checkpoint, 'tokenizer.json');
  const eos = readConfigFile(join(checkpoint, 'config.json')).raw.eos_token_id;
  const c = await corpusTokens(corpus, loadTokenizer(checkpoint), {
    tokenizerFile: existsSync(tokFile) ? tokFile : undefined,
    eos: typeof eos === 'number' ? eos : Array.isArray(eos) && typeof eos[0] === 'number' ? eos[0] : undefined,
    log,
  });
  if (c.cached) log?.(`train: ${corpus}: the cached tokens ${c.path} (${c.documents} documents, ${c.tokens} tokens)`);
  return c.path;
}

/**
 * Text with the checkpoint's own tokenizer.json: tokenized here (the torch engine reads bytes or
 * token files) into <out>/.data-tokens.u32, the same tokens the tfjs trainer would make.
 */
function torchData(o: TrainOptions): string {
  if (tokenDtypeForPath(o.data) !== undefined || !existsSync(join(o.checkpoint, 'tokenizer.json'))) return o.data;
  const tok = loadTokenizer(o.checkpoint);
  const ids = TokenDataset.fromFile(o.data, { tokenizer: tok, evalFraction: 0 }).tokens;
  mkdirSync(o.out, { recursive: true });
  const path = join(o.out, '.data-tokens.u32');
  writeFileSync(path, new Uint8Array(ids.buffer));
  return path;
}

/**
 * The torch trainer's argv (python -m flm_grow_torch.train ...) for these options: every declared
 * option the torch trainer takes (train_options.json), by its flag.
 */
export function torchTrainArgs(o: TrainOptions, fsdp = false): string[] {
  const args: string[] = [o.checkpoint, '--data', torchData(o), '--out', o.out];
  const values: Record<string, unknown> = { ...(o as unknown as Record<string, unknown>), fsdp };
  for (const opt of TRAIN_OPTIONS) {
    if (opt.torch === false || !opt.engines.includes('torch')) continue;
    const v = values[camelKey(opt.flag)];
    if (v === undefined || v === false) continue;
    args.push(`--${opt.flag}`, ...(v === true ? [] : [String(v)]));
  }
  if (o.stage !== undefined) args.push('--stage', String(o.stage));
  if (o.quiet === true) args.push('--quiet');
  return args;
}

async function trainTorch(o: TrainOptions, nproc: number, fsdp: boolean): Promise<TrainResult> {
  requireTorchPython();
  // python/flm_grow_torch/data.py reads a mix (TokenDataset(spec)), but train.py still hashes and
  // type-checks --data as one file
  if (parseDataMix(o.data) !== undefined)
    throw new TrainError(
      'BadArgs',
      `--data ${o.data}: a data mix runs on --engine tfjs for now (the torch trainer takes one data file)`,
    );
  // the starting checkpoint's manifest is checked here as the tfjs trainer checks it (a
  // hand-edited field: one line naming it, exit 2); the engine checks it again, and a resume's
  // newest save (which it picks), itself
  const ck = await CheckpointFolder.open(o.checkpoint);
  try {
    void ck.manifest;
  } finally {
    await ck.close();
  }
  if (o.overwrite === true) clearRun(o.out);
  const args = torchTrainArgs(o, fsdp);
  const r = await runTorchModule('flm_grow_torch.train', args, {
    nproc,
    capture: o.quiet === true,
    env: { [LOCK_HELD_ENV]: join(o.out, LOCK_FILE) },
  });
  if (r.signal !== undefined)
    throw new TrainError(
      'TorchEngineFailed',
      `torch engine was killed by ${r.signal}` +
        (r.signal === 'SIGKILL'
          ? ' (on Linux, the out-of-memory killer: a training step holds about 16 bytes per parameter plus activations; ' +
            'use a machine with more memory, or several GPUs with --nproc N --fsdp)'
          : ''),
    );
  const last = r.stderr.trim().split('\n').pop() ?? '';
  // the engine's refusals of bad input (exit 2, one line "train: ...") are passed on as they are
  if (r.code === 2 && last.startsWith('train: ')) throw new TrainError('TorchEngineRefused', last.slice('train: '.length));
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
