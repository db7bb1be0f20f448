/**
 * `--async-save` (torch.distributed.checkpoint.async_save): 2 processes, a sharded checkpoint every
 * 2 steps written in the background while training goes on. Judged against the same run with
 * synchronous sharded saves: the same per-step losses and masks, and the same tensors in every
 * kept checkpoint, although each background save is held back (a test hook) until training has run
 * on past the step it saves, so a save that wrote the live tensors instead of the copy taken at
 * its step would differ. A crash while a background save is in flight leaves that checkpoint
 * without its manifest: the failure names the previous one, `--resume` skips the incomplete one
 * with the "skipped damaged checkpoint" warning, resumes from the async-saved one before it and
 * reproduces the uninterrupted losses.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findTorchPython, NO_TORCH_HELP } from '../../src/engines/torch-process.ts';
import type { StepMetrics } from '../../src/train/metrics.ts';
import { spawnBounded } from '../support/spawn-bounded.ts';
import { CORPUS, flmGrowBounded, grownGqa, stepsOf } from '../support/torch-runs.ts';

const torch = findTorchPython();
if (torch === undefined) console.log(`test/torch/async-save: SKIPPED: ${NO_TORCH_HELP}`);
const RUN = ['--steps', '10', '--batch-size', '4', '--seq-len', '16', '--lr', '3e-3', '--seed', '5', '--save-every', '2'];

let root: string;
let grown: string;

function train(out: string, flags: string[], env: NodeJS.ProcessEnv = {}) {
  return flmGrowBounded(['train', grown, '--engine', 'torch', '--data', CORPUS, '--out', out, ...RUN, ...flags], 45_000, env);
}

function expectSameSteps(got: StepMetrics[], want: StepMetrics[], label: string) {
  expect(got.map((m) => m.step)).toEqual(want.map((m) => m.step));
  const rel = got.map((m, i) => Math.abs(m.loss - want[i].loss) / want[i].loss);
  console.log(`${label}: max rel loss diff ${Math.max(...rel).toExponential(2)}`);
  rel.forEach((x, i) => expect(x, `${label} step ${want[i].step}`).toBeLessThan(1e-4));
  got.forEach((m, i) => expect(m.masks, `${label} masks at step ${m.step}`).toEqual(want[i].masks));
}

/**
 * Largest max|a-b|/max|b| over every tensor (weights and both AdamW moments) of two sharded
 * checkpoints, read with torch.distributed.checkpoint in one process; the names must be the same.
 */
async function shardDiff(a: string, b: string): Promise<number> {
  const py = `
import json, sys, warnings, torch
warnings.filterwarnings("ignore")
from flm_grow_torch import dcp_safe
a, b = sys.argv[1], sys.argv[2]
ma, mb = (dcp_safe.read_metadata(p).state_dict_metadata for p in (a, b))
assert sorted(ma) == sorted(mb), (sorted(ma), sorted(mb))
worst = 0.0
for n, m in mb.items():
    x, y = torch.empty(m.size), torch.empty(m.size)
    dcp_safe.load(a, {n: x}, no_dist=True)
    dcp_safe.load(b, {n: y}, no_dist=True)
    worst = max(worst, float((x - y).abs().max() / y.abs().max().clamp(min=1e-30)))
print(json.dumps({"tensors": len(mb), "worst": worst}))`;
  const r = await spawnBounded(torch?.python ?? 'python3', ['-c', py, a, b], { timeoutMs: 30_000, label: 'shard comparison' });
  expect(r.status, r.stderr).toBe(0);
  const { tensors, worst } = JSON.parse(r.stdout) as { tensors: number; worst: number };
  expect(tensors).toBe(3 * 30); // 30 weights (3 layers x 9 + embedding, final norm, head), each with 2 moments
  return worst;
}

describe.skipIf(torch === undefined)('--async-save (torch.distributed.checkpoint.async_save, gloo, CPU)', () => {
  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'flm-async-save-'));
    grown = await grownGqa(root);
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('equals synchronous sharded saves (losses, masks, every kept checkpoint); a crash mid-save is skipped by --resume, which reproduces the run', async () => {
    const sync = join(root, 'sync');
    const s = await train(sync, ['--nproc', '2', '--sharded-save']);
    expect(s.status, s.stderr).toBe(0);
    const want = stepsOf(sync);
    expect(want.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);

    // every background save waits 0.6 s before writing: training runs on (a step takes ~0.05 s
    // here) and the next save has to wait for it
    const asy = join(root, 'async');
    const r = await train(asy, ['--nproc', '2', '--sharded-save', '--async-save', '--json'], {
      FLM_GROW_TEST_ASYNC_SAVE_DELAY: '0.6',
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('Traceback');
    expectSameSteps(stepsOf(asy), want, 'async vs synchronous sharded saves');
    for (const ck of ['checkpoint-000008', 'checkpoint-000010']) {
      const d = await shardDiff(join(asy, ck, 'sharded'), join(sync, ck, 'sharded'));
      console.log(`${ck}: async vs synchronous save, max rel diff ${d.toExponential(2)}`);
      expect(d).toBeLessThan(1e-6);
    }
    // --keep-checkpoints 2: the older ones were pruned once the newer ones were complete
    expect(existsSync(join(asy, 'checkpoint-000006'))).toBe(false);

    // rank 0 dies once checkpoint-000006's shards are written, before its manifest
    const crash = join(root, 'crash');
    const c = await train(crash, ['--nproc', '2', '--sharded-save', '--async-save'], { FLM_GROW_TEST_CRASH_IN_ASYNC_SAVE: '6' });
    expect(c.status, c.stderr).toBe(2);
    expect(c.stderr).toMatch(/torch engine: rank 0 \(local rank 0, pid \d+\) was killed by SIGKILL/);
    expect(c.stderr).toContain(`last complete checkpoint: ${join(crash, 'checkpoint-000004')}`);
    expect(existsSync(join(crash, 'checkpoint-000006', 'sharded', '.metadata'))).toBe(true);
    expect(existsSync(join(crash, 'checkpoint-000006', 'flm-grow-manifest.json'))).toBe(false);
    // resumed on 1 process (DCP reshards the 2-process save), synchronous saves
    const again = await train(crash, ['--sharded-save', '--resume']);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).toContain(
      `skipped damaged checkpoint ${join(crash, 'checkpoint-000006')} (no flm-grow-manifest.json (an interrupted save)); ` +
        `resuming from ${join(crash, 'checkpoint-000004')} at step 4`,
    );
    expectSameSteps(stepsOf(crash), want, 'crashed during an async save, resumed');
  }, 110_000);
});
