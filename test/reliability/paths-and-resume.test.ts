/**
 * Issue 16, "Data loss and path safety" and "Resume that always resumes": each test reproduces
 * a reported failure (outputs deleting their inputs, manifest names escaping their folder, the
 * --overwrite swap, resume after pruning, interrupted assemble --move, stale temporary folders).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import type { ArgumentsCamelCase } from 'yargs';
import { makeTempDir, tinyByteConfig } from '../support/model.ts';
import { growCheckpoint } from '../../src/growth/grow.ts';
import { bakeCheckpoint } from '../../src/growth/bake.ts';
import { parsePlan, type GrowthPlan } from '../../src/growth/plan.ts';
import { assembleParts } from '../../src/growth/split.ts';
import { AtomicDir, TMP_PREFIX } from '../../src/checkpoint/atomic.ts';
import { forwardCommand } from '../../src/commands/forward.ts';
import { initBackend } from '../../src/engines/tfjs-backend.ts';
import { writeRandomInit } from '../../src/train/random-init.ts';
import { train } from '../../src/train/trainer.ts';
import { MANIFEST_FILE } from '../../src/checkpoint/manifest.ts';

const ROOT = join(import.meta.dirname, '../..');
const FIX = join(ROOT, 'fixtures/hf/llama-tiny-f32');
const CORPUS = join(ROOT, 'fixtures/corpus/fortunes.txt');
const tmp = makeTempDir('flm-grow-reliability-');
afterAll(() => tmp.cleanup());
let n = 0;
const fresh = (name: string): string => {
  const d = join(tmp.dir, `${++n}-${name}`);
  mkdirSync(d, { recursive: true });
  return d;
};

/** The tiny stage-1 -> stage-2 plan with explicit placement (no calibration pass: fast). */
const plan = (): GrowthPlan => {
  const json = JSON.parse(readFileSync(join(ROOT, 'growth-plans/tiny-stage1-to-stage2.json'), 'utf8')) as Record<string, unknown>;
  return parsePlan({ ...json, placement: { method: 'explicit', positions: [1] } });
};
const quiet = { quiet: true };
/** A pid that is certainly not running: a process that has exited. */
const deadPid = (): number => spawnSync(process.execPath, ['-e', '']).pid as number;

beforeAll(async () => {
  await initBackend('wasm');
});

describe('outputs never delete or overwrite their inputs', () => {
  it('grow --overwrite onto the folder holding the source is refused; source and neighbours survive', async () => {
    const p = fresh('p');
    cpSync(FIX, join(p, 'src'), { recursive: true });
    writeFileSync(join(p, 'notes.txt'), 'keep\n');
    await expect(
      growCheckpoint(join(p, 'src'), p, plan(), { ...quiet, overwrite: true, forceOverwrite: true }),
    ).rejects.toMatchObject({ code: 'DestinationContainsInput' });
    expect(readFileSync(join(p, 'notes.txt'), 'utf8')).toBe('keep\n');
    expect(readdirSync(join(p, 'src')).sort()).toEqual(readdirSync(FIX).sort());
    // and the destination inside the source
    await expect(growCheckpoint(join(p, 'src'), join(p, 'src', 'grown'), plan(), quiet)).rejects.toMatchObject({
      code: 'DestinationInsideInput',
    });
    expect(existsSync(join(p, 'src', 'grown'))).toBe(false);
  });

  it('bake and assemble refuse a destination that contains their input', async () => {
    const p = fresh('bake');
    await growCheckpoint(FIX, join(p, 'grown'), plan(), quiet);
    await expect(bakeCheckpoint(join(p, 'grown'), p, { overwrite: true, force: true })).rejects.toMatchObject({
      code: 'DestinationContainsInput',
    });
    expect(existsSync(join(p, 'grown', MANIFEST_FILE))).toBe(true);
    const q = fresh('asm');
    for (const i of [1, 2])
      await growCheckpoint(FIX, join(q, `part${i}`), plan(), {
        ...quiet,
        maxShardSize: 60_000,
        writerOptions: { part: { index: i, count: 2 } },
      });
    await expect(
      assembleParts(q, [join(q, 'part1'), join(q, 'part2')], { ...quiet, overwrite: true, forceOverwrite: true }),
    ).rejects.toMatchObject({ code: 'DestinationContainsInput' });
    expect(existsSync(join(q, 'part1', MANIFEST_FILE))).toBe(true);
  });

  it('--overwrite replaces a folder flm-grow wrote, but not a foreign one unless forced', async () => {
    const p = fresh('foreign');
    const dest = join(p, 'dest');
    mkdirSync(dest);
    writeFileSync(join(dest, 'thesis.tex'), 'years of work');
    await expect(growCheckpoint(FIX, dest, plan(), { ...quiet, overwrite: true })).rejects.toMatchObject({
      code: 'DestinationNotOurs',
    });
    expect(readFileSync(join(dest, 'thesis.tex'), 'utf8')).toBe('years of work');
    await growCheckpoint(FIX, dest, plan(), { ...quiet, overwrite: true, forceOverwrite: true });
    await growCheckpoint(FIX, dest, plan(), { ...quiet, overwrite: true }); // now it is ours
    expect(existsSync(join(dest, MANIFEST_FILE))).toBe(true);
  });

  it('forward --output onto its --input file (or into the checkpoint) is refused', async () => {
    const p = fresh('fwd');
    const input = join(p, 'input.safetensors');
    cpSync(join(FIX, 'reference.safetensors'), input);
    const before = readFileSync(input);
    const run = (output: string) =>
      Promise.resolve(
        (forwardCommand.handler as (x: ArgumentsCamelCase) => Promise<void>)({
          _: [],
          $0: 'flm-grow',
          checkpoint: FIX,
          input,
          output,
          overwrite: true,
          top: 5,
          masks: true,
          backend: 'wasm',
          quiet: true,
        } as unknown as ArgumentsCamelCase),
      );
    await expect(run(input)).rejects.toMatchObject({ code: 'OutputIsInput' });
    expect(readFileSync(input).equals(before)).toBe(true);
    await expect(run(join(FIX, 'model-00001-of-00006.safetensors'))).rejects.toMatchObject({ code: 'OutputIsInput' });
  });

  it('train --out inside its input checkpoint is refused', async () => {
    const ck = join(fresh('train-in'), 'ck');
    await writeRandomInit(ck, tinyCfg(), { seed: 1 });
    await expect(train({ ...trainArgs, checkpoint: ck, out: join(ck, 'run'), steps: 1 })).rejects.toMatchObject({
      code: 'OutInsideInput',
    });
    await expect(train({ ...trainArgs, checkpoint: ck, out: ck, steps: 1 })).rejects.toMatchObject({ code: 'OutInsideInput' });
    expect(existsSync(join(ck, 'run'))).toBe(false);
  });
});

describe('names read from files stay inside their folder', () => {
  it('assemble refuses a part manifest naming ../ files, and writes nothing outside', async () => {
    const q = fresh('evil');
    const parts = [1, 2].map((i) => join(q, 'parts', `part${i}`));
    for (const [k, dir] of parts.entries())
      await growCheckpoint(FIX, dir, plan(), {
        ...quiet,
        maxShardSize: 60_000,
        writerOptions: { part: { index: k + 1, count: 2 } },
      });
    writeFileSync(join(q, 'parts', 'escape.txt'), 'pwned');
    const { sha256Bytes } = await import('../../src/util/hash.ts');
    for (const dir of parts) {
      const m = JSON.parse(readFileSync(join(dir, MANIFEST_FILE), 'utf8')) as { files: Record<string, string> };
      m.files['../escape.txt'] = sha256Bytes('pwned');
      writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify(m));
    }
    const out = join(q, 'out', 'assembled');
    await expect(assembleParts(out, parts, quiet)).rejects.toMatchObject({ code: 'UnsafePath' });
    expect(existsSync(join(q, 'out', 'escape.txt'))).toBe(false);
    expect(existsSync(out)).toBe(false);
  });

  it('train --resume refuses a checkpoint manifest naming ../ files (no read outside)', async () => {
    const run = fresh('resume-evil');
    const ck = join(run, 'init');
    await writeRandomInit(ck, tinyCfg(), { seed: 1 });
    const out = join(run, 'out');
    await train({ ...trainArgs, checkpoint: ck, out, steps: 2 });
    const saved = join(out, 'checkpoint-000002');
    const m = JSON.parse(readFileSync(join(saved, MANIFEST_FILE), 'utf8')) as { files: Record<string, string> };
    m.files['../../outside.bin'] = '0'.repeat(64);
    writeFileSync(join(saved, MANIFEST_FILE), JSON.stringify(m));
    await expect(train({ ...trainArgs, checkpoint: ck, out, steps: 2, resume: true })).rejects.toMatchObject({
      code: 'UnsafePath',
    });
  });

  it('a symlinked side file is copied only when it points inside the checkpoint folder', async () => {
    const p = fresh('symlink');
    const src = join(p, 'src');
    cpSync(FIX, src, { recursive: true });
    writeFileSync(join(p, 'secret.txt'), 'not a tokenizer');
    symlinkSync(join(p, 'secret.txt'), join(src, 'tokenizer.json'));
    await expect(growCheckpoint(src, join(p, 'out'), plan(), quiet)).rejects.toMatchObject({ code: 'UnsafeSymlink' });
    expect(readdirSync(p).filter((f) => f.startsWith(TMP_PREFIX))).toEqual([]);
    // inside the folder: followed, copied as the file it points to
    writeFileSync(join(src, 'real-tokenizer.json'), '{"x":1}');
    renameSync(join(src, 'tokenizer.json'), join(p, 'old-link'));
    symlinkSync('real-tokenizer.json', join(src, 'tokenizer.json'));
    await growCheckpoint(src, join(p, 'out'), plan(), quiet);
    expect(readFileSync(join(p, 'out', 'tokenizer.json'), 'utf8')).toBe('{"x":1}');
  });
});

describe('interrupted runs', () => {
  it('--overwrite killed between its two renames: the next run puts the old destination back', async () => {
    const p = fresh('swap');
    const dest = join(p, 'dest');
    await AtomicDir.create(dest).then(async (d) => {
      writeFileSync(d.path('which'), 'old');
      writeFileSync(d.path(MANIFEST_FILE), '{}');
      await d.commit();
    });
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'swap-child.mts'), dest], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const signal = await new Promise<NodeJS.Signals | null>((res) => child.on('exit', (_code, sig) => res(sig)));
    expect(signal).toBe('SIGKILL'); // killed mid-swap: nothing at the destination
    expect(existsSync(dest)).toBe(false);
    const notes: string[] = [];
    const d = await AtomicDir.create(dest, { overwrite: true, notice: (m) => notes.push(m) });
    await d.abort();
    expect(readFileSync(join(dest, 'which'), 'utf8')).toBe('old');
    expect(notes.join('\n')).toMatch(/restored/);
    expect(readdirSync(p)).toEqual(['dest']); // the killed run's new output is cleaned up too
  }, 30_000);

  it('temporary folders of killed runs are removed by the next run on the same destination', async () => {
    const p = fresh('stale');
    const dest = join(p, 'grown');
    // what a killed run of an older version leaves: .flm-grow-tmp-<name>-<pid>-<hex>
    const stale = join(p, `${TMP_PREFIX}grown-${deadPid()}-0badc0de`);
    mkdirSync(stale);
    writeFileSync(join(stale, 'model-00001-of-00002.safetensors'), Buffer.alloc(1 << 20));
    const notes: string[] = [];
    const d = await AtomicDir.create(dest, { notice: (m) => notes.push(m) });
    await d.abort();
    expect(existsSync(stale)).toBe(false);
    expect(notes.join('\n')).toMatch(/removed.*1\.0 MB freed/);
  });

  it('assemble --move killed midway: the rerun moves the shards back and succeeds', async () => {
    const q = fresh('move');
    const parts = [1, 2].map((i) => join(q, `part${i}`));
    for (const [k, dir] of parts.entries())
      await growCheckpoint(FIX, dir, plan(), {
        ...quiet,
        maxShardSize: 60_000,
        writerOptions: { part: { index: k + 1, count: 2 } },
      });
    const dest = join(q, 'out');
    // the state a kill leaves: one shard already renamed into the (old-style) temporary folder
    const stale = join(q, `${TMP_PREFIX}out-${deadPid()}-12345678`);
    mkdirSync(stale);
    const part = JSON.parse(readFileSync(join(parts[0], 'part.json'), 'utf8')) as { mine: string[] };
    renameSync(join(parts[0], part.mine[0]), join(stale, part.mine[0]));
    const log: string[] = [];
    const r = await assembleParts(dest, parts, { ...quiet, move: true, log: (m) => log.push(m) });
    expect(r.shards).toBeGreaterThan(1);
    expect(log.join('\n')).toMatch(/interrupted `assemble --move`.*1 shard/);
    expect(existsSync(stale)).toBe(false);
    expect(existsSync(join(dest, part.mine[0]))).toBe(true);
  });

  it('train --resume after a kill with 3+ saves left, and train <run>/checkpoint-N --out <run>, both finish', async () => {
    const run = fresh('resume');
    const ck = join(run, 'init');
    await writeRandomInit(ck, tinyCfg(), { seed: 2 });
    const out = join(run, 'out');
    const common = { ...trainArgs, checkpoint: ck, out, steps: 10, saveEvery: 2 };
    const cut = await train({ ...common, shouldStop: (n) => n >= 3 });
    expect(cut.checkpoint).toMatch(/checkpoint-000002$/);
    // saves at 4, 6, 8 and the final 10; the keep-2 pruning removes checkpoint-000002 on the way
    const r = await train({ ...common, resume: true });
    expect(r.step).toBe(10);
    expect(r.checkpoint).toMatch(/checkpoint-000010$/);
    // continuing from a checkpoint inside the run folder (it is pruned while training)
    const r2 = await train({ ...common, checkpoint: join(out, 'checkpoint-000010'), steps: 6 });
    expect(r2.step).toBe(16);
    expect(readdirSync(out).filter((f) => f.startsWith('checkpoint-'))).toEqual(['checkpoint-000014', 'checkpoint-000016']);
  });
});

/** Byte-vocab tiny model (fortunes.txt is byte-tokenized). */
function tinyCfg() {
  return tinyByteConfig();
}
const trainArgs = {
  quiet: true,
  log: () => undefined,
  backend: 'wasm' as const,
  data: CORPUS,
  batchSize: 2,
  seqLen: 8,
  lr: 1e-3,
  evalEvery: 0,
};
