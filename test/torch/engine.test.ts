/**
 * The torch engine (python/flm_grow_torch) against independent references: transformers' own
 * logits and hidden states (fixtures/hf), and flm-grow's tfjs model and trainer (a separate
 * implementation of the same math). Runs only when a Python with torch is found.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBackend } from '../../src/engines/tfjs-backend.ts';
import { Checkpoint } from '../../src/checkpoint/checkpoint.ts';
import { readAll, tensorsAndMetadata } from '../support/safetensors-compare.ts';
import { SafetensorsFile } from '../../src/checkpoint/safetensors.ts';
import { writeSafetensors } from '../../src/checkpoint/safetensors-writer.ts';
import { growCheckpoint } from '../../src/growth/grow.ts';
import { parsePlan } from '../../src/growth/plan.ts';
import { applyMaskValues, readMasks, writeMasks, MASKS_FILE } from '../../src/checkpoint/masks.ts';
import { streamedForward } from '../../src/model/streaming.ts';
import { randomIds } from '../../src/model/input-ids.ts';
import { initConfig, writeRandomInit } from '../../src/train/random-init.ts';
import { train } from '../../src/train/trainer.ts';
import { readMetrics, partitionMetrics, type StepMetrics } from '../../src/train/metrics.ts';
import {
  findTorchPython,
  probeCachePath,
  pythonCandidates,
  runTorchModule,
  NO_TORCH_HELP,
  PYTHON_DIR,
  VENV_PYTHON,
} from '../../src/engines/torch-process.ts';
import { trainWithEngine } from '../../src/train/engine.ts';

const torch = findTorchPython();
if (torch === undefined) {
  console.log(`test/torch: SKIPPED (torch engine tests): ${NO_TORCH_HELP} Set FLM_GROW_PYTHON=/path/to/python to enable them.`);
}

const FIX = join(import.meta.dirname, '../../fixtures/hf');
const CORPUS = join(import.meta.dirname, '../../fixtures/corpus/fortunes.txt');

/** The flm-grow CLI in a child process, as a user runs it (extra environment on top of ours). */
function flmGrow(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [join(import.meta.dirname, '../../bin/flm-grow.js'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
}
let root: string;

/** max |a-b| / max |b| */
function relDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let d = 0,
    m = 0;
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(b[i])) {
      expect(a[i]).toBe(b[i]);
      continue;
    }
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / m;
}

async function torchForward(
  dir: string,
  idsFile: string,
  extra: string[] = [],
): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
  const out = join(root, `fwd-${Math.random().toString(36).slice(2)}.safetensors`);
  const r = await runTorchModule('flm_grow_torch.forward', [dir, '--input', idsFile, '--output', out, ...extra], {
    capture: true,
  });
  expect(r.code, r.stderr).toBe(0);
  return readAll(out);
}

async function writeIds(path: string, ids: number[][]): Promise<void> {
  const flat = new Int32Array(ids.flat());
  await writeSafetensors(path, [
    { name: 'input_ids', dtype: 'I32', shape: [ids.length, ids[0].length], data: new Uint8Array(flat.buffer) },
  ]);
}

async function stepsOf(metricsFile: string): Promise<StepMetrics[]> {
  return partitionMetrics(readMetrics(metricsFile)).steps;
}

describe('torch interpreter discovery', () => {
  it('tries $FLM_GROW_PYTHON, then the project .venv (when it exists), then python3, then /usr/bin/python3', () => {
    const venv = existsSync(VENV_PYTHON) ? [VENV_PYTHON] : [];
    expect(pythonCandidates({ FLM_GROW_PYTHON: '/opt/py/bin/python' })).toEqual([
      '/opt/py/bin/python',
      ...venv,
      'python3',
      '/usr/bin/python3',
    ]);
    expect(pythonCandidates({})).toEqual([...venv, 'python3', '/usr/bin/python3']);
  });

  it.skipIf(torch === undefined)(
    '--version names the interpreter; a found one is cached on disk and re-probed once torch changes',
    () => {
      const cacheHome = mkdtempSync(join(tmpdir(), 'flm-probe-cache-'));
      try {
        const version = () => flmGrow(['--version'], { XDG_CACHE_HOME: cacheHome }).stdout;
        const line = (out: string) => out.split('\n').find((l) => l.startsWith('torch engine (--engine torch): '));
        expect(line(version())).toBe(`torch engine (--engine torch): ${torch?.python} (torch ${torch?.torchVersion}, CPU only)`);
        const file = probeCachePath({ XDG_CACHE_HOME: cacheHome });
        const entry = JSON.parse(readFileSync(file, 'utf8')) as { python: string; torchFileMtimeMs: number };
        // the next run answers from the cache: a planted name shows through
        writeFileSync(file, JSON.stringify({ ...entry, python: '/planted/python3' }));
        expect(line(version())).toContain(': /planted/python3 (torch');
        // torch reinstalled (its __init__.py changed): probed again, the real interpreter comes back
        writeFileSync(file, JSON.stringify({ ...entry, python: '/planted/python3', torchFileMtimeMs: 1 }));
        expect(line(version())).toContain(`: ${torch?.python} (torch`);
        expect((JSON.parse(readFileSync(file, 'utf8')) as { python: string }).python).toBe(torch?.python);
      } finally {
        rmSync(cacheHome, { recursive: true, force: true });
      }
    },
  );
});

describe.skipIf(torch === undefined)('torch engine', () => {
  let grown: string;
  beforeAll(async () => {
    await initBackend('wasm');
    root = mkdtempSync(join(tmpdir(), 'flm-torch-test-'));
    // a tiny grown model with GQA (2 KV heads for 4 query heads) and µP multipliers
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
        use_mup: true,
        input_mult: 1.5,
        output_mult: 0.5,
        mup_scale_factor: 4,
      }),
      { seed: 4, std: 0.1 },
    );
    grown = join(root, 'grown');
    await growCheckpoint(
      src,
      grown,
      parsePlan({
        targets: { hidden_size: 24, intermediate_size: 48, num_attention_heads: 6, num_key_value_heads: 3, num_hidden_layers: 3 },
        mode: 'masked',
        placement: { method: 'explicit', positions: [0] },
        seed: 3,
        anneal_steps: 30,
      }),
      { quiet: true },
    );
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it.each([
    ['llama-tiny-f32', 'f32'],
    ['llama-tiny-bf16', 'bf16'],
  ])("%s: logits and every hidden state equal transformers' (≤1e-4 relative)", async (name, ifd) => {
    const ref = await readAll(join(FIX, name, 'reference.safetensors'));
    const got = await torchForward(join(FIX, name), join(FIX, name, 'reference.safetensors'), ['--inv-freq-dtype', ifd]);
    const diffs = [...ref.keys()]
      .filter((k) => k !== 'input_ids')
      .map((k) => [k, relDiff(got.get(k)?.data ?? new Float32Array(), ref.get(k)?.data ?? new Float32Array())] as const);
    console.log(`torch vs transformers ${name}: max rel diff ${Math.max(...diffs.map((d) => d[1])).toExponential(2)}`);
    expect(diffs.length).toBe(6); // logits + hidden_states.0..4
    for (const [k, d] of diffs) expect(d, k).toBeLessThan(1e-4);
  });

  it.each([[0], [0.5]])("grown checkpoint, masks at %s: equals flm-grow's masked model (logits, hidden states)", async (c) => {
    let dir = grown;
    if (c !== 0) {
      dir = join(root, `grown-${c}`);
      cpSync(grown, dir, { recursive: true });
      const ck0 = await Checkpoint.open(dir);
      const m = await readMasks(join(dir, MASKS_FILE), ck0.config);
      await ck0.close();
      rmSync(join(dir, MASKS_FILE));
      await writeMasks(join(dir, MASKS_FILE), applyMaskValues(m, { hidden: c, heads: c, ffn: c, layers: c }));
    }
    const ids = randomIds(2, 12, 256, 9);
    const idsFile = join(root, `ids-${c}.safetensors`);
    await writeIds(idsFile, ids);
    const ck = await Checkpoint.open(dir);
    const ref = await streamedForward(ck, ids, { collectHidden: true });
    await ck.close();
    const got = await torchForward(dir, idsFile);
    expect(relDiff(got.get('logits')?.data ?? new Float32Array(), ref.logits)).toBeLessThan(1e-4);
    (ref.hidden ?? []).forEach((h, n) =>
      expect(relDiff(got.get(`hidden_states.${n}`)?.data ?? new Float32Array(), h), `hidden ${n}`).toBeLessThan(1e-4),
    );
  });

  it.each([[0], [0.3]])(
    'vocab.new "tokens" grown checkpoint, vocab mask at %s: equals flm-grow\'s masked model (log(m) logit bias)',
    async (c) => {
      const dir = join(root, `vocab-tokens-${c}`);
      await growCheckpoint(
        join(root, 'src'),
        dir,
        parsePlan({ targets: { vocab_size: 264, hidden_size: 24 }, vocab: { new: 'tokens' }, seed: 5, anneal_steps: 10 }),
        { quiet: true },
      );
      const ck0 = await Checkpoint.open(dir);
      const m = await readMasks(join(dir, MASKS_FILE), ck0.config);
      await ck0.close();
      rmSync(join(dir, MASKS_FILE));
      await writeMasks(join(dir, MASKS_FILE), applyMaskValues(m, { vocab: c, hidden: c }));
      const ids = randomIds(2, 12, 264, 10); // new ids as inputs too
      const idsFile = join(root, `ids-vocab-${c}.safetensors`);
      await writeIds(idsFile, ids);
      const ck = await Checkpoint.open(dir);
      const ref = await streamedForward(ck, ids, { collectHidden: true });
      await ck.close();
      const got = await torchForward(dir, idsFile);
      const logits = got.get('logits')?.data ?? new Float32Array();
      // the new ids: -inf at 0 (relDiff requires equal non-finite values), finite once the mask is above 0
      expect(Number.isFinite(ref.logits[263])).toBe(c > 0);
      expect(relDiff(logits, ref.logits)).toBeLessThan(1e-4);
    },
  );

  it('vocab.new "tokens": 6 steps on data with new ids equal flm-grow train\'s (targets at m = 0 left out), masks file; padding refused', async () => {
    const dir = join(root, 'vocab-train');
    await growCheckpoint(
      join(root, 'src'),
      dir,
      parsePlan({ targets: { vocab_size: 264 }, vocab: { new: 'tokens' }, seed: 5, anneal_steps: 4 }),
      { quiet: true },
    );
    const data = join(root, 'new-ids.u16');
    writeFileSync(
      data,
      new Uint8Array(Uint16Array.from({ length: 2000 }, (_, i) => (i % 5 === 4 ? 256 + (i % 8) : (i * 7) % 256)).buffer),
    );
    const args = { steps: 6, batchSize: 4, seqLen: 16, lr: 3e-3, warmupSteps: 1, seed: 5 };
    const tsOut = join(root, 'vocab-ts');
    await train({ checkpoint: dir, data, out: tsOut, ...args, quiet: true, log: () => undefined, backend: 'wasm' });
    const pyOut = join(root, 'vocab-py');
    const flags = ['--steps', '6', '--batch-size', '4', '--seq-len', '16', '--lr', '3e-3', '--warmup-steps', '1', '--seed', '5'];
    const r = await runTorchModule(
      'flm_grow_torch.train',
      [dir, '--data', data, '--out', pyOut, ...flags, '--quiet', '--threads', '1'],
      {
        capture: true,
      },
    );
    expect(r.code, r.stderr).toBe(0);
    const a = await stepsOf(join(tsOut, 'metrics.jsonl')),
      b = await stepsOf(join(pyOut, 'metrics.jsonl'));
    expect(a.map((m) => m.masks?.vocab)).toEqual([0, 0.25, 0.5, 0.75, 1, 1]);
    a.forEach((m, i) => {
      expect(Number.isFinite(m.loss) && m.loss < 10).toBe(true);
      expect(Math.abs(b[i].loss - m.loss) / m.loss, `step ${i}`).toBeLessThan(1e-3);
      expect(b[i].masks).toEqual(m.masks);
    });
    expect(await tensorsAndMetadata(join(pyOut, 'checkpoint-000006', MASKS_FILE))).toEqual(
      await tensorsAndMetadata(join(tsOut, 'checkpoint-000006', MASKS_FILE)),
    );
    // the same data on a padding growth: refused by the torch engine too
    const padded = join(root, 'vocab-pad');
    await growCheckpoint(join(root, 'src'), padded, parsePlan({ targets: { vocab_size: 264 } }), { quiet: true });
    const rp = await runTorchModule(
      'flm_grow_torch.train',
      [padded, '--data', data, '--out', join(root, 'vocab-pad-py'), ...flags, '--quiet'],
      {
        capture: true,
      },
    );
    expect(rp.code).not.toBe(0);
    expect(rp.stderr).toMatch(/token id 260 at position 4 is a padding id/);
  });

  const common = [
    '--steps',
    '20',
    '--batch-size',
    '4',
    '--seq-len',
    '16',
    '--lr',
    '3e-3',
    '--warmup-steps',
    '3',
    '--eval-every',
    '10',
    '--seed',
    '5',
    '--quiet',
    '--threads',
    '1',
  ];

  it("20 steps equal flm-grow train's: losses (≤1e-3 rel), mask values, masks file; DDP on 2 processes; resume", async () => {
    const tsOut = join(root, 'ts-run');
    await train({
      checkpoint: grown,
      data: CORPUS,
      out: tsOut,
      steps: 20,
      batchSize: 4,
      seqLen: 16,
      lr: 3e-3,
      warmupSteps: 3,
      evalEvery: 10,
      seed: 5,
      quiet: true,
      log: () => undefined,
      backend: 'wasm',
    });
    const pyOut = join(root, 'py-run');
    const r = await runTorchModule('flm_grow_torch.train', [grown, '--data', CORPUS, '--out', pyOut, ...common], {
      capture: true,
    });
    expect(r.code, r.stderr).toBe(0);
    const a = await stepsOf(join(tsOut, 'metrics.jsonl')),
      b = await stepsOf(join(pyOut, 'metrics.jsonl'));
    expect(b.map((m) => m.step)).toEqual(a.map((m) => m.step));
    const rel = a.map((m, i) => Math.abs(b[i].loss - m.loss) / Math.abs(m.loss));
    console.log(`torch vs tfjs trainer, 20 steps: max rel loss diff ${Math.max(...rel).toExponential(2)}`);
    for (const d of rel) expect(d).toBeLessThan(1e-3);
    a.forEach((m, i) => {
      expect(b[i].masks).toEqual(m.masks);
      expect(b[i].lr).toBeCloseTo(m.lr, 12);
      expect(b[i].tokens).toBe(m.tokens);
      expect(b[i].evalLoss === undefined).toBe(m.evalLoss === undefined);
      if (m.evalLoss !== undefined) expect(Math.abs((b[i].evalLoss as number) - m.evalLoss) / m.evalLoss).toBeLessThan(1e-3);
    });
    // mid-annealing (20 of 30 steps): both engines store the same f32 mask values
    expect(await tensorsAndMetadata(join(pyOut, 'checkpoint-000020', MASKS_FILE))).toEqual(
      await tensorsAndMetadata(join(tsOut, 'checkpoint-000020', MASKS_FILE)),
    );
    // the torch checkpoint is one flm-grow reads: its tfjs loss model opens it and continues
    const cont = await train({
      checkpoint: join(pyOut, 'checkpoint-000020'),
      data: CORPUS,
      out: join(root, 'ts-cont'),
      steps: 1,
      batchSize: 4,
      seqLen: 16,
      seed: 5,
      quiet: true,
      log: () => undefined,
      backend: 'wasm',
    });
    expect(cont.startStep).toBe(20);

    // the same run driven through flm-grow (train --engine torch): result mapped back
    const viaCli = await trainWithEngine(
      {
        checkpoint: grown,
        data: CORPUS,
        out: join(root, 'engine-run'),
        steps: 2,
        batchSize: 4,
        seqLen: 16,
        seed: 5,
        quiet: true,
      },
      { engine: 'torch' },
    );
    expect([viaCli.startStep, viaCli.step, viaCli.losses.length]).toEqual([0, 2, 2]);
    expect(viaCli.masksAllOne).toBe(false);

    // 2 processes (gloo, torchrun --standalone via flm_grow_torch.elastic), same global batch: same losses
    const ddpOut = join(root, 'ddp-run');
    const d = await runTorchModule('flm_grow_torch.train', [grown, '--data', CORPUS, '--out', ddpOut, ...common], {
      capture: true,
      launch: { nproc: 2 },
      env: { OMP_NUM_THREADS: '1' },
    });
    expect(d.code, d.stderr).toBe(0);
    const c2 = await stepsOf(join(ddpOut, 'metrics.jsonl'));
    const relDdp = b.map((m, i) => Math.abs(c2[i].loss - m.loss) / Math.abs(m.loss));
    console.log(`2 DDP processes (gloo) vs 1: max rel loss diff ${Math.max(...relDdp).toExponential(2)}`);
    for (const x of relDdp) expect(x).toBeLessThan(1e-5);

    // the user's command: `flm-grow train --engine torch --nproc 2` against the tfjs trainer's run
    const cliOut = join(root, 'cli-ddp-run');
    const cliArgs = common.slice(0, common.indexOf('--quiet')); // the engine's own --threads is not a CLI flag
    const cli = flmGrow(
      ['train', grown, '--engine', 'torch', '--nproc', '2', '--data', CORPUS, '--out', cliOut, '--quiet', ...cliArgs],
      { OMP_NUM_THREADS: '1' },
    );
    expect(cli.status, cli.stderr).toBe(0);
    const c3 = await stepsOf(join(cliOut, 'metrics.jsonl'));
    expect(c3.map((m) => m.step)).toEqual(a.map((m) => m.step));
    const relCli = a.map((m, i) => Math.abs(c3[i].loss - m.loss) / Math.abs(m.loss));
    console.log(
      `flm-grow train --engine torch --nproc 2 vs the tfjs trainer, 20 steps: max rel loss diff ${Math.max(...relCli).toExponential(2)}`,
    );
    for (const x of relCli) expect(x).toBeLessThan(1e-3);
    a.forEach((m, i) => expect(c3[i].masks).toEqual(m.masks));

    // interrupted after 7 steps (saved at 5), resumed: the same 20 losses
    const resOut = join(root, 'res-run');
    const args = [grown, '--data', CORPUS, '--out', resOut, ...common, '--save-every', '5'];
    expect((await runTorchModule('flm_grow_torch.train', [...args, '--interrupt-after', '7'], { capture: true })).code).toBe(0);
    expect((await runTorchModule('flm_grow_torch.train', [...args, '--resume'], { capture: true })).code).toBe(0);
    const res = await stepsOf(join(resOut, 'metrics.jsonl'));
    expect(res.map((m) => m.step)).toEqual(b.map((m) => m.step));
    res.forEach((m, i) => expect(Math.abs(m.loss - b[i].loss) / b[i].loss).toBeLessThan(1e-6));
  });

  it('$FLM_GROW_TORCH_PRECISION=f64: f64 arithmetic (losses off the f32 grid), same run as f32, files still F32; bad value refused', async () => {
    const args = (out: string) => [grown, '--data', CORPUS, '--out', out, '--steps', '6', '--batch-size', '4', '--seq-len', '16'];
    const o32 = join(root, 'f32-run'),
      o64 = join(root, 'f64-run');
    const r32 = await runTorchModule('flm_grow_torch.train', args(o32), { capture: true });
    const r64 = await runTorchModule('flm_grow_torch.train', args(o64), {
      capture: true,
      env: { FLM_GROW_TORCH_PRECISION: 'f64' },
    });
    expect([r32.code, r64.code], r64.stderr).toEqual([0, 0]);
    const a = await stepsOf(join(o32, 'metrics.jsonl')),
      b = await stepsOf(join(o64, 'metrics.jsonl'));
    // an f32 loss is a float32 value; the f64 run's are not (all six would be by chance ~never)
    expect(a.every((m) => Math.fround(m.loss) === m.loss)).toBe(true);
    expect(b.filter((m) => Math.fround(m.loss) !== m.loss).length).toBe(6);
    b.forEach((m, i) => expect(Math.abs(m.loss - a[i].loss) / a[i].loss).toBeLessThan(1e-5));
    const ck = join(o64, 'checkpoint-000006');
    const manifest = JSON.parse(readFileSync(join(ck, 'flm-grow-manifest.json'), 'utf8')) as { extra: { precision: string } };
    expect(manifest.extra.precision).toBe('f64');
    for (const file of ['model.safetensors', 'optimizer.safetensors', MASKS_FILE]) {
      const f = await SafetensorsFile.open(join(ck, file));
      expect(new Set([...f.tensors.values()].map((t) => t.dtype)), file).toEqual(new Set(['F32']));
      await f.close();
    }
    // the mask values (mid-annealing) are the schedule's, rounded to f32 when stored, as from f32
    expect(Buffer.compare(readFileSync(join(ck, MASKS_FILE)), readFileSync(join(o32, 'checkpoint-000006', MASKS_FILE)))).toBe(0);
    const bad = await runTorchModule('flm_grow_torch.train', args(join(root, 'bad-run')), {
      capture: true,
      env: { FLM_GROW_TORCH_PRECISION: 'double' },
    });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("$FLM_GROW_TORCH_PRECISION is 'double'");
  });

  it('running out of memory: an allocator failure is one line (no traceback); a SIGKILLed engine is named, exit 2', () => {
    const py = (torch as { python: string }).python;
    // the trainer's entry point when its allocation fails (torch's message, as a RuntimeError)
    const alloc = spawnSync(
      py,
      [
        '-c',
        'from flm_grow_torch import train\n' +
          'def boom(argv=None): raise RuntimeError("[enforce fail at alloc_cpu.cpp:75] DefaultCPUAllocator: can\'t allocate memory: you tried to allocate 67108864 bytes")\n' +
          'train.main = boom\ntrain.cli()',
      ],
      { encoding: 'utf8', env: { ...process.env, PYTHONPATH: PYTHON_DIR } },
    );
    expect(alloc.status).toBe(1);
    expect(alloc.stderr).toMatch(
      /^train: out of memory \(.*can't allocate memory.*\)\. A training step holds about 16 bytes per parameter/,
    );
    expect(alloc.stderr).not.toContain('Traceback');
    // the kernel's OOM killer: the engine process dies of SIGKILL (a Python that kills itself when it starts training)
    const wrapper = join(root, 'python-oom');
    writeFileSync(wrapper, `#!/bin/sh\nif [ "$1" = "-m" ]; then kill -9 $$; fi\nexec ${py} "$@"\n`);
    chmodSync(wrapper, 0o755);
    const cli = flmGrow(['train', grown, '--engine', 'torch', '--data', CORPUS, '--out', join(root, 'oom-run'), '--steps', '1'], {
      FLM_GROW_PYTHON: wrapper,
    });
    expect(cli.status).toBe(2);
    expect(cli.stderr).toContain('torch engine was killed by SIGKILL (on Linux, the out-of-memory killer');
  });
});
