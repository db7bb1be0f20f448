/**
 * The torch engine across processes and machines, driven through the CLI as a user runs it:
 * FSDP2, tensor parallelism, their 2-D combination (with sharded torch.distributed.checkpoint
 * saves, exported to the HF layout) and two torchrun "nodes" on 127.0.0.1 each train
 * a grown GQA checkpoint mid-annealing (AdamW moments carried in) step for step like one process
 * (under TP with the loss computed on vocab-sharded logits; a tied-embedding model under TP too),
 * which engine.test.ts proves against the tfjs trainer and transformers. A worker killed with
 * SIGKILL is named with the checkpoint and command that resume, and the resumed run (at another
 * world size and layout) reproduces the uninterrupted losses (--max-restarts: restarts.test.ts).
 * Tiny model, gloo, one thread per process.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsFile } from '../../src/checkpoint/safetensors.ts';
import { growCheckpoint } from '../../src/growth/grow.ts';
import { parsePlan } from '../../src/growth/plan.ts';
import { MASKS_FILE } from '../../src/checkpoint/masks.ts';
import { partitionMetrics, readMetrics, type StepMetrics } from '../../src/train/metrics.ts';
import { bytesToFloat32 } from '../../src/util/dtype.ts';
import { findTorchPython, NO_TORCH_HELP, runTorchModule } from '../../src/engines/torch-process.ts';
import { grownGqa } from '../support/torch-runs.ts';

const torch = findTorchPython();
if (torch === undefined) console.log(`test/torch/distributed: SKIPPED: ${NO_TORCH_HELP}`);
const CORPUS = join(import.meta.dirname, '../../fixtures/corpus/fortunes.txt');
const BIN = join(import.meta.dirname, '../../bin/flm-grow.js');
const ENV = { ...process.env, OMP_NUM_THREADS: '1' };
// 8 steps from step 5 of a 30-step annealing: every mask group is between 0 and 1 throughout
const RUN = ['--steps', '8', '--batch-size', '4', '--seq-len', '16', '--lr', '3e-3', '--seed', '5', '--eval-every', '4'];

let root: string;
let mid: string; // the grown checkpoint after 5 steps: masks mid-annealing, AdamW moments non-zero
let ref: StepMetrics[]; // one process, uninterrupted

function flmGrow(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...ENV, ...env } });
}

/** `flm-grow train` of `mid` on the torch engine with these launch flags (8 steps). */
function train(out: string, launch: string[], env: NodeJS.ProcessEnv = {}) {
  return flmGrow(['train', mid, '--engine', 'torch', '--data', CORPUS, '--out', out, '--quiet', ...RUN, ...launch], env);
}

function stepsOf(out: string): StepMetrics[] {
  return partitionMetrics(readMetrics(join(out, 'metrics.jsonl'))).steps;
}

async function tensors(path: string): Promise<Map<string, Float32Array>> {
  const f = await SafetensorsFile.open(path);
  const out = new Map<string, Float32Array>();
  try {
    for (const [n, info] of f.tensors) out.set(n, bytesToFloat32(await f.read(n), info.dtype));
  } finally {
    await f.close();
  }
  return out;
}

/** Largest max|a-b|/max|b| over the tensors of two safetensors files with the same names. */
async function maxRelDiff(a: string, b: string): Promise<number> {
  const [x, y] = [await tensors(a), await tensors(b)];
  expect([...x.keys()].sort()).toEqual([...y.keys()].sort());
  let worst = 0;
  for (const [n, bv] of y) {
    const av = x.get(n) ?? new Float32Array();
    let d = 0,
      m = 0;
    for (let i = 0; i < bv.length; i++) {
      d = Math.max(d, Math.abs(av[i] - bv[i]));
      m = Math.max(m, Math.abs(bv[i]));
    }
    worst = Math.max(worst, d / (m || 1));
  }
  return worst;
}

/** Same per-step losses (≤1e-4 relative) and the same mask values as the one-process run. */
function expectSameSteps(got: StepMetrics[], want: StepMetrics[], label: string) {
  expect(got.map((m) => m.step)).toEqual(want.map((m) => m.step));
  const rel = got.map((m, i) => Math.abs(m.loss - want[i].loss) / want[i].loss);
  console.log(`${label}: max rel loss diff vs 1 process ${Math.max(...rel).toExponential(2)}`);
  rel.forEach((r, i) => expect(r, `${label} step ${want[i].step}`).toBeLessThan(1e-4));
  got.forEach((m, i) => expect(m.masks, `${label} masks at step ${m.step}`).toEqual(want[i].masks));
}

describe.skipIf(torch === undefined)('distributed torch engine (gloo, CPU)', () => {
  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'flm-dist-'));
    // GQA with heads, KV heads, FFN and vocab all divisible by 2 (tensor parallelism of 2)
    const grown = await grownGqa(root);
    const warm = await runTorchModule(
      'flm_grow_torch.train',
      [grown, '--data', CORPUS, '--out', join(root, 'warm'), '--steps', '5', '--batch-size', '4', '--seq-len', '16'],
      { capture: true, env: { OMP_NUM_THREADS: '1' } },
    );
    expect(warm.code, warm.stderr).toBe(0);
    mid = join(root, 'warm', 'checkpoint-000005');
    const one = join(root, 'one');
    const r = await runTorchModule('flm_grow_torch.train', [mid, '--data', CORPUS, '--out', one, ...RUN, '--quiet'], {
      capture: true,
      env: { OMP_NUM_THREADS: '1' },
    });
    expect(r.code, r.stderr).toBe(0);
    ref = stepsOf(one);
    expect(ref.length).toBe(8);
    // mid-annealing throughout: the test would not see a mask applied wrongly at 0 or 1
    for (const m of ref) for (const v of Object.values(m.masks ?? {})) expect(v > 0 && v < 1).toBe(true);
  }, 120_000);
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it("DDP 2, FSDP2 2 (+ activation checkpointing), TP 2, FSDP x TP 2 x 2 (sharded saves): per-step losses and masks of 1 process; the saved folders equal DDP's", async () => {
    const layouts: [string, string[]][] = [
      ['ddp2', ['--nproc', '2']],
      // with activation checkpointing: the recomputed layers give the same gradients
      ['fsdp2', ['--nproc', '2', '--fsdp', '--activation-checkpointing']],
      ['tp2', ['--nproc', '2', '--tp', '2']],
      // sharded checkpoints (each rank writes its parts), exported to the HF layout below
      ['fsdp2xtp2', ['--nproc', '4', '--tp', '2', '--fsdp', '--sharded-save']],
    ];
    for (const [name, flags] of layouts) {
      const r = train(join(root, name), flags);
      expect(r.status, `${name}: ${r.stderr}`).toBe(0);
      expectSameSteps(stepsOf(join(root, name)), ref, name);
    }
    const exported = join(root, 'fsdp2xtp2-hf');
    const ex = await runTorchModule(
      'flm_grow_torch.sharded',
      ['export', join(root, 'fsdp2xtp2', 'checkpoint-000013'), exported],
      {
        capture: true,
      },
    );
    expect(ex.code, ex.stderr).toBe(0);
    const ck = (name: string, f: string) => (name === 'fsdp2xtp2' ? join(exported, f) : join(root, name, 'checkpoint-000013', f));
    for (const [name] of layouts.slice(1)) {
      const w = await maxRelDiff(ck(name, 'model.safetensors'), ck('ddp2', 'model.safetensors'));
      const o = await maxRelDiff(ck(name, 'optimizer.safetensors'), ck('ddp2', 'optimizer.safetensors'));
      console.log(`${name} vs DDP checkpoint: weights ${w.toExponential(2)}, AdamW moments ${o.toExponential(2)}`);
      expect(w).toBeLessThan(1e-5);
      expect(o).toBeLessThan(1e-5);
      expect(Buffer.compare(readFileSync(ck(name, MASKS_FILE)), readFileSync(ck('ddp2', MASKS_FILE)))).toBe(0);
      const man = JSON.parse(readFileSync(ck(name, 'flm-grow-manifest.json'), 'utf8')) as { extra: { sharding: string } };
      expect(man.extra.sharding).toBe(name === 'fsdp2' ? 'fsdp' : name === 'tp2' ? 'tp2' : 'fsdp+tp2');
    }
    // flm-grow reads the export as any checkpoint: bake (its masks are mid-annealing, hence --force)
    const baked = flmGrow(['bake', exported, join(root, 'baked'), '--force']);
    expect(baked.status, baked.stderr).toBe(0);
  }, 180_000);

  it('tied embeddings under TP 2 (one vocab-sharded Parameter for the embedding and the LM head, gradients from both uses): the losses, masks and weights of 1 process', async () => {
    // llama3-tied (tie_word_embeddings true, vocab 320) grown with masks, 5 steps into its annealing, AdamW moments carried
    const grown = join(root, 'tied-grown');
    await growCheckpoint(
      join(import.meta.dirname, '../../fixtures/hf/llama3-tied'),
      grown,
      parsePlan({
        targets: {
          hidden_size: 48,
          intermediate_size: 96,
          num_attention_heads: 8,
          num_key_value_heads: 4,
          num_hidden_layers: 3,
          vocab_size: 384,
        },
        // 64 new token ids annealing in: their logit bias log(m_v) sits in one rank's half of the
        // vocab-sharded logits, so a bias added to the wrong shard changes every loss
        vocab: { new: 'tokens' },
        mode: 'masked',
        placement: { method: 'explicit', positions: [0] },
        seed: 3,
        anneal_steps: 30,
      }),
      { quiet: true },
    );
    const opts = { capture: true, env: { OMP_NUM_THREADS: '1' } };
    const warm = await runTorchModule(
      'flm_grow_torch.train',
      [grown, '--data', CORPUS, '--out', join(root, 'tied-warm'), '--steps', '5', '--batch-size', '4', '--seq-len', '16'],
      opts,
    );
    expect(warm.code, warm.stderr).toBe(0);
    const tiedMid = join(root, 'tied-warm', 'checkpoint-000005');
    const [one, tp] = [join(root, 'tied-one'), join(root, 'tied-tp2')];
    const r1 = await runTorchModule('flm_grow_torch.train', [tiedMid, '--data', CORPUS, '--out', one, ...RUN, '--quiet'], opts);
    expect(r1.code, r1.stderr).toBe(0);
    const want = stepsOf(one);
    for (const m of want) for (const v of Object.values(m.masks ?? {})) expect(v > 0 && v < 1).toBe(true);
    const r2 = flmGrow([
      'train',
      tiedMid,
      '--engine',
      'torch',
      '--data',
      CORPUS,
      '--out',
      tp,
      '--quiet',
      ...RUN,
      '--nproc',
      '2',
      '--tp',
      '2',
    ]);
    expect(r2.status, r2.stderr).toBe(0);
    expectSameSteps(stepsOf(tp), want, 'tied, tp2');
    const ck = (d: string, f: string) => join(d, 'checkpoint-000013', f);
    // one tensor for both uses in both runs: the tied head is not saved (HF's tied layout)
    expect([...(await tensors(ck(tp, 'model.safetensors'))).keys()]).not.toContain('lm_head.weight');
    const w = await maxRelDiff(ck(tp, 'model.safetensors'), ck(one, 'model.safetensors'));
    const o = await maxRelDiff(ck(tp, 'optimizer.safetensors'), ck(one, 'optimizer.safetensors'));
    console.log(`tied tp2 vs 1 process checkpoint: weights ${w.toExponential(2)}, AdamW moments ${o.toExponential(2)}`);
    expect(w).toBeLessThan(1e-5);
    expect(o).toBeLessThan(1e-5);
    expect(Buffer.compare(readFileSync(ck(tp, MASKS_FILE)), readFileSync(ck(one, MASKS_FILE)))).toBe(0);
  }, 120_000);

  it('two nodes x 1 process (torchrun c10d rendezvous on 127.0.0.1): the 1-process losses; bad launch flags refused', async () => {
    const out = join(root, 'nodes');
    const port = String(20000 + Math.floor(Math.random() * 20000));
    const node = (rank: number) =>
      new Promise<{ code: number | null; stderr: string }>((res) => {
        const c = spawn(
          process.execPath,
          [BIN, 'train', mid, '--engine', 'torch', '--data', CORPUS, '--out', out, '--quiet', ...RUN, '--nnodes', '2'].concat([
            '--node-rank',
            String(rank),
            '--master-addr',
            '127.0.0.1',
            '--master-port',
            port,
          ]),
          { env: ENV },
        );
        let stderr = '';
        c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        c.on('close', (code) => res({ code, stderr }));
      });
    const [n0, n1] = await Promise.all([node(0), node(1)]);
    expect(n0.code, n0.stderr).toBe(0);
    expect(n1.code, n1.stderr).toBe(0);
    expectSameSteps(stepsOf(out), ref, '2 nodes');

    const bad = (flags: string[], re: RegExp) => {
      const r = train(join(root, 'bad'), flags);
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toMatch(re);
      expect(r.stderr).not.toContain('Traceback');
    };
    bad(['--nnodes', '2', '--node-rank', '2', '--master-addr', '127.0.0.1'], /--node-rank 2 is outside 0\.\.1 \(--nnodes 2\)/);
    bad(['--nnodes', '2'], /--nnodes 2 needs --master-addr/);
    bad(['--nproc', '3', '--tp', '3'], /config\.json num_attention_heads 8 is not divisible by 3/);
  }, 120_000);

  it('a rank aborted while exiting, after the run finished and saved, leaves the result standing (said as a warning)', () => {
    const out = join(root, 'abort-at-exit');
    const r = flmGrow(
      [
        'train',
        mid,
        '--engine',
        'torch',
        '--data',
        CORPUS,
        '--out',
        out,
        ...RUN.map((x) => (x === '8' ? '2' : x)),
        '--nproc',
        '2',
        '--json',
      ],
      { FLM_GROW_TEST_ABORT_AT_EXIT: '1' },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(
      /torch engine rank 1 was killed by SIGABRT while exiting, after the run had finished and saved .*\(complete\); the result stands/,
    );
    const res = JSON.parse(r.stdout) as { step: number; checkpoint: string };
    expect(res.step).toBe(7);
    expect(stepsOf(out).map((m) => m.step)).toEqual([6, 7]);
  });

  it('a SIGKILLed rank is named with the last checkpoint and the resume command; resuming on 1 process reproduces the losses', () => {
    const out = join(root, 'killed');
    const r = train(out, ['--nproc', '2', '--fsdp', '--sharded-save', '--save-every', '2'], { FLM_GROW_TEST_KILL: '1:11' });
    expect(r.status).toBe(2);
    const msg = r.stderr;
    expect(msg).toMatch(/torch engine: rank 1 \(local rank 1, pid \d+\) was killed by SIGKILL \(signal 9\)/);
    expect(msg).toContain(`last complete checkpoint: ${join(out, 'checkpoint-000010')}`);
    expect(msg).toMatch(/resume with: flm-grow train .* --resume/);
    expect(msg).not.toContain('Traceback');
    // the printed command, at another world size and layout (1 process, no FSDP): DCP reshards the
    // FSDP2 shards of checkpoint-000010 for one process, and the rest of the run is the same
    const resume = (/resume with: flm-grow (.*)$/m.exec(msg) ?? [])[1].split(' ').filter((a) => a !== '--fsdp');
    const i = resume.indexOf('--nproc');
    resume.splice(i, 2);
    const again = flmGrow(resume);
    expect(again.status, again.stderr).toBe(0);
    expectSameSteps(stepsOf(out), ref, 'killed at step 11, resumed on 1 process');

    // torchrun's --max-restarts (the workers restarted, resuming on their own): test/torch/restarts.test.ts
  }, 120_000);
});
