/**
 * `plan`'s peak-memory estimate against the measured peak RSS of `grow` (/usr/bin/time -f %M),
 * for both placements, on a synthetic µP-proxy checkpoint (the real 80,384 × 512 embedding):
 * explicit positions (writing only) and distance-based selection (the calibration pass). The
 * estimate must be within 1.5× of the measurement either way.
 *
 *   npm run bench -- plan-memory [--like tele-flm-mup-proxy] [--layers 2] [--tokens 4096] [--seq 512]
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'bin/flm-grow.js');

function arg(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
}

function node(args: string[], timeFile?: string): string {
  const cmd = timeFile === undefined ? process.execPath : '/usr/bin/time';
  const full = timeFile === undefined ? [CLI, ...args] : ['-f', '%M %e', '-o', timeFile, process.execPath, CLI, ...args];
  const r = spawnSync(cmd, full, { encoding: 'utf8', cwd: ROOT, maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`flm-grow ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

export async function run(args: string[]): Promise<void> {
  const like = arg(args, 'like', 'tele-flm-mup-proxy');
  const layers = Number(arg(args, 'layers', '2'));
  const tokens = arg(args, 'tokens', '4096'),
    seq = arg(args, 'seq', '512');
  const dir = mkdtempSync(join(tmpdir(), 'flm-grow-plan-memory-'));
  let bad = 0;
  try {
    const src = join(dir, 'src');
    node(['synth', src, '--like', like, '--num-hidden-layers', String(layers)]);
    const common = ['--num-hidden-layers', String(layers + 1), '--calibration-tokens', tokens, '--calibration-seq', seq];
    const cases: [string, string[]][] = [
      ['explicit', ['--placement', 'explicit', '--positions', '0']],
      ['distance', ['--placement', 'distance']],
    ];
    for (const [name, flags] of cases) {
      const plan = JSON.parse(node(['plan', src, ...common, ...flags, '--json'])) as { peakMemoryBytes: number };
      const tf = join(dir, `${name}.time`);
      node(['grow', src, join(dir, name), ...common, ...flags, '--quiet'], tf);
      const [kb, secs] = readFileSync(tf, 'utf8').trim().split(/\s+/).slice(-2).map(Number);
      const measured = kb * 1024;
      const ratio = plan.peakMemoryBytes / measured;
      const ok = ratio <= 1.5 && ratio >= 1 / 1.5;
      if (!ok) bad++;
      process.stdout.write(
        `${like} ${layers} -> ${layers + 1} layers, ${name} placement (${tokens} tokens × ${seq}): estimate ${(plan.peakMemoryBytes / 1e9).toFixed(3)} GB, measured peak RSS ${(measured / 1e9).toFixed(3)} GB (${secs} s): ratio ${ratio.toFixed(2)} ${ok ? 'OK' : 'OUTSIDE 1.5x'}\n`,
      );
      rmSync(join(dir, name), { recursive: true, force: true });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (bad > 0) process.exitCode = 1;
}
