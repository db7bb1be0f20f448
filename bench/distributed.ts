/**
 * `npm run bench -- distributed [--size 100,200] [--max-total-gb 10] [--batch 4] [--seq 64] [--steps 3]
 *   [--hidden 1024] [--ffn 2816] [--heads 16] [--kv 8] [--vocab 16384] [--layers N] [--only ddp2,fsdp2]`:
 * a random model trained by the torch engine in each layout on CPU (gloo, one thread per process):
 * 1 process, DDP 2, FSDP2 2, TP 2, FSDP x TP 2 x 2. `--size` lists target sizes in millions of
 * parameters (the depth is chosen to come closest; head_dim = hidden / heads); `--layers` fixes the
 * depth instead (one size). Per layout: every rank's peak RSS (the trainer's ru_maxrss, gathered
 * over the ranks), the per-rank estimate of python/flm_grow_torch/memory.py (what the trainer
 * checks before loading), and tokens/s (median of the steps after the first, from metrics.jsonl);
 * per size, FSDP2's largest rank over DDP's. With two sizes or more, each layout's per-parameter
 * slope of its largest rank's peak and the largest model it would train one step of on this
 * machine's memory (MemTotal), from that line.
 *
 * The machine may be shared: a layout whose estimated total (per-rank estimate x processes) is
 * above --max-total-gb (default 10) or above MemAvailable less 2 GB, read just before it starts,
 * is not run and says so. `uptime` is printed before and after each size.
 *
 * `--cgroup-gb G` (Linux, cgroup v1 memory controller, root): the runs happen inside a memory cgroup
 * limited to G GB (this bench's node process joins it, torchrun's agent and the ranks inherit it), and
 * a run ended by the out-of-memory killer is reported as such instead of failing the bench: how a
 * predicted limit is confirmed without taking the whole machine (docs/scaling.md).
 */
import { execSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { initBackend } from '../src/engines/tfjs-backend.ts';
import { parameterCount } from '../src/spec/arch.ts';
import { initConfig, writeRandomInit } from '../src/train/random-init.ts';
import { findTorchPython, PYTHON_DIR, runTorchModule } from '../src/engines/torch-process.ts';
import { readMetrics, partitionMetrics } from '../src/train/metrics.ts';

const CORPUS = resolve(import.meta.dirname, '..', 'fixtures', 'corpus', 'fortunes.txt');

function arg(args: string[], name: string, def: number): number {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? Number(args[i + 1]) : def;
}

function strArg(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : undefined;
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor(s.length / 2)];
}

function meminfo(field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

interface Layout {
  key: string;
  name: string;
  nproc: number;
  flags: string[];
  fsdp: boolean;
  tp: number;
}

const LAYOUTS: Layout[] = [
  { key: 'one', name: '1 process', nproc: 1, flags: [], fsdp: false, tp: 1 },
  { key: 'ddp2', name: 'DDP 2', nproc: 2, flags: [], fsdp: false, tp: 1 },
  { key: 'fsdp2', name: 'FSDP2 2', nproc: 2, flags: ['--fsdp'], fsdp: true, tp: 1 },
  { key: 'tp2', name: 'TP 2', nproc: 2, flags: ['--tp', '2'], fsdp: false, tp: 2 },
  { key: 'fsdp2xtp2', name: 'FSDP x TP 2 x 2', nproc: 4, flags: ['--fsdp', '--tp', '2'], fsdp: true, tp: 2 },
];

/** memory.py's per-rank estimate (bytes) for this checkpoint and layout, as the trainer computes it. */
function estimate(python: string, ck: string, l: Layout, tokensPerRank: number, seq: number): number {
  const dp = l.nproc / l.tp;
  const code = [
    'import sys',
    'from flm_grow_torch.config import read_config',
    'from flm_grow_torch.memory import train_step_bytes',
    `print(train_step_bytes(read_config(sys.argv[1]), ${tokensPerRank}, ${seq}, 16, ${l.fsdp ? dp : 1}, ${l.tp}, False, ddp=${l.nproc > 1 && !l.fsdp && l.tp === 1 ? 'True' : 'False'}))`,
  ].join('\n');
  // this checkout's python/ (as runTorchModule puts it first), not whichever flm_grow_torch is installed
  const r = spawnSync(python, ['-c', code, ck], { encoding: 'utf8', env: { ...process.env, PYTHONPATH: PYTHON_DIR } });
  if (r.status !== 0) throw new Error(`memory estimate: ${r.stderr}`);
  return Number(r.stdout.trim());
}

interface Row {
  params: number;
  peak: number[]; // bytes per rank
}

export async function run(args: string[]): Promise<void> {
  await initBackend('wasm');
  const torch = findTorchPython();
  if (torch === undefined) throw new Error('bench distributed: no Python with torch (node scripts/python-env.mjs)');
  const [H, F, heads, kv, V] = [
    arg(args, 'hidden', 1024),
    arg(args, 'ffn', 2816),
    arg(args, 'heads', 16),
    arg(args, 'kv', 8),
    arg(args, 'vocab', 16384),
  ];
  const [B, T, steps] = [arg(args, 'batch', 4), arg(args, 'seq', 64), arg(args, 'steps', 3)];
  const maxTotal = arg(args, 'max-total-gb', 10) * 1e9;
  const only = strArg(args, 'only')?.split(',');
  const layouts = LAYOUTS.filter((l) => only === undefined || only.includes(l.key));
  const shape = (L: number) =>
    initConfig({
      hidden_size: H,
      intermediate_size: F,
      num_attention_heads: heads,
      num_key_value_heads: kv,
      head_dim: H / heads,
      num_hidden_layers: L,
      vocab_size: V,
      max_position_embeddings: 256,
    });
  const perLayer = parameterCount(shape(2)) - parameterCount(shape(1));
  const fixed = parameterCount(shape(1)) - perLayer;
  const depths =
    strArg(args, 'layers') !== undefined
      ? [arg(args, 'layers', 8)]
      : (strArg(args, 'size') ?? '100,200').split(',').map((m) => Math.max(1, Math.round((Number(m) * 1e6 - fixed) / perLayer)));
  const seen = new Map<string, Row[]>();
  const root = mkdtempSync(join(tmpdir(), 'flm-bench-dist-'));
  const cgroupGb = arg(args, 'cgroup-gb', 0);
  const cgroup = cgroupGb > 0 ? `/sys/fs/cgroup/memory/flm-bench-dist-${process.pid}` : undefined;
  if (cgroup !== undefined) {
    mkdirSync(cgroup);
    writeFileSync(join(cgroup, 'memory.limit_in_bytes'), String(Math.round(cgroupGb * 1e9)));
    writeFileSync(join(cgroup, 'cgroup.procs'), String(process.pid));
    console.log(`in memory cgroup ${cgroup}, limit ${cgroupGb} GB`);
  }
  try {
    for (const L of depths) {
      const cfg = shape(L);
      const P = parameterCount(cfg);
      const ck = join(root, `init-${L}`);
      await writeRandomInit(ck, cfg, { seed: 1 });
      console.log(
        `\nmodel: ${(P / 1e6).toFixed(1)} M parameters (hidden ${H}, ffn ${F}, ${L} layers, ${heads} heads / ${kv} KV, vocab ${V}); batch ${B} x ${T}, ${steps} steps`,
      );
      console.log(`uptime before: ${execSync('uptime').toString().trim()}`);
      console.log('| layout | estimate per rank (GB) | peak RSS per rank (GB) | peak / estimate (largest rank) | tokens/s |');
      console.log('| --- | --- | --- | --- | --- |');
      const peakOf = new Map<string, number>();
      for (const l of layouts) {
        const est = estimate(torch.python, ck, l, (B / (l.nproc / l.tp)) * T, T);
        const room = Math.min(maxTotal, meminfo('MemAvailable') - 2e9);
        if (est * l.nproc > room) {
          console.log(
            `| ${l.name} | ${(est / 1e9).toFixed(2)} | not run: ${l.nproc} x ${(est / 1e9).toFixed(2)} GB estimated > ${(room / 1e9).toFixed(1)} GB allowed | | |`,
          );
          continue;
        }
        const out = join(root, `${L}-${l.key}`);
        const r = await runTorchModule(
          'flm_grow_torch.train',
          [
            ck,
            '--data',
            CORPUS,
            '--out',
            out,
            '--steps',
            String(steps),
            '--batch-size',
            String(B),
            '--seq-len',
            String(T),
            '--quiet',
            ...l.flags,
          ],
          { capture: true, launch: { nproc: l.nproc }, env: { OMP_NUM_THREADS: '1' } },
        );
        if (cgroup !== undefined && r.code !== 0 && /out-of-memory killer/.test(r.stderr)) {
          const kills = /oom_kill (\d+)/.exec(readFileSync(join(cgroup, 'memory.oom_control'), 'utf8'))?.[1];
          console.log(
            `| ${l.name} | ${(est / 1e9).toFixed(2)} | ended by the out-of-memory killer (cgroup oom_kill ${kills}) | | |`,
          );
          rmSync(out, { recursive: true, force: true });
          continue;
        }
        if (r.code !== 0 || r.result === undefined) throw new Error(`${l.name}: ${r.stderr.slice(-2000)}`);
        const peak = r.result.peakRssPerRank as number[];
        const tps = median(
          partitionMetrics(readMetrics(join(out, 'metrics.jsonl')))
            .steps.slice(1)
            .map((m) => m.tokensPerSec),
        );
        const top = Math.max(...peak);
        peakOf.set(l.key, top);
        seen.set(l.key, [...(seen.get(l.key) ?? []), { params: P, peak }]);
        console.log(
          `| ${l.name} | ${(est / 1e9).toFixed(2)} | ${peak.map((b) => (b / 1e9).toFixed(2)).join(', ')} | ${(top / est).toFixed(2)} | ${tps.toFixed(0)} |`,
        );
        rmSync(out, { recursive: true, force: true });
      }
      const [f, d] = [peakOf.get('fsdp2'), peakOf.get('ddp2')];
      if (f !== undefined && d !== undefined) console.log(`FSDP2 2 / DDP 2 (largest rank's peak): ${(f / d).toFixed(2)}`);
      console.log(`uptime after: ${execSync('uptime').toString().trim()}`);
      rmSync(ck, { recursive: true, force: true });
    }
    const total = meminfo('MemTotal');
    if (depths.length > 1) {
      console.log(`\nper-parameter slope of the largest rank's peak, and the largest model each layout trains one step of`);
      console.log(
        `on this machine's ${(total / 1e9).toFixed(1)} GB (MemTotal; every rank of the layout on this machine), from that line:`,
      );
      console.log('| layout | ranks | B per parameter per rank | intercept (GB) | largest model (B parameters) |');
      console.log('| --- | --- | --- | --- | --- |');
      for (const l of layouts) {
        const rows = seen.get(l.key) ?? [];
        if (rows.length < 2) {
          console.log(`| ${l.name} | ${l.nproc} | not measured at two sizes | | |`);
          continue;
        }
        const [a, b] = [rows[0], rows[rows.length - 1]];
        const [ya, yb] = [Math.max(...a.peak), Math.max(...b.peak)];
        const slope = (yb - ya) / (b.params - a.params);
        const icpt = ya - slope * a.params;
        const largest = (total / l.nproc - icpt) / slope;
        console.log(
          `| ${l.name} | ${l.nproc} | ${slope.toFixed(2)} | ${(icpt / 1e9).toFixed(2)} | ${(largest / 1e9).toFixed(2)} |`,
        );
      }
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
    if (cgroup !== undefined) {
      writeFileSync('/sys/fs/cgroup/memory/cgroup.procs', String(process.pid)); // out again, so the group can go
      rmdirSync(cgroup); // a cgroup goes with rmdir (its files cannot be unlinked)
    }
  }
}
