/**
 * Stage pipelines (`flm-grow run <pipeline.json>`): a list of stages — init | train | grow |
 * verify | bake — each writing into its own folder `<out>/<NN>-<name>`. Each checkpoint-producing
 * stage feeds the next; verify compares the input and output of the latest grow (or bake).
 *
 * Resumable: a stage whose output manifest verifies (sha256 of every file) is skipped; a train
 * stage continues from its newest complete checkpoint; anything half-written is redone. A failing
 * verify stops the pipeline (VerifyFailedError, exit 1).
 */
import { existsSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { parameterCount } from './arch.ts';
import { readConfigFile } from './config.ts';
import { FlmGrowError } from './errors.ts';
import { readManifest, verifyManifestFiles } from './manifest.ts';
import { growCheckpoint } from './growth/grow.ts';
import { bakeCheckpoint } from './growth/bake.ts';
import { applyPlanFlags, readPlanFile } from './growth/plan.ts';
import { verifyGrowth, formatReport, VerifyFailedError, type VerifyReport } from './verify.ts';
import { initBackend, type BackendName } from './backend.ts';
import { initConfig, writeRandomInit } from './train/random-init.ts';
import { checkpointLoss, METRICS_FILE, type TrainOptions } from './train/trainer.ts';
import { trainWithEngine, type Engine } from './train/engine.ts';
import { latestCheckpoint } from './train/checkpointing.ts';
import { TokenDataset } from './train/data.ts';
import { loadTokenizer } from './tokenizer.ts';
import { readMetrics, type MetricsRecord } from './train/metrics.ts';
import { lossSeriesFromMetrics, plotLossCurves } from './plot.ts';
import type { LrScheduleKind } from './train/lr-schedule.ts';
import type { ProgressFactory } from './util/progress.ts';

export class PipelineError extends FlmGrowError {
  constructor(file: string, field: string | undefined, message: string) {
    super('PipelineError', `${file}${field !== undefined ? `: field "${field}"` : ''}: ${message}`);
  }
}

/** Training knobs in the pipeline file (snake_case like the CLI flags' names). */
export interface TrainSettings {
  steps?: number;
  batch_size?: number;
  seq_len?: number;
  lr?: number;
  min_lr?: number;
  warmup_steps?: number;
  schedule?: LrScheduleKind;
  weight_decay?: number;
  clip_grad?: number;
  save_every?: number;
  eval_every?: number;
  eval_batches?: number;
  lr_after_growth?: 'rewind' | 'continue';
  /** tfjs | torch | auto (see src/train/engine.ts) and the torch engine's process count. */
  engine?: Engine;
  nproc?: number;
}

export type StageSpec =
  | { name: string; init: { config: Record<string, unknown>; std?: number; seed?: number } }
  | { name: string; train: TrainSettings }
  | { name: string; grow: { plan: string; anneal_steps?: number; mode?: 'masked' | 'zero' } }
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

export function parsePipeline(json: unknown, file: string): PipelineSpec {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new PipelineError(file, undefined, 'is not a JSON object');
  const p = json as Record<string, unknown>;
  if (typeof p.data !== 'string') throw new PipelineError(file, 'data', 'must name the training data file');
  if (!Array.isArray(p.stages) || p.stages.length === 0) throw new PipelineError(file, 'stages', 'must be a non-empty array');
  const names = new Set<string>();
  p.stages.forEach((s: unknown, k: number) => {
    const f = `stages[${k}]`;
    if (typeof s !== 'object' || s === null) throw new PipelineError(file, f, 'must be an object');
    const o = s as Record<string, unknown>;
    if (typeof o.name !== 'string' || !/^[A-Za-z0-9._-]+$/.test(o.name)) throw new PipelineError(file, `${f}.name`, 'must be a name of letters, digits, . _ -');
    if (names.has(o.name)) throw new PipelineError(file, `${f}.name`, `"${o.name}" is used twice`);
    names.add(o.name);
    const kinds = STAGE_KINDS.filter((kk) => kk in o);
    if (kinds.length !== 1) throw new PipelineError(file, f, `must have exactly one of ${STAGE_KINDS.join(', ')}`);
    if (kinds[0] === 'init' && k !== 0) throw new PipelineError(file, f, 'init can only be the first stage');
    if (kinds[0] === 'grow' && typeof (o.grow as { plan?: unknown }).plan !== 'string') throw new PipelineError(file, `${f}.grow.plan`, 'must name a growth plan file');
  });
  if (!('init' in (p.stages[0] as object)) && typeof p.checkpoint !== 'string') {
    throw new PipelineError(file, 'checkpoint', 'is required when the first stage is not init');
  }
  return p as unknown as PipelineSpec;
}

export function readPipelineFile(path: string): PipelineSpec {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new PipelineError(path, undefined, `cannot read: ${(e as Error).message}`);
  }
  return parsePipeline(json, path);
}

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

/** What the stages of one run share: its settings, and the checkpoint each stage hands to the next. */
interface PipelineRun {
  file: string;
  spec: PipelineSpec;
  opts: PipelineOptions;
  rel: (p: string) => string;
  out: string;
  log: (line: string) => void;
  data: string;
  seed: number;
  backend: BackendName;
  /** Steps of every train stage together ('continue' LR schedules span them all). */
  totalSteps: number;
  current: string;
  /** The last grow or bake (source and output), for a verify stage. */
  lastPair: { source: string; output: string } | undefined;
  /** A grow whose loss before/after waits for the next train stage's probe batch. */
  pendingGrow: StageResult | undefined;
  metricsFiles: string[];
}

type Stage<K extends StageKind> = Extract<StageSpec, Record<K, unknown>>;

export async function runPipeline(file: string, opts: PipelineOptions = {}): Promise<PipelineResult> {
  const run = await startPipeline(file, opts);
  const results: StageResult[] = [];
  for (let k = 0; k < run.spec.stages.length; k++) results.push(await runStage(run, k));
  const plot = await plotPipelineLoss(run);
  const result: PipelineResult = { out: run.out, stages: results, plot, finalCheckpoint: run.current };
  writeFileSync(join(run.out, 'summary.json'), JSON.stringify(result, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n');
  return result;
}

async function startPipeline(file: string, opts: PipelineOptions): Promise<PipelineRun> {
  const spec = readPipelineFile(file);
  const base = dirname(resolve(file));
  const rel = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  const out = resolve(opts.out ?? join(base, 'pipeline-out'));
  const log = opts.log ?? ((s: string) => process.stdout.write(s + '\n'));
  mkdirSync(out, { recursive: true });
  const data = rel(spec.data);
  const seed = spec.seed ?? 0;
  const backend = spec.backend ?? 'auto';
  log(`pipeline ${file}: ${spec.stages.length} stages into ${out} (backend ${await initBackend(backend)})`);
  const trainDefaults = spec.train ?? {};
  const totalSteps = spec.stages.reduce((a, s) => a + ('train' in s ? (s.train.steps ?? trainDefaults.steps ?? 0) : 0), 0);
  const current = spec.checkpoint !== undefined ? rel(spec.checkpoint) : '';
  return { file, spec, opts, rel, out, log, data, seed, backend, totalSteps, current, lastPair: undefined, pendingGrow: undefined, metricsFiles: [] };
}

async function runStage(run: PipelineRun, k: number): Promise<StageResult> {
  const s = run.spec.stages[k];
  const kind = stageKind(s);
  const dir = join(run.out, `${pad2(k)}-${s.name}`);
  const t0 = Date.now();
  const r: StageResult = { name: s.name, kind, dir, ...(run.current !== '' ? { input: run.current } : {}), skipped: false, seconds: 0 };
  if ('init' in s) await initStage(run, s, r);
  else if ('train' in s) await trainStage(run, k, s, r);
  else if ('grow' in s) await growStage(run, k, s, r);
  else if ('verify' in s) await verifyStage(run, k, s, r);
  else if ('bake' in s) await bakeStage(run, s, r);
  if (kind !== 'verify') r.parameters = parameterCount(readConfigFile(join(run.current, 'config.json')));
  r.seconds = (Date.now() - t0) / 1000;
  run.log(`[${s.name}] ${kind} ${r.skipped ? 'skipped (output complete)' : 'done'} in ${r.seconds.toFixed(1)} s -> ${kind === 'verify' ? dir : run.current}`);
  return r;
}

async function initStage(run: PipelineRun, s: Stage<'init'>, r: StageResult): Promise<void> {
  if (await manifestComplete(r.dir)) r.skipped = true;
  else {
    if (existsSync(r.dir)) rmSync(r.dir, { recursive: true, force: true });
    await writeRandomInit(r.dir, initConfig(s.init.config), { seed: s.init.seed ?? run.seed, std: s.init.std });
  }
  run.current = r.dir;
}

async function trainStage(run: PipelineRun, k: number, s: Stage<'train'>, r: StageResult): Promise<void> {
  const { opts, log, data, seed, backend, file } = run;
  const dir = r.dir;
  const ts = { ...run.spec.train, ...s.train };
  const B = ts.batch_size ?? 8, T = ts.seq_len ?? 64;
  const done = await latestCheckpoint(dir);
  const doneManifest = done === undefined ? undefined : readManifest(done);
  if (done !== undefined && doneManifest?.kind === 'train' && doneManifest.extra.complete === true) {
    r.skipped = true;
    run.current = done;
  } else {
    const steps = ts.steps;
    if (steps === undefined) throw new PipelineError(file, `stages[${k}].train.steps`, 'is required');
    const o: TrainOptions = {
      checkpoint: run.current, data, out: dir, steps, batchSize: B, seqLen: T, lr: ts.lr, minLr: ts.min_lr,
      warmupSteps: ts.warmup_steps, schedule: ts.schedule, weightDecay: ts.weight_decay, clipGrad: ts.clip_grad,
      saveEvery: ts.save_every, evalEvery: ts.eval_every, evalBatches: ts.eval_batches, seed, backend, resume: true,
      lrAfterGrowth: ts.lr_after_growth, totalSteps: run.totalSteps, stage: s.name, quiet: opts.quiet, progress: opts.progress, log,
      shouldStop: opts.shouldStopTraining,
    };
    if (done !== undefined) log(`[${s.name}] resuming from ${done}`);
    const tr = await trainWithEngine(o, { engine: ts.engine, nproc: ts.nproc });
    if (tr.interrupted) throw new FlmGrowError('Interrupted', `[${s.name}] interrupted after ${tr.step - tr.startStep} steps (stop requested)`);
    run.current = tr.checkpoint;
  }
  const m = readManifest(run.current);
  const x = m?.kind === 'train' ? m.extra : undefined;
  r.lastTrainLoss = x?.lastLoss ?? undefined;
  r.evalLoss = x?.evalLoss ?? undefined;
  r.steps = [x !== undefined && typeof ts.steps === 'number' ? x.targetStep - ts.steps : 0, x?.step as number];
  run.metricsFiles.push(join(dir, METRICS_FILE));
  const probe = probeBatch(data, run.current, B, T, seed);
  r.lossEnd = await checkpointLoss(run.current, probe, B, T);
  const g = run.pendingGrow;
  if (g !== undefined) {
    // the loss table compares growth on the batch size and length this stage trains with
    g.lossBefore = await checkpointLoss(g.input as string, probe, B, T);
    g.lossAfter = await checkpointLoss(g.dir, probe, B, T);
    run.pendingGrow = undefined;
  }
}

async function growStage(run: PipelineRun, k: number, s: Stage<'grow'>, r: StageResult): Promise<void> {
  const { opts } = run;
  if (run.current === '') throw new PipelineError(run.file, `stages[${k}]`, 'grow needs a checkpoint before it');
  // growCheckpoint grows optimizer.safetensors inside its atomic output (and hashes it)
  if (await manifestComplete(r.dir)) r.skipped = true;
  else {
    let plan = readPlanFile(run.rel(s.grow.plan));
    plan = applyPlanFlags(plan, { annealSteps: s.grow.anneal_steps, mode: s.grow.mode });
    await growCheckpoint(run.current, r.dir, plan, { overwrite: true, quiet: opts.quiet, progress: opts.progress, backend: run.backend });
  }
  run.lastPair = { source: run.current, output: r.dir };
  run.pendingGrow = r;
  run.current = r.dir;
}

async function verifyStage(run: PipelineRun, k: number, s: Stage<'verify'>, r: StageResult): Promise<void> {
  const { lastPair, log } = run;
  if (lastPair === undefined) throw new PipelineError(run.file, `stages[${k}]`, 'verify needs a grow or bake stage before it');
  const reportFile = join(r.dir, 'verify-report.json');
  let report: VerifyReport | undefined;
  if (existsSync(reportFile)) {
    const prev = JSON.parse(readFileSync(reportFile, 'utf8')) as VerifyReport;
    if (prev.passed && prev.source === lastPair.source && prev.grown === lastPair.output) { report = prev; r.skipped = true; }
  }
  if (report === undefined) {
    report = await verifyGrowth(lastPair.source, lastPair.output, {
      tokens: s.verify.tokens, seq: s.verify.seq, seed: s.verify.seed ?? run.seed, tolerance: s.verify.tolerance, throwOnFail: false,
    });
    mkdirSync(r.dir, { recursive: true });
    writeFileSync(reportFile, JSON.stringify(report, null, 2) + '\n');
  }
  r.verify = report;
  log(`[${s.name}] ${formatReport(report).split('\n').slice(-1)[0]} (relative logit difference ${report.relativeLogitDiff.toExponential(2)})`);
  if (!report.passed) {
    log(formatReport(report));
    throw new VerifyFailedError(report);
  }
}

async function bakeStage(run: PipelineRun, s: Stage<'bake'>, r: StageResult): Promise<void> {
  const { opts } = run;
  if (await manifestComplete(r.dir)) r.skipped = true;
  else await bakeCheckpoint(run.current, r.dir, { overwrite: true, force: s.bake.force, quiet: opts.quiet, progress: opts.progress, warn: run.log });
  run.lastPair = { source: run.current, output: r.dir };
  run.current = r.dir;
}

/** loss.svg from the train stages' metrics, if any were written. */
async function plotPipelineLoss(run: PipelineRun): Promise<string | undefined> {
  const records: MetricsRecord[] = run.metricsFiles.filter((f) => existsSync(f)).flatMap((f) => readMetrics(f));
  if (records.length === 0) return undefined;
  const plot = join(run.out, 'loss.svg');
  const { series, growthMarks } = lossSeriesFromMetrics(records);
  await plotLossCurves(series, { title: `${basename(run.file, '.json')}: training loss (dashed: growth)`, xLabel: 'optimizer step', yLabel: 'cross-entropy (nats/token)', output: plot, growthMarks });
  return plot;
}

/** A fixed held-out batch (eval split, index 0) to compare checkpoints on. */
function probeBatch(data: string, ckDir: string, B: number, T: number, seed: number) {
  const ds = TokenDataset.fromFile(data, { tokenizer: loadTokenizer(ckDir), seqLen: T });
  return ds.eval.length > T ? ds.batchAt('eval', 0, B, T, seed) : ds.batchAt('train', 0, B, T, seed);
}

function fmt(x: number | undefined): string {
  return x === undefined ? '—' : x.toFixed(4);
}

/** The per-stage loss table (growth preserves the loss: "before" equals "after"). */
export function formatLossTable(r: PipelineResult): string {
  const rows: string[][] = [['stage', 'params', 'steps', 'loss before growth', 'loss after growth', 'rel. diff', 'loss at stage end', 'eval loss', 'time']];
  let grow: StageResult | undefined;
  for (const s of r.stages) {
    if (s.kind === 'grow') { grow = s; continue; }
    if (s.kind !== 'train') continue;
    const rd = grow?.lossBefore !== undefined && grow.lossAfter !== undefined ? Math.abs(grow.lossAfter - grow.lossBefore) / Math.abs(grow.lossBefore) : undefined;
    rows.push([s.name, s.parameters === undefined ? '—' : s.parameters.toLocaleString('en-US'), s.steps === undefined ? '—' : `${s.steps[0]}→${s.steps[1]}`,
      fmt(grow?.lossBefore), fmt(grow?.lossAfter), rd === undefined ? '—' : rd.toExponential(1), fmt(s.lossEnd), fmt(s.evalLoss),
      `${(s.seconds + (grow?.seconds ?? 0)).toFixed(0)} s`]);
    grow = undefined;
  }
  const w = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  const line = (row: string[]) => '| ' + row.map((x, c) => x.padEnd(w[c])).join(' | ') + ' |';
  return [line(rows[0]), '|' + w.map((n) => '-'.repeat(n + 2)).join('|') + '|', ...rows.slice(1).map(line)].join('\n');
}
