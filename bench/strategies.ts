/**
 * `npm run bench -- strategies [--engine auto|torch|tfjs] [--seeds 3] [...]` (issue 14): which growth
 * strategy works best, at equal compute, with the seed spread shown.
 *
 * Per seed, one small source model (default H 32, F 88, 4 heads of 8, 4 layers: 71k parameters) is
 * trained on the committed corpus (fixtures/corpus/fortunes.txt, bytes), then grown to two targets:
 *   tele    the 52B → 102B ratios of growth-plans/tele-flm-52b-to-102b.json (hidden, heads, FFN and
 *           layers × 1.25; 4 → 5 heads and layers: 1.75× parameters at this size, 1.96× at 52B);
 *   x4      hidden and heads × 2, FFN × 1.5, layers × 1.5 (4 → 6): 4.1× parameters.
 * Each strategy changes one thing from MSG's defaults (masked mode, new entries random, inserted
 * layers copies placed by cosine distance) and is trained on with the same steps, batches and LR
 * recipe; each target is also trained from scratch. Training FLOPs = Σ 6 · params · tokens; a grown
 * run's FLOPs include the source's training (the cost of the whole path, as in `bench msg`).
 *
 * Per target it reports, over seeds: the FLOPs the grown run needs to reach the same seed's scratch
 * run's final eval loss (ratio to the scratch run's FLOPs, at eval-point resolution), the final eval
 * loss (mean and min–max), the paired difference to MSG's run of the same seed (same source model,
 * same batches), and the eval loss right after growth (the grown checkpoint as written, before any
 * step: equal to the source's when the strategy preserves the function). A strategy whose plan
 * field the plan parser does not know yet is listed as "not available"; one its operator refuses for
 * a target (e.g. stack for 4 → 5 layers) as "not applicable", with the operator's reason.
 *
 * Writes bench-out/strategies-<engine>.json (every eval point of every run), .md (the tables) and
 * one plot per target, bench-out/strategies-<engine>-<target>.svg and .png (seed-mean eval loss vs
 * FLOPs). docs/strategies.md holds a committed run and its reading.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { initBackend, type BackendName } from '../src/engines/tfjs-backend.ts';
import { parameterCount } from '../src/spec/arch.ts';
import { type ModelConfig } from '../src/spec/config.ts';
import { FlmGrowError } from '../src/util/errors.ts';
import { growCheckpoint, type LayerSelection } from '../src/growth/grow.ts';
import { parsePlan, type GrowthPlan } from '../src/growth/plan.ts';
import { plotLossCurves, type PlotSeries } from '../src/train/plot.ts';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { findTorchPython, PYTHON_DIR, requireTorchPython } from '../src/engines/torch-process.ts';
import { TokenDataset } from '../src/train/data.ts';
import { torchTrainArgs, trainWithEngine } from '../src/train/engine.ts';
import { readMetrics, partitionMetrics } from '../src/train/metrics.ts';
import { latestCheckpoint } from '../src/train/checkpointing.ts';
import { initConfig, writeRandomInit } from '../src/train/random-init.ts';
import { checkpointLoss, METRICS_FILE, type TrainOptions } from '../src/train/trainer.ts';
import { readJsonFile } from '../src/util/files.ts';

const ROOT = resolve(import.meta.dirname, '..');
const DATA = join(ROOT, 'fixtures/corpus/fortunes.txt');
const TELE_PLAN = join(ROOT, 'growth-plans/tele-flm-52b-to-102b.json');

// ---- arguments -----------------------------------------------------------------------------

const FLAGS = {
  engine: { def: 'auto', help: 'auto (torch where a Python with torch is found, else tfjs) | torch | tfjs' },
  seeds: { def: '3', help: 'seeds 0..N-1: each its own source model, inits, batches and growth seed' },
  targets: { def: 'tele,x4', help: 'comma list of tele (52B→102B ratios) and x4 (hidden, heads ×2, FFN, layers ×1.5)' },
  strategies: { def: 'all', help: 'comma list of strategy ids (see the table), or all' },
  hidden: { def: '32', help: 'source hidden size' },
  ffn: { def: '88', help: 'source FFN size' },
  heads: { def: '4', help: 'source attention heads (= KV heads)' },
  'head-dim': { def: '8', help: 'head_dim (kept by every growth)' },
  layers: { def: '4', help: 'source layers' },
  'x4-target': { def: '', help: 'x4 target as hidden,ffn,heads,layers (derived: hidden, heads ×2, FFN, layers ×1.5)' },
  'source-steps': { def: '80', help: 'source training steps' },
  'grown-steps': { def: '80', help: 'training steps after growth (every strategy)' },
  'scratch-steps': { def: '160', help: 'training steps of each target from scratch (160 = source + grown: the same tokens)' },
  batch: { def: '8', help: 'batch size' },
  seq: { def: '32', help: 'sequence length' },
  lr: { def: '0.003', help: 'peak LR (cosine to lr/10, warmup 10 steps, rewound after growth)' },
  'anneal-steps': { def: '20', help: 'mask annealing steps after growth (masked mode)' },
  'eval-every': { def: '10', help: 'eval loss every N steps' },
  'eval-batches': { def: '4', help: 'held-out batches per eval' },
  out: { def: 'bench-out', help: 'folder for the JSON, markdown and plots (relative to the repo root)' },
  replot: { def: '', help: 'a strategies-<engine>.json: redo its tables and plots without training (other flags are ignored)' },
} as const;
type Flag = keyof typeof FLAGS;

export function usage(): string {
  const lines = Object.entries(FLAGS).map(
    ([k, v]) => `  --${k.padEnd(14)} ${v.help} (default: ${v.def === '' ? 'derived' : v.def})`,
  );
  return `usage: npm run bench -- strategies [flags]\n${lines.join('\n')}\n  strategies: ${STRATEGIES.map((s) => s.id).join(', ')}\n`;
}

class BenchArgsError extends Error {}

function intFlag(v: Record<Flag, string>, k: Flag, min: number, max: number): number {
  const n = Number(v[k]);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new BenchArgsError(`--${k} must be an integer in [${min}, ${max}], got ${JSON.stringify(v[k])}`);
  return n;
}

interface Shape {
  hidden: number;
  ffn: number;
  heads: number;
  layers: number;
}

interface Settings {
  engine: 'torch' | 'tfjs';
  seeds: number;
  targets: string[];
  strategies: Strategy[];
  source: Shape;
  headDim: number;
  x4: Shape | undefined;
  sourceSteps: number;
  grownSteps: number;
  scratchSteps: number;
  batch: number;
  seq: number;
  lr: number;
  annealSteps: number;
  evalEvery: number;
  evalBatches: number;
  out: string;
  replot: string;
}

export function parseSettings(args: string[]): Settings {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: Object.fromEntries(Object.keys(FLAGS).map((k) => [k, { type: 'string' as const }])),
    });
  } catch (e) {
    throw new BenchArgsError((e as Error).message);
  }
  const v = Object.fromEntries(
    Object.entries(FLAGS).map(([k, f]) => [k, (parsed.values as Record<string, string | undefined>)[k] ?? f.def]),
  ) as Record<Flag, string>;
  const engineFlag = v.engine;
  if (!['auto', 'torch', 'tfjs'].includes(engineFlag))
    throw new BenchArgsError(`--engine must be auto, torch or tfjs, got ${JSON.stringify(engineFlag)}`);
  if (engineFlag === 'torch') requireTorchPython(); // a clear "no torch" before any work
  const engine: 'torch' | 'tfjs' =
    engineFlag === 'auto' ? (findTorchPython() !== undefined ? 'torch' : 'tfjs') : (engineFlag as 'torch' | 'tfjs');
  const targets = v.targets.split(',').map((s) => s.trim());
  for (const t of targets)
    if (t !== 'tele' && t !== 'x4') throw new BenchArgsError(`--targets: unknown target "${t}" (allowed: tele, x4)`);
  let strategies = STRATEGIES;
  if (v.strategies !== 'all') {
    const ids = v.strategies.split(',').map((s) => s.trim());
    for (const id of ids)
      if (!STRATEGIES.some((s) => s.id === id))
        throw new BenchArgsError(`--strategies: unknown strategy "${id}" (allowed: ${STRATEGIES.map((s) => s.id).join(', ')})`);
    strategies = STRATEGIES.filter((s) => ids.includes(s.id));
  }
  const headDim = intFlag(v, 'head-dim', 1, 256);
  const source: Shape = {
    hidden: intFlag(v, 'hidden', 1, 4096),
    ffn: intFlag(v, 'ffn', 1, 16384),
    heads: intFlag(v, 'heads', 1, 256),
    layers: intFlag(v, 'layers', 1, 64),
  };
  if (source.hidden !== source.heads * headDim)
    throw new BenchArgsError(`--hidden ${source.hidden} must equal --heads × --head-dim = ${source.heads * headDim}`);
  let x4: Shape | undefined;
  if (v['x4-target'] !== '') {
    const n = v['x4-target'].split(',').map(Number);
    if (n.length !== 4 || n.some((x) => !Number.isInteger(x) || x < 1))
      throw new BenchArgsError(`--x4-target must be hidden,ffn,heads,layers (4 positive integers), got "${v['x4-target']}"`);
    x4 = { hidden: n[0], ffn: n[1], heads: n[2], layers: n[3] };
    if (x4.hidden !== x4.heads * headDim)
      throw new BenchArgsError(`--x4-target: hidden ${x4.hidden} must equal heads × head_dim = ${x4.heads * headDim}`);
  }
  const lr = Number(v.lr);
  if (!Number.isFinite(lr) || lr <= 0 || lr > 1) throw new BenchArgsError(`--lr must be a number in (0, 1], got ${v.lr}`);
  const s: Settings = {
    engine,
    seeds: intFlag(v, 'seeds', 1, 20),
    targets,
    strategies,
    source,
    headDim,
    x4,
    sourceSteps: intFlag(v, 'source-steps', 1, 100000),
    grownSteps: intFlag(v, 'grown-steps', 1, 100000),
    scratchSteps: intFlag(v, 'scratch-steps', 1, 100000),
    batch: intFlag(v, 'batch', 1, 1024),
    seq: intFlag(v, 'seq', 2, 4096),
    lr,
    annealSteps: intFlag(v, 'anneal-steps', 1, 100000),
    evalEvery: intFlag(v, 'eval-every', 1, 100000),
    evalBatches: intFlag(v, 'eval-batches', 1, 1000),
    out: resolve(ROOT, v.out),
    replot: v.replot === '' ? '' : resolve(ROOT, v.replot),
  };
  if (s.annealSteps > s.grownSteps)
    throw new BenchArgsError(
      `--anneal-steps ${s.annealSteps} is longer than --grown-steps ${s.grownSteps}: masks would never reach 1`,
    );
  return s;
}

// ---- strategies ----------------------------------------------------------------------------

interface Strategy {
  id: string;
  /** What the table and the plot call it. */
  label: string;
  /** The question it answers (width init, depth placement, inserted-layer init, mode). */
  axis: 'baseline' | 'width' | 'depth' | 'layers' | 'mode';
  /** Plan fields changed from MSG's defaults; `placement` replaces the whole placement. */
  plan: () => Record<string, unknown>;
}

export const STRATEGIES: Strategy[] = [
  { id: 'msg', label: 'MSG default: masked, new random, copy@cosine', axis: 'baseline', plan: () => ({}) },
  { id: 'width-zero', label: 'width: new entries zero', axis: 'width', plan: () => ({ init: { new: 'zero' } }) },
  { id: 'width-clone', label: 'width: clone', axis: 'width', plan: () => ({ init: { new: 'clone' } }) },
  {
    id: 'width-clone-noise',
    label: 'width: clone + noise 0.01',
    axis: 'width',
    plan: () => ({ init: { new: 'clone', noise: 0.01 } }),
  },
  { id: 'mode-zero', label: 'zero mode (no masks)', axis: 'mode', plan: () => ({ mode: 'zero' }) },
  { id: 'depth-uniform', label: 'depth: copy@uniform', axis: 'depth', plan: () => ({ placement: { method: 'uniform' } }) },
  { id: 'depth-top', label: 'depth: copy@top', axis: 'depth', plan: () => ({ placement: { method: 'top' } }) },
  { id: 'depth-bottom', label: 'depth: copy@bottom', axis: 'depth', plan: () => ({ placement: { method: 'bottom' } }) },
  { id: 'depth-stack', label: 'depth: stack (G_stack)', axis: 'depth', plan: () => ({ placement: { method: 'stack' } }) },
  // every: the operator's default, floor(L / (L' − L)) (one copy after every 4th layer for 4 → 5)
  {
    id: 'depth-interleave',
    label: 'depth: interleave (LLaMA-Pro)',
    axis: 'depth',
    plan: () => ({ placement: { method: 'interleave' } }),
  },
  { id: 'layers-random', label: 'inserted layers random', axis: 'layers', plan: () => ({ init: { layers: 'random' } }) },
];

function basePlan(target: Shape, seed: number, s: Settings): Record<string, unknown> {
  return {
    targets: {
      hidden_size: target.hidden,
      intermediate_size: target.ffn,
      num_attention_heads: target.heads,
      num_key_value_heads: target.heads,
      num_hidden_layers: target.layers,
    },
    mode: 'masked',
    init: { layers: 'copy', new: 'random' },
    placement: { method: 'distance', metric: 'cosine', order: 'smallest' },
    // distance placement measures the layers on real text: the corpus's first 2 kB
    calibration: { tokens: 256, seq: s.seq, seed, text: readFileSync(DATA, 'utf8').slice(0, 2048) },
    seed,
    anneal_steps: s.annealSteps,
  };
}

/** The strategy's plan, or why this build has none ("not available": the plan parser refuses a field). */
function strategyPlan(st: Strategy, target: Shape, seed: number, s: Settings): GrowthPlan | string {
  const base = basePlan(target, seed, s);
  const over = st.plan();
  const json: Record<string, unknown> = { ...base, ...over };
  if (over.init !== undefined) json.init = { ...(base.init as object), ...(over.init as object) };
  try {
    return parsePlan(json, `strategy ${st.id}`);
  } catch (e) {
    if (e instanceof FlmGrowError) return e.message;
    throw e;
  }
}

// ---- targets -------------------------------------------------------------------------------

function teleTarget(src: Shape, headDim: number): Shape {
  const p = readJsonFile(TELE_PLAN, { what: 'growth plan' }) as {
    source: Record<string, number>;
    targets: Record<string, number>;
  };
  const r = (k: string) => p.targets[k] / p.source[k];
  const heads = Math.round(src.heads * r('num_attention_heads'));
  return {
    hidden: heads * headDim,
    ffn: Math.round(src.ffn * r('intermediate_size')),
    heads,
    layers: Math.round(src.layers * r('num_hidden_layers')),
  };
}

/**
 * Hidden and heads × 2 (HyperCloning's case: clones of a whole-multiple hidden size are exact
 * unmasked), FFN × 1.5, layers × 1.5: 4.1× the parameters at the default source. Inserting fewer
 * layers than the source has (2 of 4) keeps the placements apart: with L' = 2L every copy
 * placement inserts one copy after every layer, the same map.
 */
function x4Target(src: Shape, headDim: number): Shape {
  const heads = src.heads * 2;
  return { hidden: heads * headDim, ffn: Math.round(src.ffn * 1.5), heads, layers: Math.round(src.layers * 1.5) };
}

function configOf(sh: Shape, headDim: number): ModelConfig {
  return initConfig({
    hidden_size: sh.hidden,
    intermediate_size: sh.ffn,
    num_hidden_layers: sh.layers,
    num_attention_heads: sh.heads,
    num_key_value_heads: sh.heads,
    head_dim: headDim,
    vocab_size: 320,
    max_position_embeddings: 128,
  });
}

// ---- the torch engine, kept running ----

/**
 * One Python process that runs flm_grow_torch.train's main() once per request: the same trainer as
 * `--engine torch` (same argv, from torchTrainArgs), without paying Python's and torch's start-up
 * (10+ s on a loaded 2-core machine, more than a whole tiny run) for each of the bench's ~75 runs.
 * One thread: the models are tiny and the machine is shared.
 */
const TORCH_DRIVER = `
import json, sys, traceback, torch
torch.set_num_threads(1)
from flm_grow_torch import train
for line in sys.stdin:
    try:
        train.main(json.loads(line))
        done = {"ok": True}
    except SystemExit as e:
        done = {"ok": False, "error": str(e.code)}
    except Exception:
        done = {"ok": False, "error": traceback.format_exc()}
    print("BENCH_DONE " + json.dumps(done), flush=True)
`;

class TorchWorker {
  private readonly child: ChildProcessWithoutNullStreams;
  private out = '';
  private err = '';
  private waiting: ((line: string) => void) | undefined;

  constructor() {
    const py = requireTorchPython();
    const env = { ...process.env, PYTHONPATH: [PYTHON_DIR, process.env.PYTHONPATH].filter(Boolean).join(':') };
    this.child = spawn(py.python, ['-u', '-c', TORCH_DRIVER], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.on('data', (d: Buffer) => {
      this.out += d.toString();
      let nl;
      while ((nl = this.out.indexOf('\n')) >= 0) {
        const line = this.out.slice(0, nl);
        this.out = this.out.slice(nl + 1);
        if (line.startsWith('BENCH_DONE ')) this.waiting?.(line.slice('BENCH_DONE '.length));
      }
    });
    this.child.stderr.on('data', (d: Buffer) => {
      this.err = (this.err + d.toString()).slice(-4000);
    });
    this.child.on('close', (code) =>
      this.waiting?.(JSON.stringify({ ok: false, error: `torch worker exited (${code}): ${this.err}` })),
    );
  }

  async train(o: TrainOptions): Promise<void> {
    const line = await new Promise<string>((res) => {
      this.waiting = res;
      this.child.stdin.write(JSON.stringify(torchTrainArgs(o)) + '\n');
    });
    this.waiting = undefined;
    const done = JSON.parse(line) as { ok: boolean; error?: string };
    if (!done.ok) throw new Error(`torch engine (${o.out}): ${done.error ?? 'failed'}`);
  }

  close(): void {
    this.child.stdin.end();
  }
}

// ---- runs ----------------------------------------------------------------------------------

interface EvalPoint {
  step: number;
  flops: number;
  loss: number;
}

interface RunRecord {
  /** Eval points; FLOPs counted from the start of the whole path (a grown run: source included). */
  evals: EvalPoint[];
  flops: number;
  wallS: number;
  /** Grown runs: eval loss of the grown checkpoint before any step. */
  step0Loss?: number;
  growS?: number;
}

interface StrategyResult {
  status: 'ok' | 'not available' | 'not applicable';
  reason?: string;
  runs: RunRecord[];
}

interface TargetResult {
  name: string;
  shape: Shape;
  params: number;
  scratch: RunRecord[];
  strategies: Record<string, StrategyResult>;
}

interface Results {
  settings: Omit<Settings, 'strategies'> & { strategies: string[] };
  sourceParams: number;
  source: RunRecord[];
  targets: TargetResult[];
  wallS: number;
}

/**
 * Held-out loss of a checkpoint on the trainer's eval batches (same data, seed, batch shape): the
 * evalBatches batches stacked into one of evalBatches·B rows, whose mean loss is the mean of theirs.
 */
async function evalCheckpoint(dir: string, ds: TokenDataset, seed: number, s: Settings): Promise<number> {
  const n = s.batch * s.seq;
  const inputs = new Int32Array(s.evalBatches * n),
    targets = new Int32Array(s.evalBatches * n);
  for (let k = 0; k < s.evalBatches; k++) {
    const b = ds.batchAt('eval', k, s.batch, s.seq, seed);
    inputs.set(b.inputs, k * n);
    targets.set(b.targets, k * n);
  }
  return checkpointLoss(dir, { inputs, targets }, s.evalBatches * s.batch, s.seq);
}

export async function run(args: string[]): Promise<number> {
  let s: Settings;
  try {
    s = parseSettings(args);
  } catch (e) {
    if (!(e instanceof BenchArgsError) && !(e instanceof FlmGrowError)) throw e;
    process.stderr.write(`bench strategies: ${(e as Error).message}\n\n${usage()}`);
    return 2;
  }
  if (s.replot !== '') return replot(s.replot, s.out);
  const backend = await initBackend('auto');
  const worker = s.engine === 'torch' ? new TorchWorker() : undefined;
  try {
    return await runAll(s, backend, worker);
  } finally {
    worker?.close();
  }
}

async function runAll(s: Settings, backend: string, worker: TorchWorker | undefined): Promise<number> {
  const srcCfg = configOf(s.source, s.headDim);
  const shapes: Record<string, Shape> = { tele: teleTarget(s.source, s.headDim), x4: s.x4 ?? x4Target(s.source, s.headDim) };
  const ds = TokenDataset.fromFile(DATA, { seqLen: s.seq });
  const tokensPerStep = s.batch * s.seq;
  const recipe = {
    data: DATA,
    batchSize: s.batch,
    seqLen: s.seq,
    lr: s.lr,
    minLr: s.lr / 10,
    warmupSteps: 10,
    evalEvery: s.evalEvery,
    evalBatches: s.evalBatches,
    backend: backend as BackendName,
    quiet: true,
    log: () => undefined,
  };
  /** Trains on the chosen engine and reads the eval points back from the run's metrics.jsonl. */
  const trainRun = async (
    o: Omit<TrainOptions, 'data'>,
    params: number,
    flops0: number,
  ): Promise<RunRecord & { checkpoint: string }> => {
    const t0 = Date.now();
    if (worker !== undefined) await worker.train({ ...recipe, ...o });
    else await trainWithEngine({ ...recipe, ...o }, { engine: 'tfjs' });
    const checkpoint = await latestCheckpoint(o.out);
    if (checkpoint === undefined) throw new Error(`${o.out}: the run saved no checkpoint`);
    const { steps } = partitionMetrics(readMetrics(join(o.out, METRICS_FILE)));
    const per = 6 * params * tokensPerStep;
    const evals = steps
      .map((m, i) => ({ m, i }))
      .filter(({ m }) => m.evalLoss !== undefined)
      .map(({ m, i }) => ({ step: m.step + 1, flops: flops0 + per * (i + 1), loss: m.evalLoss as number }));
    return { evals, flops: flops0 + per * steps.length, wallS: (Date.now() - t0) / 1000, checkpoint };
  };
  const results: Results = {
    settings: { ...s, strategies: s.strategies.map((x) => x.id) },
    sourceParams: parameterCount(srcCfg),
    source: [],
    targets: s.targets.map((name) => ({
      name,
      shape: shapes[name],
      params: parameterCount(configOf(shapes[name], s.headDim)),
      scratch: [],
      strategies: Object.fromEntries(s.strategies.map((st) => [st.id, { status: 'ok', runs: [] }])) as Record<
        string,
        StrategyResult
      >,
    })),
    wallS: 0,
  };
  const t0 = Date.now();
  console.log(
    `bench strategies: engine ${s.engine}, ${s.seeds} seed(s), source ${shapeLabel(s.source)} (${results.sourceParams.toLocaleString('en-US')} params), ` +
      results.targets.map((t) => `${t.name} ${shapeLabel(t.shape)} (${t.params.toLocaleString('en-US')})`).join(', '),
  );
  mkdirSync(s.out, { recursive: true });
  for (let seed = 0; seed < s.seeds; seed++) {
    const dir = mkdtempSync(join(tmpdir(), 'flm-bench-strategies-'));
    try {
      await writeRandomInit(join(dir, 'source-init'), srcCfg, { seed });
      const src = await trainRun(
        { checkpoint: join(dir, 'source-init'), out: join(dir, 'source'), steps: s.sourceSteps, seed },
        results.sourceParams,
        0,
      );
      const { checkpoint: srcCk, ...srcRec } = src;
      results.source.push(srcRec);
      log(seed, 'source', src);
      for (const t of results.targets) {
        let selection: LayerSelection | undefined;
        await writeRandomInit(join(dir, `${t.name}-init`), configOf(t.shape, s.headDim), { seed });
        const scratch = await trainRun(
          { checkpoint: join(dir, `${t.name}-init`), out: join(dir, `${t.name}-scratch`), steps: s.scratchSteps, seed },
          t.params,
          0,
        );
        const { checkpoint: _scratchCk, ...scratchRec } = scratch;
        t.scratch.push(scratchRec);
        log(seed, `${t.name} scratch`, scratch);
        rmSync(join(dir, `${t.name}-scratch`), { recursive: true, force: true });
        for (const st of s.strategies) {
          const r = t.strategies[st.id];
          if (r.status !== 'ok') continue;
          const plan = strategyPlan(st, t.shape, seed, s);
          if (typeof plan === 'string') {
            Object.assign(r, { status: 'not available', reason: plan });
            console.log(`  ${t.name} ${st.id}: not available (${plan})`);
            continue;
          }
          const grown = join(dir, `${t.name}-${st.id}`);
          const tg = Date.now();
          try {
            // distance placement: the source's layer distances are measured once per target and reused
            const g = await growCheckpoint(srcCk, grown, plan, { quiet: true, backend: backend as BackendName, selection });
            if (plan.placement.method === 'distance') selection ??= g.selection;
          } catch (e) {
            if (!(e instanceof FlmGrowError)) throw e;
            Object.assign(r, { status: 'not applicable', reason: e.message });
            console.log(`  ${t.name} ${st.id}: not applicable (${e.message})`);
            continue;
          }
          const growS = (Date.now() - tg) / 1000;
          const step0Loss = await evalCheckpoint(grown, ds, seed, s);
          const rec = await trainRun(
            { checkpoint: grown, out: `${grown}-train`, steps: s.grownSteps, seed },
            t.params,
            src.flops,
          );
          const { checkpoint: _ck, ...runRec } = rec;
          r.runs.push({ ...runRec, step0Loss, growS });
          log(seed, `${t.name} ${st.id}`, rec, step0Loss);
          rmSync(grown, { recursive: true, force: true });
          rmSync(`${grown}-train`, { recursive: true, force: true });
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  results.wallS = (Date.now() - t0) / 1000;
  const base = join(s.out, `strategies-${s.engine}`);
  writeFileSync(`${base}.json`, JSON.stringify(results, null, 1) + '\n');
  const md = await report(results, s, base);
  writeFileSync(`${base}.md`, md);
  console.log(`\n${md}`);
  console.log(`raw results: ${base}.json; tables: ${base}.md`);
  return 0;
}

function shapeLabel(sh: Shape): string {
  return `H ${sh.hidden}, F ${sh.ffn}, ${sh.heads} heads, ${sh.layers} layers`;
}

function log(seed: number, what: string, r: RunRecord, step0?: number): void {
  const last = r.evals[r.evals.length - 1];
  console.log(
    `  seed ${seed} ${what.padEnd(24)} final eval ${last?.loss.toFixed(4) ?? '-'}${step0 !== undefined ? `, after growth ${step0.toFixed(4)}` : ''}, ${r.wallS.toFixed(1)} s`,
  );
}

// ---- report --------------------------------------------------------------------------------

function stats(xs: number[]): { mean: number; min: number; max: number } {
  return { mean: xs.reduce((a, b) => a + b, 0) / xs.length, min: Math.min(...xs), max: Math.max(...xs) };
}

function spread(xs: number[], d = 3): string {
  if (xs.length === 0) return '–';
  const { mean, min, max } = stats(xs);
  return xs.length === 1 ? mean.toFixed(d) : `${mean.toFixed(d)} [${min.toFixed(d)}, ${max.toFixed(d)}]`;
}

/** FLOPs ratio at the first eval point at or below the scratch run's final eval loss, or undefined. */
function reachRatio(run: RunRecord, scratch: RunRecord): number | undefined {
  const goal = scratch.evals[scratch.evals.length - 1].loss;
  const hit = run.evals.find((e) => e.loss <= goal);
  return hit === undefined ? undefined : hit.flops / scratch.flops;
}

const final = (r: RunRecord) => r.evals[r.evals.length - 1].loss;

/** Seed-mean eval curve (eval points line up across seeds: same steps). */
function meanCurve(runs: RunRecord[]): { x: number; y: number }[] {
  const n = Math.min(...runs.map((r) => r.evals.length));
  return Array.from({ length: n }, (_, i) => ({
    x: runs[0].evals[i].flops / 1e9,
    y: runs.reduce((a, r) => a + r.evals[i].loss, 0) / runs.length,
  }));
}

/** Tables and plots again from a results JSON (e.g. after a change to the report). */
async function replot(file: string, outDir: string): Promise<number> {
  const res = readJsonFile(file, { what: 'bench results' }) as Results;
  const s: Settings = {
    ...res.settings,
    strategies: res.settings.strategies.map((id) => {
      const st = STRATEGIES.find((x) => x.id === id);
      if (st === undefined) throw new BenchArgsError(`${file}: unknown strategy "${id}"`);
      return st;
    }),
    out: outDir,
    replot: file,
  };
  mkdirSync(outDir, { recursive: true });
  const base = join(outDir, `strategies-${s.engine}`);
  const md = await report(res, s, base);
  writeFileSync(`${base}.md`, md);
  console.log(md);
  return 0;
}

async function report(res: Results, s: Settings, base: string): Promise<string> {
  const seeds = res.source.length;
  const out: string[] = [];
  out.push(
    `Engine ${s.engine}; ${seeds} seed(s); source ${shapeLabel(s.source)}, head_dim ${s.headDim}: ${res.sourceParams.toLocaleString('en-US')} parameters, ` +
      `${s.sourceSteps} steps; grown runs ${s.grownSteps} steps (masks annealed over ${s.annealSteps} steps), scratch ${s.scratchSteps} steps; ` +
      `batch ${s.batch}×${s.seq} bytes, lr ${s.lr} cosine to ${Number((s.lr / 10).toPrecision(6))}, warmup 10 (rewound after growth), eval on ${s.evalBatches} held-out batches every ${s.evalEvery} steps. ` +
      `Wall ${(res.wallS / 60).toFixed(1)} min.`,
  );
  out.push('');
  out.push(
    `Numbers are mean [min, max] over seeds. Source's final eval loss: ${spread(res.source.map(final))}. ` +
      `"FLOPs to scratch loss": training FLOPs of the whole path (source + grown run) at the first eval point whose loss is at or below the same seed's scratch run's final eval loss, over the scratch run's FLOPs (n/${seeds}: seeds that reach it; the mean is over those). ` +
      `"Δ final vs MSG": the paired per-seed difference of final eval loss to the MSG default run of the same seed (negative: better), with how many seeds are lower.`,
  );
  for (const t of res.targets) {
    const scratchFinal = t.scratch.map(final);
    out.push('');
    out.push(
      `### ${t.name}: ${shapeLabel(t.shape)}: ${t.params.toLocaleString('en-US')} parameters (${(t.params / res.sourceParams).toFixed(2)}× the source)`,
    );
    out.push('');
    out.push(`| strategy | FLOPs to scratch loss (ratio) | final eval loss | Δ final vs MSG | eval loss right after growth |`);
    out.push(`|---|---|---|---|---|`);
    out.push(`| from scratch (${s.scratchSteps} steps) | 1 (by definition) | ${spread(scratchFinal)} | | |`);
    const msg = t.strategies.msg?.status === 'ok' ? t.strategies.msg.runs : undefined;
    for (const st of s.strategies) {
      const r = t.strategies[st.id];
      if (r.status !== 'ok') {
        out.push(`| ${st.label} | ${r.status}: ${(r.reason ?? '').replace(/\|/g, '\\|').slice(0, 160)} | | | |`);
        continue;
      }
      const ratios = r.runs.map((run, i) => reachRatio(run, t.scratch[i])).filter((x): x is number => x !== undefined);
      const fin = r.runs.map(final);
      let delta = '';
      if (msg !== undefined && st.id !== 'msg') {
        const d = fin.map((f, i) => f - final(msg[i]));
        delta = `${spread(d)} (${d.filter((x) => x < 0).length}/${d.length} lower)`;
      }
      out.push(
        `| ${st.label} | ${ratios.length === 0 ? `not reached (0/${r.runs.length})` : `${spread(ratios)} (${ratios.length}/${r.runs.length})`} | ${spread(fin)} | ${delta} | ${spread(r.runs.map((x) => x.step0Loss as number))} |`,
      );
    }
    const series: PlotSeries[] = [
      { name: 'source (small model)', points: meanCurve(res.source) },
      { name: 'from scratch', points: meanCurve(t.scratch) },
    ];
    for (const st of s.strategies) {
      const r = t.strategies[st.id];
      // each grown curve starts at the growth: the source's FLOPs and the loss right after growth
      if (r.status === 'ok' && r.runs.length > 0)
        series.push({
          name: st.label,
          points: [
            { x: res.source[0].flops / 1e9, y: stats(r.runs.map((x) => x.step0Loss as number)).mean },
            ...meanCurve(r.runs),
          ],
        });
    }
    for (const ext of ['svg', 'png']) {
      const output = `${base}-${t.name}.${ext}`;
      try {
        await plotLossCurves(series, {
          title: `${t.name}: eval loss vs training compute (mean of ${seeds} seed(s))`,
          xLabel: 'training GFLOPs (6·params·tokens, source included)',
          yLabel: 'eval loss (nats/byte)',
          output,
          growthMarks: [res.source[0].flops / 1e9],
          width: 760,
          height: 440,
        });
        out.push('', `plot: ${output}`);
      } catch (e) {
        // PNG needs a native module; the SVG is the one docs use
        if (ext === 'svg') throw e;
        out.push('', `(no PNG: ${(e as Error).message})`);
      }
    }
  }
  return out.join('\n') + '\n';
}
