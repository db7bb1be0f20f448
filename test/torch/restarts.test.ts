/**
 * torchrun's elastic restarts (`flm-grow train --max-restarts K`): a rank SIGKILLed mid-run, the
 * agent restarts both workers, and the restarted attempt resumes from the run's newest complete
 * checkpoint and trains on to the same per-step losses, masks and weights as a run that was never
 * interrupted.
 *
 * This once hung or failed in the restarted attempt: torch >= 2.4's c10d rendezvous lends the
 * agent's TCPStore to the workers and keeps it across restarts, so the restarted workers read the
 * dead attempt's gloo addresses and tried to connect to the killed rank's old port
 * (flm_grow_torch/elastic.py explains the fix). Rank 0 is the one killed: its stale address is
 * the one every other rank connects to. Every run has a deadline (spawnBounded): a hang fails the
 * test, naming the command.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MASKS_FILE } from '../../src/checkpoint/masks.ts';
import { findTorchPython, NO_TORCH_HELP } from '../../src/engines/torch-process.ts';
import { readAll } from '../support/safetensors-compare.ts';
import { CORPUS, flmGrowBounded, grownGqa, stepsOf } from '../support/torch-runs.ts';

const torch = findTorchPython();
if (torch === undefined) console.log(`test/torch/restarts: SKIPPED: ${NO_TORCH_HELP}`);
// 10 steps of a 30-step annealing (masks strictly between 0 and 1 from step 1 on), a checkpoint every 2
const RUN = ['--steps', '10', '--batch-size', '4', '--seq-len', '16', '--lr', '3e-3', '--seed', '5', '--save-every', '2'];
const KILL_AT = 7; // rank 0 kills itself before step 7: checkpoint-000006 is the newest complete one

let root: string;
let grown: string;

function train(out: string, flags: string[], env: NodeJS.ProcessEnv, timeoutMs: number) {
  return flmGrowBounded(
    ['train', grown, '--engine', 'torch', '--data', CORPUS, '--out', out, '--json', ...RUN, ...flags],
    timeoutMs,
    env,
  );
}

describe.skipIf(torch === undefined)('torchrun --max-restarts (gloo, CPU)', () => {
  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'flm-restarts-'));
    grown = await grownGqa(root);
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('rank 0 killed at step 7: torchrun restarts both ranks, they resume from checkpoint-000006 and reproduce the uninterrupted run', async () => {
    const ref = join(root, 'ref');
    const el = join(root, 'elastic');
    const u = await train(ref, ['--nproc', '2'], {}, 40_000);
    expect(u.status, u.stderr).toBe(0);
    // in the restarted attempt rank 1 joins 3 s late: rank 0's gloo set-up reads rank 1's address
    // before rank 1 has written it, which a store kept from the first attempt answers with the dead
    // rank 1's old port (so the test fails every time without the fix, not only when the race is lost)
    const r = await train(
      el,
      ['--nproc', '2', '--max-restarts', '1'],
      { FLM_GROW_TEST_KILL: `0:${KILL_AT}`, FLM_GROW_TEST_RESTART_DELAY: '1:3' },
      50_000,
    );
    console.log(`uninterrupted ${u.seconds.toFixed(1)} s, killed + restarted ${r.seconds.toFixed(1)} s`);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain(
      'train: restart 1 of at most 1 (torchrun --max-restarts): resuming from the newest complete checkpoint',
    );
    expect(r.stderr).not.toContain('Traceback');
    const res = JSON.parse(r.stdout) as { startStep: number; step: number; losses: number[] };
    // the restarted attempt started at the newest complete checkpoint, not at the run's beginning
    expect(res.startStep).toBe(KILL_AT - 1);
    expect(res.step).toBe(10);

    const want = stepsOf(ref);
    const got = stepsOf(el);
    expect(want.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(got.map((m) => m.step)).toEqual(want.map((m) => m.step));
    const rel = got.map((m, i) => Math.abs(m.loss - want[i].loss) / want[i].loss);
    console.log(`killed at step ${KILL_AT}, restarted by torchrun: max rel loss diff ${Math.max(...rel).toExponential(2)}`);
    rel.forEach((x, i) => expect(x, `step ${want[i].step}`).toBeLessThan(1e-4));
    got.forEach((m, i) => expect(m.masks, `masks at step ${m.step}`).toEqual(want[i].masks));
    for (const m of want.slice(1)) for (const v of Object.values(m.masks ?? {})) expect(v > 0 && v < 1).toBe(true);

    const last = (d: string, f: string) => join(d, 'checkpoint-000010', f);
    expect(Buffer.compare(readFileSync(last(el, MASKS_FILE)), readFileSync(last(ref, MASKS_FILE)))).toBe(0);
    const [a, b] = [await readAll(last(el, 'model.safetensors')), await readAll(last(ref, 'model.safetensors'))];
    expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
    for (const [n, t] of b) {
      const x = (a.get(n) as { data: Float32Array }).data;
      let d = 0,
        m = 0;
      t.data.forEach((v, i) => {
        d = Math.max(d, Math.abs(x[i] - v));
        m = Math.max(m, Math.abs(v));
      });
      expect(d / (m || 1), n).toBeLessThan(1e-5);
    }
  }, 100_000);
});
