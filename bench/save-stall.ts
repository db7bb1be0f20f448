/**
 * `npm run bench -- save-stall [--hidden 1024] [--ffn 2816] [--heads 16] [--kv 8] [--layers 8]
 *   [--vocab 16384] [--batch 2] [--seq 32] [--steps 10] [--save-every 2] [--reps 2] [--nproc 2]`:
 * how long a checkpoint save holds up training, synchronous sharded saves (`--sharded-save`)
 * against background ones (`--async-save`), FSDP2 on CPU (gloo, one thread per process), the two
 * interleaved in one invocation (sync, async, sync, async, ...) so that both see the same load.
 *
 * Per run: the training loop's wall time (trained tokens / the result's tokens/s), the median
 * step (from metrics.jsonl), the seconds each intermediate save held up the training thread (the
 * result's saveSeconds: a synchronous save all of it; an async one waiting for the previous save,
 * copying the state, writing the small files), the final save (always waited for), and the loop's
 * time beyond its steps (loop - steps x median step: what the saves cost in all, including steps
 * slowed by a background write competing for the CPU and disk).
 */
import { execSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { initBackend } from '../src/engines/tfjs-backend.ts';
import { parameterCount } from '../src/spec/arch.ts';
import { initConfig, writeRandomInit } from '../src/train/random-init.ts';
import { runTorchModule } from '../src/engines/torch-process.ts';
import { readMetrics, partitionMetrics } from '../src/train/metrics.ts';

const CORPUS = resolve(import.meta.dirname, '..', 'fixtures', 'corpus', 'fortunes.txt');

function arg(args: string[], name: string, def: number): number {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? Number(args[i + 1]) : def;
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor(s.length / 2)];
}

const f = (x: number) => x.toFixed(2);

export async function run(args: string[]): Promise<void> {
  await initBackend('wasm');
  const cfg = initConfig({
    hidden_size: arg(args, 'hidden', 1024),
    intermediate_size: arg(args, 'ffn', 2816),
    num_attention_heads: arg(args, 'heads', 16),
    num_key_value_heads: arg(args, 'kv', 8),
    num_hidden_layers: arg(args, 'layers', 8),
    vocab_size: arg(args, 'vocab', 16384),
    max_position_embeddings: 256,
  });
  const [B, T, steps, every, reps, nproc] = [
    arg(args, 'batch', 2),
    arg(args, 'seq', 32),
    arg(args, 'steps', 10),
    arg(args, 'save-every', 2),
    arg(args, 'reps', 2),
    arg(args, 'nproc', 2),
  ];
  const root = mkdtempSync(join(tmpdir(), 'flm-bench-save-'));
  try {
    const ck = join(root, 'init');
    await writeRandomInit(ck, cfg, { seed: 1 });
    const params = parameterCount(cfg);
    console.log(
      `model: ${(params / 1e6).toFixed(1)} M parameters (a save writes ${((params * 12) / 1e9).toFixed(2)} GB: f32 weights + 2 AdamW moments); ` +
        `FSDP2 on ${nproc} processes, batch ${B} x ${T}, ${steps} steps, a save every ${every}`,
    );
    console.log(`uptime before: ${execSync('uptime').toString().trim()}`);
    console.log(
      '| run | loop (s) | median step (s) | intermediate saves: training held up (s) | final save (s) | loop - steps x median step (s) |',
    );
    console.log('| --- | --- | --- | --- | --- | --- |');
    for (let rep = 0; rep < reps; rep++) {
      for (const mode of ['sync', 'async'] as const) {
        const out = join(root, `${mode}-${rep}`);
        const flags = ['--sharded-save', ...(mode === 'async' ? ['--async-save'] : [])];
        const r = await runTorchModule(
          'flm_grow_torch.train',
          [
            ck,
            '--data',
            CORPUS,
            '--out',
            out,
            '--steps',
            String(steps),
            '--batch-size',
            String(B),
            '--seq-len',
            String(T),
          ].concat(['--save-every', String(every), '--fsdp', '--quiet', '--threads', '1', ...flags]),
          { launch: { nproc }, capture: true, env: { OMP_NUM_THREADS: '1' } },
        );
        if (r.code !== 0 || r.result === undefined) throw new Error(`${mode}: exit ${r.code}\n${r.stderr.slice(-2000)}`);
        const res = r.result as { tokensPerSec: number; saveSeconds: number[] };
        const loop = (steps * B * T) / res.tokensPerSec;
        const stepSec = partitionMetrics(readMetrics(join(out, 'metrics.jsonl'))).steps.map((m) => (B * T) / m.tokensPerSec);
        const med = median(stepSec.slice(1));
        const mid = res.saveSeconds.slice(0, -1);
        console.log(
          `| ${mode === 'sync' ? '--sharded-save' : '--sharded-save --async-save'} (${rep + 1}) | ${f(loop)} | ${f(med)} | ` +
            `${mid.map(f).join(', ')} | ${f(res.saveSeconds.at(-1) ?? NaN)} | ${f(loop - steps * med)} |`,
        );
        rmSync(out, { recursive: true, force: true });
      }
    }
    console.log(`uptime after: ${execSync('uptime').toString().trim()}`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
