/**
 * `flm-grow train --engine tfjs|torch|auto`: the same run on flm-grow's tfjs trainer or on the
 * torch engine (python/flm_grow_torch/train.py, same flags and results, step for step).
 * auto: torch when a Python with torch and a CUDA GPU is found, or when the tfjs backend would
 * not hold the model (estimateTrainMemory); tfjs otherwise.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TrainError } from '../util/errors.ts';
import {
  findTorchPython,
  requireTorchPython,
  runTorchModule,
  usesTorchrun,
  type TorchLaunch,
  type TorchRunResult,
} from '../engines/torch-process.ts';
import { loadTokenizer } from '../checkpoint/tokenizer.ts';
import { estimateTrainMemory, WASM_HEAP_LIMIT } from './memory.ts';
import { readConfigFile } from '../spec/config.ts';
import { tokenDtypeForPath } from '../util/token-files.ts';
import { train, trainArgs, type TrainOptions, type TrainResult } from './trainer.ts';
import { checkRunFolder, clearRun, isCompleteCheckpoint, latestCheckpoint } from './checkpointing.ts';
import { camelKey, TRAIN_OPTIONS, trainDefault } from './options.ts';
import { checkDataFile, dataFiles, parseDataMix, TokenDataset } from './data.ts';
import { corpusShards, corpusTokens, DEFAULT_TEXT_FIELD, isTextCorpus } from './corpus.ts';
import { LOCK_FILE, LOCK_HELD_ENV, withRunLock } from '../util/run-lock.ts';
import { CheckpointFolder } from '../checkpoint/checkpoint-folder.ts';

export const ENGINES = ['tfjs', 'torch', 'auto'] as const;
export type Engine = (typeof ENGINES)[number];

export interface EngineOptions extends TorchLaunch {
  engine?: Engine;
  /** torch engine: FSDP2 (fully_shard) instead of DDP, on CPU (gloo) or GPUs (nccl). */
  fsdp?: boolean;
  /** torch engine: tensor parallelism of this degree (DTensor); with fsdp a 2-D mesh. */
  tp?: number;
  /** torch engine: checkpoints as torch.distributed.checkpoint shards, each rank writing its own parts. */
  shardedSave?: boolean;
  /** torch engine, with shardedSave: each checkpoint's shards written in the background (DCP async_save). */
  asyncSave?: boolean;
  /** torch engine: recompute each decoder layer in the backward pass instead of keeping its activations. */
  activationCheckpointing?: boolean;
  /** torch engine: auto (bf16 autocast on GPU, f32 on CPU), f32, bf16 (autocast, CPU or GPU), f64. */
  precision?: 'auto' | 'f32' | 'bf16' | 'f64';
  /** For 'auto': true when the tfjs trainer would not fit (see estimateTrainMemory). */
  tfjsTooLarge?: boolean;
}

export function resolveEngine(e: EngineOptions): 'tfjs' | 'torch' {
  const engine = e.engine ?? 'tfjs';
  if (engine !== 'auto') return engine;
  const t = findTorchPython();
  return t !== undefined &&
    (t.cuda || usesTorchrun(e) || e.fsdp === true || (e.tp ?? trainDefault('tp')) > 1 || e.tfjsTooLarge === true)
    ? 'torch'
    : 'tfjs';
}

/** Train on the chosen engine; the result has the same shape either way. */
export async function trainWithEngine(o: TrainOptions, e: EngineOptions = {}): Promise<TrainResult> {
  // either engine: bad options and an occupied run folder fail before anything is written
  trainArgs(o);
  // a text corpus (JSONL, Parquet; a file, folder or glob of shards) is streamed: each shard is
  // checked to be a readable file here, its contents when it is tokenized
  if (isTextCorpus(o.data)) corpusShards(o.data);
  else {
    if ((o.textField ?? DEFAULT_TEXT_FIELD) !== DEFAULT_TEXT_FIELD)
      throw new TrainError('BadArgs', `--text-field names a field of a JSONL or Parquet corpus; ${o.data} is not one`);
    for (const f of dataFiles(o.data)) checkDataFile(f);
  }
  checkLaunch(e);
  // nodes other than node 0 of a multi-node job: node 0's flm-grow holds the run folder, judges and
  // clears it; the others only start their workers (which join node 0's at the rendezvous)
  if ((e.nodeRank ?? trainDefault('node-rank')) > 0) return trainTorch(o, e);
  // one writer per run folder: taken before the folder is judged or cleared (--overwrite), so a
  // second job never deletes or interleaves with the checkpoints of a running one
  return withRunLock(o.out, { takeOver: o.takeOverLock, log: o.log }, () => trainLocked(o, e));
}

/** The launch options on their own: ranges, and the combinations torchrun cannot run. */
export function checkLaunch(e: EngineOptions): void {
  const int = (name: string, v: number | undefined, min: number) => {
    if (v !== undefined && !(Number.isInteger(v) && v >= min))
      throw new TrainError('BadArgs', `--${name} must be an integer >= ${min} (got ${v})`);
  };
  int('nproc', e.nproc, 1);
  int('nnodes', e.nnodes, 1);
  int('node-rank', e.nodeRank, 0);
  int('max-restarts', e.maxRestarts, 0);
  int('tp', e.tp, 1);
  if (e.masterPort !== undefined && !(Number.isInteger(e.masterPort) && e.masterPort >= 1 && e.masterPort <= 65535))
    throw new TrainError('BadArgs', `--master-port must be a port number 1..65535 (got ${e.masterPort})`);
  const nnodes = e.nnodes ?? trainDefault('nnodes');
  if ((e.nodeRank ?? trainDefault('node-rank')) >= nnodes)
    throw new TrainError('BadArgs', `--node-rank ${e.nodeRank} is outside 0..${nnodes - 1} (--nnodes ${nnodes})`);
  if (nnodes > 1 && (e.masterAddr === undefined || e.masterAddr === ''))
    throw new TrainError('BadArgs', `--nnodes ${nnodes} needs --master-addr (the address of node 0, which every node can reach)`);
  if (e.asyncSave === true && e.shardedSave !== true)
    throw new TrainError(
      'BadArgs',
      '--async-save needs --sharded-save (the background save writes torch.distributed.checkpoint shards)',
    );
}

async function trainLocked(o: TrainOptions, e: EngineOptions): Promise<TrainResult> {
  checkRunFolder(o.out, o);
  // a JSONL or Parquet corpus: tokenized once (streamed, cached) into the token file both engines read
  if (isTextCorpus(o.data)) o = { ...o, data: await corpusTokenFile(o.data, o.checkpoint, o.log, o.textField) };
  if (e.engine === 'auto' && e.tfjsTooLarge === undefined && existsSync(join(o.checkpoint, 'config.json'))) {
    const est = estimateTrainMemory(
      readConfigFile(join(o.checkpoint, 'config.json')),
      o.batchSize ?? trainDefault('batch-size'),
      o.seqLen ?? trainDefault('seq-len'),
    );
    e = { ...e, tfjsTooLarge: est.total > 0.9 * WASM_HEAP_LIMIT };
  }
  if (resolveEngine(e) === 'tfjs') {
    if (usesTorchrun(e))
      throw new TrainError(
        'BadArgs',
        '--nproc, --nnodes and --max-restarts need --engine torch (the tfjs trainer runs in one process)',
      );
    if (e.fsdp === true) throw new TrainError('BadArgs', '--fsdp needs --engine torch (the tfjs trainer does not shard)');
    if ((e.tp ?? trainDefault('tp')) > 1)
      throw new TrainError('BadArgs', '--tp needs --engine torch (the tfjs trainer does not shard)');
    if (e.shardedSave === true || e.asyncSave === true)
      throw new TrainError(
        'BadArgs',
        '--sharded-save and --async-save need --engine torch (the tfjs trainer saves whole checkpoints)',
      );
    if (e.activationCheckpointing === true || e.precision !== undefined)
      throw new TrainError('BadArgs', '--activation-checkpointing and --precision need --engine torch');
    return train(o);
  }
  return trainTorch(o, e);
}

/** The cached token file of a JSONL or Parquet corpus for this checkpoint's tokenizer (train/corpus.ts). */
export async function corpusTokenFile(
  corpus: string,
  checkpoint: string,
  log?: (line: string) => void,
  textField?: string,
): Promise<string> {
  const tokFile = join(checkpoint, 'tokenizer.json');
  const eos = readConfigFile(join(checkpoint, 'config.json')).raw.eos_token_id;
  const c = await corpusTokens(corpus, loadTokenizer(checkpoint), {
    tokenizerFile: existsSync(tokFile) ? tokFile : undefined,
    textField,
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
  // a mix is of token files, which the torch trainer reads itself (data.py MixedDataset)
  if (
    parseDataMix(o.data) !== undefined ||
    tokenDtypeForPath(o.data) !== undefined ||
    !existsSync(join(o.checkpoint, 'tokenizer.json'))
  )
    return o.data;
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
export function torchTrainArgs(o: TrainOptions, e: EngineOptions = {}): string[] {
  const args: string[] = [o.checkpoint, '--data', torchData(o), '--out', o.out];
  const values: Record<string, unknown> = { ...(o as unknown as Record<string, unknown>), ...(e as Record<string, unknown>) };
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

async function trainTorch(o: TrainOptions, e: EngineOptions): Promise<TrainResult> {
  requireTorchPython();
  // the starting checkpoint's manifest is checked here as the tfjs trainer checks it (a
  // hand-edited field: one line naming it, exit 2); the engine checks it again, and a resume's
  // newest save (which it picks), itself
  const ck = await CheckpointFolder.open(o.checkpoint);
  try {
    void ck.manifest;
  } finally {
    await ck.close();
  }
  if (o.overwrite === true && (e.nodeRank ?? trainDefault('node-rank')) === 0) clearRun(o.out);
  const args = torchTrainArgs(o, e);
  if ((e.maxRestarts ?? trainDefault('max-restarts')) > 0)
    o.log?.(
      `train: torchrun restarts every worker up to ${e.maxRestarts} time(s) when one fails (--max-restarts), ` +
        'each time from the newest complete checkpoint in --out',
    );
  const r = await runTorchModule('flm_grow_torch.train', args, {
    launch: e,
    capture: o.quiet === true,
    // flm-grow holds the run folder's lock (node 0's flm-grow for a multi-node job): the workers do not take it
    env: { [LOCK_HELD_ENV]: join(o.out, LOCK_FILE) },
  });
  const last = r.stderr.trim().split('\n').pop() ?? '';
  // the engine's refusals of bad input (exit 2, one line "train: ...") are passed on as they are
  if (r.workerFailure === undefined && r.signal === undefined && r.code === 2 && last.startsWith('train: '))
    throw new TrainError('TorchEngineRefused', last.slice('train: '.length));
  // A rank killed by a signal after the run printed its result is a teardown fault (gloo's
  // threads at process exit: SIGABRT "terminate called without an active exception", seen under
  // load): the result is printed only once every rank has trained and saved (Trainer.close's
  // all_gather), so the run stands, provided its last checkpoint is complete; it is said.
  if (r.result !== undefined && r.workerFailure?.signal !== undefined && r.signal === undefined) {
    const ck = (r.result as { checkpoint?: string }).checkpoint;
    if (ck !== undefined && (await isCompleteCheckpoint(ck)))
      o.log?.(
        `train: warning: torch engine rank ${r.workerFailure.rank} was killed by ${r.workerFailure.signal} while exiting, ` +
          `after the run had finished and saved ${ck} (complete); the result stands`,
      );
    else throw new TrainError('TorchEngineFailed', await failureMessage(o, r));
  } else if (r.workerFailure !== undefined || r.signal !== undefined || r.code !== 0 || r.result === undefined)
    throw new TrainError('TorchEngineFailed', await failureMessage(o, r));
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

/**
 * One message for a failed torch run: who died and how (torchrun's report, or the single process's
 * signal / exit code), the run's newest complete checkpoint, and the command that resumes.
 */
async function failureMessage(o: TrainOptions, r: TorchRunResult): Promise<string> {
  const f = r.workerFailure;
  // a worker that refused its input or failed on its own says why in one `train: ` line (the
  // survivors' `a collective failed` lines only echo another rank's death)
  const said = r.stderr.split('\n').find((l) => l.startsWith('train: ') && !l.includes('a collective failed'));
  let what: string;
  if (f !== undefined && f.signal === undefined && said !== undefined) {
    what = `${said.slice('train: '.length)} (rank ${f.rank})`;
    if (!existsSync(join(o.out, 'metrics.jsonl'))) return what;
  } else if (f !== undefined) {
    const how =
      f.signal !== undefined
        ? `was killed by ${f.signal} (signal ${-f.exitCode})` +
          (f.signal !== 'SIGKILL'
            ? ''
            : f.oomKiller === true
              ? ': the kernel log shows the out-of-memory killer ended it'
              : ` (on Linux the out-of-memory killer or a lost node; ${f.oomKiller === false ? 'the kernel log does not name this pid' : 'dmesg was not readable to confirm'})`)
        : `exited with code ${f.exitCode}`;
    what =
      `torch engine: rank ${f.rank} (local rank ${f.localRank}, pid ${f.pid}) ${how}; torchrun stopped the other ranks` +
      (f.maxRestarts > 0 ? ` after ${f.maxRestarts} restart(s) (--max-restarts ${f.maxRestarts})` : '');
  } else if (r.signal !== undefined) {
    what =
      `torch engine was killed by ${r.signal}` +
      (r.signal === 'SIGKILL'
        ? ' (on Linux, the out-of-memory killer: a training step holds about 16 bytes per parameter plus activations; ' +
          'use a machine with more memory, or several processes with --nproc N --fsdp)'
        : '');
  } else {
    const tail = r.stderr
      .trim()
      .split('\n')
      .filter((l) => !l.startsWith('FLM_GROW_'))
      .slice(-3)
      .join('\n');
    what = `torch engine exited with code ${r.code}${tail !== '' ? `:\n${tail}` : ''}`;
    // a bad option or input the engine refused: nothing was trained, no resume to offer
    if (f === undefined && r.code !== 0 && !existsSync(join(o.out, 'metrics.jsonl'))) return what;
  }
  const last = existsSync(o.out) ? await latestCheckpoint(o.out) : undefined;
  return (
    `${what}\n` +
    `last complete checkpoint: ${last ?? `none in ${o.out} (the run starts again from ${o.checkpoint})`}\n` +
    `resume with: ${resumeCommand()}`
  );
}

/** This command line with --resume (and without --overwrite, which would delete the run). */
function resumeCommand(): string {
  const argv = process.argv.slice(2);
  if (argv[0] !== 'train') return `flm-grow ${argv.join(' ')} (a pipeline resumes its train stage from the run folder)`;
  const kept = argv.filter((a) => a !== '--overwrite' && a !== '--resume');
  return `flm-grow ${[...kept, '--resume'].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(' ')}`;
}
