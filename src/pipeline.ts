/**
 * Stage pipelines (`flm-grow run <pipeline.json>`): a list of stages — init | train | grow |
 * verify | bake — each writing into its own folder `<out>/<NN>-<name>`. Each checkpoint-producing
 * stage feeds the next; verify compares the input and output of the latest grow (or bake).
 *
 * Resumable: a stage whose output manifest verifies (sha256 of every file) is skipped; a train
 * stage continues from its newest complete checkpoint; anything half-written is redone. A failing
 * verify stops the pipeline (VerifyFailedError, exit 1).
 */
import { existsSync, rmSync, mkdirSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { parameterCount } from './spec/arch.ts';
import { readConfigFile } from './spec/config.ts';
import { FlmGrowError } from './util/errors.ts';
import { readManifest, verifyManifestFiles } from './checkpoint/manifest.ts';
import { growCheckpoint } from './growth/grow.ts';
import { bakeCheckpoint } from './growth/bake.ts';
import { applyPlanFlags, defaultPlan, planToJson, readPlanFile, TARGET_KEYS, type GrowthPlan } from './growth/plan.ts';
import { parseDtypeName } from './util/dtype.ts';
import { didYouMeanKey } from './util/suggest.ts';
import { verifyGrowth, formatReport, VerifyFailedError, type VerifyReport } from './growth/verify.ts';
import { BACKEND_NAMES, initBackend, type BackendName } from './engines/tfjs-backend.ts';
import { initConfig, writeRandomInit } from './train/random-init.ts';
import { checkpointLoss, checkTrainOptions, METRICS_FILE, type TrainOptions } from './train/trainer.ts';
import { corpusTokenFile, ENGINES, trainWithEngine, type Engine, type EngineOptions } from './train/engine.ts';
import { corpusShards, isTextCorpus } from './train/corpus.ts';
import { latestCheckpoint } from './train/checkpointing.ts';
import { dataFiles, openTrainingData, parseDataMix } from './train/data.ts';
import { loadTokenizer } from './checkpoint/tokenizer.ts';
import { readMetrics, type MetricsRecord } from './train/metrics.ts';
import { lossSeriesFromMetrics, plotLossCurves } from './train/plot.ts';
import { camelKey, optionProblem, snakeKey, TRAIN_OPTIONS, trainDefault } from './train/options.ts';
import type { ProgressFactory } from './util/progress.ts';
import { cannotRead, readFailure, readJsonFile, readRegularFile, readTextFile } from './util/files.ts';
import { writeFileAtomic } from './checkpoint/atomic.ts';
import { withRunLock } from './util/run-lock.ts';

export class PipelineError extends FlmGrowError {
  constructor(file: string, field: string | undefined, message: string) {
    super('PipelineError', `${file}${field !== undefined ? `: field "${field}"` : ''}: ${message}`);
  }
}

/**
 * Training knobs in the pipeline file: the snake_case keys of the declared train options with
 * `pipeline: true` (train/options.ts, train_options.json), plus the engine.
 */
export interface TrainSettings {
  steps?: number;
  batch_size?: number;
  seq_len?: number;
  /** tfjs | torch | auto (see src/train/engine.ts) and the torch engine's process count. */
  engine?: Engine;
  nproc?: number;
  fsdp?: boolean;
  [key: string]: number | string | boolean | undefined;
}

export type StageSpec =
  | { name: string; init: { config: Record<string, unknown>; std?: number; seed?: number } }
  | { name: string; train: TrainSettings }
  | {
      name: string;
      grow: {
        plan?: string;
        anneal_steps?: number;
        mode?: 'masked' | 'zero';
        /** Output dtype: bf16, f16, f32 or the HF names bfloat16, float16, float32 (default: the source's). */
        dtype?: string;
      } & Partial<Record<(typeof TARGET_KEYS)[number], number>>;
    }
  | { name: string; verify: { tokens?: number; seq?: number; seed?: number; tolerance?: number } }
  | { name: string; bake: { force?: boolean } };

export interface PipelineSpec {
  description?: string;
  /** Training text or token file (relative to the pipeline file). */
  data: string;
  /** Starting checkpoint when the first stage is not `init`. */
  checkpoint?: string;
  seed?: number;
  backend?: BackendName;
  /** Defaults for every train stage. */
  train?: TrainSettings;
  stages: StageSpec[];
}

const STAGE_KINDS = ['init', 'train', 'grow', 'verify', 'bake'] as const;
type StageKind = (typeof STAGE_KINDS)[number];

export function stageKind(s: StageSpec): StageKind {
  return STAGE_KINDS.find((k) => k in s) as StageKind;
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A train stage's declared options as TrainOptions values (snake_case keys to camelCase). */
function trainOptionsOf(ts: TrainSettings): Omit<TrainOptions, 'checkpoint' | 'data' | 'out' | 'steps'> {
  return Object.fromEntries(
    TRAIN_OPTIONS.filter((o) => o.pipeline && ts[snakeKey(o.flag)] !== undefined).map((o) => [
      camelKey(o.flag),
      ts[snakeKey(o.flag)],
    ]),
  );
}

/** Value checkers of the pipeline format; each returns a problem or undefined. */
type Check = (v: unknown) => string | undefined;
const num: Check = (v) => (typeof v === 'number' && Number.isFinite(v) ? undefined : 'must be a number');
const int: Check = (v) => (typeof v === 'number' && Number.isInteger(v) && v >= 0 ? undefined : 'must be an integer >= 0');
const str: Check = (v) => (typeof v === 'string' && v !== '' ? undefined : 'must be a non-empty string');
const bool: Check = (v) => (typeof v === 'boolean' ? undefined : 'must be true or false');
const obj: Check = (v) => (isObj(v) ? undefined : 'must be an object');
const oneOf =
  (allowed: readonly string[]): Check =>
  (v) =>
    typeof v === 'string' && allowed.includes(v) ? undefined : `must be one of ${allowed.map((a) => `"${a}"`).join(', ')}`;

const TRAIN_FIELDS: Record<string, Check> = {
  ...Object.fromEntries(
    TRAIN_OPTIONS.filter((o) => o.pipeline).map((o): [string, Check] => [snakeKey(o.flag), (v) => optionProblem(o, v)]),
  ),
  engine: oneOf(ENGINES),
};
const STAGE_FIELDS: Record<StageKind, Record<string, Check>> = {
  init: { config: obj, std: num, seed: int },
  train: TRAIN_FIELDS,
  // the targets as in a growth plan's "targets" and the CLI's --hidden-size ...: over the plan's
  grow: {
    plan: str,
    anneal_steps: int,
    mode: oneOf(['masked', 'zero']),
    dtype: oneOf(['bf16', 'f16', 'f32', 'bfloat16', 'float16', 'float32']),
    ...Object.fromEntries(TARGET_KEYS.map((k) => [k, num])),
  },
  verify: { tokens: int, seq: int, seed: int, tolerance: num },
  bake: { force: bool },
};
const TOP_FIELDS: Record<string, Check> = {
  description: (v) => (typeof v === 'string' ? undefined : 'must be a string'),
  data: str,
  checkpoint: str,
  seed: int,
  backend: oneOf(BACKEND_NAMES),
  train: obj,
  stages: (v) => (Array.isArray(v) && v.length > 0 ? undefined : 'must be a non-empty array'),
  $comment: () => undefined,
};

/** Unknown keys and wrong types are refused naming the field, as growth plans are (src/growth/plan.ts). */
function checkFields(o: Obj, fields: Record<string, Check>, fail: (field: string, msg: string) => never, prefix = ''): void {
  for (const [k, v] of Object.entries(o)) {
    const check = fields[k];
    if (check === undefined)
      fail(`${prefix}${k}`, `unknown${didYouMeanKey(k, Object.keys(fields))} (allowed: ${Object.keys(fields).join(', ')})`);
    const bad = check(v);
    if (bad !== undefined) fail(`${prefix}${k}`, `${bad}, got ${JSON.stringify(v)}`);
  }
}

export function parsePipeline(json: unknown, file: string): PipelineSpec {
  if (!isObj(json)) throw new PipelineError(file, undefined, 'is not a JSON object');
  const p = json;
  const top = (field: string, msg: string): never => {
    throw new PipelineError(file, field, msg);
  };
  checkFields(p, TOP_FIELDS, top);
  if (p.data === undefined) top('data', 'must name the training data file');
  if (p.stages === undefined) top('stages', 'must be a non-empty array');
  if (p.train !== undefined) checkFields(p.train as Obj, TRAIN_FIELDS, top, 'train.');
  const names = new Set<string>();
  (p.stages as unknown[]).forEach((s: unknown, k: number) => {
    const label = isObj(s) && typeof s.name === 'string' ? `pipeline stage ${k + 1} (${s.name})` : `pipeline stage ${k + 1}`;
    const fail = (field: string, msg: string): never => {
      throw new PipelineError(file, undefined, `${label}: field "${field}": ${msg}`);
    };
    if (!isObj(s)) throw new PipelineError(file, `stages[${k}]`, 'must be an object');
    const o = s;
    if (typeof o.name !== 'string' || !/^[A-Za-z0-9._-]+$/.test(o.name)) fail('name', 'must be a name of letters, digits, . _ -');
    if (names.has(o.name as string)) fail('name', `"${o.name as string}" is used twice`);
    names.add(o.name as string);
    const kinds = STAGE_KINDS.filter((kk) => kk in o);
    if (kinds.length !== 1)
      throw new PipelineError(file, `stages[${k}]`, `${label}: must have exactly one of ${STAGE_KINDS.join(', ')}`);
    const kind = kinds[0];
    for (const key of Object.keys(o))
      if (key !== 'name' && key !== kind && key !== '$comment')
        fail(key, `unknown (a stage has "name" and one of ${STAGE_KINDS.join(', ')})`);
    if (!isObj(o[kind])) fail(kind, `must be an object, got ${JSON.stringify(o[kind])}`);
    checkFields(o[kind] as Obj, STAGE_FIELDS[kind], fail, `${kind}.`);
    if (kind === 'init' && k !== 0) throw new PipelineError(file, `stages[${k}]`, 'init can only be the first stage');
    if (kind === 'init' && (o.init as Obj).config === undefined) fail('init.config', 'is required');
    if (kind === 'grow' && (o.grow as Obj).plan === undefined && !TARGET_KEYS.some((t) => (o.grow as Obj)[t] !== undefined))
      throw new PipelineError(
        file,
        `stages[${k}].grow`,
        `needs "plan" (a growth plan file) or a target, as the CLI's --hidden-size ... (${TARGET_KEYS.join(', ')})`,
      );
  });
  if (!('init' in (p.stages as object[])[0]) && typeof p.checkpoint !== 'string') {
    throw new PipelineError(file, 'checkpoint', 'is required when the first stage is not init');
  }
  return p as unknown as PipelineSpec;
}

export function readPipelineFile(path: string): PipelineSpec {
  let json: unknown;
  try {
    json = readJsonFile(path, { what: 'pipeline' });
  } catch (e) {
    throw new PipelineError(path, undefined, cannotRead('pipeline', e));
  }
  return parsePipeline(json, path);
}

/**
 * Everything a run needs that exists outside the pipeline file — the data, the starting
 * checkpoint, every growth plan, every train stage's settings — checked before the first
 * stage runs, so a typo in stage 5 does not surface after an hour of training.
 */
function precheck(spec: PipelineSpec, file: string, rel: (p: string) => string): Map<number, GrowthPlan> {
  const data = relData(spec.data, rel);
  if (isTextCorpus(data))
    try {
      corpusShards(data);
    } catch (e) {
      throw new PipelineError(file, 'data', (e as Error).message);
    }
  else
    for (const f of dataFiles(data))
      try {
        readRegularFileHead(f);
      } catch (e) {
        throw new PipelineError(file, 'data', `${f}: ${readFailure(e)}`);
      }
  if (spec.checkpoint !== undefined && !existsSync(join(rel(spec.checkpoint), 'config.json'))) {
    throw new PipelineError(file, 'checkpoint', `${rel(spec.checkpoint)} is not a checkpoint folder (no config.json)`);
  }
  const plans = new Map<number, GrowthPlan>();
  // stage order is known before anything runs: a verify with no grow or bake before it would
  // otherwise fail only after every earlier stage (minutes of training) has run
  let pairBefore = false;
  spec.stages.forEach((s, k) => {
    if ('verify' in s && !pairBefore)
      throw new PipelineError(file, `stages[${k}]`, `verify (stage ${k + 1}, ${s.name}) needs a grow or bake stage before it`);
    if ('grow' in s || 'bake' in s) pairBefore = true;
    if ('grow' in s) {
      const g = s.grow;
      const plan = applyPlanFlags(g.plan !== undefined ? readPlanFile(rel(g.plan)) : defaultPlan(), {
        annealSteps: g.anneal_steps,
        mode: g.mode,
        hiddenSize: g.hidden_size,
        intermediateSize: g.intermediate_size,
        numAttentionHeads: g.num_attention_heads,
        numKeyValueHeads: g.num_key_value_heads,
        numHiddenLayers: g.num_hidden_layers,
        vocabSize: g.vocab_size,
        mupScaleFactor: g.mup_scale_factor,
        headDim: g.head_dim,
      });
      plans.set(k, plan);
    } else if ('train' in s) {
      const ts = { ...(spec.train ?? {}), ...s.train };
      if (ts.steps === undefined) throw new PipelineError(file, `stages[${k}].train.steps`, 'is required');
      try {
        checkTrainOptions({ ...trainOptionsOf(ts), checkpoint: '', data, out: '', steps: ts.steps });
      } catch (e) {
        throw new PipelineError(file, undefined, `pipeline stage ${k + 1} (${s.name}): ${(e as Error).message}`);
      }
    }
  });
  return plans;
}

/** Opens the data file as the trainer will (regular file, readable) without reading it all. */
function readRegularFileHead(path: string): void {
  readRegularFile(path, { maxBytes: Number.MAX_SAFE_INTEGER, what: 'training data', probeOnly: true });
}

/** Where a stage records the resolved spec it ran with; a rerun whose spec differs redoes it. */
export const STAGE_SPEC_FILE = 'flm-grow-stage.json';

export interface StageResult {
  name: string;
  kind: StageKind;
  dir: string;
  /** The checkpoint this stage started from. */
  input?: string;
  skipped: boolean;
  seconds: number;
  /** grow: loss of the source and of the grown model on the same probe batch. */
  lossBefore?: number;
  lossAfter?: number;
  /** train: probe loss at the end of the stage, last train loss, eval loss, steps. */
  lossEnd?: number;
  lastTrainLoss?: number;
  evalLoss?: number;
  steps?: [number, number];
  parameters?: number;
  verify?: VerifyReport;
}

export interface PipelineOptions {
  out?: string;
  quiet?: boolean;
  /** Where the stages' progress goes (commands/ passes terminal bars). */
  progress?: ProgressFactory;
  log?: (line: string) => void;
  /** Passed to every train stage: true stops it (as if killed), and the pipeline fails there. */
  shouldStopTraining?: (stepsThisRun: number) => boolean;
  /** Take over the output folder's lock held by a job on another host (--take-over-lock). */
  takeOverLock?: boolean;
  /**
   * `flm-grow run --log-every N`: the plain step line every N steps in every train stage, over the
   * pipeline's log_every (console output only: not part of a stage's recorded spec).
   */
  logEvery?: number;
}

export interface PipelineResult {
  out: string;
  stages: StageResult[];
  plot: string | undefined;
  finalCheckpoint: string;
}

async function manifestComplete(dir: string): Promise<boolean> {
  const m = existsSync(dir) ? readManifest(dir) : undefined;
  return m !== undefined && (await verifyManifestFiles(dir, m)).length === 0;
}

function pad2(k: number): string {
  return String(k + 1).padStart(2, '0');
}

/** What the stages share while a pipeline runs: fixed inputs first, then the state each stage advances. */
interface PipelineRun {
  file: string;
  spec: PipelineSpec;
  opts: PipelineOptions;
  log: (line: string) => void;
  plans: Map<number, GrowthPlan>;
  out: string;
  data: string;
  /** Size and mtime of the data (a mix: summed, the newest), recorded with each train stage's spec. */
  dataStat: { size: number; mtimeMs: number };
  seed: number;
  backend: BackendName;
  /** Sum of every train stage's steps: 'continue' LR schedules span every train stage. */
  totalSteps: number;
  /** The checkpoint the next stage starts from ('' until one exists). */
  current: string;
  /** The input and output of the latest grow or bake, for verify. */
  lastPair?: { source: string; output: string };
  /** A grow whose before/after losses wait for the next train stage's batch shape. */
  pendingGrow?: StageResult;
  /** The previous stage's resolved spec, chained into the next one's. */
  previousSpec: string;
  results: StageResult[];
  metricsFiles: string[];
}

/** One stage while it runs: where it writes, its merged train settings, and the result it fills. */
interface StageRun {
  k: number;
  dir: string;
  specFile: string;
  train: TrainSettings;
  B: number;
  T: number;
  r: StageResult;
}

export async function runPipeline(file: string, opts: PipelineOptions = {}): Promise<PipelineResult> {
  const spec = readPipelineFile(file);
  const out = resolve(opts.out ?? join(dirname(resolve(file)), 'pipeline-out'));
  // one pipeline per output folder: a second one (a requeue, a double submission) is refused
  // before it reads or removes anything there
  return withRunLock(out, { what: 'pipeline output folder', takeOver: opts.takeOverLock, log: opts.log }, async () => {
    const run = await startPipeline(file, opts, spec, out);
    for (let k = 0; k < run.spec.stages.length; k++) await runStage(run, k);
    const plot = await plotPipelineLoss(run);
    return writeSummary(run, plot);
  });
}

/** Reads and prechecks the pipeline file, creates the output folder and starts the backend. */
async function startPipeline(file: string, opts: PipelineOptions, spec: PipelineSpec, out: string): Promise<PipelineRun> {
  const base = dirname(resolve(file));
  const rel = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  const plans = precheck(spec, file, rel);
  const log = opts.log ?? ((s: string) => process.stdout.write(s + '\n'));
  mkdirSync(out, { recursive: true });
  const data = relData(spec.data, rel);
  const seed = spec.seed ?? trainDefault('seed');
  const backend = spec.backend ?? 'auto';
  log(`pipeline ${file}: ${spec.stages.length} stages into ${out} (backend ${await initBackend(backend)})`);
  const trainDefaults = spec.train ?? {};
  const current = spec.checkpoint !== undefined ? rel(spec.checkpoint) : '';
  const totalSteps = spec.stages.reduce(
    (a, s) => a + ('train' in s ? (s.train.steps ?? trainDefaults.steps ?? Number.NaN) : 0),
    0,
  );
  // a corpus folder or glob: its shards, summed and the newest, as a mix's parts
  const stats = (isTextCorpus(data) ? corpusShards(data) : dataFiles(data)).map((f) => statSync(f));
  const dataStat = { size: stats.reduce((a, x) => a + x.size, 0), mtimeMs: Math.max(...stats.map((x) => x.mtimeMs)) };
  return {
    file,
    spec,
    opts,
    log,
    plans,
    out,
    data,
    dataStat,
    seed,
    backend,
    totalSteps,
    current,
    previousSpec: current,
    results: [],
    metricsFiles: [],
  };
}

/** Runs (or skips) stage k and records its result. */
async function runStage(run: PipelineRun, k: number): Promise<void> {
  const s = run.spec.stages[k];
  const kind = stageKind(s);
  const dir = join(run.out, `${pad2(k)}-${s.name}`);
  const t0 = Date.now();
  const r: StageResult = {
    name: s.name,
    kind,
    dir,
    ...(run.current !== '' ? { input: run.current } : {}),
    skipped: false,
    seconds: 0,
  };
  const ts: TrainSettings = { ...(run.spec.train ?? {}), ...('train' in s ? s.train : {}) };
  const stage: StageRun = {
    k,
    dir,
    specFile: join(dir, STAGE_SPEC_FILE),
    train: ts,
    B: ts.batch_size ?? trainDefault('batch-size'),
    T: ts.seq_len ?? trainDefault('seq-len'),
    r,
  };
  const resolved = resolveStageSpec(run, s, stage);
  await prepareStageDir(run, s, stage, resolved);
  if ('init' in s) await initStage(run, s, stage);
  else if ('train' in s) await trainStage(run, s, stage);
  else if ('grow' in s) await growStage(run, stage);
  else if ('verify' in s) await verifyStage(run, s, stage);
  else if ('bake' in s) await bakeStage(run, s, stage);
  // init, grow and bake replace their folder whole (atomic rename): record the spec after
  if (!existsSync(stage.specFile)) await writeFileAtomic(stage.specFile, resolved);
  if (kind !== 'verify') r.parameters = parameterCount(readConfigFile(join(run.current, 'config.json')));
  r.seconds = (Date.now() - t0) / 1000;
  run.results.push(r);
  run.log(
    `[${s.name}] ${kind} ${r.skipped ? 'skipped (output complete)' : 'done'} in ${r.seconds.toFixed(1)} s -> ${kind === 'verify' ? dir : run.current}`,
  );
}

/**
 * The resolved spec this stage runs with, chained to the previous stage's: when it differs
 * from the one recorded in the stage folder (pipeline edited, plan file edited, data
 * replaced, an upstream stage redone) the old output is stale and the stage is redone.
 */
function resolveStageSpec(run: PipelineRun, s: StageSpec, stage: StageRun): string {
  const { data, dataStat } = run;
  const resolved = JSON.stringify({
    stage: s,
    seed: run.seed,
    previous: createHash('sha256').update(run.previousSpec).digest('hex'),
    ...('train' in s ? { train: stage.train, data: { path: data, bytes: dataStat.size, mtimeMs: dataStat.mtimeMs } } : {}),
    ...('grow' in s ? { plan: planToJson(run.plans.get(stage.k) as GrowthPlan) } : {}),
  });
  run.previousSpec = resolved;
  return resolved;
}

/** Clears a stage folder recorded with another spec; pre-records the spec where the stage resumes. */
async function prepareStageDir(run: PipelineRun, s: StageSpec, stage: StageRun, resolved: string): Promise<void> {
  if (existsSync(stage.dir) && recordedSpec(stage.specFile) !== resolved) {
    run.log(`[${s.name}] inputs changed since the recorded run: redoing the stage`);
    rmSync(stage.dir, { recursive: true, force: true });
  }
  // train and verify fill their folder over time: record the spec first so an interrupted run resumes
  if ('train' in s || 'verify' in s) {
    mkdirSync(stage.dir, { recursive: true });
    await writeFileAtomic(stage.specFile, resolved);
  }
}

/** Writes a random-init checkpoint unless a complete one is there. */
async function initStage(run: PipelineRun, s: Extract<StageSpec, { init: unknown }>, stage: StageRun): Promise<void> {
  if (await manifestComplete(stage.dir)) stage.r.skipped = true;
  else {
    if (existsSync(stage.dir)) rmSync(stage.dir, { recursive: true, force: true });
    await writeRandomInit(stage.dir, initConfig(s.init.config), { seed: s.init.seed ?? run.seed, std: s.init.std });
  }
  run.current = stage.dir;
}

/** Trains (or resumes, or skips a completed) stage, then measures its losses. */
async function trainStage(run: PipelineRun, s: Extract<StageSpec, { train: unknown }>, stage: StageRun): Promise<void> {
  const done = await latestCheckpoint(stage.dir, (line) => run.log(`[${s.name}] warning: ${line}`));
  const doneManifest = done === undefined ? undefined : readManifest(done);
  if (done !== undefined && doneManifest?.kind === 'train' && doneManifest.extra.complete === true) {
    stage.r.skipped = true;
    run.current = done;
  } else {
    run.current = await trainCheckpoint(run, s, stage, done);
  }
  await recordTrainLosses(run, stage);
}

/** Runs the train engine from run.current (resuming from `done` when there is one); returns its checkpoint. */
async function trainCheckpoint(run: PipelineRun, s: StageSpec, stage: StageRun, done: string | undefined): Promise<string> {
  const { opts, log } = run;
  const ts = stage.train;
  const steps = ts.steps;
  if (steps === undefined) throw new PipelineError(run.file, `stages[${stage.k}].train.steps`, 'is required');
  const o: TrainOptions = {
    ...trainOptionsOf(ts),
    checkpoint: run.current,
    data: run.data,
    out: stage.dir,
    steps,
    batchSize: stage.B,
    seqLen: stage.T,
    seed: run.seed,
    backend: run.backend,
    resume: true,
    totalSteps: run.totalSteps,
    stage: s.name,
    ...(opts.logEvery !== undefined ? { logEvery: opts.logEvery } : {}),
    quiet: opts.quiet,
    progress: opts.progress,
    log,
    shouldStop: opts.shouldStopTraining,
  };
  if (done !== undefined) log(`[${s.name}] resuming from ${done}`);
  // the engine and launch keys (nproc, fsdp, tp, nnodes, ...) are declared options like the rest
  const tr = await trainWithEngine(o, { ...(trainOptionsOf(ts) as EngineOptions), engine: ts.engine });
  if (tr.interrupted)
    throw new FlmGrowError('Interrupted', `[${s.name}] interrupted after ${tr.step - tr.startStep} steps (stop requested)`);
  return tr.checkpoint;
}

/** Fills the train result from the checkpoint's manifest and a probe batch; settles a pending grow's losses. */
async function recordTrainLosses(run: PipelineRun, stage: StageRun): Promise<void> {
  const { r, train, B, T } = stage;
  const m = readManifest(run.current);
  const x = m?.kind === 'train' ? m.extra : undefined;
  r.lastTrainLoss = x?.lastLoss ?? undefined;
  r.evalLoss = x?.evalLoss ?? undefined;
  r.steps = [x !== undefined && typeof train.steps === 'number' ? x.targetStep - train.steps : 0, x?.step as number];
  run.metricsFiles.push(join(stage.dir, METRICS_FILE));
  const probe = await probeBatch(run.data, run.current, B, T, run.seed, train.text_field as string | undefined);
  r.lossEnd = await checkpointLoss(run.current, probe, B, T);
  if (run.pendingGrow !== undefined) {
    // the loss table compares growth on the batch size and length this stage trains with
    run.pendingGrow.lossBefore = await checkpointLoss(run.pendingGrow.input as string, probe, B, T);
    run.pendingGrow.lossAfter = await checkpointLoss(run.pendingGrow.dir, probe, B, T);
    run.pendingGrow = undefined;
  }
}

/** Grows run.current by stage k's plan; the next train stage fills in its before/after losses. */
async function growStage(run: PipelineRun, stage: StageRun): Promise<void> {
  if (run.current === '') throw new PipelineError(run.file, `stages[${stage.k}]`, 'grow needs a checkpoint before it');
  // growCheckpoint grows optimizer.safetensors inside its atomic output (and hashes it)
  if (await manifestComplete(stage.dir)) stage.r.skipped = true;
  else {
    const { quiet, progress } = run.opts;
    const g = (run.spec.stages[stage.k] as Extract<StageSpec, { grow: unknown }>).grow;
    await growCheckpoint(run.current, stage.dir, run.plans.get(stage.k) as GrowthPlan, {
      dtype: g.dtype === undefined ? undefined : parseDtypeName(g.dtype),
      overwrite: true,
      quiet,
      progress,
      backend: run.backend,
    });
  }
  run.lastPair = { source: run.current, output: stage.dir };
  run.pendingGrow = stage.r;
  run.current = stage.dir;
}

/** Verifies the latest grow/bake, reusing a passed report for the same pair; a failure stops the pipeline. */
async function verifyStage(run: PipelineRun, s: Extract<StageSpec, { verify: unknown }>, stage: StageRun): Promise<void> {
  const pair = run.lastPair;
  if (pair === undefined) throw new PipelineError(run.file, `stages[${stage.k}]`, 'verify needs a grow or bake stage before it');
  const reportFile = join(stage.dir, 'verify-report.json');
  let report: VerifyReport | undefined;
  // a torn or unreadable report (killed mid-write by an older version) is an incomplete stage
  const prev = existsSync(reportFile) ? readPreviousReport(reportFile) : undefined;
  if (prev !== undefined && prev.passed && prev.source === pair.source && prev.grown === pair.output) {
    report = prev;
    stage.r.skipped = true;
  }
  if (report === undefined) {
    report = await verifyGrowth(pair.source, pair.output, {
      tokens: s.verify.tokens,
      seq: s.verify.seq,
      seed: s.verify.seed ?? run.seed,
      tolerance: s.verify.tolerance,
      throwOnFail: false,
    });
    mkdirSync(stage.dir, { recursive: true });
    await writeFileAtomic(reportFile, JSON.stringify(report, null, 2) + '\n');
  }
  stage.r.verify = report;
  run.log(
    `[${s.name}] ${formatReport(report).split('\n').slice(-1)[0]} (relative logit difference ${report.relativeLogitDiff.toExponential(2)})`,
  );
  if (!report.passed) {
    run.log(formatReport(report));
    throw new VerifyFailedError(report);
  }
}

/** Bakes run.current (drops the growth masks) unless a complete bake is there. */
async function bakeStage(run: PipelineRun, s: Extract<StageSpec, { bake: unknown }>, stage: StageRun): Promise<void> {
  if (await manifestComplete(stage.dir)) stage.r.skipped = true;
  else {
    const { quiet, progress } = run.opts;
    await bakeCheckpoint(run.current, stage.dir, { overwrite: true, force: s.bake.force, quiet, progress, warn: run.log });
  }
  run.lastPair = { source: run.current, output: stage.dir };
  run.current = stage.dir;
}

/** Plots every train stage's metrics into <out>/loss.svg; undefined when no stage wrote any. */
async function plotPipelineLoss(run: PipelineRun): Promise<string | undefined> {
  const records: MetricsRecord[] = run.metricsFiles.filter((f) => existsSync(f)).flatMap((f) => readMetrics(f));
  if (records.length === 0) return undefined;
  const plot = join(run.out, 'loss.svg');
  const { series, growthMarks } = lossSeriesFromMetrics(records);
  await plotLossCurves(series, {
    title: `${basename(run.file, '.json')}: training loss (dashed: growth)`,
    xLabel: 'optimizer step',
    yLabel: 'cross-entropy (nats/token)',
    output: plot,
    growthMarks,
  });
  return plot;
}

/** Writes <out>/summary.json (non-finite numbers as null, which JSON cannot hold) and returns the result. */
async function writeSummary(run: PipelineRun, plot: string | undefined): Promise<PipelineResult> {
  const result: PipelineResult = { out: run.out, stages: run.results, plot, finalCheckpoint: run.current };
  await writeFileAtomic(
    join(run.out, 'summary.json'),
    JSON.stringify(result, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n',
  );
  return result;
}

/** The spec recorded in a stage folder, or undefined when absent or unreadable. */
function recordedSpec(specFile: string): string | undefined {
  try {
    return readTextFile(specFile, { what: 'stage spec' });
  } catch {
    return undefined;
  }
}

function readPreviousReport(reportFile: string): VerifyReport | undefined {
  try {
    const j = readJsonFile(reportFile, { what: 'verify report' });
    return typeof j === 'object' && j !== null && typeof (j as VerifyReport).passed === 'boolean'
      ? (j as VerifyReport)
      : undefined;
  } catch {
    return undefined;
  }
}

/** A fixed held-out batch (eval split, index 0) to compare checkpoints on. */
/** `data`, or each part of a mix (`a.bin:0.7,b.bin:0.3`), relative to the pipeline file. */
function relData(data: string, rel: (p: string) => string): string {
  const mix = parseDataMix(data);
  return mix === undefined ? rel(data) : mix.map((p) => `${rel(p.path)}:${p.weight}`).join(',');
}

async function probeBatch(data: string, ckDir: string, B: number, T: number, seed: number, textField?: string) {
  const file = isTextCorpus(data) ? await corpusTokenFile(data, ckDir, undefined, textField) : data;
  const ds = openTrainingData(file, { tokenizer: loadTokenizer(ckDir), seqLen: T });
  return ds.eval.length > T ? ds.batchAt('eval', 0, B, T, seed) : ds.batchAt('train', 0, B, T, seed);
}

function fmt(x: number | undefined): string {
  return x === undefined ? '—' : x.toFixed(4);
}

/** The per-stage loss table (growth preserves the loss: "before" equals "after"). */
export function formatLossTable(r: PipelineResult): string {
  const rows: string[][] = [
    [
      'stage',
      'params',
      'steps',
      'loss before growth',
      'loss after growth',
      'rel. diff',
      'loss at stage end',
      'eval loss',
      'time',
    ],
  ];
  let grow: StageResult | undefined;
  for (const s of r.stages) {
    if (s.kind === 'grow') {
      grow = s;
      continue;
    }
    if (s.kind !== 'train') continue;
    const rd =
      grow?.lossBefore !== undefined && grow.lossAfter !== undefined
        ? Math.abs(grow.lossAfter - grow.lossBefore) / Math.abs(grow.lossBefore)
        : undefined;
    rows.push([
      s.name,
      s.parameters === undefined ? '—' : s.parameters.toLocaleString('en-US'),
      s.steps === undefined ? '—' : `${s.steps[0]}→${s.steps[1]}`,
      fmt(grow?.lossBefore),
      fmt(grow?.lossAfter),
      rd === undefined ? '—' : rd.toExponential(1),
      fmt(s.lossEnd),
      fmt(s.evalLoss),
      `${(s.seconds + (grow?.seconds ?? 0)).toFixed(0)} s`,
    ]);
    grow = undefined;
  }
  const w = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  const line = (row: string[]) => '| ' + row.map((x, c) => x.padEnd(w[c])).join(' | ') + ' |';
  return [line(rows[0]), '|' + w.map((n) => '-'.repeat(n + 2)).join('|') + '|', ...rows.slice(1).map(line)].join('\n');
}
