/**
 * `npm run bench -- startup [--runs N]`: wall time of short flm-grow runs against `node -e 0` in
 * the same run, interleaved so machine noise hits both alike. Prints min / median / max and the
 * median ratio against the target (3× for --version and --help, 5× for inspect and plan --json).
 * Runs the compiled CLI (bin/flm-grow.js -> dist/); build first (`npm run build`).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin', 'flm-grow.js');
const FIX = 'fixtures/hf/llama-tiny-f32';

const CASES: { name: string; args: string[]; target: number }[] = [
  { name: 'node -e 0', args: ['-e', '0'], target: 1 },
  { name: 'flm-grow --version', args: [BIN, '--version'], target: 3 },
  { name: 'flm-grow --help', args: [BIN, '--help'], target: 3 },
  { name: `flm-grow inspect ${FIX} --json`, args: [BIN, 'inspect', FIX, '--json'], target: 5 },
  {
    name: `flm-grow plan ${FIX} --plan growth-plans/tiny-stage1-to-stage2.json --json`,
    args: [BIN, 'plan', FIX, '--plan', 'growth-plans/tiny-stage1-to-stage2.json', '--json'],
    target: 5,
  },
];

function once(args: string[]): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return ms;
}

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

export function run(args: string[]): void {
  const i = args.indexOf('--runs');
  const runs = i >= 0 ? Number(args[i + 1]) : 15;
  if (!existsSync(join(ROOT, 'dist', 'cli.js'))) throw new Error('dist/cli.js is missing: run `npm run build` first');
  const times = CASES.map(() => [] as number[]);
  for (const c of CASES) once(c.args); // warm the file cache
  for (let r = 0; r < runs; r++) CASES.forEach((c, k) => times[k].push(once(c.args)));
  const base = median(times[0]);
  const lines = [`startup, ${runs} interleaved runs each (ms: min / median / max; ratio = median / median of node -e 0)`];
  CASES.forEach((c, k) => {
    const t = times[k];
    const ratio = median(t) / base;
    const lo = Math.min(...t),
      hi = Math.max(...t);
    lines.push(
      `  ${c.name.padEnd(92)} ${lo.toFixed(0).padStart(5)} / ${median(t).toFixed(0).padStart(5)} / ${hi.toFixed(0).padStart(5)}   ${ratio.toFixed(2)}×${k === 0 ? '' : `  (target ≤ ${c.target}×: ${ratio <= c.target ? 'ok' : 'MISSED'})`}`,
    );
  });
  process.stdout.write(lines.join('\n') + '\n');
}
