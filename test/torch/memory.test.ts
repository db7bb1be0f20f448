/**
 * The torch engine's memory check (python/flm_grow_torch/memory.py): its estimate against peaks
 * measured on this machine, its parameter count against src/spec/arch.ts, and the refusal itself.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parameterCount } from '../../src/spec/arch.ts';
import { parseConfig } from '../../src/spec/config.ts';
import { findTorchPython, NO_TORCH_HELP, PYTHON_DIR } from '../../src/engines/torch-process.ts';

const torch = findTorchPython();
if (torch === undefined) console.log(`test/torch/memory: SKIPPED: ${NO_TORCH_HELP}`);
const ROOT = join(import.meta.dirname, '../..');
const LLAMA_1B = join(ROOT, 'fixtures/configs/Llama-3.2-1B.json');
const tmp = mkdtempSync(join(tmpdir(), 'flm-torch-mem-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function py(code: string): unknown {
  const r = spawnSync(torch?.python ?? 'python3', ['-c', code], {
    encoding: 'utf8',
    env: { ...process.env, PYTHONPATH: PYTHON_DIR },
    timeout: 120_000,
  });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

describe.skipIf(torch === undefined)('torch engine memory check', () => {
  it("estimates one step's peak within 0-5 % above the peak RSS measured at 0.38-1.11 B parameters", () => {
    // /usr/bin/time -v of `flm-grow train --engine torch --steps 1 --batch-size 1 --seq-len 16` on
    // Llama-3.2-1B's shape with 2, 6, 9, 12 and 14 layers (README, "Largest model")
    const measured: [number, number][] = [
      [2, 8.34e9],
      [6, 12.16e9],
      [9, 15.02e9],
      [12, 17.88e9],
      [14, 19.79e9],
    ];
    const base = JSON.parse(readFileSync(LLAMA_1B, 'utf8')) as Record<string, unknown>;
    const got = py(`
import json, os, tempfile
from flm_grow_torch.config import read_config
from flm_grow_torch.memory import train_step_bytes, parameter_count
base = json.load(open(${JSON.stringify(LLAMA_1B)}))
out = []
for L in ${JSON.stringify(measured.map((m) => m[0]))}:
    d = tempfile.mkdtemp()
    json.dump(dict(base, num_hidden_layers=L), open(os.path.join(d, "config.json"), "w"))
    cfg = read_config(d)
    out.append([parameter_count(cfg), train_step_bytes(cfg, 16, 16, 16, 1, 1, False)])
print(json.dumps(out))`) as [number, number][];
    measured.forEach(([L, rss], k) => {
      // the parameter count is src/spec/arch.ts's (the reference), not the Python's own
      expect(got[k][0]).toBe(parameterCount(parseConfig({ ...base, num_hidden_layers: L })));
      expect(got[k][1] / rss).toBeGreaterThanOrEqual(1);
      expect(got[k][1] / rss).toBeLessThanOrEqual(1.05);
    });
  });

  it("estimates each distributed layout's per-rank peak within 0-6 % above the peaks measured at 104-399 M parameters", () => {
    // `npm run bench -- distributed --size 100,200,400` (docs/scaling.md): hidden 1024, FFN 2816,
    // 16 heads / 8 KV heads of 64, vocab 16384, batch 4 x 64; the largest rank's peak RSS (GB) of
    // 1 process, DDP 2, FSDP2 2, TP 2, FSDP x TP 2 x 2 (null: not run, above the bench's 10 GB)
    const measured: [number, (number | null)[]][] = [
      [6, [2.23, 2.58, 1.48, 1.4, 1.02]],
      [14, [3.93, 4.56, 2.37, 2.29, 1.5]],
      [31, [7.42, null, 4.22, 4.17, 2.55]],
    ];
    // [tokens per rank, FSDP shards, tp, ddp] of each layout
    const layouts = [
      [256, 1, 1, false],
      [128, 1, 1, true],
      [128, 2, 1, false],
      [256, 1, 2, false],
      [128, 2, 2, false],
    ];
    const got = py(`
import json
from types import SimpleNamespace
from flm_grow_torch.memory import train_step_bytes
out = []
for L in ${JSON.stringify(measured.map((m) => m[0]))}:
    cfg = SimpleNamespace(hidden_size=1024, intermediate_size=2816, num_layers=L, vocab_size=16384, num_heads=16,
                          num_kv_heads=8, head_dim=64, qkv_bias=False, qk_norm=False, tie_word_embeddings=False)
    out.append([train_step_bytes(cfg, t, 64, 16, s, tp, False, ddp=d) for t, s, tp, d in ${JSON.stringify(layouts).replace(/false/g, 'False').replace(/true/g, 'True')}])
print(json.dumps(out))`) as number[][];
    measured.forEach(([L, peaks], k) =>
      peaks.forEach((gb, j) => {
        if (gb === null) return;
        const ratio = got[k][j] / (gb * 1e9);
        expect(ratio, `${L} layers, layout ${j}`).toBeGreaterThanOrEqual(1);
        expect(ratio, `${L} layers, layout ${j}`).toBeLessThanOrEqual(1.06);
      }),
    );
  });

  it('a model that does not fit is refused before anything is written, naming the need, the budget and the fixes', () => {
    const out = join(tmp, 'run');
    const r = spawnSync(
      process.execPath,
      [
        join(ROOT, 'bin/flm-grow.js'),
        'train',
        join(ROOT, 'fixtures/hf/llama-tiny-f32'),
        '--engine',
        'torch',
        '--data',
        join(ROOT, 'fixtures/corpus/fortunes.txt'),
        '--out',
        out,
        '--steps',
        '2',
        '--batch-size',
        '2',
        '--seq-len',
        '16',
        '--quiet',
      ],
      { encoding: 'utf8', env: { ...process.env, FLM_GROW_MEMORY_LIMIT: String(100e6) } },
    );
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/needs about 0\.3 GB to train .* 0\.1 GB is available \(\$FLM_GROW_MEMORY_LIMIT\)/);
    expect(r.stderr).toContain('--nproc N --fsdp');
    expect(existsSync(out)).toBe(false);
  });
});
