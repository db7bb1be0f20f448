import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parameterCount } from '../spec/arch.ts';
import { Checkpoint } from '../checkpoint/checkpoint.ts';
import { bytesToFloat32 } from '../util/dtype.ts';
import { makeConfig } from '../spec/config.ts';
import { makeTempDir } from '../../test/support/model.ts';
import { normalQuantile, stageConfig, synthCheckpoint, SYNTH_EMBED_STD, SYNTH_MATRIX_STD } from './synth.ts';

function meanStd(v: Float32Array): { mean: number; std: number } {
  let s = 0;
  let s2 = 0;
  for (const x of v) {
    s += x;
    s2 += x * x;
  }
  const mean = s / v.length;
  return { mean, std: Math.sqrt(s2 / v.length - mean * mean) };
}

describe('synth', () => {
  it('stage widths reproduce the parameter counts of SPEC §6 (at the unpadded vocab 80000)', () => {
    const expected: Record<string, number> = {
      'tele-flm-52b': 52.818e9,
      'tele-flm-102b': 102.198e9,
      'tele-flm-1t': 1083.735e9,
      'tele-flm-mup-proxy': 281.2e6,
    };
    for (const [like, n] of Object.entries(expected)) {
      const c = stageConfig(like);
      expect(c.headDim).toBe(128);
      expect(c.numHeads * 128).toBe(c.hiddenSize);
      // SPEC gives 4-5 significant digits
      expect(parameterCount({ ...c, vocabSize: 80000 }) / n).toBeCloseTo(1, 3);
    }
    expect(stageConfig('tele-flm-52b').vocabSize).toBe(80384);
    expect(stageConfig('tele-flm-1t').vocabSize).toBe(81920);
    expect(() => stageConfig('tele-flm-7b')).toThrow(/tele-flm-7b/);
  });

  it('normalQuantile matches known normal quantiles', () => {
    expect(normalQuantile(0.975)).toBeCloseTo(1.959963985, 7);
    expect(normalQuantile(0.5)).toBeCloseTo(0, 12);
    expect(normalQuantile(0.001)).toBeCloseTo(-3.090232306, 7);
    expect(normalQuantile(0.8413447461)).toBeCloseTo(1, 7);
  });

  it('a 1-layer µP proxy opens, has the stage config, and values of the requested std', async () => {
    const { dir, cleanup } = makeTempDir('flm-synth-');
    try {
      const out = join(dir, 'proxy');
      const r = await synthCheckpoint(out, {
        like: 'tele-flm-mup-proxy',
        numLayers: 1,
        seed: 3,
        quiet: true,
        maxShardSize: '100MB',
      });
      const raw = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
      expect(raw).toMatchObject({
        hidden_size: 512,
        intermediate_size: 1344,
        num_attention_heads: 4,
        num_hidden_layers: 1,
        head_dim: 128,
        vocab_size: 80384,
        use_mup: true,
        output_mult: 0.5,
        mup_scale_factor: 1,
        input_mult: 1,
      });
      const ck = await Checkpoint.open(out);
      try {
        expect(ck.shards.length).toBeGreaterThan(1);
        expect(ck.totalBytes).toBe(r.bytes);
        expect(ck.info('model.embed_tokens.weight').dtype).toBe('BF16');
        const emb = bytesToFloat32(await ck.readRows('model.embed_tokens.weight', 1000, 3000), 'BF16');
        const e = meanStd(emb);
        expect(Math.abs(e.mean)).toBeLessThan(SYNTH_EMBED_STD * 0.01);
        expect(e.std / SYNTH_EMBED_STD).toBeCloseTo(1, 2);
        for (const name of ['model.layers.0.self_attn.q_proj.weight', 'model.layers.0.mlp.down_proj.weight', 'lm_head.weight']) {
          const m = meanStd(bytesToFloat32(await ck.readRows(name, 0, 500), 'BF16'));
          expect(m.std / SYNTH_MATRIX_STD, name).toBeCloseTo(1, 2);
        }
        const g = await ck.readFloat32('model.layers.0.input_layernorm.weight');
        expect(g.every((x) => x === 1)).toBe(true);
        // rows are not repeats of each other (the stream moves on)
        const q = await ck.readFloat32('model.layers.0.self_attn.k_proj.weight');
        expect(q.subarray(0, 512)).not.toEqual(q.subarray(512, 1024));
      } finally {
        await ck.close();
      }
    } finally {
      cleanup();
    }
  });

  it('is deterministic in the seed, and the seed matters', async () => {
    const { dir, cleanup } = makeTempDir('flm-synth-');
    try {
      const cfg = makeConfig({ hiddenSize: 256, intermediateSize: 512, numLayers: 1, numHeads: 2, headDim: 128, vocabSize: 300 });
      for (const [name, seed] of [
        ['a', 1],
        ['b', 1],
        ['c', 2],
      ] as const) {
        await synthCheckpoint(join(dir, name), { config: cfg, seed, quiet: true, dtype: 'F32', chunkBytes: 4096 });
      }
      const bytes = (n: string) => readFileSync(join(dir, n, 'model.safetensors'));
      expect(bytes('a').equals(bytes('b'))).toBe(true);
      expect(bytes('a').equals(bytes('c'))).toBe(false);
      const ck = await Checkpoint.open(join(dir, 'a'));
      try {
        expect(meanStd(await ck.readFloat32('model.layers.0.mlp.up_proj.weight')).std / SYNTH_MATRIX_STD).toBeCloseTo(1, 1);
      } finally {
        await ck.close();
      }
    } finally {
      cleanup();
    }
  });
});
