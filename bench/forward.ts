/**
 * `npm run bench -- forward [--family llama|llama3|tele-flm|mistral|qwen2|qwen3] [--hidden 768] [--ffn 2048]
 *   [--layers 6] [--heads 12] [--kv-heads 12] [--vocab 32000] [--batch 4] [--seq 256] [--reps 3] [--backend wasm]
 *   [--no-stream | --stream-only] [--no-profile]`
 *
 * --family switches on that family's features (BENCH_FAMILIES): llama3 = tied head + llama3 RoPE
 * scaling, mistral = a sliding window of seq/2, qwen2 = q/k/v biases + tied head, qwen3 = q/k
 * norms + tied head + yarn RoPE; the FLOP count (below) is the same, so the roofline fraction
 * shows what the features cost.
 *
 * 1. tokens/s of the in-memory forward on a model of ~50–100M parameters made on the fly;
 * 2. its achieved GFLOP/s against the backend's own matMul GFLOP/s measured in the same run on
 *    the model's largest linear shapes (the roofline; target ≥ 50 %), with a per-op time split;
 * 3. the layer-streamed pass's peak RSS (VmHWM of a child process; bf16 checkpoint written to a
 *    temp dir; --stream-batch/--stream-seq tokens) against one layer's f32 size, next to the
 *    same pass with all weights loaded first.
 * FLOPs counted: 2·N·(every Linear's params, LM head included) + 4·B·T²·nh·hd per layer for the
 * attention scores and weighted sum (the full T×T square, which is what is computed).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { initBackend, type BackendName } from '../src/engines/tfjs-backend.ts';
import { makeConfig, type ModelConfig } from '../src/spec/config.ts';
import { familyByName, type FamilyName } from '../src/spec/families.ts';
import { parameterCount } from '../src/spec/arch.ts';
import { Checkpoint } from '../src/checkpoint/checkpoint.ts';
import { disposeWeights, forward, loadWeights, makeRope, type LlamaWeights } from '../src/model/llama.ts';
import { streamedForward } from '../src/model/streaming.ts';
import { layerF32Bytes } from '../src/model/stream-memory.ts';
import { randomIdRows, writeRandomCheckpoint } from '../test/support/model.ts';

function arg(args: string[], name: string, def: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
}

function num(args: string[], name: string, def: number): number {
  const v = Number(arg(args, name, String(def)));
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name}: expected a positive number`);
  return v;
}

/** --family: the config features each bench variant switches on (RoPE scaling as families.ts's tiny configs). */
const BENCH_FAMILIES: Record<string, { family: FamilyName; tied?: boolean; rope?: boolean; window?: boolean; mup?: boolean }> = {
  llama: { family: 'llama' },
  llama3: { family: 'llama', tied: true, rope: true },
  'tele-flm': { family: 'tele-flm', mup: true },
  mistral: { family: 'mistral', window: true },
  qwen2: { family: 'qwen2', tied: true },
  qwen3: { family: 'qwen3', tied: true, rope: true },
};

function benchConfig(args: string[]): ModelConfig {
  const heads = num(args, 'heads', 12);
  const name = arg(args, 'family', 'llama');
  const f = BENCH_FAMILIES[name] as (typeof BENCH_FAMILIES)[string] | undefined;
  if (f === undefined) throw new Error(`--family: one of ${Object.keys(BENCH_FAMILIES).join(', ')}`);
  return makeConfig({
    family: f.family,
    tieWordEmbeddings: f.tied,
    ropeScaling: f.rope === true ? (familyByName(f.family).tiny.rope_scaling as Record<string, unknown>) : undefined,
    slidingWindow: f.window === true ? Math.max(1, Math.floor(num(args, 'seq', 256) / 2)) : undefined,
    useMup: f.mup,
    outputMult: f.mup === true ? 0.5 : undefined,
    mupScaleFactor: f.mup === true ? 4 : undefined,
    hiddenSize: num(args, 'hidden', 768),
    intermediateSize: num(args, 'ffn', 2048),
    numLayers: num(args, 'layers', 6),
    numHeads: heads,
    numKvHeads: num(args, 'kv-heads', heads),
    vocabSize: num(args, 'vocab', 32000),
  });
}

function randomWeights(cfg: ModelConfig): LlamaWeights {
  const H = cfg.hiddenSize,
    Q = cfg.numHeads * cfg.headDim,
    KV = cfg.numKvHeads * cfg.headDim,
    F = cfg.intermediateSize;
  const m = (r: number, c: number) => tf.randomNormal([r, c], 0, 1 / Math.sqrt(c), 'float32', 1);
  const g = (n = H) => tf.randomUniform([n], 0.8, 1.2);
  const b = (n: number) => tf.randomNormal([n], 0, 0.1);
  const embed = tf.randomNormal([cfg.vocabSize, H]);
  return {
    embed,
    finalNorm: g(),
    lmHead: cfg.tieWordEmbeddings ? embed : m(cfg.vocabSize, H),
    layers: Array.from({ length: cfg.numLayers }, () => ({
      ...(cfg.qkvBias ? { qBias: b(Q), kBias: b(KV), vBias: b(KV) } : {}),
      ...(cfg.qkNorm ? { qNorm: g(cfg.headDim), kNorm: g(cfg.headDim) } : {}),
      inputNorm: g(),
      q: m(Q, H),
      k: m(KV, H),
      v: m(KV, H),
      o: m(H, Q),
      postNorm: g(),
      gate: m(F, H),
      up: m(F, H),
      down: m(H, F),
    })),
  };
}

function forwardFlops(cfg: ModelConfig, B: number, T: number): number {
  const N = B * T;
  const H = cfg.hiddenSize,
    Q = cfg.numHeads * cfg.headDim,
    KV = cfg.numKvHeads * cfg.headDim,
    F = cfg.intermediateSize;
  const linear = cfg.numLayers * (H * Q + 2 * H * KV + Q * H + 3 * H * F) + cfg.vocabSize * H;
  const attn = cfg.numLayers * 4 * B * T * T * cfg.numHeads * cfg.headDim;
  return 2 * N * linear + attn;
}

/** Best-of-reps seconds of fn (which must return a tensor to wait for). */
async function time(reps: number, fn: () => tf.Tensor | tf.Tensor[]): Promise<number> {
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    const out = fn();
    const ts = Array.isArray(out) ? out : [out];
    for (const t of ts) await t.data();
    best = Math.min(best, (performance.now() - t0) / 1000);
    tf.dispose(ts);
  }
  return best;
}

/** matMul GFLOP/s of x [M,K] · W^T with W [Nout,K] (HF layout, as the model calls it). */
async function matmulRate(M: number, K: number, Nout: number, reps: number, transposeB: boolean): Promise<number> {
  const x = tf.randomNormal([M, K]) as tf.Tensor2D;
  const w = (transposeB ? tf.randomNormal([Nout, K]) : tf.randomNormal([K, Nout])) as tf.Tensor2D;
  const s = await time(reps, () => tf.matMul(x, w, false, transposeB));
  tf.dispose([x, w]);
  return (2 * M * K * Nout) / s / 1e9;
}

/** Per-kernel wall time of one forward (tf.profile), grouped by kernel name. */
async function kernelSplit(cfg: ModelConfig, w: LlamaWeights, ids: tf.Tensor2D): Promise<[string, number][]> {
  const byName = new Map<string, number>();
  const info = await tf.profile(() => {
    const out = forward(cfg, w, ids);
    return out.logits;
  });
  for (const k of info.kernels)
    byName.set(k.name, (byName.get(k.name) ?? 0) + (typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0));
  return [...byName.entries()].sort((a, b) => b[1] - a[1]);
}

/**
 * This process's peak RSS. VmHWM belongs to the address space made at exec; getrusage's maxRSS
 * would also count the parent's RSS inherited through fork (Linux keeps it across execve).
 */
function peakRss(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m !== null) return Number(m[1]) * 1024;
  } catch {
    /* not Linux */
  }
  return process.resourceUsage().maxRSS * 1024;
}

/** Child process: one pass (layer-streamed, or all weights loaded first), prints RSS figures as JSON. */
async function passChild(mode: string, dir: string, B: number, T: number, backend: BackendName): Promise<void> {
  await initBackend(backend);
  tf.tidy(() => tf.matMul(tf.ones([8, 8]) as tf.Tensor2D, tf.ones([8, 8]) as tf.Tensor2D).dataSync());
  const baseline = process.memoryUsage().rss;
  const ck = await Checkpoint.open(dir);
  const rows = randomIdRows(B, T, ck.config.vocabSize, 2);
  const t0 = performance.now();
  if (mode === 'stream') {
    await streamedForward(ck, rows, { masks: null });
  } else {
    const w = await loadWeights(ck);
    const ids = tf.tensor2d(rows, [B, T], 'int32');
    const out = forward(ck.config, w, ids);
    await out.logits.data();
    tf.dispose([ids, out.logits]);
    disposeWeights(w);
  }
  const seconds = (performance.now() - t0) / 1000;
  const peak = peakRss();
  await ck.close();
  process.stdout.write(JSON.stringify({ baseline, peak, seconds }) + '\n');
}

const mb = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

export async function run(args: string[]): Promise<void> {
  const backend = await initBackend(arg(args, 'backend', 'wasm') as BackendName);
  const cfg = benchConfig(args);
  const B = num(args, 'batch', 4),
    T = num(args, 'seq', 256),
    reps = num(args, 'reps', 3);
  const H = cfg.hiddenSize,
    F = cfg.intermediateSize;
  console.log(
    `forward bench: backend ${backend}, family ${arg(args, 'family', 'llama')} (${cfg.family}${cfg.tieWordEmbeddings ? ', tied' : ''}` +
      `${cfg.qkvBias ? ', q/k/v biases' : ''}${cfg.qkNorm ? ', q/k norms' : ''}${cfg.rope.type !== 'default' ? `, RoPE ${cfg.rope.type}` : ''}` +
      `${cfg.slidingWindow !== undefined ? `, window ${cfg.slidingWindow}` : ''}), ${(parameterCount(cfg) / 1e6).toFixed(1)}M params ` +
      `(H ${H}, F ${F}, L ${cfg.numLayers}, heads ${cfg.numHeads}/${cfg.numKvHeads}, V ${cfg.vocabSize}), batch ${B} × seq ${T}, best of ${reps}`,
  );
  console.log('note: wasm runs single-threaded in Node; the machine may be shared, so absolute numbers are indicative');

  if (!args.includes('--stream-only')) await inMemoryBench(args, cfg, B, T, reps);
  if (!args.includes('--no-stream')) await streamBench(args, cfg, backend);
}

async function inMemoryBench(args: string[], cfg: ModelConfig, B: number, T: number, reps: number): Promise<void> {
  const N = B * T,
    H = cfg.hiddenSize,
    F = cfg.intermediateSize;
  // roofline: the backend's own matMul on the model's linear shapes, same process
  const shapes: [string, number, number][] = [
    ['qkvo H→H', H, cfg.numHeads * cfg.headDim],
    ['gate/up H→F', H, F],
    ['down F→H', F, H],
    ['lm_head H→V', H, cfg.vocabSize],
  ];
  let roof = 0;
  for (const [label, K, Nout] of shapes) {
    const rT = await matmulRate(N, K, Nout, reps, true);
    const rN = await matmulRate(N, K, Nout, reps, false);
    roof = Math.max(roof, rT, rN);
    console.log(
      `  matMul ${label.padEnd(12)} [${N}×${K}]·[${K}×${Nout}]: ${rT.toFixed(1)} GFLOP/s (W^T, as the model) / ${rN.toFixed(1)} GFLOP/s (W pre-transposed)`,
    );
  }

  const w = randomWeights(cfg);
  const ids = tf.tensor2d(randomIdRows(B, T, cfg.vocabSize, 1), [B, T], 'int32');
  const rope = makeRope(cfg, T);
  const s = await time(reps, () => forward(cfg, w, ids, { rope }).logits);
  const flops = forwardFlops(cfg, B, T);
  const achieved = flops / s / 1e9;
  console.log(
    `in-memory forward: ${s.toFixed(3)} s for ${N} tokens = ${(N / s).toFixed(0)} tokens/s; ${(flops / 1e9).toFixed(1)} GFLOP -> ${achieved.toFixed(1)} GFLOP/s`,
  );
  console.log(
    `roofline (best matMul above): ${roof.toFixed(1)} GFLOP/s -> fraction ${((100 * achieved) / roof).toFixed(1)} % (target ≥ 50 %)`,
  );
  if (!args.includes('--no-profile')) {
    const split = await kernelSplit(cfg, w, ids);
    const total = split.reduce((a, [, v]) => a + v, 0);
    console.log(
      `time by kernel (one profiled forward, ${total.toFixed(0)} ms): ` +
        split
          .slice(0, 8)
          .map(([k, v]) => `${k} ${((100 * v) / total).toFixed(1)}%`)
          .join(', '),
    );
  }
  rope.dispose();
  ids.dispose();
  disposeWeights(w);
}

async function streamBench(args: string[], cfg: ModelConfig, backend: string): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'flm-grow-bench-forward-'));
  try {
    const sb = num(args, 'stream-batch', 1),
      st = num(args, 'stream-seq', 128);
    await writeRandomCheckpoint(join(dir, 'ck'), cfg, { seed: 1, dtype: 'BF16', maxShardSize: 2e8 });
    const child = (mode: string) => {
      const c = spawnSync(
        process.execPath,
        [
          '--import',
          'tsx',
          join(import.meta.dirname, 'forward.ts'),
          '--pass-child',
          mode,
          join(dir, 'ck'),
          String(sb),
          String(st),
          backend,
        ],
        { encoding: 'utf8' },
      );
      if (c.status !== 0) throw new Error(`${mode} child failed: ${c.stderr}`);
      return JSON.parse(c.stdout.trim().split('\n').pop() as string) as { baseline: number; peak: number; seconds: number };
    };
    const layer = layerF32Bytes(cfg);
    const logits = 4 * sb * st * cfg.vocabSize;
    console.log(
      `layer f32 size ${mb(layer)}; whole model f32 ${mb(4 * parameterCount(cfg))}; logits output ${mb(logits)}; ${sb}×${st} tokens from a bf16 checkpoint`,
    );
    for (const mode of ['stream', 'memory']) {
      const r = child(mode);
      console.log(
        `  ${mode === 'stream' ? 'layer-streamed' : 'all weights loaded'}: ${r.seconds.toFixed(2)} s, peak RSS ${mb(r.peak)} = baseline after backend init ${mb(r.baseline)} ` +
          `+ ${mb(r.peak - r.baseline)} (${((r.peak - r.baseline) / layer).toFixed(2)} × one layer's f32 size)`,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const a = process.argv.slice(2);
  if (a[0] === '--pass-child') await passChild(a[1], a[2], Number(a[3]), Number(a[4]), a[5] as BackendName);
  else await run(a);
}
