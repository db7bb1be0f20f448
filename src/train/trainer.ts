/**
 * Continued pre-training of a (grown) checkpoint: AdamW on the masked model of src/model/llama.ts
 * (the one model implementation; tfjs autodiff), masks set from the manifest's annealing schedule
 * before every step (never trained), deterministic batches (a pure function of seed and global
 * step), checkpoints with weights (F32), masks and optimizer state, JSON-lines metrics.
 *
 * Steps: `step` is the global optimizer step (carried across growth through the optimizer state),
 * `stageStep` = step − stageStart counts from the last growth and drives the mask schedule. The
 * loss logged at step s is the loss of batch s before update s.
 */
import { MAX_SEQ_LEN } from '../util/limits.ts';
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { expectedTensors, tensorName } from '../arch.ts';
import type { ModelConfig } from '../config.ts';
import { Checkpoint } from '../checkpoint/checkpoint.ts';
import { initBackend, type BackendName } from '../backend.ts';
import { TrainError } from '../errors.ts';
import { MANIFEST_FORMAT, readManifest, sha256File, type Manifest, type MaskSchedule } from '../manifest.ts';
import { applyMaskValues, groupsBelowOne, loadMasksIfAny, MASKS_FILE, type MaskSet } from '../masks.ts';
import {
  disposeMaskTensors, forward, LAYER_FIELDS, makeRope, masksToTensors,
  type LayerWeights, type LlamaWeights, type MaskTensors, type Rope,
} from '../model/llama.ts';
import { sourceIdentity, TOOL_VERSION } from '../growth/grow.ts';
import { progressBar } from '../commands/progress.ts';
import { checkVocab, TokenDataset, type Batch } from './data.ts';
import { loadTokenizer } from './tokenizer.ts';
import { lrAt, validateLrSchedule, type LrSchedule, type LrScheduleKind } from './lr-schedule.ts';
import { MetricsLog, type StepMetrics } from './metrics.ts';
import { AdamW } from './adamw.ts';
import { OPTIMIZER_FILE, readOptimizerState } from './optimizer-state.ts';
import { annealingEndStep, maskValuesAt } from './mask-schedule.ts';
import { checkpointDirName, latestCheckpoint, pruneCheckpoints, saveCheckpoint } from './checkpointing.ts';

export const METRICS_FILE = 'metrics.jsonl';

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
  /** Continue from the newest complete checkpoint in `out` if there is one. */
  resume?: boolean;
  /** rewind: warmup and decay restart at this run's first step; continue: one schedule from global step 0. */
  lrAfterGrowth?: 'rewind' | 'continue';
  /** Length of the 'continue' schedule in global steps (default: this run's last step). */
  totalSteps?: number;
  keepCheckpoints?: number;
  stage?: string | number;
  quiet?: boolean;
  log?: (line: string) => void;
  onStep?: (m: StepMetrics) => void;
  /** Test hook: stop (as if killed) after this many steps of this invocation, without a final save. */
  interruptAfter?: number;
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
    embed: vars.get(tensorName('embed')) as tf.Variable, finalNorm: vars.get(tensorName('final_norm')) as tf.Variable,
    lmHead: vars.get(tensorName('lm_head')) as tf.Variable, layers,
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
 * Masks as the model wants them, except that padding ids get a large finite bias instead of
 * -inf: their softmax weight is exactly 0 either way, but -inf · 0 in the target pick would be NaN.
 */
export function trainingMaskTensors(m: MaskSet): MaskTensors {
  const t = masksToTensors(m);
  t.vocabBias.dispose();
  t.vocabBias = tf.tensor1d(Float32Array.from(m.vocab, (v) => (v === 0 ? -1e30 : 0)), 'float32');
  return t;
}

/** Mean cross-entropy of logits [B,T,V] against int32 targets [B,T]. */
export function crossEntropy(logits: tf.Tensor3D, targets: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => {
    const [B, T, V] = logits.shape;
    const lp = tf.logSoftmax(tf.reshape(logits, [B * T, V]) as tf.Tensor2D);
    const oh = tf.oneHot(tf.reshape(targets, [B * T]) as tf.Tensor1D, V);
    return tf.neg(tf.div(tf.sum(tf.mul(lp, oh)), B * T)) as tf.Scalar;
  });
}

export function batchLoss(s: ModelState, batch: Batch, batchSize: number, seqLen: number, masks: MaskTensors | undefined, rope?: Rope): tf.Scalar {
  return tf.tidy(() => {
    const ids = tf.tensor2d(batch.inputs, [batchSize, seqLen], 'int32');
    const tg = tf.tensor2d(batch.targets, [batchSize, seqLen], 'int32');
    const { logits } = forward(s.cfg, s.weights, ids, { masks, rope, skipIdCheck: true });
    return crossEntropy(logits, tg);
  });
}

/**
 * Loss of a checkpoint on one batch, masks as stored beside it (the function the checkpoint
 * computes): used to show that growth preserves the loss.
 */
export async function checkpointLoss(dir: string, batch: Batch, batchSize: number, seqLen: number): Promise<number> {
  const ck = await Checkpoint.open(dir);
  let s: ModelState | undefined;
  let mt: MaskTensors | undefined;
  try {
    s = modelStateFromArrays(ck.config, await readCheckpointArrays(ck));
    const m = await loadMasksIfAny(dir, ck.config);
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
  targetStep: number;
  lrSchedule: LrSchedule;
  source: Manifest['source'];
  grownFrom: Manifest | undefined;
}

function num(x: unknown, what: string, dir: string): number {
  if (typeof x !== 'number' || !Number.isFinite(x)) throw new TrainError('BadManifest', `${dir}: manifest field extra.${what} is missing or not a number`);
  return x;
}

async function startState(o: TrainOptions, ck: Checkpoint, dir: string, resumed: boolean): Promise<StartState> {
  const m = readManifest(dir);
  const lr = o.lr ?? 1e-3;
  const base = { lr, minLr: o.minLr ?? lr / 10, warmupSteps: o.warmupSteps ?? 0, schedule: o.schedule ?? 'cosine' as LrScheduleKind };
  if (resumed) {
    const x = (m as Manifest).extra ?? {};
    const ls = x.lrSchedule as LrSchedule;
    validateLrSchedule(ls, `${dir}: manifest extra.lrSchedule`);
    return {
      dir, resumed, step: num(x.step, 'step', dir), stageStart: num(x.stageStart, 'stageStart', dir), tokens: num(x.tokens, 'tokens', dir),
      schedule: m?.masks?.schedule ?? [], targetStep: num(x.targetStep, 'targetStep', dir), lrSchedule: ls, source: m?.source,
      grownFrom: undefined,
    };
  }
  let step = 0, tokens = 0, stageStart = 0;
  if (m?.kind === 'train') {
    step = num(m.extra?.step, 'step', dir);
    tokens = num(m.extra?.tokens, 'tokens', dir);
    stageStart = num(m.extra?.stageStart, 'stageStart', dir);
  } else if (existsSync(join(dir, OPTIMIZER_FILE))) {
    const st = await readOptimizerState(join(dir, OPTIMIZER_FILE), new Map());
    step = st.meta.step;
    tokens = st.meta.tokens;
    stageStart = step; // a grown checkpoint: its stage starts here
  }
  const targetStep = step + o.steps;
  const total = o.lrAfterGrowth === 'continue' ? Math.max(o.totalSteps ?? targetStep, targetStep) : o.steps;
  // a warmup longer than the run would never reach the peak lr
  const lrSchedule: LrSchedule = { ...base, warmupSteps: Math.min(base.warmupSteps, total), totalSteps: total, startStep: o.lrAfterGrowth === 'continue' ? 0 : step };
  validateLrSchedule(lrSchedule, 'train options');
  return {
    dir, resumed, step, stageStart, tokens, schedule: m?.masks?.schedule ?? [], targetStep, lrSchedule,
    source: m?.kind === 'train' && m.source !== undefined ? m.source : await sourceIdentity(ck, dir),
    grownFrom: m?.kind === 'grow' ? m : undefined,
  };
}

/**
 * The numeric options' ranges, checked before anything is read (CLI and pipeline both come
 * here). AdamW's betas outside [0, 1) make the bias correction divide by zero or flip sign.
 */
export function checkTrainOptions(o: TrainOptions): void {
  const range = (flag: string, v: number | undefined, ok: (x: number) => boolean, want: string) => {
    if (v !== undefined && !(typeof v === 'number' && ok(v))) throw new TrainError('BadArgs', `${flag} must be ${want}, got ${v}`);
  };
  const posInt = (x: number) => Number.isInteger(x) && x > 0, natural = (x: number) => Number.isInteger(x) && x >= 0;
  range('--steps', o.steps, posInt, 'a positive integer');
  range('--batch-size', o.batchSize, posInt, 'a positive integer');
  range('--seq-len', o.seqLen, (x) => posInt(x) && x <= MAX_SEQ_LEN, `an integer in [1, ${MAX_SEQ_LEN}]`);
  range('--lr', o.lr, (x) => Number.isFinite(x) && x > 0, 'a number > 0');
  range('--min-lr', o.minLr, (x) => Number.isFinite(x) && x >= 0, 'a number >= 0');
  range('--warmup-steps', o.warmupSteps, natural, 'an integer >= 0');
  range('--weight-decay', o.weightDecay, (x) => Number.isFinite(x) && x >= 0, 'a number >= 0');
  range('--clip-grad', o.clipGrad, (x) => Number.isFinite(x) && x >= 0, 'a number >= 0 (0: off)');
  range('--beta1', o.beta1, (x) => x >= 0 && x < 1, 'in [0, 1)');
  range('--beta2', o.beta2, (x) => x >= 0 && x < 1, 'in [0, 1)');
  range('--save-every', o.saveEvery, natural, 'an integer >= 0');
  range('--eval-every', o.evalEvery, natural, 'an integer >= 0');
  range('--eval-batches', o.evalBatches, posInt, 'a positive integer');
  range('--eval-fraction', o.evalFraction, (x) => x >= 0 && x < 1, 'in [0, 1)');
  range('--total-steps', o.totalSteps, posInt, 'a positive integer');
  range('--keep-checkpoints', o.keepCheckpoints, natural, 'an integer >= 0');
}

export async function train(o: TrainOptions): Promise<TrainResult> {
  checkTrainOptions(o);
  const B = o.batchSize ?? 8, T = o.seqLen ?? 64, seed = o.seed ?? 0, clip = o.clipGrad ?? 1.0;
  const log = o.log ?? ((s: string) => process.stdout.write(s + '\n'));
  await initBackend(o.backend ?? 'auto');
  mkdirSync(o.out, { recursive: true });
  let dir = o.checkpoint, resumed = false;
  if (o.resume === true) {
    const latest = await latestCheckpoint(o.out);
    if (latest !== undefined) { dir = latest; resumed = true; }
  }
  const ck = await Checkpoint.open(dir);
  const cfg = ck.config;
  if (T > cfg.maxPositionEmbeddings) throw new TrainError('BadArgs', `--seq-len ${T} exceeds the model's max_position_embeddings ${cfg.maxPositionEmbeddings} (${dir}/config.json)`);
  let state: ModelState | undefined;
  let adam: AdamW | undefined;
  let rope: Rope | undefined;
  let mt: MaskTensors | undefined;
  let metrics: MetricsLog | undefined;
  try {
    const st = await startState(o, ck, dir, resumed);
    if (st.step >= st.targetStep) {
      log(`train: ${dir} is already at step ${st.step} (target ${st.targetStep}); nothing to do`);
    }
    const tokenizer = loadTokenizer(dir);
    const ds = TokenDataset.fromFile(o.data, { tokenizer, seqLen: T, evalFraction: o.evalFraction });
    checkVocab(ds, cfg.vocabSize, o.data);
    const dataSha = await sha256File(o.data);
    const baseMasks = await loadMasksIfAny(dir, cfg);
    state = modelStateFromArrays(cfg, await readCheckpointArrays(ck));
    const params = expectedTensors(cfg).reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
    adam = new AdamW(state.vars, { beta1: o.beta1, beta2: o.beta2, weightDecay: o.weightDecay ?? 0 });
    const optPath = join(dir, OPTIMIZER_FILE);
    if (existsSync(optPath)) {
      const os = await readOptimizerState(optPath, new Map(expectedTensors(cfg).map((t) => [t.name, t.shape])));
      for (const [n, mo] of os.moments) adam.setMoments(n, mo);
      adam.step = os.meta.step;
    } else adam.step = st.step;
    rope = makeRope(cfg, T);
    metrics = new MetricsLog(join(o.out, METRICS_FILE), st.resumed ? { resumeAtStep: st.step } : { truncate: true });
    const stage = o.stage ?? 0;
    if (st.grownFrom !== undefined) {
      const rt = (st.grownFrom.plan as { resolvedTargets?: Record<string, number> } | undefined)?.resolvedTargets;
      metrics.logGrowth(st.step, stage, rt === undefined ? undefined : `grown to H ${rt.hidden_size}, F ${rt.intermediate_size}, heads ${rt.num_attention_heads}, L ${rt.num_hidden_layers}`);
    }
    const annealEnd = st.stageStart + annealingEndStep(st.schedule);
    const saveEvery = o.saveEvery ?? 0, evalEvery = o.evalEvery ?? 0, evalBatches = o.evalBatches ?? 4;
    const hasEval = ds.eval.length > T;
    let curValues = '';
    let curMasks: MaskSet | undefined;
    const masksFor = (step: number): MaskSet | undefined => {
      if (baseMasks === undefined) return undefined;
      const values = maskValuesAt(st.schedule, step - st.stageStart);
      const key = JSON.stringify(values);
      if (key !== curValues || curMasks === undefined) {
        curValues = key;
        curMasks = applyMaskValues(baseMasks, values);
        if (mt !== undefined) disposeMaskTensors(mt);
        mt = trainingMaskTensors(curMasks);
      }
      return curMasks;
    };
    const evalLoss = (): number => {
      let sum = 0;
      for (let k = 0; k < evalBatches; k++) {
        const l = batchLoss(state as ModelState, ds.batchAt('eval', k, B, T, seed), B, T, mt, rope);
        sum += l.dataSync()[0];
        l.dispose();
      }
      return sum / evalBatches;
    };
    let step = st.step, tokens = st.tokens;
    let lastSaved: string | undefined = st.resumed ? dir : undefined;
    const losses: number[] = [];
    let lastEval: number | undefined;
    const t0 = Date.now();
    let trainedTokens = 0;
    const save = async (complete: boolean): Promise<string> => {
      const out = join(o.out, checkpointDirName(step));
      const s = state as ModelState, a = adam as AdamW;
      const moments = new Map<string, { expAvg: Float32Array; expAvgSq: Float32Array }>();
      for (const n of s.vars.keys()) moments.set(n, await a.getMoments(n));
      const masks = masksFor(step);
      await saveCheckpoint({
        dir: out, cfg, weights: await stateArrays(s), masks,
        optimizer: { meta: { step: a.step, tokens, beta1: a.beta1, beta2: a.beta2, eps: a.eps, weightDecay: a.weightDecay }, moments },
        sideFilesFrom: dir,
        manifest: {
          format: MANIFEST_FORMAT, kind: 'train', created: new Date().toISOString(), tool: { name: 'flm-grow', version: TOOL_VERSION },
          ...(st.source !== undefined ? { source: st.source } : {}),
          ...(masks !== undefined ? { masks: { file: MASKS_FILE, schedule: st.schedule } } : {}),
          extra: {
            step, stageStep: step - st.stageStart, stageStart: st.stageStart, tokens, targetStep: st.targetStep, complete,
            seed, dtype: 'F32', lrSchedule: st.lrSchedule, batchSize: B, seqLen: T,
            data: { path: resolve(o.data), sha256: dataSha, tokens: ds.tokens.length, tokenizer: tokenizer.name },
            masksAllOne: masks === undefined || groupsBelowOne(masks).length === 0,
            lastLoss: losses.length > 0 ? losses[losses.length - 1] : null, evalLoss: lastEval ?? null,
          },
        },
      });
      pruneCheckpoints(o.out, o.keepCheckpoints ?? 2, out);
      lastSaved = out;
      return out;
    };
    const bar = progressBar(`train ${cfg.hiddenSize}x${cfg.numLayers}`, st.targetStep - st.step, { quiet: o.quiet });
    let announcedBake = baseMasks === undefined || groupsBelowOne(baseMasks).length === 0;
    let interrupted = false;
    try {
      while (step < st.targetStep) {
        if (o.interruptAfter !== undefined && step - st.step >= o.interruptAfter) { interrupted = true; break; }
        const ts = Date.now();
        const masks = masksFor(step);
        const lr = lrAt(step, st.lrSchedule);
        const batch = ds.batchAt('train', step, B, T, seed);
        const { value, grads } = tf.variableGrads(() => batchLoss(state as ModelState, batch, B, T, mt, rope), [...(state as ModelState).vars.values()]);
        const loss = (await value.data())[0];
        value.dispose();
        const gradList = Object.values(grads);
        const gnorm = globalGradNorm(gradList);
        if (!Number.isFinite(loss) || !Number.isFinite(gnorm)) {
          tf.dispose(gradList);
          throw new TrainError('NonFiniteLoss', `${o.out}: step ${step}: ${!Number.isFinite(loss) ? `loss is ${loss}` : `gradient norm is ${gnorm}`} (lr ${lr.toExponential(3)}); training stopped. ` +
            `Last good checkpoint: ${lastSaved ?? `${dir} (nothing saved in this run)`}. Lower --lr or check the data.`);
        }
        const scale = clip > 0 && gnorm > clip ? clip / (gnorm + 1e-6) : 1;
        const byName = new Map<string, tf.Tensor>();
        for (const [n, v] of (state as ModelState).vars) {
          const g = grads[v.name];
          if (g !== undefined) byName.set(n, scale === 1 ? g : tf.mul(g, scale));
        }
        (adam as AdamW).apply(byName, lr);
        tf.dispose([...gradList, ...(scale === 1 ? [] : [...byName.values()])]);
        losses.push(loss);
        step++;
        tokens += B * T;
        trainedTokens += B * T;
        const evalNow = hasEval && ((evalEvery > 0 && step % evalEvery === 0) || step === st.targetStep);
        if (evalNow) lastEval = evalLoss();
        const m: StepMetrics = {
          step: step - 1, tokens, loss, ...(evalNow ? { evalLoss: lastEval } : {}), lr, gradNorm: gnorm,
          tokensPerSec: (B * T * 1000) / Math.max(1, Date.now() - ts), stage,
          ...(masks !== undefined ? { masks: maskSummary(maskValuesAt(st.schedule, step - 1 - st.stageStart)) } : {}),
        };
        if (m.masks === undefined) delete m.masks;
        metrics.logStep(m);
        o.onStep?.(m);
        bar.update(step - st.step);
        if (!announcedBake && step >= annealEnd) {
          announcedBake = true;
          log(`train: every mask reached 1 at step ${step}; the checkpoint saved from here on can be baked (flm-grow bake <checkpoint> <dest>)`);
        }
        if (saveEvery > 0 && step % saveEvery === 0 && step < st.targetStep) await save(false);
      }
    } finally {
      bar.stop();
    }
    const out = interrupted ? (lastSaved ?? dir) : await save(true);
    const finalMasks = masksFor(step);
    const seconds = (Date.now() - t0) / 1000;
    return {
      checkpoint: out, startStep: st.step, step, stageStep: step - st.stageStart, losses,
      firstLoss: losses[0] ?? NaN, lastLoss: losses[losses.length - 1] ?? NaN, evalLoss: lastEval,
      masksAllOne: finalMasks === undefined || groupsBelowOne(finalMasks).length === 0,
      tokensPerSec: trainedTokens / Math.max(1e-9, seconds), parameters: params, interrupted,
    };
  } finally {
    metrics?.close();
    if (mt !== undefined) disposeMaskTensors(mt);
    rope?.dispose();
    adam?.dispose();
    state?.dispose();
    await ck.close();
  }
}
