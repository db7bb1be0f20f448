/**
 * `npm run bench -- scale [--only 1|2] [--no-verify] [--cp-cap-gb 12] [--out bench-out/scale]`:
 * full-width rehearsals of the Tele-FLM transitions on truncated depth.
 *   (1) synth 52B widths with 2 layers, grow with growth-plans/tele-flm-52b-to-102b.json to 3
 *       layers (depth x1.25 as 64 -> 80, rounded up), verify layer-streamed on a few tokens;
 *   (2) if the disk has room: synth 102B widths with 1 layer, grow with the 102B -> 1T plan to
 *       2 layers (80 -> 140 is x1.75, rounded up). Verify is skipped: a 1T-width layer is 31 GB
 *       in float32, beyond this machine's memory (and wasm's 4 GB heap).
 * Every step is a child process (`node bin/flm-grow.js ...`) under /usr/bin/time, so peak RSS is
 * the child's high-water mark. Grow time is compared with `cp -r` (+ fsync, since grow fsyncs)
 * of the same output in the same run; where the disk cannot hold a second copy of the output,
 * cp copies the largest shards up to --cp-cap-gb and its time is scaled by bytes.
 * Then the full transitions are extrapolated at the measured rates (see docs/scaling.md).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, rmSync, statSync, statfsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parameterCount } from '../src/spec/arch.ts';
import type { ModelConfig } from '../src/spec/config.ts';
import { stageConfig } from '../src/growth/synth.ts';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = join(ROOT, 'bin/flm-grow.js');
const GB = 1e9;

function arg(args: string[], name: string, def: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
}

interface Child {
  seconds: number;
  rssBytes: number;
  stdout: string;
}

/** Run the CLI in a child under /usr/bin/time (peak RSS = the child's VmHWM at exit). */
function cli(argv: string[]): Child {
  const t = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', 'RSSKB=%M', process.execPath, CLI, ...argv], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  const seconds = Number(process.hrtime.bigint() - t) / 1e9;
  if (r.status !== 0) throw new Error(`flm-grow ${argv.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  const m = /RSSKB=(\d+)/.exec(r.stderr);
  return { seconds, rssBytes: m === null ? NaN : Number(m[1]) * 1024, stdout: r.stdout };
}

function timed(fn: () => void): number {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

function fsyncAll(dir: string): void {
  for (const f of readdirSync(dir)) {
    const fd = openSync(join(dir, f), 'r');
    fsyncSync(fd);
    closeSync(fd);
  }
}

function dirBytes(dir: string): number {
  return readdirSync(dir).reduce((a, f) => a + statSync(join(dir, f)).size, 0);
}

function freeBytes(dir: string): number {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
}

const bytesOf = (c: ModelConfig) => parameterCount(c) * 2; // bf16
const layerBytes = (c: ModelConfig) => bytesOf({ ...c, numLayers: 1 }) - bytesOf({ ...c, numLayers: 0 });
const largestTensor = (c: ModelConfig) =>
  Math.max(c.vocabSize * c.hiddenSize, c.intermediateSize * c.hiddenSize, c.numHeads * c.headDim * c.hiddenSize) * 2;

interface Stage {
  name: string;
  like: string;
  srcLayers: number;
  plan: string;
  grownLike: string;
  grownLayers: number;
  verify: boolean;
  /** The full transition this rehearses. */
  full: { from: string; to: string };
}

interface Row {
  stage: string;
  synthS: number;
  synthBytes: number;
  synthRss: number;
  outBytes: number;
  largest: number;
  growS: number;
  growRss: number;
  cpBytes: number;
  cpS: number;
  cpSyncS: number;
  verifyS: number | undefined;
  verifyRss: number | undefined;
  verifyOut: string;
}

function runStage(st: Stage, out: string, opts: { cpCap: number; verify: boolean }): Row {
  const src = join(out, `${st.name}-src`);
  const dst = join(out, `${st.name}-grown`);
  const cp = join(out, `${st.name}-cp`);
  for (const d of [src, dst, cp]) rmSync(d, { recursive: true, force: true });
  try {
    console.log(`[${st.name}] synth ${st.like} with ${st.srcLayers} layer(s)`);
    const syn = cli(['synth', src, '--like', st.like, '--num-hidden-layers', String(st.srcLayers), '--quiet']);
    const synthBytes = dirBytes(src);
    // grow reads a warm source, as cp reads a warm output below: the disk-read of a fresh file is
    // the VM's page cache state, not the tool
    execFileSync('sh', ['-c', `cat "${src}"/* > /dev/null`]);
    console.log(`[${st.name}] grow (${st.plan}, ${st.grownLayers} layers)`);
    const positions = Array.from({ length: st.grownLayers - st.srcLayers }, (_, k) => k % st.srcLayers).join(',');
    const grow = cli([
      'grow',
      src,
      dst,
      '--plan',
      join(ROOT, st.plan),
      '--num-hidden-layers',
      String(st.grownLayers),
      '--placement',
      'explicit',
      '--positions',
      positions,
      '--quiet',
    ]);
    const outBytes = dirBytes(dst);
    // cp: the whole output, or its largest shards up to the cap (disk room), scaled by bytes
    const shards = readdirSync(dst)
      .map((f) => ({ f, n: statSync(join(dst, f)).size }))
      .sort((a, b) => b.n - a.n);
    const pick: string[] = [];
    let cpBytes = 0;
    for (const s of shards) {
      if (cpBytes + s.n > opts.cpCap && pick.length > 0) continue;
      pick.push(s.f);
      cpBytes += s.n;
    }
    execFileSync('sh', ['-c', `cat ${pick.map((f) => `"${join(dst, f)}"`).join(' ')} > /dev/null`]);
    mkdirSync(cp);
    const cpS = timed(() => execFileSync('cp', ['-r', ...pick.map((f) => join(dst, f)), cp]));
    rmSync(cp, { recursive: true, force: true });
    mkdirSync(cp);
    const cpSyncS = timed(() => {
      execFileSync('cp', ['-r', ...pick.map((f) => join(dst, f)), cp]);
      fsyncAll(cp);
    });
    rmSync(cp, { recursive: true, force: true });
    let verifyS: number | undefined;
    let verifyRss: number | undefined;
    let verifyOut = 'skipped';
    if (st.verify && opts.verify) {
      console.log(`[${st.name}] verify (layer-streamed, 8 tokens)`);
      const v = cli(['verify', src, dst, '--tokens', '8', '--seq', '8', '--quiet']);
      verifyS = v.seconds;
      verifyRss = v.rssBytes;
      verifyOut = v.stdout.split('\n').find((l) => l.startsWith('logits')) ?? v.stdout.trim().split('\n').at(-1) ?? '';
    }
    const target = { ...stageConfig(st.grownLike, { numLayers: st.grownLayers }), vocabSize: stageConfig(st.like).vocabSize };
    return {
      stage: st.name,
      synthS: syn.seconds,
      synthBytes,
      synthRss: syn.rssBytes,
      outBytes,
      largest: largestTensor(target),
      growS: grow.seconds,
      growRss: grow.rssBytes,
      cpBytes,
      cpS,
      cpSyncS,
      verifyS,
      verifyRss,
      verifyOut,
    };
  } finally {
    for (const d of [src, dst, cp]) rmSync(d, { recursive: true, force: true });
  }
}

const STAGES: Stage[] = [
  {
    name: '52b-102b',
    like: 'tele-flm-52b',
    srcLayers: 2,
    plan: 'growth-plans/tele-flm-52b-to-102b.json',
    grownLike: 'tele-flm-102b',
    grownLayers: 3,
    verify: true,
    full: { from: 'tele-flm-52b', to: 'tele-flm-102b' },
  },
  {
    name: '102b-1t',
    like: 'tele-flm-102b',
    srcLayers: 1,
    plan: 'growth-plans/tele-flm-102b-to-1t.json',
    grownLike: 'tele-flm-1t',
    grownLayers: 2,
    verify: false,
    full: { from: 'tele-flm-102b', to: 'tele-flm-1t' },
  },
];

function needed(st: Stage, cpCap: number): number {
  const src = bytesOf(stageConfig(st.like, { numLayers: st.srcLayers }));
  const out = bytesOf(stageConfig(st.grownLike, { numLayers: st.grownLayers }));
  return src + out + Math.min(out, cpCap) + 1 * GB;
}

const f1 = (x: number) => x.toFixed(1);
const gb = (n: number) => `${(n / GB).toFixed(2)} GB`;
const hms = (s: number) =>
  s < 120 ? `${s.toFixed(0)} s` : s < 7200 ? `${(s / 60).toFixed(0)} min` : `${(s / 3600).toFixed(1)} h`;

export async function run(args: string[]): Promise<void> {
  const out = resolve(ROOT, arg(args, 'out', 'bench-out/scale'));
  const cpCap = Number(arg(args, 'cp-cap-gb', '12')) * GB;
  const only = arg(args, 'only', '');
  mkdirSync(out, { recursive: true });
  const rows: Row[] = [];
  const ran: Stage[] = [];
  for (const st of STAGES) {
    if (only !== '' && only !== String(STAGES.indexOf(st) + 1)) continue;
    const need = needed(st, cpCap);
    const free = freeBytes(out);
    if (free < need) {
      console.log(
        `[${st.name}] skipped: needs ${gb(need)} free under ${out} (source + grown + cp copy + 1 GB), ${gb(free)} free`,
      );
      continue;
    }
    rows.push(runStage(st, out, { cpCap, verify: !args.includes('--no-verify') }));
    ran.push(st);
  }
  if (rows.length === 0) return;
  console.log(
    '\nstage      synth GB  synth MB/s  output GB  grow s  grow MB/s  cp s (scaled)  cp+fsync s  grow/cp  grow/(cp+fsync)  grow RSS  largest  RSS budget  verify s  verify RSS',
  );
  for (const r of rows) {
    const k = r.outBytes / r.cpBytes;
    console.log(
      [
        r.stage.padEnd(10),
        f1(r.synthBytes / GB).padEnd(9),
        (r.synthBytes / 1e6 / r.synthS).toFixed(0).padEnd(11),
        f1(r.outBytes / GB).padEnd(10),
        f1(r.growS).padEnd(7),
        (r.outBytes / 1e6 / r.growS).toFixed(0).padEnd(10),
        `${f1(r.cpS * k)}${k > 1.001 ? ` (x${k.toFixed(2)})` : ''}`.padEnd(14),
        f1(r.cpSyncS * k).padEnd(11),
        (r.growS / (r.cpS * k)).toFixed(2).padEnd(8),
        (r.growS / (r.cpSyncS * k)).toFixed(2).padEnd(16),
        gb(r.growRss).padEnd(9),
        gb(r.largest).padEnd(8),
        gb(1.5 * r.largest + 256e6).padEnd(11),
        (r.verifyS === undefined ? '-' : f1(r.verifyS)).padEnd(9),
        r.verifyRss === undefined ? '-' : gb(r.verifyRss),
      ].join(' '),
    );
  }
  for (const r of rows) if (r.verifyS !== undefined) console.log(`verify ${r.stage}: ${r.verifyOut}`);
  // Extrapolation: grow streams bytes, so its time is output bytes / measured output rate; the
  // rate at full depth is the rate of these runs (same tensor shapes, only more of them). Bytes
  // read: every source tensor once, plus each inserted layer's source layer once more.
  const ns = (args.includes('--machines') ? arg(args, 'machines', '8') : '8,28').split(',').map(Number);
  console.log(
    '\nextrapolated full transitions (bf16; time at the measured grow rate of the rehearsal; n machines: each writes 1/n of the bytes, assuming shared storage sustains n x the rate)',
  );
  console.log(
    `transition     read GB  written GB  largest tensor  grow rate MB/s  1 machine  ${ns.map((n) => `${n} machines`.padEnd(11)).join(' ')}  disk (src+out)`,
  );
  rows.forEach((r, i) => {
    const st = ran[i];
    const from = stageConfig(st.full.from);
    // the plans keep the vocabulary (102B -> 1T: 80384, not the released 1T's 81920)
    const to = { ...stageConfig(st.full.to), vocabSize: from.vocabSize };
    const read = bytesOf(from) + (to.numLayers - from.numLayers) * layerBytes(from);
    const written = bytesOf(to);
    const rate = r.outBytes / r.growS;
    console.log(
      [
        `${st.full.from.replace('tele-flm-', '')}->${st.full.to.replace('tele-flm-', '')}`.padEnd(14),
        f1(read / GB).padEnd(8),
        f1(written / GB).padEnd(11),
        gb(largestTensor(to)).padEnd(15),
        (rate / 1e6).toFixed(0).padEnd(15),
        hms(written / rate).padEnd(10),
        ns.map((n) => hms(written / rate / n).padEnd(11)).join(' '),
        gb(bytesOf(from) + written),
      ].join(' '),
    );
  });
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === resolve(import.meta.filename)) {
  await run(process.argv.slice(2));
}
