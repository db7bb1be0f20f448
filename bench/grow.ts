/**
 * `npm run bench -- grow [--gb 1.5] [--reps 3] [--keep] [--compare path/to/other/cli.js]`: grow a bf16
 * checkpoint made on the fly, at two depths, and compare with `cp -r` of the same output bytes in
 * the same run (plus fsync, since grow fsyncs its shards), and peak RSS (child process,
 * /usr/bin/time) with the largest output tensor. Each rep runs grow, then cp, then cp + fsync
 * (interleaved, so load from other jobs falls on all of them alike); the table gives the median
 * and the spread (min-max) over --reps, inputs warm in the page cache. `--compare` also times
 * another build of the CLI (e.g. a copy of the previous dist/cli.js) in the same reps: the
 * baseline of a change, measured under the same load. Target (issue 12): grow <= 1.3x (cp + fsync).
 * sha256 of the output (openssl) is timed too: grow hashes every byte it writes (one stream per shard).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, fsyncSync, closeSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { makeConfig, type ModelConfig } from '../src/spec/config.ts';
import { synthCheckpoint } from '../src/growth/synth.ts';

const ROOT = resolve(import.meta.dirname, '..');
/** OpenSSL's sha256 uses the CPU's SHA extensions as node's does; coreutils' sha256sum may not (4x slower here). */
const SHA256 = spawnSync('openssl', ['version']).status === 0 ? 'openssl dgst -sha256' : 'sha256sum';

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
  growS: number[];
  compareS: number[];
  /** user + sys seconds of the child (load from other jobs stretches wall time, not these) */
  growCpu: number[];
  compareCpu: number[];
  cpCpu: number[];
  cpS: number[];
  cpSyncS: number[];
  /** sha256 of the output shards (warm; openssl, SHA-NI like node's): the hashing grow must do */
  shaS: number[];
  rssBytes: number;
  compareRss: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
/** "median (min-max)" */
const spread = (xs: number[]) =>
  xs.length === 0 ? '-' : `${median(xs).toFixed(2)} (${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)})`;

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
    const compare = args.includes('--compare') ? resolve(arg(args, 'compare', '')) : undefined;
    /** One grow in a child (its time, and its peak RSS when /usr/bin/time is there). */
    const growOnce = (cliJs: string): { s: number; rss: number; cpu: number } => {
      const cli = [cliJs, 'grow', src, dst, '--plan', plan, '--quiet', '--overwrite'];
      let rss = 0;
      let cpu = NaN;
      const s = timed(() => {
        const r =
          timeBin !== undefined
            ? spawnSync(timeBin, ['-f', 'RSSKB=%M CPU=%U+%S', process.execPath, ...cli], { encoding: 'utf8' })
            : spawnSync(process.execPath, cli, { encoding: 'utf8' });
        if (r.status !== 0) throw new Error(`grow failed: ${r.stderr}`);
        const m = /RSSKB=(\d+)/.exec(r.stderr);
        if (m !== null) rss = Number(m[1]) * 1024;
        const c = /CPU=([\d.]+)\+([\d.]+)/.exec(r.stderr);
        if (c !== null) cpu = Number(c[1]) + Number(c[2]);
      });
      return { s, rss, cpu };
    };
    // Both sides start from warm inputs: the VM's page cache is cold for freshly written files,
    // so the first read of a folder costs disk time that has nothing to do with the tool.
    execFileSync('sh', ['-c', `cat "${src}"/* > /dev/null`]);
    const reps = Number(arg(args, 'reps', '3'));
    const row: Row = {
      layers: L2,
      outBytes: 0,
      largest: Math.max(V * H2, F2 * H2) * 2,
      growS: [],
      compareS: [],
      growCpu: [],
      compareCpu: [],
      cpCpu: [],
      cpS: [],
      cpSyncS: [],
      shaS: [],
      rssBytes: 0,
      compareRss: 0,
    };
    for (let k = 0; k < reps; k++) {
      if (compare !== undefined) {
        const c = growOnce(compare);
        row.compareS.push(c.s);
        row.compareCpu.push(c.cpu);
        row.compareRss = Math.max(row.compareRss, c.rss);
      }
      const g = growOnce(join(ROOT, 'bin/flm-grow.js'));
      row.growS.push(g.s);
      row.growCpu.push(g.cpu);
      row.rssBytes = Math.max(row.rssBytes, g.rss);
      execFileSync('sh', ['-c', `cat "${dst}"/* > /dev/null`]);
      row.cpS.push(
        timed(() => {
          const r = spawnSync(
            timeBin ?? 'cp',
            timeBin === undefined ? ['-r', dst, cp] : ['-f', 'CPU=%U+%S', 'cp', '-r', dst, cp],
            {
              encoding: 'utf8',
            },
          );
          if (r.status !== 0) throw new Error(`cp failed: ${r.stderr}`);
          const c = /CPU=([\d.]+)\+([\d.]+)/.exec(r.stderr);
          if (c !== null) row.cpCpu.push(Number(c[1]) + Number(c[2]));
        }),
      );
      rmSync(cp, { recursive: true, force: true });
      row.cpSyncS.push(
        timed(() => {
          execFileSync('cp', ['-r', dst, cp]);
          fsyncDir(cp);
        }),
      );
      rmSync(cp, { recursive: true, force: true });
      row.shaS.push(timed(() => execFileSync('sh', ['-c', `${SHA256} "${dst}"/*.safetensors > /dev/null`])));
    }
    row.outBytes = dirBytes(dst);
    rows.push(row);
    if (!args.includes('--keep')) for (const d of [dst, cp, src]) rmSync(d, { recursive: true, force: true });
  }
  const mb = (n: number) => `${(n / 1e6).toFixed(0)} MB`;
  console.log(`\nseconds: median (min-max) of ${rows[0]?.growS.length ?? 0} interleaved reps; ratios of medians`);
  for (const r of rows) {
    console.log(
      `\n${r.layers} layers, output ${mb(r.outBytes)}, largest tensor ${mb(r.largest)}, RSS budget (1.5x+256MB) ${mb(1.5 * r.largest + 256e6)}`,
    );
    const cps = median(r.cpSyncS);
    console.log(
      `  grow        ${spread(r.growS).padEnd(20)} grow/cp ${(median(r.growS) / median(r.cpS)).toFixed(2)}  grow/(cp+fsync) ${(median(r.growS) / cps).toFixed(2)} (<= 1.3: ${median(r.growS) / cps <= 1.3 ? 'met' : 'NOT met'})  peak RSS ${mb(r.rssBytes)}`,
    );
    if (r.compareS.length > 0)
      console.log(
        `  grow (--compare) ${spread(r.compareS).padEnd(15)} grow/(cp+fsync) ${(median(r.compareS) / cps).toFixed(2)}  peak RSS ${mb(r.compareRss)}`,
      );
    console.log(`  cp -r       ${spread(r.cpS)}`);
    console.log(
      `  CPU s (user+sys): grow ${spread(r.growCpu)}${r.compareCpu.length > 0 ? `, --compare ${spread(r.compareCpu)}` : ''}, cp -r ${spread(r.cpCpu)}`,
    );
    console.log(`  cp + fsync  ${spread(r.cpSyncS)}`);
    // grow must also sha256 every byte it writes (the manifest): one sequential stream per shard,
    // so on its own core this is a floor no scheduling removes
    console.log(
      `  sha256 of the output (${SHA256}) ${spread(r.shaS)} = ${(median(r.shaS) / cps).toFixed(2)}x (cp+fsync): the hashing alone, one core`,
    );
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === resolve(import.meta.filename)) {
  await run(process.argv.slice(2));
}
