/**
 * `flm-grow export <sharded-checkpoint> --out <dir>`: the checkpoint an FSDP2 run saved as
 * torch.distributed.checkpoint shards (each rank its half of every tensor), exported by the CLI,
 * is the folder a DDP run of the same steps writes directly: the same files, the weights and both
 * AdamW moments within f32 round-off, byte-identical masks. flm-grow's other commands take it
 * (bake, grow, train from it, plot of the continued run). An existing --out is refused without
 * --overwrite and left as it was; an incomplete checkpoint is refused naming the file, and nothing
 * is left behind.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MASKS_FILE } from '../../src/checkpoint/masks.ts';
import { findTorchPython, NO_TORCH_HELP } from '../../src/engines/torch-process.ts';
import { readAll } from '../support/safetensors-compare.ts';
import { CORPUS, flmGrowBounded, grownGqa, stepsOf } from '../support/torch-runs.ts';

const torch = findTorchPython();
if (torch === undefined) console.log(`test/torch/export: SKIPPED: ${NO_TORCH_HELP}`);
const RUN = ['--steps', '4', '--batch-size', '4', '--seq-len', '16', '--lr', '3e-3', '--seed', '5', '--quiet'];

let root: string;
let grown: string;

/** Largest max|a-b|/max|b| over the tensors of two safetensors files, which must hold the same names and shapes. */
async function maxRelDiff(a: string, b: string): Promise<number> {
  const [x, y] = [await readAll(a), await readAll(b)];
  expect([...x.keys()].sort()).toEqual([...y.keys()].sort());
  let worst = 0;
  for (const [n, t] of y) {
    const u = x.get(n) as { shape: number[]; data: Float32Array };
    expect(u.shape, n).toEqual(t.shape);
    let d = 0,
      m = 0;
    t.data.forEach((v, i) => {
      d = Math.max(d, Math.abs(u.data[i] - v));
      m = Math.max(m, Math.abs(v));
    });
    worst = Math.max(worst, d / (m || 1));
  }
  return worst;
}

const files = (d: string) => readdirSync(d).sort();

describe.skipIf(torch === undefined)('flm-grow export (sharded checkpoint -> HF layout)', () => {
  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'flm-export-'));
    grown = await grownGqa(root);
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('an FSDP2 sharded checkpoint, exported, is the folder DDP writes; bake, grow, train and plot take it; --out and bad input are refused', async () => {
    const train = (out: string, flags: string[]) =>
      flmGrowBounded(['train', grown, '--engine', 'torch', '--data', CORPUS, '--out', join(root, out), ...RUN, ...flags], 45_000);
    const [ddp, fsdp] = await Promise.all([
      train('ddp', ['--nproc', '2']),
      train('fsdp', ['--nproc', '2', '--fsdp', '--sharded-save']),
    ]);
    expect(ddp.status, ddp.stderr).toBe(0);
    expect(fsdp.status, fsdp.stderr).toBe(0);
    const sharded = join(root, 'fsdp', 'checkpoint-000004');
    const want = join(root, 'ddp', 'checkpoint-000004');
    expect(existsSync(join(sharded, 'sharded', '.metadata'))).toBe(true);

    // the sharded folder itself: the other commands say how to read it instead of "no weights found"
    const inspected = await flmGrowBounded(['inspect', sharded], 30_000);
    expect(inspected.status).toBe(2);
    expect(inspected.stderr.trim().split('\n')).toEqual([
      `flm-grow: error: ${sharded}: a sharded training checkpoint (torch.distributed.checkpoint shards in sharded/): ` +
        `train --resume continues it; other commands read its HF-layout export (flm-grow export ${sharded} --out <dir>)`,
    ]);

    const out = join(root, 'exported');
    const e = await flmGrowBounded(['export', sharded, '--out', out, '--json'], 30_000);
    expect(e.status, e.stderr).toBe(0);
    const res = JSON.parse(e.stdout) as { dest: string; tensors: number; bytes: number; step: number };
    expect(res).toMatchObject({ dest: out, tensors: 90, step: 4 });
    expect(e.stderr).toMatch(/export: .* of .* \(100%\)/); // progress (a log line each quarter without a terminal)
    expect(files(out)).toEqual(files(want));
    for (const f of ['model.safetensors', 'optimizer.safetensors']) {
      const d = await maxRelDiff(join(out, f), join(want, f));
      console.log(`exported ${f} vs DDP's: max rel diff ${d.toExponential(2)}`);
      expect(d).toBeLessThan(1e-5);
    }
    expect(Buffer.compare(readFileSync(join(out, MASKS_FILE)), readFileSync(join(want, MASKS_FILE)))).toBe(0);
    expect(readFileSync(join(out, 'config.json'), 'utf8')).toBe(readFileSync(join(want, 'config.json'), 'utf8'));

    // an existing --out: refused, untouched; --overwrite replaces it
    const before = statSync(join(out, 'model.safetensors')).mtimeMs;
    const again = await flmGrowBounded(['export', sharded, '--out', out], 30_000);
    expect(again.status).toBe(2);
    expect(again.stderr).toContain(`flm-grow: error: ${out}: already exists (pass --overwrite to replace it)`);
    expect(statSync(join(out, 'model.safetensors')).mtimeMs).toBe(before);
    const over = await flmGrowBounded(['export', sharded, '--out', out, '--overwrite', '--quiet'], 30_000);
    expect(over.status, over.stderr).toBe(0);
    expect(over.stderr).toBe('');

    // an incomplete checkpoint (no manifest: an interrupted or still-running save): one line, nothing written
    const partial = join(root, 'partial');
    cpSync(sharded, partial, { recursive: true });
    rmSync(join(partial, 'flm-grow-manifest.json'));
    const bad = await flmGrowBounded(['export', partial, '--out', join(root, 'never')], 30_000);
    expect(bad.status).toBe(2);
    expect(bad.stderr.trim().split('\n')).toEqual([
      `flm-grow: error: export ${partial}: ${partial}: not a complete checkpoint: no flm-grow-manifest.json (an interrupted save)`,
    ]);
    expect(readdirSync(root).filter((f) => f.includes('never'))).toEqual([]);

    // flm-grow's commands take the export: bake (masks mid-annealing, hence --force), grow, and
    // train on from it (the run's step count goes on), whose metrics plot after the first run's
    const steps = [
      ['bake', out, '--out', join(root, 'baked'), '--force', '--quiet'],
      [
        'grow',
        out,
        '--out',
        join(root, 'regrown'),
        '--num-hidden-layers',
        '4',
        '--placement',
        'explicit',
        '--positions',
        '0',
        '--quiet',
      ],
      ['train', out, '--engine', 'torch', '--data', CORPUS, '--out', join(root, 'more'), '--steps', '2', '--quiet'],
      [
        'plot',
        join(root, 'fsdp', 'metrics.jsonl'),
        join(root, 'more', 'metrics.jsonl'),
        '--merge',
        '--out',
        join(root, 'loss.svg'),
      ],
    ];
    for (const args of steps) {
      const r = await flmGrowBounded(args, 30_000);
      expect(r.status, `${args[0]}: ${r.stderr}`).toBe(0);
    }
    expect(stepsOf(join(root, 'more')).map((m) => m.step)).toEqual([5, 6]);
    expect(readFileSync(join(root, 'loss.svg'), 'utf8')).toContain('<svg');
  }, 110_000);
});
