/**
 * Continued pre-training of a (grown) checkpoint: AdamW on the masked model of src/model/llama.ts
 * (the one model implementation; tfjs autodiff), masks set from the manifest's annealing schedule
 * before every step (never trained), deterministic batches (a pure function of seed and global
 * step), checkpoints with weights (F32), masks and optimizer state, JSON-lines metrics.
 *
 * Steps: `step` is the global optimizer step (carried across growth through the optimizer state),
 * `stageStep` = step − stageStart counts from the last growth and drives the mask schedule.
 * Update k (1-based) trains on batch k − 1 and its metrics record has `step: k` (updates done,
 * the HF Trainer's global_step): the loss of that batch before the update, the lr it used.
 */
import * as tf from '@tensorflow/tfjs';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { expectedTensors, headRole, tensorName } from '../spec/arch.ts';
import type { ModelConfig } from '../spec/config.ts';
import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import { CheckpointFolder } from '../checkpoint/checkpoint-folder.ts';
import { initBackend, type BackendName } from '../engines/tfjs-backend.ts';
import { TrainError } from '../util/errors.ts';
import { isInside } from '../checkpoint/paths.ts';
import { MANIFEST_FORMAT, sourceIdentity, TOOL_VERSION, type GrowManifest, type Manifest } from '../checkpoint/manifest.ts';
import { sha256Bytes, sha256File } from '../util/hash.ts';
import {
  annealingEndStep,
  groupsBelowOne,
  maskValuesAt,
  MASKS_FILE,
  type MaskSchedule,
  type MaskSet,
} from '../checkpoint/masks.ts';
import { forward, LAYER_FIELDS, makeRope, type LayerWeights, type LlamaWeights, type Rope } from '../model/llama.ts';
import { noProgress, startProgress, type ProgressFactory } from '../util/progress.ts';
import {
  checkDataFile,
  checkMaskedIds,
  checkVocab,
  dataFiles,
  MixedDataset,
  openTrainingData,
  type Batch,
  type TrainingData,
} from './data.ts';
import { tokenDtypeForPath } from '../util/token-files.ts';
import { lrAt, validateLrSchedule, type LrSchedule, type LrScheduleKind } from './lr-schedule.ts';
import { MetricsLog, type StepMetrics } from './metrics.ts';
import { estimateTrainMemory, WASM_HEAP_LIMIT } from './memory.ts';
import { bytesLabel } from '../util/format.ts';
import { AdamW } from './adamw.ts';
import { disposeMaskTensors, MASKED_ID_BIAS, MaskState, trainingMaskTensors, type MaskTensors } from '../model/mask-tensors.ts';
import { withRunLock } from '../util/run-lock.ts';
import { checkTrainOptionValues, trainDefault, trainOption } from './options.ts';
import {
  checkpointDirName,
  checkRunFolder,
  clearRun,
  continuesRun,
  latestCheckpoint,
  pruneCheckpoints,
  RUN_METRICS_FILE,
  saveCheckpoint,
} from './checkpointing.ts';

export const METRICS_FILE = RUN_METRICS_FILE;

export interface TrainOptions {
  checkpoint: string;
  data: string;
  out: string;
  steps: number;
  batchSize?: number;
  seqLen?: number;
  lr?: number;
  minLr?: number;
  warmupSteps?: number;
  schedule?: LrScheduleKind;
  weightDecay?: number;
  clipGrad?: number;
  beta1?: number;
  beta2?: number;
  /** Save every N steps (0: only at the end). */
  saveEvery?: number;
  /** Eval loss on held-out batches every N steps (0: only at the end, if there is an eval split). */
  evalEvery?: number;
  evalBatches?: number;
  evalFraction?: number;
  seed?: number;
  backend?: BackendName;
  /**
   * Continue from the newest complete checkpoint in `out` if there is one; `steps` then counts
   * from the step the run started at (a 30-step run resumed with steps 40 continues to 40).
   */
  resume?: boolean;
  /** Replace the run `out` holds (its checkpoint folders and metrics); without it or `resume` such a folder is refused. */
  overwrite?: boolean;
  /** Take over the run folder's lock held by a job on another host (--take-over-lock). */
  takeOverLock?: boolean;
  /** rewind: warmup and decay restart at this run's first step; continue: one schedule from global step 0. */
  lrAfterGrowth?: 'rewind' | 'continue';
  /** Length of the 'continue' schedule in global steps (default: this run's last step). */
  totalSteps?: number;
  keepCheckpoints?: number;
  /** A JSONL or Parquet corpus: the field holding each document's text (default "text"). */
  textField?: string;
  stage?: string | number;
  quiet?: boolean;
  /** Where progress goes (commands/ passes terminal bars); none by default. */
  progress?: ProgressFactory;
  log?: (line: string) => void;
  /**
   * A plain log line (stepLine) every N steps and at the last, when no progress bar shows the
   * steps (stderr not a terminal: a batch job, `| tee`, CI), as the HF Trainer's logging_steps
   * and torchtitan's log_freq do; 0 or undefined: none. The torch engine prints the same line.
   */
  logEvery?: number;
  onStep?: (m: StepMetrics) => void;
  /**
   * Asked before every step with the steps this invocation has taken: true stops the run there,
   * as if killed (no final save; the result says `interrupted`).
   */
  shouldStop?: (stepsThisRun: number) => boolean;
}

export interface TrainResult {
  checkpoint: string;
  startStep: number;
  step: number;
  stageStep: number;
  losses: number[];
  firstLoss: number;
  lastLoss: number;
  evalLoss: number | undefined;
  masksAllOne: boolean;
  tokensPerSec: number;
  parameters: number;
  interrupted: boolean;
}

// ---- model state on tf variables -----------------------------------------------------------

let varCounter = 0;

export interface ModelState {
  cfg: ModelConfig;
  /** HF tensor name -> variable. */
  vars: Map<string, tf.Variable>;
  weights: LlamaWeights;
  dispose(): void;
}

export function modelStateFromArrays(cfg: ModelConfig, arrays: ReadonlyMap<string, Float32Array>): ModelState {
  const id = ++varCounter;
  const vars = new Map<string, tf.Variable>();
  for (const t of expectedTensors(cfg)) {
    const a = arrays.get(t.name);
    if (a === undefined) throw new TrainError('WeightMissing', `weights: "${t.name}" is missing`);
    vars.set(t.name, tf.variable(tf.tensor(a, t.shape, 'float32'), true, `flm${id}/${t.name}`));
  }
  const layers: LayerWeights[] = [];
  for (let i = 0; i < cfg.numLayers; i++) {
    const lw: Partial<LayerWeights> = {};
    for (const [field, role] of LAYER_FIELDS) lw[field] = vars.get(tensorName(role, i));
    layers.push(lw as LayerWeights);
  }
  const weights: LlamaWeights = {
    embed: vars.get(tensorName('embed')) as tf.Variable,
    finalNorm: vars.get(tensorName('final_norm')) as tf.Variable,
    lmHead: vars.get(tensorName(headRole(cfg))) as tf.Variable,
    layers, // tied: the embedding variable itself
  };
  return { cfg, vars, weights, dispose: () => tf.dispose([...vars.values()]) };
}

export async function readCheckpointArrays(ck: Checkpoint): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const t of expectedTensors(ck.config)) out.set(t.name, await ck.readFloat32(t.name));
  return out;
}

async function stateArrays(s: ModelState): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [n, v] of s.vars) out.set(n, (await v.data()) as Float32Array);
  return out;
}

// ---- loss ----------------------------------------------------------------------------------

/**
 * Mean cross-entropy of logits [B,T,V] against int32 targets [B,T]. With `live` ([V], 1 or 0),
 * positions whose target id is not live are left out of the mean: a new token (`vocab.new:
 * "tokens"`) whose mask is still 0 has softmax weight 0, so predicting it would cost ~1e30; it
 * joins the loss from the first step its mask is above 0 (step 1 of the default schedule).
 */
export function crossEntropy(logits: tf.Tensor3D, targets: tf.Tensor2D, live?: tf.Tensor1D): tf.Scalar {
  return tf.tidy(() => {
    const [B, T, V] = logits.shape;
    const flat = tf.reshape(targets, [B * T]) as tf.Tensor1D;
    const lp = tf.logSoftmax(tf.reshape(logits, [B * T, V]) as tf.Tensor2D);
    const oh = tf.oneHot(flat, V);
    if (live === undefined) return tf.neg(tf.div(tf.sum(tf.mul(lp, oh)), B * T)) as tf.Scalar;
    const w = tf.gather(live, flat);
    const perPos = tf.sum(tf.mul(lp, oh), 1);
    return tf.neg(tf.div(tf.sum(tf.mul(perPos, w)), tf.maximum(tf.sum(w), 1))) as tf.Scalar;
  });
}

/** 1 for ids that can be predicted under these masks (vocab mask above 0), 0 for the others. */
function liveIds(masks: MaskTensors): tf.Tensor1D {
  return tf.cast(tf.greater(masks.vocabBias, MASKED_ID_BIAS), 'float32') as tf.Tensor1D;
}

export function batchLoss(
  s: ModelState,
  batch: Batch,
  batchSize: number,
  seqLen: number,
  masks: MaskTensors | undefined,
  rope?: Rope,
): tf.Scalar {
  return tf.tidy(() => {
    const ids = tf.tensor2d(batch.inputs, [batchSize, seqLen], 'int32');
    const tg = tf.tensor2d(batch.targets, [batchSize, seqLen], 'int32');
    const { logits } = forward(s.cfg, s.weights, ids, { masks, rope, skipIdCheck: true });
    return crossEntropy(logits, tg, masks === undefined ? undefined : liveIds(masks));
  });
}

/**
 * Loss of a checkpoint on one batch, masks as stored beside it (the function the checkpoint
 * computes): used to show that growth preserves the loss.
 */
export async function checkpointLoss(dir: string, batch: Batch, batchSize: number, seqLen: number): Promise<number> {
  const ck = await CheckpointFolder.open(dir);
  let s: ModelState | undefined;
  let mt: MaskTensors | undefined;
  try {
    s = modelStateFromArrays(ck.config, await readCheckpointArrays(ck));
    const m = await ck.masks();
    mt = m === undefined ? undefined : trainingMaskTensors(m);
    const l = batchLoss(s, batch, batchSize, seqLen, mt);
    const v = (await l.data())[0];
    l.dispose();
    return v;
  } finally {
    if (mt !== undefined) disposeMaskTensors(mt);
    s?.dispose();
    await ck.close();
  }
}

function globalGradNorm(grads: tf.Tensor[]): number {
  return tf.tidy(() => Math.sqrt(tf.addN(grads.map((g) => tf.sum(tf.square(g)))).dataSync()[0]));
}

function maskSummary(values: Partial<Record<string, number>>): Record<string, number> | undefined {
  const e = Object.entries(values).filter((kv): kv is [string, number] => kv[1] !== undefined);
  return e.length === 0 ? undefined : Object.fromEntries(e);
}

// ---- the training run ----------------------------------------------------------------------

interface StartState {
  dir: string;
  resumed: boolean;
  step: number;
  stageStart: number;
  tokens: number;
  schedule: MaskSchedule[];
  /** Global step this run (first invocation, before any resume) started at. */
  runStart: number;
  targetStep: number;
  lrSchedule: LrSchedule;
  source: Manifest['source'];
  grownFrom: GrowManifest | undefined;
}

async function startState(o: TrainOptions, ck: CheckpointFolder, dir: string, resumed: boolean): Promise<StartState> {
  const m = ck.manifest;
  const lr = o.lr ?? trainDefault('lr');
  const base = {
    lr,
    minLr: o.minLr ?? lr / 10,
    warmupSteps: o.warmupSteps ?? trainDefault('warmup-steps'),
    schedule: o.schedule ?? (trainOption('schedule').default as LrScheduleKind),
  };
  if (resumed) {
    if (m?.kind !== 'train')
      throw new TrainError(
        'BadManifest',
        `${dir}: resuming needs the manifest of a training checkpoint, found ${m === undefined ? 'none' : `kind "${m.kind}"`}`,
      );
    const x = m.extra;
    const ls = x.lrSchedule as LrSchedule;
    validateLrSchedule(ls, `${dir}: manifest extra.lrSchedule`);
    // the run's target is its first step + steps (older manifests: the stored target)
    const runStart = typeof x.runStartStep === 'number' ? x.runStartStep : undefined;
    return {
      dir,
      resumed,
      step: x.step,
      stageStart: x.stageStart,
      tokens: x.tokens,
      schedule: m.masks?.schedule ?? [],
      runStart: runStart ?? x.targetStep - o.steps,
      targetStep: runStart !== undefined ? runStart + o.steps : x.targetStep,
      lrSchedule: ls,
      source: m.source,
      grownFrom: undefined,
    };
  }
  let step = 0,
    tokens = 0,
    stageStart = 0;
  if (m?.kind === 'train') {
    ({ step, tokens, stageStart } = m.extra);
  } else {
    const saved = await ck.optimizer(new Map());
    if (saved !== undefined) {
      step = saved.meta.step;
      tokens = saved.meta.tokens;
      stageStart = step; // a grown checkpoint: its stage starts here
    }
  }
  const targetStep = step + o.steps;
  const total = o.lrAfterGrowth === 'continue' ? Math.max(o.totalSteps ?? targetStep, targetStep) : o.steps;
  // a warmup longer than the run would never reach the peak lr
  const lrSchedule: LrSchedule = {
    ...base,
    warmupSteps: Math.min(base.warmupSteps, total),
    totalSteps: total,
    startStep: o.lrAfterGrowth === 'continue' ? 0 : step,
  };
  validateLrSchedule(lrSchedule, 'train options');
  return {
    dir,
    resumed,
    step,
    stageStart,
    tokens,
    schedule: m?.masks?.schedule ?? [],
    runStart: step,
    targetStep,
    lrSchedule,
    source: m?.kind === 'train' && m.source !== undefined ? m.source : await sourceIdentity(ck, dir),
    grownFrom: m?.kind === 'grow' ? m : undefined,
  };
}

interface TrainArgs {
  B: number;
  T: number;
  seed: number;
  clip: number;
}

/** tfjs resources a run holds, released whatever happens. */
interface Held {
  state?: ModelState;
  adam?: AdamW;
  rope?: Rope;
  masks?: MaskState;
  metrics?: MetricsLog;
}

/** One training invocation: what it trains on, what it holds, and how far it got. */
interface Run extends TrainArgs {
  o: TrainOptions;
  /** The checkpoint this invocation started from. */
  dir: string;
  cfg: ModelConfig;
  start: StartState;
  ds: TrainingData;
  tokenizerName: string;
  dataSha: string;
  state: ModelState;
  adam: AdamW;
  rope: Rope;
  masks: MaskState;
  metrics: MetricsLog;
  log: (line: string) => void;
  step: number;
  tokens: number;
  trainedTokens: number;
  losses: number[];
  lastEval: number | undefined;
  lastSaved: string | undefined;
  t0: number;
}

/**
 * The options' ranges (train_options.json), checked before anything is read (CLI and pipeline
 * both come here). AdamW's betas outside [0, 1) make the bias correction divide by zero or flip sign.
 */
export function checkTrainOptions(o: TrainOptions): void {
  checkTrainOptionValues(o as unknown as Record<string, unknown>);
}

export async function train(o: TrainOptions): Promise<TrainResult> {
  checkTrainOptions(o);
  const args = trainArgs(o);
  for (const f of dataFiles(o.data)) checkDataFile(f);
  const log = o.log ?? ((s: string) => process.stdout.write(s + '\n'));
  // checkpoint-<step> folders (and pruning) inside the starting checkpoint would change it
  if (isInside(o.out, o.checkpoint))
    throw new TrainError(
      'OutInsideInput',
      `--out ${o.out} is ${resolve(o.out) === resolve(o.checkpoint) ? 'the' : 'inside the'} checkpoint ${o.checkpoint}; give a run folder outside it`,
    );
  return withRunLock(o.out, { takeOver: o.takeOverLock, log }, () => trainHoldingLock(o, args, log));
}

async function trainHoldingLock(o: TrainOptions, args: TrainArgs, log: (line: string) => void): Promise<TrainResult> {
  checkRunFolder(o.out, o);
  await initBackend(o.backend ?? 'auto');
  const latest = o.resume === true ? await latestCheckpoint(o.out, (line) => log(`train: warning: --resume ${line}`)) : undefined;
  const dir = latest ?? o.checkpoint;
  const ck = await CheckpointFolder.open(dir);
  const held: Held = {};
  try {
    const run = await openRun(o, args, ck, dir, latest !== undefined, log, held);
    const interrupted = await trainLoop(run);
    return await finishRun(run, interrupted);
  } finally {
    held.metrics?.close();
    held.masks?.dispose();
    held.rope?.dispose();
    held.adam?.dispose();
    held.state?.dispose();
    await ck.close();
  }
}

/** The checks of the options alone (before any file is read or written). */
export function trainArgs(o: TrainOptions): TrainArgs {
  checkTrainOptions(o);
  const lr = o.lr ?? trainDefault('lr');
  validateLrSchedule(
    {
      lr,
      minLr: o.minLr ?? lr / 10,
      warmupSteps: 0,
      totalSteps: 1,
      schedule: o.schedule ?? (trainOption('schedule').default as LrScheduleKind),
    },
    'train options (--lr, --min-lr, --schedule)',
  );
  const B = o.batchSize ?? trainDefault('batch-size'),
    T = o.seqLen ?? trainDefault('seq-len'),
    seed = o.seed ?? trainDefault('seed'),
    clip = o.clipGrad ?? trainDefault('clip-grad');
  return { B, T, seed, clip };
}

async function openRun(
  o: TrainOptions,
  args: TrainArgs,
  ck: CheckpointFolder,
  dir: string,
  resumed: boolean,
  log: (line: string) => void,
  held: Held,
): Promise<Run> {
  const cfg = ck.config;
  if (args.T > cfg.maxPositionEmbeddings)
    throw new TrainError(
      'BadArgs',
      `--seq-len ${args.T} exceeds the model's max_position_embeddings ${cfg.maxPositionEmbeddings} (${dir}/config.json)`,
    );
  const mem = estimateTrainMemory(cfg, args.B, args.T);
  if (tf.getBackend() === 'wasm' && mem.total > 0.9 * WASM_HEAP_LIMIT) {
    throw new TrainError(
      'TooLargeForTfjs',
      `${dir}: one training step needs about ${bytesLabel(mem.total)} (weights ${bytesLabel(mem.weights)}, AdamW moments ${bytesLabel(mem.optimizer)}, ` +
        `gradients ${bytesLabel(mem.gradients)}, activations and autodiff tape ${bytesLabel(mem.activations)}); the wasm backend's heap stops at ${bytesLabel(WASM_HEAP_LIMIT)}. ` +
        'Train it with the torch engine: flm-grow train --engine torch (needs a Python with torch), or use a smaller --batch-size/--seq-len.',
    );
  }
  const start = await startState(o, ck, dir, resumed);
  if (start.step >= start.targetStep)
    log(`train: ${dir} is already at step ${start.step} (target ${start.targetStep}); nothing to do`);
  const lrEnd = (start.lrSchedule.startStep ?? 0) + start.lrSchedule.totalSteps;
  if (start.resumed && start.targetStep > lrEnd)
    log(
      `train: the run's LR schedule ends at step ${lrEnd}; steps ${lrEnd} to ${start.targetStep} run at its final LR ${start.lrSchedule.minLr}`,
    );
  const tokenizer = await ck.tokenizer();
  const ds = openTrainingData(o.data, { tokenizer, seqLen: args.T, evalFraction: o.evalFraction });
  const parts = ds instanceof MixedDataset ? ds.parts : [ds];
  for (const p of parts)
    checkVocab(p, cfg.vocabSize, p.source, tokenDtypeForPath(p.source) === undefined ? tokenizer.name : undefined);
  const baseMasks = await ck.masks();
  if (baseMasks !== undefined) for (const p of parts) checkMaskedIds(p, baseMasks.vocab, p.source, baseMasks.vocabTokens);
  // a mix: the hash of its parts' hashes and weights
  const dataSha =
    ds instanceof MixedDataset
      ? sha256Bytes(JSON.stringify(await Promise.all(parts.map(async (p, i) => [await sha256File(p.source), ds.weights[i]]))))
      : await sha256File(o.data);
  const state = (held.state = modelStateFromArrays(cfg, await readCheckpointArrays(ck)));
  const adam = (held.adam = await openOptimizer(o, state, ck, start.step));
  const rope = (held.rope = makeRope(cfg, args.T));
  // the run folder appears only once the run has passed every check
  if (o.overwrite === true) clearRun(o.out);
  mkdirSync(o.out, { recursive: true });
  const metrics = (held.metrics = new MetricsLog(
    join(o.out, METRICS_FILE),
    start.resumed || continuesRun(o.out, o.checkpoint) ? { resumeAtStep: start.step } : { truncate: true },
  ));
  if (start.grownFrom !== undefined) {
    const rt = (start.grownFrom.plan as { resolvedTargets?: Record<string, number> } | undefined)?.resolvedTargets;
    metrics.logGrowth(
      start.step,
      o.stage ?? 0,
      rt === undefined
        ? undefined
        : `grown to H ${rt.hidden_size}, F ${rt.intermediate_size}, heads ${rt.num_attention_heads}, L ${rt.num_hidden_layers}`,
    );
  }
  const unscheduled =
    baseMasks === undefined ? [] : groupsBelowOne(baseMasks).filter((g) => !start.schedule.some((e) => e.group === g.group));
  if (unscheduled.length > 0) {
    log(
      `train: warning: ${dir}: masks below 1 with no schedule in its manifest: ${unscheduled.map((g) => `${g.group} (${g.count}, min ${g.minValue})`).join(', ')}; ` +
        'they stay where they are (a checkpoint grown by an older flm-grow?); grow the source again to carry its schedule',
    );
  }
  const masks = (held.masks = new MaskState(baseMasks, start.schedule, start.stageStart));
  return {
    ...args,
    o,
    dir,
    cfg,
    start,
    ds,
    tokenizerName: tokenizer.name,
    dataSha,
    state,
    adam,
    rope,
    masks,
    metrics,
    log,
    step: start.step,
    tokens: start.tokens,
    trainedTokens: 0,
    losses: [],
    lastEval: undefined,
    lastSaved: start.resumed ? dir : undefined,
    t0: Date.now(),
  };
}

/** AdamW over the model, with the moments and step stored beside the checkpoint if there are any. */
async function openOptimizer(o: TrainOptions, state: ModelState, ck: CheckpointFolder, step: number): Promise<AdamW> {
  const adam = new AdamW(state.vars, {
    beta1: o.beta1,
    beta2: o.beta2,
    weightDecay: o.weightDecay ?? trainDefault('weight-decay'),
  });
  const os = await ck.optimizer(new Map(expectedTensors(state.cfg).map((t) => [t.name, t.shape])));
  if (os !== undefined) {
    for (const [n, mo] of os.moments) adam.setMoments(n, mo);
    adam.step = os.meta.step;
  } else adam.step = step;
  return adam;
}

/** Steps until the target; true when `shouldStop` ended it early (no final save). */
async function trainLoop(r: Run): Promise<boolean> {
  const annealEnd = r.start.stageStart + annealingEndStep(r.start.schedule);
  const saveEvery = r.o.saveEvery ?? trainDefault('save-every');
  let announcedBake = r.masks.base === undefined || groupsBelowOne(r.masks.base).length === 0;
  const bar = startProgress(
    r.o.progress,
    r.o.quiet,
    `train ${r.cfg.hiddenSize}x${r.cfg.numLayers}`,
    r.start.targetStep - r.start.step,
  );
  const logEvery = r.o.logEvery ?? trainDefault('log-every');
  // no bar on the terminal (or none at all): the steps are told by plain lines instead
  const plainLines = r.o.quiet !== true && logEvery > 0 && bar === noProgress;
  try {
    while (r.step < r.start.targetStep) {
      if (r.o.shouldStop?.(r.step - r.start.step) === true) return true;
      const m = await trainStep(r);
      r.metrics.logStep(m);
      r.o.onStep?.(m);
      if (plainLines && (r.step % logEvery === 0 || r.step === r.start.targetStep)) r.log(stepLine(m, r.start.targetStep));
      if (r.o.quiet !== true) for (const line of stepEvents(m, saveEvery)) r.log(line);
      bar.update(r.step - r.start.step);
      if (!announcedBake && r.step >= annealEnd && groupsBelowOne(r.masks.at(r.step) as MaskSet).length === 0) {
        announcedBake = true;
        r.log(
          `train: every mask reached 1 at step ${r.step}; the checkpoint saved from here on can be baked (flm-grow bake <checkpoint> <dest>)`,
        );
      }
      if (saveEvery > 0 && r.step % saveEvery === 0 && r.step < r.start.targetStep) await save(r, false);
    }
    return false;
  } finally {
    bar.stop();
  }
}

/**
 * The per-step log line, the same in both engines (python/flm_grow_torch/train.py prints it):
 * `step 10/300: loss 5.1173 lr 6.204e-04 grad-norm 1.340`.
 */
export function stepLine(m: StepMetrics, target: number): string {
  // Python's %.3e: a two-digit exponent
  const lr = m.lr.toExponential(3).replace(/e([+-])(\d)$/, 'e$10$2');
  return `step ${m.step}/${target}: loss ${m.loss.toFixed(4)} lr ${lr} grad-norm ${m.gradNorm.toFixed(3)}`;
}

/**
 * The lines a step's eval and save print (with or without a progress bar), the same in both
 * engines (python/flm_grow_torch/train.py prints them): `train: step 5: eval loss 5.1234 (train
 * loss 5.2345)` and `train: step 5: saving checkpoint-000005`, at the HF global_step.
 */
export function stepEvents(m: StepMetrics, saveEvery: number): string[] {
  return [
    ...(m.evalLoss !== undefined
      ? [`train: step ${m.step}: eval loss ${m.evalLoss.toFixed(4)} (train loss ${m.loss.toFixed(4)})`]
      : []),
    ...(saveEvery > 0 && m.step % saveEvery === 0 ? [`train: step ${m.step}: saving ${checkpointDirName(m.step)}`] : []),
  ];
}

/** One optimizer step on batch `r.step` (and an eval when due); its metrics. */
async function trainStep(r: Run): Promise<StepMetrics> {
  const ts = Date.now();
  const masks = r.masks.at(r.step);
  const lr = lrAt(r.step, r.start.lrSchedule);
  const { loss, gradNorm } = await optimizerStep(r, r.ds.batchAt('train', r.step, r.B, r.T, r.seed), lr);
  r.losses.push(loss);
  r.step++;
  r.tokens += r.B * r.T;
  r.trainedTokens += r.B * r.T;
  const evalEvery = r.o.evalEvery ?? trainDefault('eval-every');
  const evalNow = r.ds.eval.length > r.T && ((evalEvery > 0 && r.step % evalEvery === 0) || r.step === r.start.targetStep);
  if (evalNow) r.lastEval = evalLoss(r);
  const m: StepMetrics = {
    // the HF Trainer's global_step: updates done, the number checkpoint-<step> and the console carry
    step: r.step,
    tokens: r.tokens,
    loss,
    ...(evalNow ? { evalLoss: r.lastEval } : {}),
    lr,
    gradNorm,
    tokensPerSec: (r.B * r.T * 1000) / Math.max(1, Date.now() - ts),
    stage: r.o.stage ?? 0,
    ...(masks !== undefined ? { masks: maskSummary(maskValuesAt(r.start.schedule, r.step - 1 - r.start.stageStart)) } : {}),
  };
  if (m.masks === undefined) delete m.masks;
  return m;
}

/** A loss above this stops training (a uniform guess over V ids costs ln V, 12 for V = 160k). */
export const MAX_LOSS = 100;

/** Loss and gradients of `batch` under the current masks, clipped, applied by AdamW. */
async function optimizerStep(r: Run, batch: Batch, lr: number): Promise<{ loss: number; gradNorm: number }> {
  const { value, grads } = tf.variableGrads(
    () => batchLoss(r.state, batch, r.B, r.T, r.masks.tensors, r.rope),
    [...r.state.vars.values()],
  );
  const loss = (await value.data())[0];
  value.dispose();
  const gradList = Object.values(grads);
  const gnorm = globalGradNorm(gradList);
  if (!Number.isFinite(loss) || !Number.isFinite(gnorm) || loss > MAX_LOSS) {
    tf.dispose(gradList);
    const what = !Number.isFinite(loss)
      ? `loss is ${loss}`
      : loss > MAX_LOSS
        ? `loss ${loss.toExponential(3)} is above ${MAX_LOSS} (cross-entropy over ${r.cfg.vocabSize} ids starts near ln V = ${Math.log(r.cfg.vocabSize).toFixed(2)})`
        : `gradient norm is ${gnorm}`;
    throw new TrainError(
      loss > MAX_LOSS ? 'AbsurdLoss' : 'NonFiniteLoss',
      `${r.o.out}: step ${r.step}: ${what} (lr ${lr.toExponential(3)}); training stopped. ` +
        `Last good checkpoint: ${r.lastSaved ?? `${r.dir} (nothing saved in this run)`}. Lower --lr or check the data.`,
    );
  }
  const scale = r.clip > 0 && gnorm > r.clip ? r.clip / (gnorm + 1e-6) : 1;
  const byName = new Map<string, tf.Tensor>();
  for (const [n, v] of r.state.vars) {
    const g = grads[v.name];
    if (g !== undefined) byName.set(n, scale === 1 ? g : tf.mul(g, scale));
  }
  r.adam.apply(byName, lr);
  tf.dispose([...gradList, ...(scale === 1 ? [] : [...byName.values()])]);
  return { loss, gradNorm: gnorm };
}

/** Mean loss over the first `evalBatches` held-out batches, under the current masks. */
function evalLoss(r: Run): number {
  const evalBatches = r.o.evalBatches ?? trainDefault('eval-batches');
  let sum = 0;
  for (let k = 0; k < evalBatches; k++) {
    const l = batchLoss(r.state, r.ds.batchAt('eval', k, r.B, r.T, r.seed), r.B, r.T, r.masks.tensors, r.rope);
    sum += l.dataSync()[0];
    l.dispose();
  }
  return sum / evalBatches;
}

async function save(r: Run, complete: boolean): Promise<string> {
  const out = join(r.o.out, checkpointDirName(r.step));
  const a = r.adam;
  const moments = new Map<string, { expAvg: Float32Array; expAvgSq: Float32Array }>();
  for (const n of r.state.vars.keys()) moments.set(n, await a.getMoments(n));
  const masks = r.masks.at(r.step);
  await saveCheckpoint({
    dir: out,
    cfg: r.cfg,
    weights: await stateArrays(r.state),
    masks,
    optimizer: {
      meta: { step: a.step, tokens: r.tokens, beta1: a.beta1, beta2: a.beta2, eps: a.eps, weightDecay: a.weightDecay },
      moments,
    },
    // the newest save (never pruned) rather than `r.dir`: pruning deletes the checkpoint this
    // run started from once it is old enough, and later saves still need its side files
    sideFilesFrom: r.lastSaved ?? r.dir,
    input: r.dir,
    manifest: {
      format: MANIFEST_FORMAT,
      kind: 'train',
      created: new Date().toISOString(),
      tool: { name: 'flm-grow', version: TOOL_VERSION },
      ...(r.start.source !== undefined ? { source: r.start.source } : {}),
      ...(masks !== undefined ? { masks: { file: MASKS_FILE, schedule: r.start.schedule } } : {}),
      extra: {
        step: r.step,
        stageStep: r.step - r.start.stageStart,
        stageStart: r.start.stageStart,
        tokens: r.tokens,
        runStartStep: r.start.runStart,
        targetStep: r.start.targetStep,
        complete,
        seed: r.seed,
        dtype: 'F32',
        lrSchedule: r.start.lrSchedule,
        batchSize: r.B,
        seqLen: r.T,
        data: {
          path: r.ds instanceof MixedDataset ? r.o.data : resolve(r.o.data),
          sha256: r.dataSha,
          tokens: r.ds.tokens.length,
          tokenizer: r.tokenizerName,
        },
        masksAllOne: masks === undefined || groupsBelowOne(masks).length === 0,
        lastLoss: r.losses.length > 0 ? r.losses[r.losses.length - 1] : null,
        evalLoss: r.lastEval ?? null,
      },
    },
  });
  pruneCheckpoints(r.o.out, r.o.keepCheckpoints ?? trainDefault('keep-checkpoints'), out);
  r.lastSaved = out;
  return out;
}

async function finishRun(r: Run, interrupted: boolean): Promise<TrainResult> {
  // nothing trained (a resume already at its target): the checkpoint it resumed from stays the result
  const out = interrupted || r.step === r.start.step ? (r.lastSaved ?? r.dir) : await save(r, true);
  const finalMasks = r.masks.at(r.step);
  const seconds = (Date.now() - r.t0) / 1000;
  return {
    checkpoint: out,
    startStep: r.start.step,
    step: r.step,
    stageStep: r.step - r.start.stageStart,
    losses: r.losses,
    firstLoss: r.losses[0] ?? NaN,
    lastLoss: r.losses[r.losses.length - 1] ?? NaN,
    evalLoss: r.lastEval,
    masksAllOne: finalMasks === undefined || groupsBelowOne(finalMasks).length === 0,
    tokensPerSec: r.trainedTokens / Math.max(1e-9, seconds),
    parameters: expectedTensors(r.cfg).reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0),
    interrupted,
  };
}
