/**
 * Checkpoint read throughput: `npm run bench -- read [--gb 1.5] [--reps 3] [--keep]`.
 * Writes a bf16 checkpoint with 7B-like shapes (4096×4096, 11008×4096) into bench-out/, then,
 * interleaved --reps times, times `cat FILES > /dev/null` and a child process that reads every tensor
 * with Checkpoint.read; reports throughput, the ratio to cat, and the child's peak RSS (VmHWM)
 * against the target (largest tensor + 128 MB). Both read the same files, so both see the same
 * page cache state; the files are deleted at the end.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Checkpoint } from '../src/checkpoint/checkpoint.ts';
import { makeConfig } from '../src/spec/config.ts';
import { synthCheckpoint } from '../src/growth/synth.ts';

const ROOT = resolve(import.meta.dirname, '..');
const MB = 1e6;
/** Block of the "stream" mode: a few MB stay in the CPU caches, a whole 200 MB tensor does not. */
const STREAM_BLOCK = 4 << 20;

function arg(args: string[], name: string, def: string): string {
  const k = args.indexOf(`--${name}`);
  return k >= 0 && k + 1 < args.length ? args[k + 1] : def;
}

async function makeCheckpoint(dir: string, gb: number): Promise<void> {
  const H = 4096,
    F = 11008;
  const perLayer = (4 * H * H + 3 * H * F + 2 * H) * 2;
  const layers = Math.max(1, Math.round((gb * 1e9 - 2 * 32000 * H * 2) / perLayer));
  const cfg = makeConfig({
    hiddenSize: H,
    intermediateSize: F,
    numLayers: layers,
    numHeads: 32,
    vocabSize: 32000,
    dtype: 'BF16',
  });
  await synthCheckpoint(dir, { config: cfg, dtype: 'BF16', maxShardSize: 1e9, overwrite: true, quiet: true });
}

const MODES = ['fresh', 'reuse', 'stream'];

function vmHWM(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m === null ? NaN : Number(m[1]) * 1024;
}

/**
 * In the child: read every tensor, report bytes, seconds, peak RSS. Mode "fresh": a new array per
 * tensor (what a caller that keeps tensors gets); "reuse": one buffer of the largest tensor's
 * size passed as `into` (what a streaming consumer does).
 */
async function child(dir: string, mode: string): Promise<void> {
  const ck = await Checkpoint.open(dir);
  const scratch = mode === 'reuse' ? new Uint8Array(ck.largestTensorBytes) : undefined;
  const pair = [new Uint8Array(STREAM_BLOCK), new Uint8Array(STREAM_BLOCK)];
  const t0 = performance.now();
  let bytes = 0;
  let check = 0;
  for (const name of ck.tensors.keys()) {
    if (mode === 'stream') {
      // grow's SourceReader pattern: row blocks of at most STREAM_BLOCK bytes into two reused
      // buffers, the next block's read issued before this one is used (the disk never waits for
      // this process to be scheduled again)
      const t = ck.info(name);
      const rows = t.shape.length === 0 ? 1 : t.shape[0];
      const rowBytes = rows === 0 ? 0 : (t.end - t.begin) / rows;
      const per = Math.max(1, Math.floor(STREAM_BLOCK / Math.max(1, rowBytes)));
      const readBlock = (r: number, k: number) => {
        const n = Math.min(rows, r + per) - r;
        return ck.readRows(name, r, r + n, n * rowBytes <= STREAM_BLOCK ? pair[k % 2] : undefined);
      };
      let next = rows > 0 ? readBlock(0, 0) : undefined;
      for (let r = 0, k = 0; next !== undefined; r += per, k++) {
        const cur = next;
        next = r + per < rows ? readBlock(r + per, k + 1) : undefined;
        const b = await cur;
        bytes += b.byteLength;
        check ^= b[b.byteLength >> 1];
      }
      continue;
    }
    const b = await ck.read(name, scratch);
    bytes += b.byteLength;
    check ^= b[b.byteLength >> 1]; // touch the data so the read cannot be elided
  }
  const s = (performance.now() - t0) / 1000;
  const largest = ck.largestTensorBytes;
  await ck.close();
  process.stdout.write(JSON.stringify({ bytes, s, hwm: vmHWM(), largest, check }) + '\n');
}

export async function run(args: string[]): Promise<void> {
  if (args[0] === '--child') return child(args[1], args[2]);
  const gb = Number(arg(args, 'gb', '1.5'));
  const out = join(ROOT, 'bench-out');
  const dir = join(out, 'read-ck');
  process.stdout.write(`writing a ${gb} GB bf16 checkpoint to ${dir} ...\n`);
  const tw = performance.now();
  await makeCheckpoint(dir, gb);
  const writeS = (performance.now() - tw) / 1000;
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.safetensors'))
    .map((f) => join(dir, f));
  const rows: { cache: string; what: string; bytes: number; s: number; hwm?: number; largest?: number }[] = [];
  const total = files.reduce((a, f) => a + statSync(f).size, 0);
  // Cold: our files' pages are dropped from the page cache first (fadvise DONTNEED via dd's
  // iflag=nocache; other processes' cache is untouched), so both read the disk.
  const evict = () => {
    for (const f of files) spawnSync('dd', [`if=${f}`, 'iflag=nocache', 'count=0', 'status=none']);
  };
  try {
    const reps = Number(arg(args, 'reps', '3'));
    for (let round = 1; round <= reps; round++) {
      for (const cache of ['cold', 'warm']) {
        if (cache === 'cold') evict();
        const t0 = performance.now();
        const cat = spawnSync('sh', ['-c', `cat ${files.map((f) => `'${f}'`).join(' ')} > /dev/null`]);
        const catS = (performance.now() - t0) / 1000;
        if (cat.status !== 0) throw new Error(`cat failed: ${cat.stderr.toString()}`);
        rows.push({ cache, what: `cat #${round}`, bytes: total, s: catS });
        for (const mode of MODES) {
          if (cache === 'cold') evict();
          const c = spawnSync(
            process.execPath,
            ['--import', 'tsx', join(import.meta.dirname, 'index.ts'), 'read', '--child', dir, mode],
            { encoding: 'utf8', cwd: ROOT },
          );
          if (c.status !== 0) throw new Error(`reader child failed: ${c.stderr}`);
          const r = JSON.parse(c.stdout.trim().split('\n').pop() as string) as {
            bytes: number;
            s: number;
            hwm: number;
            largest: number;
          };
          rows.push({ cache, what: `read ${mode} #${round}`, bytes: r.bytes, s: r.s, hwm: r.hwm, largest: r.largest });
        }
      }
    }
  } finally {
    if (!args.includes('--keep')) rmSync(dir, { recursive: true, force: true });
  }
  const pad = (s: string, n: number) => s.padEnd(n);
  process.stdout.write(
    `\nwrite (CheckpointWriter): ${(total / MB / writeS).toFixed(0)} MB/s over ${writeS.toFixed(1)} s; ${files.length} shards, ${total} bytes\n\n`,
  );
  process.stdout.write(`${pad('cache', 7)}${pad('run', 18)}${pad('seconds', 10)}${pad('MB/s', 10)}peak RSS\n`);
  for (const r of rows) {
    process.stdout.write(
      `${pad(r.cache, 7)}${pad(r.what, 18)}${pad(r.s.toFixed(3), 10)}${pad((r.bytes / MB / r.s).toFixed(0), 10)}` +
        `${r.hwm !== undefined ? `${(r.hwm / MB).toFixed(0)} MB` : ''}\n`,
    );
  }
  process.stdout.write(
    `\n(fresh: a new array per tensor; reuse: one buffer of the largest tensor passed as \`into\`; stream: row blocks of ${STREAM_BLOCK >> 20} MiB into two reused buffers, one read ahead, as grow's source reader reads)\n`,
  );
  // Ratio of each round's read to the same round's cat (same load, same cache state), then the median.
  const rate = (r: (typeof rows)[number]) => r.bytes / r.s;
  for (const cache of ['cold', 'warm']) {
    const cats = rows.filter((r) => r.cache === cache && r.what.startsWith('cat'));
    for (const mode of MODES) {
      const ours = rows.filter((r) => r.cache === cache && r.what.startsWith(`read ${mode}`));
      const ratios = ours.map((r, k) => rate(r) / rate(cats[k])).sort((a, b) => a - b);
      const med =
        ratios.length % 2 === 1 ? ratios[ratios.length >> 1] : (ratios[ratios.length / 2 - 1] + ratios[ratios.length / 2]) / 2;
      const hwm = Math.max(...ours.map((r) => r.hwm ?? 0));
      const largest = ours[0].largest ?? 0;
      const limit = largest + 128 * 2 ** 20;
      process.stdout.write(
        `${cache} ${mode}: ratio to cat, median of ${ratios.length} ${med.toFixed(2)} (${ratios[0].toFixed(2)}-${ratios[ratios.length - 1].toFixed(2)}) (≥ 0.8: ${med >= 0.8 ? 'met' : 'NOT met'}); ` +
          `peak RSS ${(hwm / MB).toFixed(0)} MB vs largest tensor ${(largest / MB).toFixed(0)} MB + 128 MiB = ${(limit / MB).toFixed(0)} MB (${hwm <= limit ? 'met' : 'NOT met'})\n`,
      );
    }
  }
  if (!args.includes('--keep') && existsSync(out) && readdirSync(out).length === 0) rmSync(out, { recursive: true, force: true });
}
