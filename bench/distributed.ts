/**
 * `npm run bench -- distributed [--hidden 512] [--ffn 1536] [--heads 8] [--kv 4] [--layers 8]
 *   [--vocab 8192] [--batch 4] [--seq 64] [--steps 4]`: one random model (default ~33 M
 * parameters) trained by the torch engine in each layout on CPU (gloo, one thread per process):
 * 1 process, DDP 2, FSDP2 2, TP 2, FSDP x TP 2 x 2. Per layout: every rank's peak RSS (the
 * trainer's ru_maxrss, gathered over the ranks) and tokens/s (median of the steps after the
 * first, from metrics.jsonl). FSDP2 should hold about half of DDP's weights, gradients and AdamW
 * moments per rank (16 B per parameter / 2); the runtime (~0.3 GB of torch) is not sharded, and
 * a whole-checkpoint save gathers the weights on rank 0 (hence the sharded-save row).
 * The machine may be shared: `uptime` is printed before and after.
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

export async function run(args: string[]): Promise<void> {
  await initBackend('wasm');
  const cfg = initConfig({
    hidden_size: arg(args, 'hidden', 512),
    intermediate_size: arg(args, 'ffn', 1536),
    num_attention_heads: arg(args, 'heads', 8),
    num_key_value_heads: arg(args, 'kv', 4),
    num_hidden_layers: arg(args, 'layers', 8),
    vocab_size: arg(args, 'vocab', 8192),
    max_position_embeddings: 256,
  });
  const [B, T, steps] = [arg(args, 'batch', 4), arg(args, 'seq', 64), arg(args, 'steps', 4)];
  const root = mkdtempSync(join(tmpdir(), 'flm-bench-dist-'));
  try {
    const ck = join(root, 'init');
    await writeRandomInit(ck, cfg, { seed: 1 });
    console.log(`model: ${(parameterCount(cfg) / 1e6).toFixed(1)} M parameters; batch ${B} x ${T}, ${steps} steps`);
    console.log(`uptime before: ${execSync('uptime').toString().trim()}`);
    const layouts: [string, number, string[]][] = [
      ['1 process', 1, []],
      ['DDP 2', 2, []],
      ['FSDP2 2', 2, ['--fsdp']],
      ['FSDP2 2, sharded save', 2, ['--fsdp', '--sharded-save']],
      ['TP 2', 2, ['--tp', '2']],
      ['FSDP x TP 2 x 2', 4, ['--fsdp', '--tp', '2']],
    ];
    console.log('| layout | peak RSS per rank (GB) | tokens/s |');
    console.log('| --- | --- | --- |');
    for (const [name, nproc, flags] of layouts) {
      const out = join(root, name.replace(/\W+/g, '-'));
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
          '--quiet',
          ...flags,
        ],
        { capture: true, launch: { nproc }, env: { OMP_NUM_THREADS: '1' } },
      );
      if (r.code !== 0 || r.result === undefined) throw new Error(`${name}: ${r.stderr.slice(-2000)}`);
      const rss = (r.result.peakRssPerRank as number[]).map((b) => (b / 1e9).toFixed(2)).join(', ');
      const tps = median(
        partitionMetrics(readMetrics(join(out, 'metrics.jsonl')))
          .steps.slice(1)
          .map((m) => m.tokensPerSec),
      );
      console.log(`| ${name} | ${rss} | ${tps.toFixed(0)} |`);
    }
    console.log(`uptime after: ${execSync('uptime').toString().trim()}`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
