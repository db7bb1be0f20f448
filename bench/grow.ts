/**
 * `npm run bench -- grow [--gb 1.5] [--reps 2] [--keep]`: grow a bf16 checkpoint made on the fly, at two
 * depths, and compare with `cp -r` of the same output bytes in the same run (plus fsync, since
 * grow fsyncs its shards), and peak RSS (child process, /usr/bin/time) with the largest output
 * tensor. Best of --reps runs each, inputs warm in the page cache. Targets (issue 5): grow time <= 1.1x cp; peak RSS <= 1.5x largest tensor + 256 MB.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, fsyncSync, closeSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { makeConfig, type ModelConfig } from '../src/config.ts';
import { synthCheckpoint } from '../src/synth.ts';

const ROOT = resolve(import.meta.dirname, '..');

function arg(args: string[], name: string, def: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
}

/** A random bf16 source of this config (synth: streamed, its own fast generator). */
async function makeSource(dir: string, cfg: ModelConfig): Promise<void> {
  await synthCheckpoint(dir, { config: cfg, dtype: 'BF16', maxShardSize: 2e9, overwrite: true, quiet: true });
}

function dirBytes(dir: string): number {
  return readdirSync(dir).reduce((a, f) => a + statSync(join(dir, f)).size, 0);
}

function fsyncDir(dir: string): void {
  for (const f of readdirSync(dir)) {
    const fd = openSync(join(dir, f), 'r');
    fsyncSync(fd);
    closeSync(fd);
  }
}

function timed(fn: () => void): number {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

interface Row {
  layers: number;
  outBytes: number;
  largest: number;
  growS: number;
  cpS: number;
  cpSyncS: number;
  rssBytes: number;
}

export async function run(args: string[]): Promise<void> {
  const gb = Number(arg(args, 'gb', '1.5'));
  const out = resolve(ROOT, arg(args, 'out', 'bench-out/grow'));
  mkdirSync(out, { recursive: true });
  // source H 2048 / F 5504 / 16 heads of 128 -> 2560 / 6880 / 20 (×1.25, as Tele-FLM 52B -> 102B), depth ×1.25
  const H = 2048,
    F = 5504,
    V = 32000,
    H2 = 2560,
    F2 = 6880;
  const perLayerOut = (4 * H2 * H2 + 3 * H2 * F2 + 2 * H2) * 2;
  const fixedOut = 2 * V * H2 * 2;
  const deep = Math.max(8, Math.round((gb * 1e9 - fixedOut) / perLayerOut / 1.25 / 4) * 4);
  const rows: Row[] = [];
  const plan = join(out, 'plan.json');
  for (const L of [deep / 2, deep]) {
    const L2 = L + L / 4;
    writeFileSync(
      plan,
      JSON.stringify({
        targets: {
          hidden_size: H2,
          intermediate_size: F2,
          num_attention_heads: 20,
          num_key_value_heads: 20,
          num_hidden_layers: L2,
        },
        placement: { positions: Array.from({ length: L / 4 }, (_, k) => 4 * k + 3) },
      }),
    );
    const cfg = makeConfig({
      hiddenSize: H,
      intermediateSize: F,
      numLayers: L,
      numHeads: 16,
      headDim: 128,
      vocabSize: V,
      dtype: 'BF16',
    });
    const src = join(out, `src-L${L}`),
      dst = join(out, `grown-L${L}`),
      cp = join(out, `cp-L${L}`);
    for (const d of [dst, cp]) rmSync(d, { recursive: true, force: true });
    if (!existsSync(join(src, 'config.json'))) await makeSource(src, cfg);
    const timeBin = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;
    const cli = [join(ROOT, 'bin/flm-grow.js'), 'grow', src, dst, '--plan', plan, '--quiet', '--overwrite'];
    let rss = 0;
    const growOnce = () => {
      const r =
        timeBin !== undefined
          ? spawnSync(timeBin, ['-f', 'RSSKB=%M', process.execPath, ...cli], { encoding: 'utf8' })
          : spawnSync(process.execPath, cli, { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`grow failed: ${r.stderr}`);
      const m = /RSSKB=(\d+)/.exec(r.stderr);
      if (m !== null) rss = Math.max(rss, Number(m[1]) * 1024);
    };
    // Both sides start from warm inputs: the VM's page cache is cold for freshly written files,
    // so the first read of a folder costs disk time that has nothing to do with the tool.
    execFileSync('sh', ['-c', `cat "${src}"/* > /dev/null`]);
    const reps = Number(arg(args, 'reps', '2'));
    let growS = Infinity,
      cpS = Infinity,
      cpSyncS = Infinity;
    for (let k = 0; k < reps; k++) growS = Math.min(growS, timed(growOnce));
    execFileSync('sh', ['-c', `cat "${dst}"/* > /dev/null`]);
    for (let k = 0; k < reps; k++) {
      cpS = Math.min(
        cpS,
        timed(() => execFileSync('cp', ['-r', dst, cp])),
      );
      rmSync(cp, { recursive: true, force: true });
      cpSyncS = Math.min(
        cpSyncS,
        timed(() => {
          execFileSync('cp', ['-r', dst, cp]);
          fsyncDir(cp);
        }),
      );
      rmSync(cp, { recursive: true, force: true });
    }
    const largest = Math.max(V * H2, F2 * H2) * 2;
    rows.push({ layers: L2, outBytes: dirBytes(dst), largest, growS, cpS, cpSyncS, rssBytes: rss });
    if (!args.includes('--keep')) for (const d of [dst, cp, src]) rmSync(d, { recursive: true, force: true });
  }
  const mb = (n: number) => `${(n / 1e6).toFixed(0)} MB`;
  console.log(
    'layers  output    grow s  cp s   cp+fsync s  grow/cp  grow/(cp+fsync)  peak RSS  largest tensor  RSS budget (1.5x+256MB)',
  );
  for (const r of rows) {
    console.log(
      `${String(r.layers).padEnd(7)} ${mb(r.outBytes).padEnd(9)} ${r.growS.toFixed(2).padEnd(7)} ${r.cpS.toFixed(2).padEnd(6)} ${r.cpSyncS.toFixed(2).padEnd(11)} ${(r.growS / r.cpS).toFixed(2).padEnd(8)} ${(r.growS / r.cpSyncS).toFixed(2).padEnd(16)} ${mb(r.rssBytes).padEnd(9)} ${mb(r.largest).padEnd(15)} ${mb(1.5 * r.largest + 256e6)}`,
    );
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === resolve(import.meta.filename)) {
  await run(process.argv.slice(2));
}
