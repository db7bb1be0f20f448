/**
 * `npm run bench -- engines [--hidden 512] [--ffn 1344] [--heads 4] [--layers 6] [--vocab 8000]
 *   [--batch 4] [--seq 64] [--steps 6] [--nproc 1] [--device cpu|cuda]`:
 * the tfjs trainer and the torch engine on the same random model (default ~23 M parameters),
 * data and seed: tokens/s, achieved FLOP/s = 6 · params · tokens/s, and that as a fraction of
 * the machine's matMul peak measured in the same run: torch.matmul with all cores (f32 on CPU,
 * bf16 on a GPU) on the model's own shapes, the issue's yardstick for both engines; the tfjs
 * backend's own 2-D product is printed beside it.
 *
 * tokens/s is the median of the steps after the first (metrics.jsonl's per-step figure, the
 * same field from both engines): start-up, the first step's allocations and the final save are
 * left out, so the figure is the trainer's steady speed. The whole-run figure follows it.
 * The machine may be shared: both engines run back to back in one process, so compare the
 * ratio, not the absolute numbers.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus } from 'node:os';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { initBackend } from '../src/engines/tfjs-backend.ts';
import { parameterCount } from '../src/spec/arch.ts';
import { initConfig, writeRandomInit } from '../src/train/random-init.ts';
import { trainWithEngine } from '../src/train/engine.ts';
import { requireTorchPython } from '../src/engines/torch-process.ts';
import { readMetrics, partitionMetrics } from '../src/train/metrics.ts';
import { matmulRate } from './train.ts';

const ROOT = resolve(import.meta.dirname, '..');

function arg(args: string[], name: string, def: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
}

function torchMatmul(shapes: number[][], device: string): Record<string, number> {
  const py = requireTorchPython();
  const code = `
import json, time, torch
dev = ${JSON.stringify(device)}
torch.set_num_threads(${cpus().length})  # all cores (Debian's torch 1.13 starts with 1)
out = {}
for dt in (["f32", "bf16"] if dev == "cuda" else ["f32"]):
    best = 0.0
    for M, K, N in ${JSON.stringify(shapes)}:
        a = torch.randn(M, K, device=dev, dtype=torch.float32 if dt == "f32" else torch.bfloat16)
        b = torch.randn(K, N, device=dev, dtype=a.dtype)
        for r in range(8):
            if dev == "cuda": torch.cuda.synchronize()
            t0 = time.perf_counter(); c = a @ b
            if dev == "cuda": torch.cuda.synchronize()
            best = max(best, 2 * M * K * N / (time.perf_counter() - t0) / 1e9)
    out[dt] = best
print(json.dumps(out))`;
  const r = spawnSync(py.python, ['-c', code], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`torch matmul probe failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim()) as Record<string, number>;
}

export async function run(args: string[]): Promise<void> {
  const H = Number(arg(args, 'hidden', '512')),
    F = Number(arg(args, 'ffn', '1344')),
    nh = Number(arg(args, 'heads', '4'));
  const L = Number(arg(args, 'layers', '6')),
    V = Number(arg(args, 'vocab', '8000'));
  const B = Number(arg(args, 'batch', '4')),
    T = Number(arg(args, 'seq', '64')),
    steps = Number(arg(args, 'steps', '6'));
  const nproc = Number(arg(args, 'nproc', '1'));
  const device = arg(args, 'device', requireTorchPython().cuda ? 'cuda' : 'cpu');
  await initBackend('wasm');
  const dir = mkdtempSync(join(tmpdir(), 'flm-bench-engines-'));
  try {
    const cfg = initConfig({
      hidden_size: H,
      intermediate_size: F,
      num_hidden_layers: L,
      num_attention_heads: nh,
      vocab_size: V,
      max_position_embeddings: Math.max(128, T),
    });
    const P = parameterCount(cfg);
    const ck = join(dir, 'init');
    await writeRandomInit(ck, cfg, { seed: 1 });
    const data = join(ROOT, 'fixtures/corpus/fortunes.txt');
    console.log(
      `model: H ${H}, F ${F}, ${nh} heads, ${L} layers, V ${V}: ${(P / 1e6).toFixed(1)} M parameters; batch ${B}×${T}, ${steps} steps (the first included)`,
    );
    const shapes = [
      [B * T, H, F],
      [B * T, H, V],
      [B * T, F, H],
    ];
    const common = {
      checkpoint: ck,
      data,
      steps,
      batchSize: B,
      seqLen: T,
      quiet: true,
      log: () => undefined,
      backend: 'wasm' as const,
    };
    const steady = (out: string) => {
      const v = partitionMetrics(readMetrics(join(out, 'metrics.jsonl')))
        .steps.slice(1)
        .map((m) => m.tokensPerSec)
        .sort((a, b) => a - b);
      return v.length === 0 ? NaN : v[Math.floor(v.length / 2)];
    };
    const tfPeak = Math.max(...(await Promise.all(shapes.map(([m, k, n]) => matmulRate(m, k, n)))));
    const tp = torchMatmul(shapes, device);
    const peak = tp.bf16 ?? tp.f32;
    const rt = await trainWithEngine({ ...common, out: join(dir, 'tfjs') }, { engine: 'tfjs' });
    const rp = await trainWithEngine({ ...common, out: join(dir, 'torch') }, { engine: 'torch', nproc });
    const rows: [string, number, number][] = [
      ['tfjs (wasm)', steady(join(dir, 'tfjs')), rt.tokensPerSec],
      [`torch (${device}${nproc > 1 ? `, ${nproc} processes` : ''})`, steady(join(dir, 'torch')), rp.tokensPerSec],
    ];
    console.log(
      `matMul peak: torch ${peak.toFixed(1)} GFLOP/s (${device === 'cuda' ? 'bf16' : 'f32'}, ${cpus().length} cores), tfjs-wasm ${tfPeak.toFixed(1)} GFLOP/s`,
    );
    for (const [name, tps, whole] of rows) {
      const gflops = (6 * P * tps) / 1e9;
      console.log(
        `${name.padEnd(28)} ${tps.toFixed(0).padStart(8)} tokens/s (whole run ${whole.toFixed(0)})  ${gflops.toFixed(2).padStart(8)} GFLOP/s  -> ${((100 * gflops) / peak).toFixed(1)} % of the torch matMul peak`,
      );
    }
    console.log(
      `torch / tfjs tokens/s: ${(rows[1][1] / rows[0][1]).toFixed(2)}× (whole run ${(rows[1][2] / rows[0][2]).toFixed(2)}×)`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
