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
import { initBackend } from '../../src/backend.ts';
import { growCheckpoint } from '../../src/growth/grow.ts';
import { parsePlan } from '../../src/growth/plan.ts';
import { MASKS_FILE } from '../../src/masks.ts';
import { partitionMetrics, readMetrics, type StepMetrics } from '../../src/train/metrics.ts';
import { initConfig, writeRandomInit } from '../../src/train/random-init.ts';
import { findTorchPython, NO_TORCH_HELP } from '../../src/torch-engine.ts';
import { readAll } from '../support/safetensors-compare.ts';
import { spawnBounded } from '../support/spawn-bounded.ts';

const torch = findTorchPython();
if (torch === undefined) console.log(`test/torch/restarts: SKIPPED: ${NO_TORCH_HELP}`);
const CORPUS = join(import.meta.dirname, '../../fixtures/corpus/fortunes.txt');
const BIN = join(import.meta.dirname, '../../bin/flm-grow.js');
// 10 steps of a 30-step annealing (masks strictly between 0 and 1 from step 1 on), a checkpoint every 2
const RUN = ['--steps', '10', '--batch-size', '4', '--seq-len', '16', '--lr', '3e-3', '--seed', '5', '--save-every', '2'];
const KILL_AT = 7; // rank 0 kills itself before step 7: checkpoint-000006 is the newest complete one

let root: string;
let grown: string;

function train(out: string, flags: string[], env: NodeJS.ProcessEnv, timeoutMs: number) {
  return spawnBounded(
    process.execPath,
    [BIN, 'train', grown, '--engine', 'torch', '--data', CORPUS, '--out', out, '--json', ...RUN, ...flags],
    { env: { ...process.env, OMP_NUM_THREADS: '1', ...env }, timeoutMs, label: `flm-grow train --out ${out} ${flags.join(' ')}` },
  );
}

const stepsOf = (out: string): StepMetrics[] => partitionMetrics(readMetrics(join(out, 'metrics.jsonl'))).steps;

describe.skipIf(torch === undefined)('torchrun --max-restarts (gloo, CPU)', () => {
  beforeAll(async () => {
    await initBackend('wasm');
    root = mkdtempSync(join(tmpdir(), 'flm-restarts-'));
    const src = join(root, 'src');
    await writeRandomInit(
      src,
      initConfig({
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 8,
        vocab_size: 256,
        max_position_embeddings: 64,
      }),
      { seed: 4, std: 0.1 },
    );
    grown = join(root, 'grown');
    await growCheckpoint(
      src,
      grown,
      parsePlan({
        targets: { hidden_size: 24, intermediate_size: 48, num_attention_heads: 8, num_key_value_heads: 4, num_hidden_layers: 3 },
        mode: 'masked',
        placement: { method: 'explicit', positions: [0] },
        seed: 3,
        anneal_steps: 30,
      }),
      { quiet: true },
    );
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('rank 0 killed at step 7: torchrun restarts both ranks, they resume from checkpoint-000006 and reproduce the uninterrupted run', async () => {
    const ref = join(root, 'ref');
    const el = join(root, 'elastic');
    const u = await train(ref, ['--nproc', '2'], {}, 40_000);
    expect(u.status, u.stderr).toBe(0);
    const r = await train(el, ['--nproc', '2', '--max-restarts', '1'], { FLM_GROW_TEST_KILL: `0:${KILL_AT}` }, 50_000);
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
