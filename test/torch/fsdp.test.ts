/**
 * --fsdp (torch engine): FSDP2 (torch.distributed.fsdp.fully_shard) runs on CPU with gloo as on
 * GPUs with nccl (the FSDP1 path it replaced needed CUDA). Here: the tfjs trainer refuses it, and
 * two CPU processes train a step through `flm-grow train --engine torch --nproc 2 --fsdp`.
 * Step-for-step equality with one process is test/torch/distributed.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTempDir, TINY_BYTE_CONFIG } from '../support/model.ts';
import { initConfig, writeRandomInit } from '../../src/train/random-init.ts';
import { trainWithEngine } from '../../src/train/engine.ts';
import { findTorchPython, NO_TORCH_HELP } from '../../src/engines/torch-process.ts';

const torch = findTorchPython();
if (torch === undefined) {
  console.log(`test/torch: SKIPPED (torch engine tests): ${NO_TORCH_HELP} Set FLM_GROW_PYTHON=/path/to/python to enable them.`);
}
const CORPUS = join(import.meta.dirname, '../../fixtures/corpus/fortunes.txt');
let tmp: ReturnType<typeof makeTempDir>;
let ck: string;

beforeAll(async () => {
  tmp = makeTempDir('flm-fsdp-');
  ck = join(tmp.dir, 'init');
  await writeRandomInit(ck, initConfig(TINY_BYTE_CONFIG), { seed: 1 });
});
afterAll(() => tmp.cleanup());

const opts = (out: string) => ({ checkpoint: ck, data: CORPUS, out, steps: 1, batchSize: 2, seqLen: 8, quiet: true });

describe('--fsdp', () => {
  it('the tfjs trainer refuses it, naming --engine torch', async () => {
    await expect(trainWithEngine(opts(join(tmp.dir, 'tf')), { engine: 'tfjs', fsdp: true })).rejects.toThrow(
      /--fsdp needs --engine torch/,
    );
  });

  it.skipIf(torch === undefined)('2 CPU processes (gloo) train under FSDP2 and save a whole checkpoint', async () => {
    const out = join(tmp.dir, 'py');
    const r = await trainWithEngine(opts(out), { engine: 'torch', fsdp: true, nproc: 2 });
    expect(r.step).toBe(1);
    expect(Number.isFinite(r.lastLoss)).toBe(true);
    const m = JSON.parse(readFileSync(join(r.checkpoint, 'flm-grow-manifest.json'), 'utf8')) as {
      extra: { sharding: string; processes: number };
    };
    expect(m.extra).toMatchObject({ sharding: 'fsdp', processes: 2 });
    expect(existsSync(join(r.checkpoint, 'model.safetensors'))).toBe(true);
  });
});
