/**
 * Issue 16 leftovers: user-supplied files that are not regular files (a FIFO, /dev/zero) are
 * refused at once with a named error and exit 2 wherever flm-grow reads them (training data,
 * metrics logs, split parts), and a hidden state that becomes non-finite is named at the layer
 * where it first does, in forward, verify and select-layers alike.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { initBackend } from '../../src/engines/tfjs-backend.ts';
import { Checkpoint } from '../../src/checkpoint/checkpoint.ts';
import { makeConfig } from '../../src/spec/config.ts';
import { streamedForward } from '../../src/model/streaming.ts';
import { TokenDataset } from '../../src/train/data.ts';
import { readMetrics } from '../../src/train/metrics.ts';
import { verifyGrowth } from '../../src/growth/verify.ts';
import { selectLayers } from '../../src/growth/select-layers.ts';
import { FlmGrowError } from '../../src/util/errors.ts';
import { writeCheckpoint, randomWeightArrays } from '../support/model.ts';

const ROOT = join(import.meta.dirname, '../..');
const FIX = join(ROOT, 'fixtures/hf/llama-tiny-f32');

/** Runs the CLI; a hang is cut at 20 s and reported as code -1. */
function cli(args: string[]): { code: number; err: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/flm-grow.js'), ...args], {
    encoding: 'utf8',
    cwd: ROOT,
    timeout: 20_000,
  });
  return { code: r.status ?? -1, err: r.stderr };
}

/** The error `f` throws, and how long it took to throw it. */
function timedError(f: () => unknown): { error: FlmGrowError; ms: number } {
  const t0 = performance.now();
  try {
    f();
  } catch (e) {
    if (e instanceof FlmGrowError) return { error: e, ms: performance.now() - t0 };
    throw e;
  }
  throw new Error('expected an FlmGrowError');
}

let tmp: string;
let fifo: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'flm-grow-special-'));
  fifo = join(tmp, 'pipe.txt');
  execFileSync('mkfifo', [fifo]);
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('special files as inputs are refused at once (no hang, no endless read)', () => {
  // in-process only /dev/zero: a FIFO would block the test's own thread in open() on a regression
  it('training data (as text and as a token file) and a metrics log that are /dev/zero', () => {
    for (const f of [
      () => TokenDataset.fromFile('/dev/zero'),
      () => TokenDataset.fromFile('/dev/zero', { tokenDtype: 'uint16' }),
    ]) {
      const { error, ms } = timedError(f);
      expect(error.message).toBe('/dev/zero: cannot read training data: training data is a device; only regular files are read');
      expect(error.code).toBe('NotARegularFile');
      expect(ms).toBeLessThan(1000);
    }
    const { error, ms } = timedError(() => readMetrics('/dev/zero'));
    expect(error.message).toMatch(/^\/dev\/zero: cannot read metrics: metrics log is a device/);
    expect(ms).toBeLessThan(1000);
  });

  it('CLI: train --data, plot and assemble of a part whose part.json is a FIFO: exit 2 with the named error', () => {
    const t = cli(['train', FIX, '--data', fifo, '--out', join(tmp, 'run'), '--steps', '1', '--backend', 'cpu', '--quiet']);
    expect(t.code, t.err).toBe(2);
    expect(t.err).toMatch(/pipe\.txt: cannot read training data: training data is a FIFO/);
    const p = cli(['plot', fifo, '--out', join(tmp, 'c.svg')]);
    expect(p.code, p.err).toBe(2);
    expect(p.err).toMatch(/pipe\.txt: cannot read metrics: metrics log is a FIFO/);
    const part = join(tmp, 'part-1');
    mkdirSync(part);
    execFileSync('mkfifo', [join(part, 'part.json')]);
    const a = cli(['assemble', join(tmp, 'assembled'), part]);
    expect(a.code, a.err).toBe(2);
    expect(a.err).toMatch(/part\.json: part file is a FIFO/);
  });
});

describe('non-finite activations are named at the layer where they appear', () => {
  // 3 layers, f32: layer K's weights are made to blow up while every weight stays finite
  const cfg = makeConfig({ hiddenSize: 16, intermediateSize: 32, numLayers: 3, numHeads: 2, vocabSize: 32 });
  const K = 1;
  let overflow: string, infWeight: string;

  beforeAll(async () => {
    await initBackend('cpu');
    const arrays = randomWeightArrays(cfg, { seed: 3 });
    // a norm gain of 1e30 before layer K's MLP: gate and up are ~1e30, their product overflows f32
    arrays.set(`model.layers.${K}.post_attention_layernorm.weight`, new Float32Array(cfg.hiddenSize).fill(1e30));
    overflow = join(tmp, 'overflow');
    await writeCheckpoint(overflow, cfg, arrays);
    const arrays2 = randomWeightArrays(cfg, { seed: 4 });
    (arrays2.get('model.layers.2.self_attn.k_proj.weight') as Float32Array)[7] = Infinity;
    infWeight = join(tmp, 'inf-weight');
    await writeCheckpoint(infWeight, cfg, arrays2);
  });

  it('streamed forward, unblocked and in the smallest blocks: layer 1, the MLP half', async () => {
    const ck = await Checkpoint.open(overflow);
    try {
      for (const opts of [{}, { maxBlockBytes: 1, maxActivationBytes: 1 }])
        await expect(streamedForward(ck, [[1, 2, 3, 4]], { masks: null, ...opts })).rejects.toThrow(
          /non-finite in layer 1 \(its mlp half, model\.layers\.1\.mlp\.\*\).*hidden_states\[2\]/,
        );
    } finally {
      await ck.close();
    }
  });

  it('an Inf weight in layer 2: the layer and the tensor', async () => {
    const ck = await Checkpoint.open(infWeight);
    try {
      await expect(streamedForward(ck, [[1, 2, 3, 4]], { masks: null })).rejects.toThrow(
        /^layer 2: .*model\.layers\.2\.self_attn\.k_proj\.weight" holds Infinity at element 7/,
      );
    } finally {
      await ck.close();
    }
  });

  it('verify and select-layers name layer 1 too; the CLI exits 2', async () => {
    const want = /non-finite in layer 1 \(its mlp half/;
    await expect(verifyGrowth(overflow, overflow, { backend: 'cpu', tokens: 8, seq: 4 })).rejects.toThrow(want);
    const ck = await Checkpoint.open(overflow);
    try {
      await expect(selectLayers(ck, [[1, 2, 3, 4]], { metric: 'cosine', order: 'smallest', count: 1 })).rejects.toThrow(want);
    } finally {
      await ck.close();
    }
    const r = cli(['forward', overflow, '--ids', '1,2,3,4', '--backend', 'cpu', '--quiet']);
    expect(r.code, r.err).toBe(2);
    expect(r.err).toMatch(want);
  });
});
