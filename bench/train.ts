/**
 * `npm run bench -- train [--hidden 256] [--layers 4] [--batch 8] [--seq 128] [--steps 12] [--backend auto]`:
 * training throughput of the trainer (AdamW step included) on a random model: tokens/s and achieved
 * FLOP/s = 6 · params · tokens/s, as a fraction of the backend's matMul roofline measured in the same
 * run on the model's own linear shapes (untransposed 2-D products, the path the model takes).
 * Target (issue 6): ≥ 40 %.
 */
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { initBackend, type BackendName } from '../src/engines/tfjs-backend.ts';
import { parameterCount } from '../src/spec/arch.ts';
import { initConfig, writeRandomInit } from '../src/train/random-init.ts';
import { train } from '../src/train/trainer.ts';

const ROOT = resolve(import.meta.dirname, '..');

function arg(args: string[], name: string, def: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
}

/** Best-of-reps GFLOP/s of a [M,K]·[K,N] product. */
/** The backend's own best matMul rate (GFLOP/s): the roofline benches measure against. */
export async function matmulRate(M: number, K: number, N: number, reps = 5): Promise<number> {
  const a = tf.randomNormal([M, K]) as tf.Tensor2D;
  const b = tf.randomNormal([K, N]) as tf.Tensor2D;
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    const c = tf.matMul(a, b);
    await c.data();
    best = Math.min(best, (performance.now() - t0) / 1000);
    c.dispose();
  }
  tf.dispose([a, b]);
  return (2 * M * K * N) / best / 1e9;
}

export async function run(args: string[]): Promise<void> {
  const H = Number(arg(args, 'hidden', '256'));
  const L = Number(arg(args, 'layers', '4'));
  const B = Number(arg(args, 'batch', '8'));
  const T = Number(arg(args, 'seq', '128'));
  const steps = Number(arg(args, 'steps', '12'));
  const backend = await initBackend(arg(args, 'backend', 'auto') as BackendName);
  const hd = 64;
  const cfg = initConfig({
    hidden_size: H,
    intermediate_size: Math.round((8 * H) / 3 / 8) * 8,
    num_hidden_layers: L,
    num_attention_heads: H / hd,
    num_key_value_heads: H / hd,
    head_dim: hd,
    vocab_size: 320,
    max_position_embeddings: Math.max(T, 128),
  });
  const params = parameterCount(cfg);
  const dir = mkdtempSync(join(tmpdir(), 'flm-bench-train-'));
  try {
    await writeRandomInit(join(dir, 'init'), cfg, { seed: 0 });
    const stepMs: number[] = [];
    let last = performance.now();
    const r = await train({
      checkpoint: join(dir, 'init'),
      data: join(ROOT, 'fixtures/corpus/fortunes.txt'),
      out: join(dir, 'run'),
      steps,
      batchSize: B,
      seqLen: T,
      lr: 1e-3,
      backend: backend as BackendName,
      quiet: true,
      log: () => undefined,
      evalBatches: 1,
      onStep: () => {
        const now = performance.now();
        stepMs.push(now - last);
        last = now;
      },
    });
    // the first steps compile kernels and allocate; the last includes the final eval
    const steady = stepMs.slice(2, -1).sort((a, b) => a - b);
    const med = steady[Math.floor(steady.length / 2)];
    const tokS = (B * T * 1000) / med;
    const achieved = (6 * params * tokS) / 1e9;
    const N = B * T,
      F = cfg.intermediateSize;
    const shapes: [string, number, number, number][] = [
      ['x·W_up', N, H, F],
      ['x·W_down', N, F, H],
      ['x·W_q', N, H, H],
      ['x·lm_head', N, H, cfg.vocabSize],
    ];
    console.log(
      `bench train: backend ${backend}, model H ${H} F ${F} L ${L} heads ${H / hd}×${hd} V ${cfg.vocabSize}: ${params.toLocaleString('en-US')} params; batch ${B}×${T} = ${N} tokens/step`,
    );
    let roof = 0;
    for (const [label, m, k, n] of shapes) {
      const g = await matmulRate(m, k, n);
      roof = Math.max(roof, g);
      console.log(`  matMul ${label.padEnd(10)} [${m}×${k}]·[${k}×${n}]: ${g.toFixed(1)} GFLOP/s`);
    }
    console.log(
      `steps: ${steps} (median of ${steady.length} steady steps: ${med.toFixed(0)} ms/step); loss ${r.firstLoss.toFixed(3)} -> ${r.lastLoss.toFixed(3)}`,
    );
    console.log(`throughput: ${tokS.toFixed(0)} tokens/s; achieved 6·params·tokens/s = ${achieved.toFixed(2)} GFLOP/s`);
    console.log(
      `roofline (best matMul above): ${roof.toFixed(1)} GFLOP/s -> fraction ${((100 * achieved) / roof).toFixed(1)} % (target ≥ 40 %)`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
