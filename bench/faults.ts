/**
 * `npm run bench -- faults [--kills N] [--fuzz N] [--jobs N] [--only group,...]`: the issue-16 fault sweep,
 * reproducible (fixed seeds, fixed case list). Every case runs the built CLI (`node bin/flm-grow.js`,
 * after `npm run build`) on temporary copies of fixtures/hf/llama-tiny-f32 (and a tiny pipeline),
 * each command under a timeout (a hang is a failure), and records: exit code, hang, the error line
 * (named, or "internal error"), leftovers (temporary folders/files, a destination without its
 * manifest) and whether the source is byte-identical afterwards (sha256 of every file).
 *
 * A case FAILS on: exit 3 or "internal error" (internal), a hang (hang), exit 0 where a refusal is
 * expected (accepted), a non-zero exit where success is expected (failed), a changed/lost source
 * (source), leftovers (leftover). Writes bench-out/faults.json and bench-out/faults.md.
 */
import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
  lstatSync,
} from 'node:fs';
import { tmpdir, hostname } from 'node:os';
import { join, dirname, basename, isAbsolute } from 'node:path';

const ROOT = join(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin/flm-grow.js');
const FIX = join(ROOT, 'fixtures/hf/llama-tiny-f32');
const DATA = join(ROOT, 'fixtures/corpus/fortunes.txt');
const PLAN = join(ROOT, 'growth-plans/tiny-stage1-to-stage2.json');
const MANIFEST = 'flm-grow-manifest.json';
const TIMEOUT_MS = 240_000;
/** Small calibration / verify sizes: the sweep measures fault handling, not the model. */
const CAL = ['--calibration-tokens', '16', '--calibration-seq', '8'];
const VER = ['--tokens', '16', '--seq', '8'];
const TRAIN = ['--data', DATA, '--steps', '3', '--save-every', '1', '--batch-size', '1', '--seq-len', '8', '--eval-batches', '1'];

type Expect = 'ok' | 'refuse' | 'any';
interface Run {
  args: string[];
  code: number;
  signal: string | null;
  hung: boolean;
  ms: number;
  err: string;
  out: string;
  killedAt?: number;
  finishedBeforeKill?: boolean;
}
interface Outcome {
  id: string;
  group: string;
  description: string;
  expect: Expect;
  exit: string;
  hung: boolean;
  errorLine: string;
  named: boolean;
  leftovers: string[];
  sourceIntact: boolean | null;
  ms: number;
  fails: string[];
  note: string;
}

// ---------------------------------------------------------------- process helpers

function cli(
  args: string[],
  o: { timeout?: number; killAfter?: number; signal?: NodeJS.Signals; env?: Record<string, string>; cwd?: string } = {},
): Promise<Run> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: o.cwd ?? ROOT,
      env: { ...process.env, ...o.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let hung = false;
    let killedAt: number | undefined;
    let exited = false;
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const hang = setTimeout(() => {
      hung = true;
      child.kill('SIGKILL');
    }, o.timeout ?? TIMEOUT_MS);
    const killer =
      o.killAfter === undefined
        ? undefined
        : setTimeout(() => {
            if (!exited) {
              killedAt = Date.now() - t0;
              child.kill(o.signal ?? 'SIGKILL');
            }
          }, o.killAfter);
    child.on('close', (code, signal) => {
      exited = true;
      clearTimeout(hang);
      if (killer) clearTimeout(killer);
      const sigNo = signal === null ? 0 : signal === 'SIGKILL' ? 9 : signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 1;
      resolve({
        args,
        code: code ?? 128 + sigNo,
        signal,
        hung,
        ms: Date.now() - t0,
        err,
        out,
        killedAt,
        finishedBeforeKill: o.killAfter !== undefined && killedAt === undefined,
      });
    });
  });
}

/** A 2-step train of `grown` into `run`, saving every step: the run and its newest checkpoint folder (undefined if none). */
async function twoSaves(grown: string, run: string): Promise<{ r0: Run; ck: string | undefined }> {
  const r0 = await cli([
    'train',
    grown,
    '--out',
    run,
    ...TRAIN.slice(0, 2),
    '--steps',
    '2',
    '--save-every',
    '1',
    '--batch-size',
    '1',
    '--seq-len',
    '8',
  ]);
  const ck = existsSync(run)
    ? readdirSync(run)
        .filter((n) => n.startsWith('checkpoint-'))
        .sort()
        .pop()
    : undefined;
  return { r0, ck };
}

function errorLine(r: Run): string {
  const lines = r.err.split('\n').filter((l) => l.trim() !== '');
  const e = lines.find((l) => /internal error/i.test(l)) ?? lines.find((l) => /error/i.test(l)) ?? lines[0] ?? '';
  return e;
}

function isInternal(r: Run): boolean {
  return r.code === 3 || /internal error/i.test(r.err);
}

// ---------------------------------------------------------------- file helpers

function hashTree(p: string): string {
  const h = createHash('sha256');
  const walk = (d: string, rel: string): void => {
    const st = lstatSync(d);
    if (st.isSymbolicLink()) h.update(`L${rel}`);
    else if (st.isDirectory()) for (const n of readdirSync(d).sort()) walk(join(d, n), `${rel}/${n}`);
    else if (st.isFile()) h.update(`F${rel}\0`).update(readFileSync(d));
    else h.update(`S${rel}`);
  };
  if (!existsSync(p)) return 'missing';
  walk(p, '');
  return h.digest('hex');
}

const TMP_FILE = /\.tmp-\d+-[0-9a-f]{8}$/;
/** Temporary folders/files anywhere under `root`, and named destinations that exist without a manifest. */
function leftovers(root: string, dests: string[] = []): string[] {
  const found: string[] = [];
  const walk = (d: string): void => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const n of names) {
      const p = join(d, n);
      if (n.startsWith('.flm-grow-tmp-') || TMP_FILE.test(n)) found.push(p.slice(root.length + 1));
      let st;
      try {
        st = lstatSync(p);
      } catch {
        continue;
      }
      if (st.isDirectory()) {
        if (/^checkpoint-\d+$/.test(n) && !existsSync(join(p, MANIFEST))) found.push(`${p.slice(root.length + 1)} (no manifest)`);
        walk(p);
      }
    }
  };
  walk(root);
  for (const d of dests)
    if (existsSync(d) && statSync(d).isDirectory() && readdirSync(d).length > 0 && !existsSync(join(d, MANIFEST)))
      found.push(`${d.slice(root.length + 1)} (no manifest)`);
  return found;
}

function fixtureCopy(dir: string, name = 'src'): string {
  const d = join(dir, name);
  mkdirSync(dirname(d), { recursive: true });
  cpSync(FIX, d, { recursive: true });
  return d;
}

/** The safetensors header of a shard: data offset and tensors. */
function shardHeader(file: string): {
  dataStart: number;
  tensors: Record<string, { dtype: string; data_offsets: [number, number] }>;
} {
  const b = readFileSync(file);
  const n = Number(b.readBigUInt64LE(0));
  const h = JSON.parse(b.subarray(8, 8 + n).toString('utf8')) as Record<string, unknown>;
  delete h.__metadata__;
  return { dataStart: 8 + n, tensors: h as never };
}

function poisonFirstF32(file: string, value: number): string {
  const { dataStart, tensors } = shardHeader(file);
  const [name, t] = Object.entries(tensors).find(([, t]) => t.dtype === 'F32')!;
  const b = readFileSync(file);
  b.writeFloatLE(value, dataStart + t.data_offsets[0] + 4 * 3);
  writeFileSync(file, b);
  return name;
}

/** mulberry32: the sweep's own seeded generator (fuzz cases must be reproducible). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------- cases

interface Ctx {
  base: string;
  grown: string;
  parts: [string, string];
  pipelineDir: string;
}
type CaseFn = (dir: string, ctx: Ctx) => Promise<Partial<Outcome> & { runs: Run[]; source?: [string, string] }>;
interface Case {
  id: string;
  group: string;
  description: string;
  expect: Expect;
  fn: CaseFn;
}

const cases: Case[] = [];
function add(group: string, id: string, description: string, expect: Expect, fn: CaseFn): void {
  cases.push({ id: `${group}/${id}`, group, description, expect, fn });
}

/** One CLI run on a fresh fixture copy; source hashed before/after; `dests` checked for leftovers. */
function simple(
  group: string,
  id: string,
  description: string,
  expect: Expect,
  make: (dir: string, src: string, ctx: Ctx) => string[],
): void {
  add(group, id, description, expect, async (dir, ctx) => {
    const src = fixtureCopy(dir);
    const args = make(dir, src, ctx);
    const before = hashTree(src);
    const r = await cli(args);
    return { runs: [r], source: [before, hashTree(src)] };
  });
}

function pipelineFile(dir: string, stages: unknown[], extra: Record<string, unknown> = {}): string {
  const plan = join(dir, 'plan.json');
  if (!existsSync(plan))
    writeFileSync(
      plan,
      JSON.stringify({ targets: { num_hidden_layers: 5 }, calibration: { tokens: 16, seq: 8 }, anneal_steps: 4 }),
    );
  const f = join(dir, 'pipe.json');
  writeFileSync(
    f,
    JSON.stringify({
      data: DATA,
      seed: 0,
      train: { batch_size: 1, seq_len: 8, lr: 0.003, save_every: 1, eval_every: 0, eval_batches: 1 },
      stages,
      ...extra,
    }),
  );
  return f;
}

function defineItems(): void {
  // --- data loss and path safety
  for (const [cmd, extra] of [
    ['grow', ['--plan', PLAN, ...CAL]],
    ['bake', []],
  ] as const)
    add(
      'paths',
      `${cmd}-overwrite-parent`,
      `${cmd} src parent --overwrite, parent holds src and notes.txt`,
      'refuse',
      async (dir) => {
        const p = join(dir, 'p');
        const src = fixtureCopy(p);
        writeFileSync(join(p, 'notes.txt'), 'keep');
        const before = hashTree(p);
        const r = await cli([cmd, src, p, '--overwrite', ...extra]);
        return { runs: [r], source: [before, hashTree(p)] };
      },
    );
  add(
    'paths',
    'assemble-overwrite-parent',
    'assemble parent parent/part-1 parent/part-2 --overwrite',
    'refuse',
    async (dir, ctx) => {
      const p = join(dir, 'p');
      cpSync(ctx.parts[0], join(p, 'part-1'), { recursive: true });
      cpSync(ctx.parts[1], join(p, 'part-2'), { recursive: true });
      writeFileSync(join(p, 'notes.txt'), 'keep');
      const before = hashTree(p);
      const r = await cli(['assemble', p, join(p, 'part-1'), join(p, 'part-2'), '--overwrite']);
      return { runs: [r], source: [before, hashTree(p)] };
    },
  );
  simple('paths', 'grow-dest-inside-source', 'grow src src/out', 'refuse', (_d, s) => [
    'grow',
    s,
    join(s, 'out'),
    '--plan',
    PLAN,
    ...CAL,
  ]);
  add('paths', 'train-out-is-input', 'train grown --out grown', 'refuse', async (dir, ctx) => {
    const g = join(dir, 'g');
    cpSync(ctx.grown, g, { recursive: true });
    const before = hashTree(g);
    const r = await cli(['train', g, '--out', g, ...TRAIN]);
    return { runs: [r], source: [before, hashTree(g)] };
  });
  add('paths', 'forward-output-onto-input', 'forward --input ids --out ids (same file)', 'refuse', async (dir) => {
    const src = fixtureCopy(dir);
    const ids = join(dir, 'ids.safetensors');
    const hdr = Buffer.from(JSON.stringify({ input_ids: { dtype: 'I64', shape: [1, 3], data_offsets: [0, 24] } }));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(hdr.length));
    const body = Buffer.alloc(24);
    [1, 2, 3].forEach((v, i) => body.writeBigInt64LE(BigInt(v), i * 8));
    writeFileSync(ids, Buffer.concat([len, hdr, body]));
    const before = hashTree(dir);
    const r = await cli(['forward', src, '--input', ids, '--out', ids, '--overwrite']);
    return { runs: [r], source: [before, hashTree(dir)] };
  });
  add(
    'paths',
    'assemble-manifest-traversal',
    'part manifest files lists ../../../../../var/tmp/flm-pwned-<pid>.txt',
    'refuse',
    async (dir, ctx) => {
      const pw = `flm-pwned-${process.pid}-${Date.now()}.txt`;
      const p1 = join(dir, 'part-1');
      cpSync(ctx.parts[0], p1, { recursive: true });
      writeFileSync(join(p1, pw), 'pwned');
      const m = JSON.parse(readFileSync(join(p1, MANIFEST), 'utf8')) as { files: Record<string, string> };
      m.files[`../../../../../../../../var/tmp/${pw}`] = createHash('sha256').update('pwned').digest('hex');
      writeFileSync(join(p1, MANIFEST), JSON.stringify(m));
      const r = await cli(['assemble', join(dir, 'out'), p1, ctx.parts[1]]);
      const escaped = existsSync(join('/var/tmp', pw));
      if (escaped) rmSync(join('/var/tmp', pw));
      return {
        runs: [r],
        extraFails: escaped ? ['escaped'] : [],
        note: escaped ? 'file written outside the destination' : '',
      } as never;
    },
  );
  add(
    'paths',
    'train-resume-manifest-traversal',
    'checkpoint manifest lists ../../dev/zero; train --resume',
    'refuse',
    async (dir, ctx) => {
      const run = join(dir, 'run');
      const { r0, ck } = await twoSaves(ctx.grown, run);
      if (r0.code !== 0 || ck === undefined) return { runs: [r0], note: 'setup failed' };
      const mf = join(run, ck, MANIFEST);
      const m = JSON.parse(readFileSync(mf, 'utf8')) as { files: Record<string, string> };
      m.files['../../../../../../dev/zero'] = '0'.repeat(64);
      writeFileSync(mf, JSON.stringify(m));
      const r = await cli(['train', ctx.grown, '--out', run, ...TRAIN, '--resume']);
      return { runs: [r] };
    },
  );
  for (const [id, inside, expect] of [
    ['symlink-side-file-inside', true, 'ok'],
    ['symlink-side-file-outside', false, 'refuse'],
  ] as const)
    add(
      'paths',
      id,
      `grow a source whose generation_config.json is a symlink ${inside ? 'inside' : 'outside'} the folder`,
      expect,
      async (dir) => {
        const src = fixtureCopy(dir);
        const target = inside ? join(src, 'real-generation-config.json') : join(dir, 'outside-generation-config.json');
        cpSync(join(src, 'generation_config.json'), target);
        unlinkSync(join(src, 'generation_config.json'));
        symlinkSync(target, join(src, 'generation_config.json'));
        const before = hashTree(src);
        const r = await cli(['grow', src, join(dir, 'out'), '--plan', PLAN, ...CAL]);
        return { runs: [r], source: [before, hashTree(src)], dests: [join(dir, 'out')] };
      },
    );
  add(
    'paths',
    'overwrite-swap-killed',
    'SIGKILL between the two renames of --overwrite (swap-child onSwap hook), then grow --overwrite',
    'ok',
    async (dir, ctx) => {
      const dest = join(dir, 'dest');
      cpSync(ctx.grown, dest, { recursive: true });
      const k = await new Promise<number>((res) => {
        const c = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'test/reliability/swap-child.mts'), dest], {
          cwd: ROOT,
          stdio: 'ignore',
        });
        c.on('close', (code, sig) => res(code ?? (sig === 'SIGKILL' ? 137 : 1)));
      });
      const present = existsSync(join(dest, MANIFEST));
      const r = await cli(['grow', FIX, dest, '--overwrite', '--plan', PLAN, ...CAL]);
      return {
        runs: [r],
        dests: [dest],
        note: `swap child exit ${k}; destination ${present ? 'present' : 'absent'} after the kill`,
      };
    },
  );
  add(
    'resume',
    'train-checkpoint-into-own-run',
    'train run/checkpoint-N --out run (pruned starting checkpoint)',
    'ok',
    async (dir, ctx) => {
      const run = join(dir, 'run');
      const { r0, ck } = await twoSaves(ctx.grown, run);
      if (r0.code !== 0 || ck === undefined) return { runs: [r0], note: 'setup failed' };
      const r = await cli(['train', join(run, ck), '--out', run, ...TRAIN]);
      return { runs: [r0, r] };
    },
  );
  add(
    'resume',
    'stale-temp-folder-cleanup',
    "a dead run's .flm-grow-tmp-<dest>-<host>-<pid>-<hex> beside the destination; grow on it",
    'ok',
    async (dir) => {
      const dest = join(dir, 'dest');
      const stale = join(dir, `.flm-grow-tmp-dest-${hostname()}-999999-deadbeef`);
      mkdirSync(stale);
      writeFileSync(join(stale, 'model.safetensors'), Buffer.alloc(1 << 16));
      const r = await cli(['grow', FIX, dest, '--plan', PLAN, ...CAL]);
      return { runs: [r], dests: [dest] };
    },
  );
  add('resume', 'truncated-verify-report', 'pipeline done, verify-report.json truncated, rerun', 'ok', async (dir) => {
    const f = pipelineFile(
      dir,
      [
        { name: 'grow', grow: { plan: 'plan.json' } },
        { name: 'verify', verify: { tokens: 16, seq: 8 } },
      ],
      { checkpoint: FIX },
    );
    const out = join(dir, 'out');
    const r0 = await cli(['run', f, '--out', out]);
    const reps = findFiles(out, 'verify-report.json');
    for (const rp of reps) truncateSync(rp, Math.floor(statSync(rp).size / 2));
    const r = await cli(['run', f, '--out', out]);
    return { runs: [r0, r], note: `${reps.length} report(s) truncated` };
  });

  // --- refuse before allocating
  const cfg = JSON.parse(readFileSync(join(FIX, 'config.json'), 'utf8')) as Record<string, unknown>;
  simple('sizes', 'plan-hidden-1e9', 'plan --hidden-size 1e9', 'refuse', (_d, s) => ['plan', s, '--hidden-size', '1000000000']);
  simple('sizes', 'plan-layers-1e9', 'plan --num-hidden-layers 1e9', 'refuse', (_d, s) => [
    'plan',
    s,
    '--num-hidden-layers',
    '1000000000',
  ]);
  simple('sizes', 'plan-intermediate-1e12', 'plan --intermediate-size 1e12', 'refuse', (_d, s) => [
    'plan',
    s,
    '--intermediate-size',
    '1e12',
  ]);
  for (const [k, v] of [
    ['vocab_size', 2e9],
    ['vocab_size', 1e300],
    ['hidden_size', 1e9],
    ['num_hidden_layers', 1e9],
    ['intermediate_size', 1e12],
  ] as const)
    for (const cmd of ['inspect', 'plan'])
      simple('sizes', `${cmd}-config-${k}-${v}`, `${cmd} of a config.json with ${k}: ${v}`, 'refuse', (_d, s) => {
        writeFileSync(join(s, 'config.json'), JSON.stringify({ ...cfg, [k]: v }));
        return cmd === 'plan' ? ['plan', join(s, 'config.json'), '--num-hidden-layers', '5'] : ['inspect', s];
      });
  simple('sizes', 'grow-calibration-tokens-1e12', 'grow --calibration-tokens 1e12', 'refuse', (d, s) => [
    'grow',
    s,
    join(d, 'out'),
    '--plan',
    PLAN,
    '--calibration-tokens',
    '1e12',
  ]);
  add('sizes', 'verify-seq-100000', 'verify --seq 100000', 'refuse', async (_dir, ctx) => ({
    runs: [await cli(['verify', FIX, ctx.grown, '--seq', '100000'])],
  }));

  // --- OS errors
  add('os', 'enospc-grow', 'grow into a 1 MB tmpfs (ENOSPC; the output is 1.8 MB)', 'refuse', async (dir) =>
    withMount(dir, 'size=1m', async (m) => ({
      runs: [await cli(['grow', FIX, join(m, 'out'), '--plan', PLAN, ...CAL])],
      dests: [join(m, 'out')],
    })),
  );
  add('os', 'enospc-train-save', 'train --out on a 3 MB tmpfs (checkpoint save ENOSPC)', 'refuse', async (dir, ctx) =>
    withMount(dir, 'size=3m', async (m) => ({ runs: [await cli(['train', ctx.grown, '--out', join(m, 'run'), ...TRAIN])] })),
  );
  add('os', 'erofs-grow', 'grow into a read-only tmpfs (EROFS)', 'refuse', async (dir) =>
    withMount(dir, 'size=8m,ro', async (m) => ({ runs: [await cli(['grow', FIX, join(m, 'out'), '--plan', PLAN, ...CAL])] })),
  );
  simple('os', 'eexist-parent-is-file', 'grow to a destination whose parent is a file (EEXIST/ENOTDIR)', 'refuse', (d, s) => {
    writeFileSync(join(d, 'file'), 'x');
    return ['grow', s, join(d, 'file', 'out'), '--plan', PLAN, ...CAL];
  });
  simple('os', 'enoent-source', 'grow a source that does not exist', 'refuse', (d) => [
    'grow',
    join(d, 'nope'),
    join(d, 'out'),
    '--plan',
    PLAN,
  ]);
  for (const cmd of ['inspect', 'verify', 'grow'])
    simple('os', `enoent-shard-${cmd}`, `${cmd} with a shard missing`, 'refuse', (d, s, ctx) => {
      unlinkSync(join(s, 'model-00003-of-00006.safetensors'));
      return cmdArgs(cmd, d, s, ctx);
    });
  for (const cmd of ['inspect', 'verify', 'grow'])
    simple('os', `eisdir-shard-${cmd}`, `${cmd} with a shard that is a directory`, 'refuse', (d, s, ctx) => {
      unlinkSync(join(s, 'model-00003-of-00006.safetensors'));
      mkdirSync(join(s, 'model-00003-of-00006.safetensors'));
      return cmdArgs(cmd, d, s, ctx);
    });

  // --- special files
  for (const cmd of ['inspect', 'grow'])
    simple('special', `fifo-shard-${cmd}`, `${cmd} with a FIFO named like a shard`, 'refuse', (d, s, ctx) => {
      unlinkSync(join(s, 'model-00003-of-00006.safetensors'));
      execFileSync('mkfifo', [join(s, 'model-00003-of-00006.safetensors')]);
      return cmdArgs(cmd, d, s, ctx);
    });
  simple('special', 'fifo-index-inspect', 'inspect with a FIFO model.safetensors.index.json', 'refuse', (_d, s) => {
    unlinkSync(join(s, 'model.safetensors.index.json'));
    execFileSync('mkfifo', [join(s, 'model.safetensors.index.json')]);
    return ['inspect', s];
  });
  simple('special', 'fifo-config-inspect', 'inspect with a FIFO config.json', 'refuse', (_d, s) => {
    unlinkSync(join(s, 'config.json'));
    execFileSync('mkfifo', [join(s, 'config.json')]);
    return ['inspect', s];
  });
  for (const cmd of ['inspect', 'grow'])
    simple('special', `config-dev-zero-${cmd}`, `${cmd} with config.json -> /dev/zero`, 'refuse', (d, s, ctx) => {
      unlinkSync(join(s, 'config.json'));
      symlinkSync('/dev/zero', join(s, 'config.json'));
      return cmdArgs(cmd, d, s, ctx);
    });
  add('special', 'fifo-train-data', 'train --data <FIFO>', 'refuse', async (dir, ctx) => {
    execFileSync('mkfifo', [join(dir, 'data.fifo')]);
    return {
      runs: [
        await cli(['train', ctx.grown, '--out', join(dir, 'run'), ...TRAIN.slice(2), '--data', join(dir, 'data.fifo')], {
          timeout: 120_000,
        }),
      ],
    };
  });
  add('special', 'dev-zero-train-data', 'train --data /dev/zero', 'refuse', async (dir, ctx) => ({
    runs: [
      await cli(['train', ctx.grown, '--out', join(dir, 'run'), ...TRAIN.slice(2), '--data', '/dev/zero'], { timeout: 120_000 }),
    ],
  }));
  simple('special', 'fifo-calibration-file', 'grow --calibration-file <FIFO>', 'refuse', (d, s) => {
    execFileSync('mkfifo', [join(d, 'cal.fifo')]);
    return ['grow', s, join(d, 'out'), '--plan', PLAN, '--calibration-file', join(d, 'cal.fifo')];
  });
  simple('special', 'dev-zero-calibration-file', 'grow --calibration-file /dev/zero', 'refuse', (d, s) => [
    'grow',
    s,
    join(d, 'out'),
    '--plan',
    PLAN,
    '--calibration-file',
    '/dev/zero',
  ]);

  // --- non-finite weights
  for (const [v, name] of [
    [NaN, 'nan'],
    [Infinity, 'inf'],
  ] as const)
    for (const cmd of ['forward', 'verify', 'grow'])
      simple(
        'nonfinite',
        `${name}-weight-${cmd}`,
        `${cmd} on a checkpoint with one ${name} weight (layer 1 shard)`,
        'refuse',
        (d, s, ctx) => {
          poisonFirstF32(join(s, 'model-00003-of-00006.safetensors'), v);
          return cmdArgs(cmd, d, s, ctx);
        },
      );

  // --- pipelines
  add('pipeline', 'unknown-key', 'pipeline train stage with "stepz": 5', 'refuse', async (dir, ctx) => {
    const f = pipelineFile(dir, [{ name: 't', train: { steps: 2, stepz: 5 } }], { checkpoint: ctx.grown });
    return { runs: [await cli(['run', f, '--out', join(dir, 'out')])] };
  });
  add('pipeline', 'train-null', 'pipeline stage "train": null', 'refuse', async (dir, ctx) => {
    const f = pipelineFile(dir, [{ name: 't', train: null }], { checkpoint: ctx.grown });
    return { runs: [await cli(['run', f, '--out', join(dir, 'out')])] };
  });
  add('pipeline', 'missing-later-plan', 'pipeline whose second grow stage names a missing plan', 'refuse', async (dir) => {
    const f = pipelineFile(
      dir,
      [
        { name: 'grow', grow: { plan: 'plan.json' } },
        { name: 'grow2', grow: { plan: 'missing-plan.json' } },
      ],
      { checkpoint: FIX },
    );
    const out = join(dir, 'out');
    const r = await cli(['run', f, '--out', out]);
    const started = existsSync(out) && readdirSync(out).some((n) => n.includes('grow'));
    return {
      runs: [r],
      note: started ? 'first stage ran before the refusal' : 'refused before the first stage',
      extraFails: started ? ['late-check'] : [],
    } as never;
  });
  add(
    'pipeline',
    'changed-plan-rerun',
    'pipeline rerun after its plan changed (5 -> 6 layers): the grow stage is redone',
    'ok',
    async (dir) => {
      const f = pipelineFile(
        dir,
        [
          { name: 'grow', grow: { plan: 'plan.json' } },
          { name: 'verify', verify: { tokens: 16, seq: 8 } },
        ],
        { checkpoint: FIX },
      );
      const out = join(dir, 'out');
      const r0 = await cli(['run', f, '--out', out]);
      writeFileSync(
        join(dir, 'plan.json'),
        JSON.stringify({ targets: { num_hidden_layers: 6 }, calibration: { tokens: 16, seq: 8 }, anneal_steps: 4 }),
      );
      const r = await cli(['run', f, '--out', out]);
      const cfgs = findFiles(out, 'config.json').map(
        (c) => (JSON.parse(readFileSync(c, 'utf8')) as { num_hidden_layers: number }).num_hidden_layers,
      );
      const redone = cfgs.includes(6);
      return { runs: [r0, r], note: `grown layers after rerun: ${cfgs.join(',')}`, extraFails: redone ? [] : ['stale'] } as never;
    },
  );

  // --- argument ranges
  add('args', 'train-beta1-2', 'train --beta1 2', 'refuse', async (dir, ctx) => ({
    runs: [await cli(['train', ctx.grown, '--out', join(dir, 'run'), ...TRAIN, '--beta1', '2'])],
  }));
  simple('args', 'select-layers-count-neg', 'select-layers --count -1', 'refuse', (_d, s) => [
    'select-layers',
    s,
    '--count',
    '-1',
    ...CAL,
  ]);
  for (const cmd of ['inspect', 'bake', 'train'])
    add(
      'args',
      `manifest-without-files-${cmd}`,
      `${cmd} of a grown checkpoint whose manifest has no "files"`,
      'refuse',
      async (dir, ctx) => {
        const g = join(dir, 'g');
        cpSync(ctx.grown, g, { recursive: true });
        const m = JSON.parse(readFileSync(join(g, MANIFEST), 'utf8')) as Record<string, unknown>;
        delete m.files;
        writeFileSync(join(g, MANIFEST), JSON.stringify(m));
        const args =
          cmd === 'inspect'
            ? ['inspect', g]
            : cmd === 'bake'
              ? ['bake', g, join(dir, 'out')]
              : ['train', g, '--out', join(dir, 'run'), ...TRAIN];
        return { runs: [await cli(args)] };
      },
    );
}

/** A manifest edited in place (JSON.parse, f, JSON.stringify). */
function editManifest(dir: string, f: (m: Record<string, any>) => void): void {
  const p = join(dir, MANIFEST);
  const m = JSON.parse(readFileSync(p, 'utf8')) as Record<string, any>;
  f(m);
  writeFileSync(p, JSON.stringify(m, null, 2));
}

/** Issue 21: damaged newest checkpoints, tampered manifests, untrusted side files, the run-folder lock. */
function defineIssue21(): void {
  const engines = ['tfjs', 'torch'] as const;
  /** TRAIN without --steps and --save-every. */
  const TB = [...TRAIN.slice(0, 2), ...TRAIN.slice(6)];
  // --- a damaged newest checkpoint: resumed past, in one named line
  const damages: [string, string, (ck: string) => void, RegExp][] = [
    [
      'optimizer-truncated',
      'optimizer.safetensors truncated to 100 bytes',
      (ck) => truncateSync(join(ck, 'optimizer.safetensors'), 100),
      /optimizer\.safetensors is truncated/,
    ],
    [
      'model-byte-altered',
      'one byte of model.safetensors altered',
      (ck) => {
        const b = readFileSync(join(ck, 'model.safetensors'));
        b[b.length - 3] ^= 0x40;
        writeFileSync(join(ck, 'model.safetensors'), b);
      },
      /model\.safetensors does not match its manifest \(sha256 differs/,
    ],
    ['manifest-missing', 'flm-grow-manifest.json removed', (ck) => rmSync(join(ck, MANIFEST)), /no flm-grow-manifest\.json/],
  ];
  for (const engine of engines)
    for (const [id, what, damage, why] of damages)
      add(
        'damaged',
        `resume-${id}-${engine}`,
        `train --resume (${engine}) with the newest checkpoint's ${what}: resumes from the previous save, saying which and why`,
        'ok',
        async (dir, ctx) => {
          const run = join(dir, 'run');
          const eng = ['--engine', engine];
          const r0 = await cli(['train', ctx.grown, '--out', run, ...TB, '--steps', '4', '--save-every', '2', ...eng]);
          if (r0.code !== 0) return { runs: [r0], note: 'setup failed' };
          damage(join(run, 'checkpoint-000004'));
          const r = await cli(['train', ctx.grown, '--out', run, ...TB, '--steps', '6', '--save-every', '2', '--resume', ...eng]);
          const line = `${r.out}\n${r.err}`.split('\n').find((l) => l.includes('skipped damaged checkpoint')) ?? '';
          const named =
            line.includes('checkpoint-000004') && why.test(line) && /resuming from .*checkpoint-000002 at step 2/.test(line);
          return {
            runs: [r0, r],
            note: named
              ? line.replaceAll(dir, '$CASE').replace(/^.*?skipped/, 'skipped')
              : 'silent: no line names the skipped checkpoint',
            extraFails: named ? [] : ['silent'],
          } as never;
        },
      );
  add(
    'damaged',
    'pipeline-stage-optimizer-truncated',
    "pipeline rerun after the train stage's newest optimizer.safetensors was truncated",
    'ok',
    async (dir, ctx) => {
      const f = pipelineFile(dir, [{ name: 't', train: { steps: 4, save_every: 2 } }], { checkpoint: ctx.grown });
      const out = join(dir, 'out');
      const r0 = await cli(['run', f, '--out', out]);
      const ck = join(out, '01-t', 'checkpoint-000004');
      if (r0.code !== 0 || !existsSync(ck)) return { runs: [r0], note: 'setup failed' };
      truncateSync(join(ck, 'optimizer.safetensors'), 100);
      const r = await cli(['run', f, '--out', out]);
      const line = `${r.out}\n${r.err}`.split('\n').find((l) => l.startsWith('[t] warning: skipped damaged checkpoint')) ?? '';
      const named = line.includes('checkpoint-000004 (optimizer.safetensors is truncated') && /at step 2$/.test(line);
      return {
        runs: [r0, r],
        note: named ? line.replaceAll(dir, '$CASE') : 'silent: no line names the skipped checkpoint',
        extraFails: named ? [] : ['silent'],
      } as never;
    },
  );

  // --- tampered manifests: refused naming the field (exit 2)
  const grownEdits: [string, string, (m: Record<string, any>) => void][] = [
    ['schedule-length', 'masks.schedule[0].length', (m) => (m.masks.schedule[0].length = -5)],
    ['schedule-group', 'masks.schedule[0].group', (m) => (m.masks.schedule[0].group = 'everything')],
    ['schedule-shape', 'masks.schedule[0].shape', (m) => (m.masks.schedule[0].shape = 'square')],
    ['schedule-start', 'masks.schedule[0].startStep', (m) => (m.masks.schedule[0].startStep = 1.5)],
    ['masks-file', 'masks.file', (m) => (m.masks.file = '../../etc/passwd')],
    ['layermap-source', 'layerMap[0].source', (m) => (m.layerMap[0].source = -3)],
    ['layermap-short', 'layerMap', (m) => m.layerMap.pop()],
  ];
  for (const engine of engines)
    for (const [id, field, f] of grownEdits)
      add(
        'manifest',
        `train-${id}-${engine}`,
        `train (${engine}) of a grown checkpoint whose manifest has ${field} edited`,
        'refuse',
        async (dir, ctx) => {
          const g = join(dir, 'g');
          cpSync(ctx.grown, g, { recursive: true });
          editManifest(g, f);
          const r = await cli(['train', g, '--out', join(dir, 'run'), ...TRAIN, '--engine', engine]);
          const named = r.code === 2 && r.err.includes(`field "${field}"`);
          return { runs: [r], extraFails: r.code !== 0 && !named ? ['unnamed'] : [] } as never;
        },
      );
  const trainEdits: [string, string, (m: Record<string, any>) => void][] = [
    ['step', 'extra.step', (m) => (m.extra.step = -1)],
    ['stage-start', 'extra.stageStart', (m) => (m.extra.stageStart = 99)],
    ['run-start', 'extra.runStartStep', (m) => (m.extra.runStartStep = -4)],
    ['lr-total', 'extra.lrSchedule.totalSteps', (m) => (m.extra.lrSchedule.totalSteps = 0)],
  ];
  for (const engine of engines)
    for (const [id, field, f] of trainEdits)
      add(
        'manifest',
        `resume-${id}-${engine}`,
        `train --resume (${engine}) whose newest manifest has ${field} edited`,
        'refuse',
        async (dir, ctx) => {
          const run = join(dir, 'run');
          const { r0, ck } = await twoSaves(ctx.grown, run);
          if (r0.code !== 0 || ck === undefined) return { runs: [r0], note: 'setup failed' };
          editManifest(join(run, ck), f);
          const r = await cli(['train', ctx.grown, '--out', run, ...TRAIN, '--resume', '--engine', engine]);
          const named = r.code === 2 && r.err.includes(`field "${field}"`);
          return { runs: [r], extraFails: r.code !== 0 && !named ? ['unnamed'] : [] } as never;
        },
      );
  add(
    'manifest',
    'verify-layermap-source',
    'verify of a grown checkpoint whose layerMap[1].source is 9',
    'refuse',
    async (dir, ctx) => {
      const g = join(dir, 'g');
      cpSync(ctx.grown, g, { recursive: true });
      editManifest(g, (m) => (m.layerMap[1].source = 9));
      const r = await cli(['verify', FIX, g, ...VER]);
      return { runs: [r], extraFails: r.code !== 0 && !r.err.includes('field "layerMap[1].source"') ? ['unnamed'] : [] } as never;
    },
  );

  // --- untrusted files: code beside a checkpoint is never carried into an output
  add(
    'untrusted',
    'grow-source-tokenizer-py',
    'grow a source holding tokenizer.py (code): the output has no .py file',
    'ok',
    async (dir) => {
      const src = fixtureCopy(dir);
      writeFileSync(join(src, 'tokenizer.py'), 'import os\nos.system("echo pwned")\n');
      const out = join(dir, 'out');
      const r = await cli(['grow', src, out, '--plan', PLAN, ...CAL]);
      // the only Python a grown folder may hold is the package's remote code of a masked
      // checkpoint (hf_remote/, written by flm-grow); nothing of the source's
      const generated = ['configuration_flm_grow.py', 'modeling_flm_grow.py', 'flm_grow_masks.py'];
      const copied = existsSync(out) && readdirSync(out).some((n) => n.endsWith('.py') && !generated.includes(n));
      return {
        runs: [r],
        dests: [out],
        extraFails: copied ? ['code-copied'] : [],
        note: copied ? 'tokenizer.py copied into the output' : '',
      } as never;
    },
  );

  // --- one writer per run folder (.flm-grow-lock)
  const lockOf = (host: string, pid: number) =>
    JSON.stringify({ host, pid, pidStart: null, startedAt: '2026-01-01T00:00:00Z', command: 'flm-grow train (bench)' });
  add(
    'lock',
    'stale-lock-taken-over',
    "train --out a folder holding a dead process's lock (this host): taken over, saying so",
    'ok',
    async (dir, ctx) => {
      const run = join(dir, 'run');
      mkdirSync(run);
      writeFileSync(join(run, '.flm-grow-lock'), lockOf(hostname(), 999_999));
      const r = await cli(['train', ctx.grown, '--out', run, ...TRAIN]);
      const said = /stale|took over|taking over/i.test(`${r.out}${r.err}`);
      return { runs: [r], extraFails: said ? [] : ['silent'], note: said ? '' : 'no line about the stale lock' } as never;
    },
  );
  add('lock', 'foreign-host-lock-refused', "train --out a folder locked by another host's job", 'refuse', async (dir, ctx) => {
    const run = join(dir, 'run');
    mkdirSync(run);
    writeFileSync(join(run, '.flm-grow-lock'), lockOf('some-other-host', 12345));
    return { runs: [await cli(['train', ctx.grown, '--out', run, ...TRAIN])] };
  });
  add(
    'lock',
    'foreign-host-lock-take-over',
    "train --out a folder locked by another host's job, with --take-over-lock",
    'ok',
    async (dir, ctx) => {
      const run = join(dir, 'run');
      mkdirSync(run);
      writeFileSync(join(run, '.flm-grow-lock'), lockOf('some-other-host', 12345));
      return { runs: [await cli(['train', ctx.grown, '--out', run, ...TRAIN, '--take-over-lock'])] };
    },
  );
  add(
    'lock',
    'second-writer-refused',
    'train --overwrite into a folder a running train holds: refused, the first run finishes',
    'ok',
    async (dir, ctx) => {
      const run = join(dir, 'run');
      const first = cli(['train', ctx.grown, '--out', run, ...TB, '--steps', '12', '--save-every', '1']);
      const t0 = Date.now();
      while (!existsSync(join(run, '.flm-grow-lock')) && Date.now() - t0 < 120_000) await new Promise((r) => setTimeout(r, 50));
      const second = await cli(['train', ctx.grown, '--out', run, ...TRAIN, '--overwrite']);
      const r1 = await first;
      const refused = second.code === 2 && /in use by another flm-grow job/.test(second.err);
      return {
        runs: [second, r1],
        note: `second run exit ${second.code}${refused ? ' (refused, naming the holder)' : ''}`,
        extraFails: refused ? [] : ['accepted'],
      } as never;
    },
  );
}

function cmdArgs(cmd: string, d: string, s: string, ctx: Ctx): string[] {
  if (cmd === 'inspect') return ['inspect', s];
  if (cmd === 'verify') return ['verify', s, ctx.grown, ...VER];
  if (cmd === 'forward') return ['forward', s, '--ids', '1,2,3'];
  return ['grow', s, join(d, 'out'), '--plan', PLAN, ...CAL];
}

function findFiles(root: string, name: string): string[] {
  const r: string[] = [];
  const walk = (d: string): void => {
    if (!existsSync(d)) return;
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (lstatSync(p).isDirectory()) walk(p);
      else if (n === name) r.push(p);
    }
  };
  walk(root);
  return r;
}

async function withMount<T extends { runs: Run[] }>(
  dir: string,
  opts: string,
  f: (m: string) => Promise<T>,
): Promise<T & { note?: string }> {
  const m = join(dir, 'mnt');
  mkdirSync(m);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', opts, 'tmpfs', m], { stdio: 'ignore' });
  } catch {
    return { runs: [], note: 'skipped: cannot mount a tmpfs (not root or no CAP_SYS_ADMIN)', skipped: true } as never;
  }
  try {
    return await f(m);
  } finally {
    execFileSync('umount', ['-l', m], { stdio: 'ignore' });
  }
}

// ---------------------------------------------------------------- kill timings

interface KillTarget {
  name: string;
  /** Prepares the case folder; returns the command, the rerun, the folder holding the source(s), and the destinations. */
  setup: (
    dir: string,
    ctx: Ctx,
  ) => { args: string[]; rerun: string[]; source: string; dests: string[]; doneWithoutRerun?: () => boolean };
}
const KILL_TARGETS: KillTarget[] = [
  {
    name: 'grow',
    setup: (dir) => {
      const s = fixtureCopy(dir);
      const a = ['grow', s, join(dir, 'out'), '--plan', PLAN, ...CAL];
      return { args: a, rerun: [...a, '--overwrite'], source: s, dests: [join(dir, 'out')] };
    },
  },
  {
    name: 'bake',
    setup: (dir) => {
      const s = fixtureCopy(dir);
      const a = ['bake', s, join(dir, 'out')];
      return { args: a, rerun: [...a, '--overwrite'], source: s, dests: [join(dir, 'out')] };
    },
  },
  {
    name: 'assemble',
    setup: (dir, ctx) => {
      const p = join(dir, 'parts');
      cpSync(ctx.parts[0], join(p, 'part-1'), { recursive: true });
      cpSync(ctx.parts[1], join(p, 'part-2'), { recursive: true });
      const a = ['assemble', join(dir, 'out'), join(p, 'part-1'), join(p, 'part-2')];
      return { args: a, rerun: [...a, '--overwrite'], source: p, dests: [join(dir, 'out')] };
    },
  },
  {
    name: 'assemble-move',
    setup: (dir, ctx) => {
      const p = join(dir, 'parts');
      cpSync(ctx.parts[0], join(p, 'part-1'), { recursive: true });
      cpSync(ctx.parts[1], join(p, 'part-2'), { recursive: true });
      const a = ['assemble', join(dir, 'out'), join(p, 'part-1'), join(p, 'part-2'), '--move'];
      return {
        args: a,
        rerun: a,
        source: '',
        dests: [join(dir, 'out')],
        // --move removes the parts after success: a complete destination needs no rerun
        doneWithoutRerun: () => existsSync(join(dir, 'out', MANIFEST)) && !existsSync(join(p, 'part-1')),
      };
    },
  },
  {
    name: 'train',
    setup: (dir, ctx) => {
      const g = join(dir, 'g');
      cpSync(ctx.grown, g, { recursive: true });
      const a = ['train', g, '--out', join(dir, 'run'), ...TRAIN];
      return { args: a, rerun: [...a, '--resume'], source: g, dests: [] };
    },
  },
  {
    name: 'run',
    setup: (dir) => {
      const g = fixtureCopy(dir, 'g');
      // grow then train: the kill lands in either stage (verify may only follow a grow or bake)
      const f = pipelineFile(
        dir,
        [
          { name: 'grow', grow: { plan: 'plan.json' } },
          { name: 'train', train: { steps: 3 } },
        ],
        { checkpoint: g },
      );
      const a = ['run', f, '--out', join(dir, 'out')];
      return { args: a, rerun: a, source: g, dests: [] };
    },
  },
];

function defineKills(n: number, baselines: Map<string, number>, targets: KillTarget[]): void {
  for (const t of targets)
    for (const sig of ['SIGKILL', 'SIGINT'] as const)
      for (let i = 1; i <= n; i++)
        add(
          'kill',
          `${t.name}-${sig}-${i}of${n}`,
          `${t.name}: ${sig} at ${i}/${n + 1} of its run time, then rerun`,
          'ok',
          async (dir, ctx) => {
            const s = t.setup(dir, ctx);
            const before = s.source === '' ? '' : hashTree(s.source);
            const at = Math.round(((baselines.get(t.name) ?? 5000) * i) / (n + 1));
            const r0 = await cli(s.args, { killAfter: at, signal: sig });
            const runs = [r0];
            let note = r0.finishedBeforeKill
              ? `finished (exit ${r0.code}) before the kill at ${at} ms`
              : `killed at ${r0.killedAt} ms (exit ${r0.code})`;
            if (!(r0.finishedBeforeKill && r0.code === 0) && !s.doneWithoutRerun?.()) {
              const r1 = await cli(s.rerun);
              runs.push(r1);
              const moved = /moved|recover/i.exec(r1.err);
              if (moved) note += '; rerun recovered shards';
            } else note += '; no rerun needed';
            if (t.name === 'run' || t.name === 'train') {
              const done =
                t.name === 'train'
                  ? existsSync(join(dir, 'run', 'checkpoint-000003', MANIFEST))
                  : runs[runs.length - 1].code === 0;
              if (!done) note += '; final checkpoint missing';
            }
            return {
              runs,
              source: s.source === '' ? undefined : [before, hashTree(s.source)],
              dests: s.dests,
              note,
              ignoreFirstExit: true,
            } as never;
          },
        );
}

// ---------------------------------------------------------------- fuzzing

function defineFuzz(n: number): void {
  const shards = readdirSync(FIX)
    .filter((f) => /^model-\d+-of-\d+\.safetensors$/.test(f))
    .sort();
  const kinds = ['header-bitflip', 'body-bitflip', 'truncate', 'length-field', 'index-bitflip', 'index-truncate'] as const;
  for (let i = 0; i < n; i++) {
    const kind = kinds[i % kinds.length];
    add('fuzz', `${String(i).padStart(3, '0')}-${kind}`, `seed ${i}: ${kind}`, 'any', async (dir, ctx) => {
      const r = rng(0x16_0000 + i);
      const src = fixtureCopy(dir);
      const shard = join(src, shards[Math.floor(r() * shards.length)]);
      const idx = join(src, 'model.safetensors.index.json');
      let what = '';
      if (kind.startsWith('index')) {
        const b = readFileSync(idx);
        if (kind === 'index-truncate') {
          const len = Math.floor(r() * b.length);
          writeFileSync(idx, b.subarray(0, len));
          what = `index truncated to ${len} B`;
        } else {
          const flips = 1 + Math.floor(r() * 4);
          for (let k = 0; k < flips; k++) {
            const at = Math.floor(r() * b.length);
            b[at] ^= 1 << Math.floor(r() * 8);
          }
          writeFileSync(idx, b);
          what = `index: ${flips} bit flips`;
        }
      } else {
        const b = readFileSync(shard);
        const hlen = Number(b.readBigUInt64LE(0));
        if (kind === 'header-bitflip' || kind === 'body-bitflip') {
          const flips = 1 + Math.floor(r() * 8);
          const [lo, hi] = kind === 'header-bitflip' ? [0, 8 + hlen] : [8 + hlen, b.length];
          for (let k = 0; k < flips; k++) b[lo + Math.floor(r() * (hi - lo))] ^= 1 << Math.floor(r() * 8);
          writeFileSync(shard, b);
          what = `${basename(shard)}: ${flips} bit flips in ${kind.split('-')[0]}`;
        } else if (kind === 'truncate') {
          const len = Math.floor(r() * b.length);
          writeFileSync(shard, b.subarray(0, len));
          what = `${basename(shard)} truncated to ${len} of ${b.length} B`;
        } else {
          const choices = [
            0n,
            1n,
            BigInt(hlen - 1),
            BigInt(hlen + 1),
            BigInt(b.length),
            2n ** 63n - 1n,
            2n ** 64n - 1n,
            BigInt(Math.floor(r() * 2 ** 32)),
          ];
          const v = choices[Math.floor(r() * choices.length)];
          b.writeBigUInt64LE(v, 0);
          writeFileSync(shard, b);
          what = `${basename(shard)}: header length ${hlen} -> ${v}`;
        }
      }
      const before = hashTree(src);
      const runs = await Promise.all([
        cli(['inspect', src], { timeout: 120_000 }),
        cli(['verify', src, ctx.grown, ...VER], { timeout: 180_000 }),
        cli(['grow', src, join(dir, 'out'), '--plan', PLAN, ...CAL], { timeout: 180_000 }),
      ]);
      const note = `${what}; exits inspect ${runs[0].code}, verify ${runs[1].code}, grow ${runs[2].code}`;
      return { runs, source: [before, hashTree(src)], dests: [join(dir, 'out')], note };
    });
  }
}

// ---------------------------------------------------------------- judging and running

async function runCase(c: Case, base: string, ctx: Ctx): Promise<Outcome> {
  const dir = mkdtempSync(join(base, `${c.id.replace(/[^a-z0-9]+/gi, '-')}-`));
  const t0 = Date.now();
  let res: Awaited<ReturnType<CaseFn>> & {
    extraFails?: string[];
    dests?: string[];
    skipped?: boolean;
    ignoreFirstExit?: boolean;
  };
  try {
    res = await c.fn(dir, ctx);
  } catch (e) {
    res = { runs: [], note: `bench error: ${e instanceof Error ? e.message : String(e)}`, extraFails: ['bench'] };
  }
  const runs = res.runs;
  const last = runs[runs.length - 1];
  const fails: string[] = [...(res.extraFails ?? [])];
  // a killed first run may die anywhere; every other run is judged
  const judged = res.ignoreFirstExit ? runs.slice(1) : runs;
  const all = res.ignoreFirstExit ? runs : runs;
  if (all.some((r) => r.hung)) fails.push('hang');
  if (judged.some(isInternal) || (res.ignoreFirstExit && runs[0] && isInternal(runs[0]) && runs[0].code === 3))
    fails.push('internal');
  // a kill case whose killed run had already finished the work (assemble --move killed after its
  // output and the parts' removal were complete, before the process exited) needs no rerun: it
  // is judged by its leftovers and output, not by the SIGKILL of a run that was judged ignorable
  const onlyKilledRun = res.ignoreFirstExit === true && runs.length === 1;
  if (last && !res.skipped && !onlyKilledRun) {
    if (c.expect === 'refuse' && last.code === 0) fails.push('accepted');
    if (c.expect === 'ok' && last.code !== 0 && !last.hung) fails.push('failed');
  }
  const left = leftovers(dir, res.dests ?? []);
  if (left.length > 0) fails.push('leftover');
  const sourceIntact = res.source ? res.source[0] === res.source[1] : null;
  if (sourceIntact === false) fails.push('source');
  const out: Outcome = {
    id: c.id,
    group: c.group,
    description: c.description,
    expect: c.expect,
    exit: runs.map((r) => (r.hung ? 'hang' : r.signal ? `${r.signal}` : String(r.code))).join(' → ') || 'skipped',
    hung: runs.some((r) => r.hung),
    errorLine: (
      runs
        .filter((r) => r.code !== 0 && !r.signal)
        .map(errorLine)
        .filter((l) => l !== '')
        .pop() ?? ''
    )
      .replaceAll(dir, '$CASE')
      .replaceAll(base, '$TMP'),
    named: !runs.some(isInternal),
    leftovers: left,
    sourceIntact,
    ms: Date.now() - t0,
    fails: [...new Set(fails)],
    note: res.note ?? '',
  };
  rmSync(dir, { recursive: true, force: true });
  return out;
}

async function pool<T, R>(items: T[], jobs: number, f: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(jobs, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await f(items[i]);
      }
    }),
  );
  return out;
}

function arg(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
}

function markdown(rows: Outcome[], meta: Record<string, string>): string {
  const esc = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
  const lines = [
    `| case | expect | exits | error line | left over | source | outcome |`,
    `|---|---|---|---|---|---|---|`,
    ...rows.map(
      (r) =>
        `| \`${r.id}\` ${esc(r.description)}${r.note ? ` (${esc(r.note)})` : ''} | ${r.expect} | ${r.exit} | ${esc(r.errorLine.length > 140 ? `${r.errorLine.slice(0, 137)}...` : r.errorLine)} | ${r.leftovers.length ? esc(r.leftovers.join(', ')) : '—'} | ${r.sourceIntact === null ? '—' : r.sourceIntact ? 'intact' : '**changed**'} | ${r.fails.length ? `**FAIL** (${r.fails.join(', ')})` : 'pass'} |`,
    ),
  ];
  const byKind = new Map<string, number>();
  for (const r of rows) for (const f of r.fails) byKind.set(f, (byKind.get(f) ?? 0) + 1);
  const failed = rows.filter((r) => r.fails.length > 0).length;
  return [
    `Command: \`${meta.command}\`  `,
    `Date: ${meta.date}; ${meta.commit}; wall ${meta.wall}  `,
    ...(meta.notRun ? [`${meta.notRun}  `] : []),
    `Cases: ${rows.length}, passed ${rows.length - failed}, failed ${failed}${byKind.size ? ` (${[...byKind].map(([k, v]) => `${k} ${v}`).join(', ')})` : ''}`,
    '',
    ...lines,
    '',
  ].join('\n');
}

/**
 * `--merge a.json b.json ...`: one table from several runs (a later file's row replaces an earlier
 * one with the same id, e.g. a rerun of one group after a bench fix); commands and dates are kept.
 */
function merge(files: string[], outBase: string): void {
  const byId = new Map<string, Outcome>();
  const metas: Record<string, string>[] = [];
  const notRun = new Set<string>();
  for (const f of files) {
    const j = JSON.parse(readFileSync(f, 'utf8')) as { meta: Record<string, string>; rows: Outcome[]; notRun?: string[] };
    metas.push(j.meta);
    for (const r of j.rows) byId.set(r.id, r);
    for (const id of j.notRun ?? []) notRun.add(id);
  }
  for (const id of byId.keys()) notRun.delete(id);
  const rows = [...byId.values()];
  const meta = {
    command: metas.map((m) => m.command).join('`, then `'),
    date: metas.map((m) => m.date).join(', '),
    commit: metas.map((m) => m.commit).join(', '),
    wall: metas.map((m) => m.wall).join(' + '),
    notRun: notRun.size ? `${notRun.size} cases not run (time limit): ${[...notRun].sort().join(', ')}` : '',
  };
  writeFileSync(`${outBase}.json`, JSON.stringify({ meta, rows, notRun: [...notRun] }, null, 1));
  writeFileSync(`${outBase}.md`, markdown(rows, meta));
  process.stdout.write(`${markdown(rows, meta).split('\n').slice(0, 4).join('\n')}\n`);
}

export async function run(args: string[]): Promise<void> {
  const kills = arg(args, '--kills', 5);
  const fuzz = arg(args, '--fuzz', 200);
  const jobs = arg(args, '--jobs', 4);
  const maxMinutes = arg(args, '--max-minutes', 20);
  const onlyI = args.indexOf('--only');
  const only = onlyI >= 0 ? args[onlyI + 1].split(',') : undefined;
  const targetsI = args.indexOf('--targets');
  const killTargets = targetsI >= 0 ? KILL_TARGETS.filter((t) => args[targetsI + 1].split(',').includes(t.name)) : KILL_TARGETS;
  const outI = args.indexOf('--out');
  const outName = outI >= 0 ? args[outI + 1] : 'faults';
  // `--out /tmp/x` writes /tmp/x.json and /tmp/x.md; a bare name goes under bench-out/
  const outBase = isAbsolute(outName) ? outName : join(ROOT, 'bench-out', outName);
  mkdirSync(dirname(outBase), { recursive: true });
  const mergeI = args.indexOf('--merge');
  if (mergeI >= 0) return merge(args.slice(mergeI + 1), outBase);
  const t0 = Date.now();
  if (!existsSync(join(ROOT, 'dist/cli.js'))) throw new Error('dist/ missing: run `npm run build` first');
  const base = mkdtempSync(join(tmpdir(), 'flm-grow-faults-'));
  mkdirSync(join(ROOT, 'bench-out'), { recursive: true });
  try {
    // shared read-only inputs: a grown checkpoint and the two parts of a split grow
    const shared = join(base, 'shared');
    mkdirSync(shared);
    const ctx: Ctx = {
      base,
      grown: join(shared, 'grown'),
      parts: [join(shared, 'part-1'), join(shared, 'part-2')],
      pipelineDir: shared,
    };
    const setup = await Promise.all([
      cli(['grow', FIX, ctx.grown, '--plan', PLAN, ...CAL]),
      cli(['grow', FIX, ctx.parts[0], '--plan', PLAN, ...CAL, '--part', '1/2']),
      cli(['grow', FIX, ctx.parts[1], '--plan', PLAN, ...CAL, '--part', '2/2']),
    ]);
    for (const s of setup) if (s.code !== 0) throw new Error(`setup failed: ${s.args.join(' ')}: ${s.err}`);
    const sharedHash = hashTree(shared);

    defineItems();
    defineIssue21();
    // kill-timing baselines: one uninterrupted run of each target
    const baselines = new Map<string, number>();
    if (!only || only.includes('kill')) {
      for (const t of killTargets) {
        const dir = mkdtempSync(join(base, `baseline-${t.name}-`));
        const s = t.setup(dir, ctx);
        const r = await cli(s.args);
        baselines.set(t.name, r.ms);
        process.stderr.write(`baseline ${t.name}: ${r.ms} ms (exit ${r.code})\n`);
        rmSync(dir, { recursive: true, force: true });
      }
      defineKills(kills, baselines, killTargets);
    }
    defineFuzz(fuzz);
    const selected = cases.filter((c) => !only || only.includes(c.group) || only.includes(c.id));
    let done = 0;
    const deadline = t0 + maxMinutes * 60_000;
    const finished: Outcome[] = [];
    const skipped: string[] = [];
    const rows = await pool(selected, jobs, async (c) => {
      if (Date.now() > deadline) {
        skipped.push(c.id);
        return undefined;
      }
      const o = await runCase(c, base, ctx);
      finished.push(o);
      if (finished.length % 10 === 0) writeFileSync(`${outBase}.partial.json`, JSON.stringify(finished, null, 1));
      done++;
      process.stderr.write(
        `[${done}/${selected.length}] ${o.fails.length ? 'FAIL' : 'pass'} ${o.id} ${o.exit} ${o.fails.join(',')} ${o.errorLine.slice(0, 100)}\n`,
      );
      return o;
    }).then((r) => r.filter((o): o is Outcome => o !== undefined));
    if (hashTree(shared) !== sharedHash) process.stderr.write('warning: the shared inputs changed during the sweep\n');
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const meta = {
      command: `npm run bench -- faults${args.length ? ` ${args.join(' ')}` : ''}`,
      date: new Date().toISOString(),
      commit: `commit ${commit}`,
      wall: `${Math.round((Date.now() - t0) / 1000)} s`,
      baselines: JSON.stringify(Object.fromEntries(baselines)),
      notRun: skipped.length
        ? `${skipped.length} cases not run (--max-minutes ${maxMinutes} reached): ${skipped.join(', ')}`
        : '',
    };
    mkdirSync(join(ROOT, 'bench-out'), { recursive: true });
    writeFileSync(`${outBase}.json`, JSON.stringify({ meta, rows, notRun: skipped }, null, 1));
    const md = markdown(rows, meta);
    writeFileSync(`${outBase}.md`, md);
    const failed = rows.filter((r) => r.fails.length > 0);
    process.stdout.write(`${md.split('\n').slice(0, 3).join('\n')}\n`);
    for (const f of failed)
      process.stdout.write(`FAIL ${f.id}: ${f.fails.join(',')}: ${f.exit}: ${f.errorLine} ${f.note} ${f.leftovers.join(' ')}\n`);
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
}
