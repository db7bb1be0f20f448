/**
 * --fsdp (torch engine): FullyShardedDataParallel computes on CUDA only (torch 1.13's
 * FullyShardedDataParallel takes its compute device from torch.cuda.current_device(), even for
 * a CPU module under gloo), so on a CPU-only machine the engine refuses it with a message naming
 * the reason and the alternative (DDP), before loading anything; the tfjs trainer refuses it too.
 * The CUDA path itself needs a GPU and torch >= 2.0 and is not exercised here.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { makeTempDir, TINY_BYTE_CONFIG } from '../support/model.ts';
import { initConfig, writeRandomInit } from '../../src/train/random-init.ts';
import { trainWithEngine } from '../../src/train/engine.ts';
import { findTorchPython, NO_TORCH_HELP, runTorchModule } from '../../src/torch-engine.ts';

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

  it.skipIf(torch === undefined || torch.cuda)(
    'on CPU the torch engine refuses it: names CUDA and DDP, writes nothing',
    async () => {
      const out = join(tmp.dir, 'py');
      const r = await runTorchModule(
        'flm_grow_torch.train',
        [ck, '--data', CORPUS, '--out', out, '--steps', '1', '--batch-size', '2', '--seq-len', '8', '--fsdp', '--device', 'cpu'],
        { capture: true },
      );
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/--fsdp needs CUDA GPUs \(NCCL\).*FullyShardedDataParallel.*without --fsdp \(DDP/s);
      expect(r.stderr).not.toMatch(/Traceback/);
      expect(existsSync(out)).toBe(false);
      // through flm-grow: the engine's message reaches the TrainError
      await expect(trainWithEngine(opts(join(tmp.dir, 'via')), { engine: 'torch', fsdp: true })).rejects.toThrow(
        /--fsdp needs CUDA/,
      );
    },
  );
});
