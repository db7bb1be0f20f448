/**
 * `npm run bench -- drift name=<run> name=<run> ... [--pair a,b ...]`: how far apart two (or more)
 * finished `flm-grow run` folders of the same pipeline drift, train stage by train stage, from
 * their metrics.jsonl files. For each pair (default: every pair) and train stage: the first step
 * where |Δloss|/loss exceeds 1e-6, 1e-4 and 1e-3, the same for the gradient norm, the largest
 * LR difference (0 when the schedules agree), and the last step's loss and last eval loss of both.
 * A second table has the median |Δloss|/loss over windows of steps since the stage's start
 * (a single step's difference jumps about; the medians show how the gap grows and where it stops).
 * Then the pipeline's own loss table (summary.json: "loss at stage end" is the final checkpoint
 * on the fixed probe batch, evaluated by flm-grow for either engine) side by side.
 *
 * It reads finished runs only (the runs themselves take minutes each; docs/engines.md has the
 * commands). Used for issue 11's question: is a torch-vs-tfjs difference the engines' semantics
 * or f32 chaos? Runs of one engine with another thread count or in f64 (FLM_GROW_TORCH_PRECISION)
 * give the yardstick.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readMetrics, partitionMetrics, type StepMetrics } from '../src/train/metrics.ts';

const THRESHOLDS = [1e-6, 1e-4, 1e-3];
/** Windows of steps since the stage's start: [0,10), [10,20), [20,40), ... */
const WINDOWS = [0, 10, 20, 40, 80, 160, 320, Infinity];

interface Stage {
  name: string;
  steps: StepMetrics[];
}

interface Run {
  stages: Stage[];
  /** summary.json's train stages: the pipeline's loss table. */
  table: { name: string; lossEnd?: number; evalLoss?: number }[];
}

function readRun(dir: string): Run {
  const summary = join(dir, 'summary.json');
  const table = existsSync(summary)
    ? (
        JSON.parse(readFileSync(summary, 'utf8')) as {
          stages: { name: string; kind: string; lossEnd?: number; evalLoss?: number }[];
        }
      ).stages.filter((s) => s.kind === 'train')
    : [];
  return { stages: trainStages(dir), table };
}

/** The train stages of a pipeline run folder (NN-name folders with a metrics.jsonl), in order. */
function trainStages(dir: string): Stage[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && /^\d+-/.test(e.name) && existsSync(join(dir, e.name, 'metrics.jsonl')))
    .map((e) => e.name)
    .sort()
    .map((name) => ({
      name: name.replace(/^\d+-/, ''),
      steps: partitionMetrics(readMetrics(join(dir, name, 'metrics.jsonl'))).steps,
    }));
}

const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b), 1e-30);

/** First step (global) whose relative difference of `field` exceeds each threshold, or '-'. */
function firstAbove(a: StepMetrics[], b: StepMetrics[], field: 'loss' | 'gradNorm'): string[] {
  const byStep = new Map(b.map((m) => [m.step, m]));
  return THRESHOLDS.map((t) => {
    for (const m of a) {
      const o = byStep.get(m.step);
      const x = m[field],
        y = o?.[field];
      if (typeof x === 'number' && typeof y === 'number' && rel(x, y) > t) return String(m.step);
    }
    return '-';
  });
}

function lastEval(steps: StepMetrics[]): number | undefined {
  for (let i = steps.length - 1; i >= 0; i--) if (typeof steps[i].evalLoss === 'number') return steps[i].evalLoss;
  return undefined;
}

const f4 = (x: number | undefined) => (x === undefined ? '-' : x.toFixed(4));
const e1 = (x: number) => x.toExponential(1);

export function compare(runs: Map<string, Run>, pairs: [string, string][]): string {
  const out: string[] = [];
  out.push(
    '| pair | stage | steps | loss rel >1e-6 / 1e-4 / 1e-3 at step | gradNorm >1e-6 / 1e-4 / 1e-3 | max Δlr | last step loss A / B (rel) | eval A / B (rel) |',
  );
  out.push('|---|---|---|---|---|---|---|---|');
  for (const [na, nb] of pairs) {
    const A = runs.get(na)?.stages ?? [],
      B = runs.get(nb)?.stages ?? [];
    for (const sa of A) {
      const sb = B.find((s) => s.name === sa.name);
      if (sb === undefined || sa.steps.length === 0 || sb.steps.length === 0) continue;
      const lrB = new Map(sb.steps.map((m) => [m.step, m.lr]));
      let dlr = 0;
      for (const m of sa.steps) {
        const o = lrB.get(m.step);
        if (typeof m.lr === 'number' && typeof o === 'number') dlr = Math.max(dlr, Math.abs(m.lr - o));
      }
      const endA = sa.steps[sa.steps.length - 1].loss,
        endB = sb.steps[sb.steps.length - 1].loss;
      const evA = lastEval(sa.steps),
        evB = lastEval(sb.steps);
      const first = sa.steps[0].step,
        last = sa.steps[sa.steps.length - 1].step;
      out.push(
        `| ${na} vs ${nb} | ${sa.name} | ${first}–${last} | ${firstAbove(sa.steps, sb.steps, 'loss').join(' / ')} | ` +
          `${firstAbove(sa.steps, sb.steps, 'gradNorm').join(' / ')} | ${e1(dlr)} | ` +
          `${f4(endA)} / ${f4(endB)} (${e1(rel(endA, endB))}) | ` +
          `${f4(evA)} / ${f4(evB)} (${evA === undefined || evB === undefined ? '-' : e1(rel(evA, evB))}) |`,
      );
    }
  }
  const heads = WINDOWS.slice(0, -1).map((w, i) => `${w}–${WINDOWS[i + 1] === Infinity ? '' : WINDOWS[i + 1] - 1}`);
  out.push('', `| pair | stage | median \\|Δloss\\|/loss, steps since stage start: ${heads.join(' | ')} |`);
  out.push(`|---|---|${heads.map(() => '---|').join('')}`);
  for (const [na, nb] of pairs) {
    for (const sa of runs.get(na)?.stages ?? []) {
      const sb = (runs.get(nb)?.stages ?? []).find((s) => s.name === sa.name);
      if (sb === undefined || sa.steps.length === 0) continue;
      const byStep = new Map(sb.steps.map((m) => [m.step, m.loss]));
      const start = sa.steps[0].step;
      const cells = heads.map((_, w) => {
        const d = sa.steps
          .filter((m) => m.step - start >= WINDOWS[w] && m.step - start < WINDOWS[w + 1] && byStep.has(m.step))
          .map((m) => rel(m.loss, byStep.get(m.step) as number))
          .sort((x, y) => x - y);
        return d.length === 0 ? '' : e1(d[Math.floor(d.length / 2)]);
      });
      out.push(`| ${na} vs ${nb} | ${sa.name} | ${cells.join(' | ')} |`);
    }
  }
  out.push('', '| pair | stage | loss at stage end A / B (rel) | eval loss A / B (rel) |', '|---|---|---|---|');
  const cell = (x?: number, y?: number) =>
    x === undefined || y === undefined ? `${f4(x)} / ${f4(y)}` : `${f4(x)} / ${f4(y)} (${e1(rel(x, y))})`;
  for (const [na, nb] of pairs) {
    const A = runs.get(na)?.table ?? [],
      B = runs.get(nb)?.table ?? [];
    for (const a of A) {
      const b = B.find((s) => s.name === a.name);
      if (b !== undefined)
        out.push(`| ${na} vs ${nb} | ${a.name} | ${cell(a.lossEnd, b.lossEnd)} | ${cell(a.evalLoss, b.evalLoss)} |`);
    }
  }
  return out.join('\n');
}

export function run(args: string[]): number {
  const runs = new Map<string, Run>();
  const pairs: [string, string][] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--pair') {
      const p = (args[++i] ?? '').split(',');
      if (p.length !== 2) {
        process.stderr.write(`drift: --pair wants two run names, "a,b" (got "${args[i] ?? ''}")\n`);
        return 2;
      }
      pairs.push([p[0], p[1]]);
      continue;
    }
    const eq = a.indexOf('=');
    const [name, dir] = eq > 0 ? [a.slice(0, eq), a.slice(eq + 1)] : [a, a];
    if (!existsSync(dir)) {
      process.stderr.write(`drift: run folder ${dir} does not exist\n`);
      return 2;
    }
    runs.set(name, readRun(dir));
  }
  const names = [...runs.keys()];
  if (names.length < 2) {
    process.stderr.write('usage: npm run bench -- drift name=<run folder> name=<run folder> ... [--pair a,b ...]\n');
    return 2;
  }
  for (const [a, b] of pairs)
    if (!runs.has(a) || !runs.has(b)) {
      process.stderr.write(`drift: --pair ${a},${b} names a run that was not given (runs: ${names.join(', ')})\n`);
      return 2;
    }
  if (pairs.length === 0)
    for (let i = 0; i < names.length; i++) for (let j = i + 1; j < names.length; j++) pairs.push([names[i], names[j]]);
  process.stdout.write(compare(runs, pairs) + '\n');
  return 0;
}
