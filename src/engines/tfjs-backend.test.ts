import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import { initBackend, wasmDistDir } from './tfjs-backend.ts';
import { FlmGrowError } from '../util/errors.ts';

function tfNodeInstalled(): boolean {
  try {
    createRequire(import.meta.url).resolve('@tensorflow/tfjs-node-gpu');
    return true;
  } catch {
    return false;
  }
}

describe('initBackend', () => {
  it('finds the wasm binaries through module resolution and runs on wasm, then cpu, then wasm again', async () => {
    expect(existsSync(`${wasmDistDir()}tfjs-backend-wasm.wasm`)).toBe(true);
    expect(await initBackend('wasm')).toBe('wasm');
    expect(tf.matMul(tf.ones([2, 3]) as tf.Tensor2D, tf.ones([3, 2]) as tf.Tensor2D).dataSync()[0]).toBe(3);
    expect(await initBackend('cpu')).toBe('cpu');
    expect(await initBackend('wasm')).toBe('wasm');
  });

  it('auto is tfjs-node-gpu when installed, else wasm', async () => {
    expect(await initBackend('auto')).toBe(tfNodeInstalled() ? 'tensorflow' : 'wasm');
  });

  it('names a missing tfjs-node-gpu and an unknown backend with typed errors', async () => {
    if (!tfNodeInstalled()) await expect(initBackend('tensorflow')).rejects.toThrow(/tfjs-node-gpu is not installed/);
    await expect(initBackend('webgpu' as never)).rejects.toThrow(FlmGrowError);
  });
});
