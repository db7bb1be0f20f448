/** grow and bake on real files: bytes, determinism, manifest, masks, errors, and the HF fixtures vs transformers. */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeConfig } from '../spec/config.ts';
import { Checkpoint } from '../checkpoint/checkpoint.ts';
import { SafetensorsFile } from '../checkpoint/safetensors.ts';
import { bytesToFloat32, roundToDtype } from '../util/dtype.ts';
import { applyMaskValues, readMasks, writeMasks, MASKS_FILE } from '../checkpoint/masks.ts';
import { readManifest, verifyManifestFiles } from '../checkpoint/manifest.ts';
import { growCheckpoint } from './grow.ts';
import { bakeCheckpoint } from './bake.ts';
import { growMomentTensor, layoutFromManifest } from './moments.ts';
import { parsePlan, readPlanFile, applyPlanFlags } from './plan.ts';
import { compareGrown, loadAll, naive, randomIds, tempDir, writeRandomCheckpoint } from '../../test/support/growth.ts';
import { ropeInvFreq } from '../../test/reference/naive-llama.ts';

const FIX = join(import.meta.dirname, '../../fixtures/hf');
const PLANS = join(import.meta.dirname, '../../growth-plans');

let tmp: { dir: string; cleanup: () => void };
let src: string;
const cfg = makeConfig({
  hiddenSize: 12,
  intermediateSize: 10,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 4,
  vocabSize: 9,
  dtype: 'BF16',
});
const allOps = () =>
  parsePlan({
    targets: {
      hidden_size: 16,
      intermediate_size: 13,
      num_attention_heads: 8,
      num_key_value_heads: 2,
      num_hidden_layers: 4,
      vocab_size: 12,
    },
    placement: { positions: [1, 0] },
    seed: 7,
  });

beforeAll(async () => {
  tmp = tempDir();
  src = join(tmp.dir, 'src');
  await writeRandomCheckpoint(src, cfg, 'BF16', { seed: 3, maxShardSize: 2000 });
  writeFileSync(join(src, 'tokenizer.json'), '{"fake": true}');
});
afterAll(() => tmp.cleanup());

/** A fresh grow of `src` with every operator (masked), owned by the test that asks for it. */
async function grownAllOps(name: string): Promise<string> {
  const out = join(tmp.dir, name);
  await growCheckpoint(src, out, allOps(), { quiet: true });
  return out;
}

async function tensorBytes(dir: string): Promise<Map<string, Uint8Array>> {
  const ck = await Checkpoint.open(dir);
  const m = new Map<string, Uint8Array>();
  for (const n of ck.tensors.keys()) m.set(n, await ck.read(n));
  await ck.close();
  return m;
}

describe('grow', () => {
  it('copies old slices bit-exactly and is a pure function of the seed (not of block size or shard size)', async () => {
    const a = join(tmp.dir, 'a'),
      b = join(tmp.dir, 'b'),
      c = join(tmp.dir, 'c');
    await growCheckpoint(src, a, allOps(), { quiet: true });
    await growCheckpoint(src, b, allOps(), { quiet: true, blockBytes: 40, maxShardSize: 500 });
    await growCheckpoint(src, c, { ...allOps(), seed: 8 }, { quiet: true });
    const [ta, tb, tc, ts] = await Promise.all([tensorBytes(a), tensorBytes(b), tensorBytes(c), tensorBytes(src)]);
    for (const [n, v] of ta) expect(Buffer.compare(v, tb.get(n) as Uint8Array), n).toBe(0);
    expect(Buffer.compare(ta.get('lm_head.weight') as Uint8Array, tc.get('lm_head.weight') as Uint8Array)).not.toBe(0);
    // embed [V,H] bf16: old rows, old columns identical bytes
    const e0 = ts.get('model.embed_tokens.weight') as Uint8Array,
      e1 = ta.get('model.embed_tokens.weight') as Uint8Array;
    for (let r = 0; r < 9; r++)
      expect(Buffer.compare(e0.subarray(r * 24, r * 24 + 24), e1.subarray(r * 32, r * 32 + 24))).toBe(0);
    // q_proj rows of old heads moved into their groups: output head 4 (group 1 slot 0) = source head 2
    const q0 = ts.get('model.layers.0.self_attn.q_proj.weight') as Uint8Array,
      q1 = ta.get('model.layers.0.self_attn.q_proj.weight') as Uint8Array;
    for (let r = 0; r < 4; r++) {
      expect(Buffer.compare(q0.subarray((8 + r) * 24, (8 + r) * 24 + 24), q1.subarray((16 + r) * 32, (16 + r) * 32 + 24))).toBe(
        0,
      );
    }
    // inserted copy (output layer 1 <- source 0) holds layer 0's old entries
    const u0 = ts.get('model.layers.0.mlp.up_proj.weight') as Uint8Array,
      u1 = ta.get('model.layers.1.mlp.up_proj.weight') as Uint8Array;
    for (let r = 0; r < 10; r++)
      expect(Buffer.compare(u0.subarray(r * 24, r * 24 + 24), u1.subarray(r * 32, r * 32 + 24))).toBe(0);
  });

  it('large blocks (pooled shared buffers, split writes) give the same bytes as tiny blocks', async () => {
    const big = makeConfig({
      hiddenSize: 1024,
      intermediateSize: 64,
      numLayers: 1,
      numHeads: 8,
      headDim: 128,
      vocabSize: 4096,
      dtype: 'BF16',
    });
    const bsrc = join(tmp.dir, 'bigsrc');
    await writeRandomCheckpoint(bsrc, big, 'BF16', { seed: 9 });
    const plan = parsePlan({ targets: { hidden_size: 2560, vocab_size: 4100, num_attention_heads: 10 }, seed: 3 });
    const x = join(tmp.dir, 'bigx'),
      y = join(tmp.dir, 'bigy');
    await growCheckpoint(bsrc, x, plan, { quiet: true, blockBytes: 9 << 20 }); // embed/lm_head: 21 MB -> pooled 9 MB blocks
    await growCheckpoint(bsrc, y, plan, { quiet: true, blockBytes: 1 << 20 });
    const [tx, ty] = await Promise.all([tensorBytes(x), tensorBytes(y)]);
    for (const [n, v] of tx) expect(Buffer.compare(v, ty.get(n) as Uint8Array), n).toBe(0);
    const mx = readManifest(x);
    expect(await verifyManifestFiles(x, mx as NonNullable<typeof mx>)).toEqual([]);
    const my = readManifest(y);
    expect(mx?.files['model.safetensors']).toBe(my?.files['model.safetensors']);
  });

  it('writes config, masks, manifest (sha256 of every file), side files; masks mark new units', async () => {
    const out = join(tmp.dir, 'm');
    const r = await growCheckpoint(src, out, allOps(), { quiet: true, maxShardSize: 800 });
    const files = readdirSync(out).sort();
    expect(files).toContain('tokenizer.json');
    expect(files).toContain('generation_config.json');
    expect(files).toContain(MASKS_FILE);
    expect(files).toContain('model.safetensors.index.json');
    const m = readManifest(out);
    expect(m?.kind).toBe('grow');
    expect(Object.keys(m?.files ?? {}).sort()).toEqual(files.filter((f) => f !== 'flm-grow-manifest.json'));
    expect(await verifyManifestFiles(out, m as NonNullable<typeof m>)).toEqual([]);
    expect(m?.masks?.schedule.map((s) => s.group)).toEqual(['hidden', 'heads', 'ffn', 'layers']);
    expect(m?.layerMap).toEqual(r.layerMap);
    const masks = await readMasks(join(out, MASKS_FILE), r.target);
    expect(Array.from(masks.hidden)).toEqual([...new Array(12).fill(1), 0, 0, 0, 0]);
    expect(Array.from(masks.vocab)).toEqual([...new Array(9).fill(1), 0, 0, 0]);
    expect(Array.from(masks.layers[0].heads)).toEqual([1, 1, 0, 0, 1, 1, 0, 0]);
    // positions [1, 0]: a copy of source layer 0 after it, and of source layer 1 after it
    expect(r.layerMap).toEqual([
      { source: 0, inserted: false },
      { source: 0, inserted: true },
      { source: 1, inserted: false },
      { source: 1, inserted: true },
    ]);
    expect(masks.layers.map((l) => l.residual)).toEqual([1, 0, 1, 0]);
    const conf = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(conf).toMatchObject({
      hidden_size: 16,
      intermediate_size: 13,
      num_attention_heads: 8,
      num_key_value_heads: 2,
      num_hidden_layers: 4,
      vocab_size: 12,
      head_dim: 4,
    });
  });

  it('growing a checkpoint mid-annealing carries its masks: the grown masked model equals the masked source', async () => {
    const g1 = join(tmp.dir, 'mid1'),
      g2 = join(tmp.dir, 'mid2');
    const r1 = await growCheckpoint(src, g1, allOps(), { quiet: true });
    const mid = applyMaskValues(await readMasks(join(g1, MASKS_FILE), r1.target), {
      hidden: 0.4,
      heads: 0.7,
      ffn: 0.2,
      layers: 0.5,
    });
    rmSync(join(g1, MASKS_FILE));
    await writeMasks(join(g1, MASKS_FILE), mid);
    const plan2 = parsePlan({
      targets: {
        hidden_size: 20,
        intermediate_size: 15,
        num_attention_heads: 12,
        num_key_value_heads: 3,
        num_hidden_layers: 5,
        vocab_size: 13,
      },
      placement: { positions: [3] },
    });
    const r2 = await growCheckpoint(g1, g2, plan2, { quiet: true });
    const m2 = await readMasks(join(g2, MASKS_FILE), r2.target);
    expect(m2.hidden[13]).toBeCloseTo(0.4, 6);
    expect(m2.hidden[17]).toBe(0);
    expect(m2.layers.map((l) => l.residual)).toEqual([1, 0.5, 1, 0.5, 0]);
    const d = await compareGrown(g1, g2, 'masked', randomIds(6, 12, 4));
    expect(d.dLogits).toBeLessThanOrEqual(1e-5 * d.scale);
    await expect(growCheckpoint(g1, join(tmp.dir, 'midz'), { ...plan2, mode: 'zero' }, { quiet: true })).rejects.toThrow(
      /field "mode".*masks below 1/,
    );
  });

  it('the trainer can rebuild the layout from the manifest and grow Adam moments the same way', async () => {
    const out = await grownAllOps('moments');
    const m = readManifest(out) as NonNullable<ReturnType<typeof readManifest>>;
    const ck = await Checkpoint.open(out);
    const layout = layoutFromManifest(cfg, ck.config, m);
    await ck.close();
    expect(layout.layerMap).toEqual(m.layerMap);
    const s = await Checkpoint.open(src);
    const v = await s.readFloat32('model.layers.1.mlp.down_proj.weight'); // [12, 10] -> [16, 13]
    await s.close();
    const g = growMomentTensor(layout, 'model.layers.2.mlp.down_proj.weight', v);
    expect(g[0]).toBe(v[0]);
    expect(g[13 * 11 + 9]).toBe(v[10 * 11 + 9]);
    expect(g[10]).toBe(0);
    expect(g[13 * 12]).toBe(0);
  });

  it('converts dtype on request (f16 source -> f32 output, exact)', async () => {
    const s16 = join(tmp.dir, 's16');
    await writeRandomCheckpoint(s16, { ...cfg, dtype: 'F16' }, 'F16', { seed: 5 });
    const out = join(tmp.dir, 'f32');
    await growCheckpoint(s16, out, allOps(), { quiet: true, dtype: 'F32' });
    const ck = await Checkpoint.open(out);
    expect(ck.info('lm_head.weight').dtype).toBe('F32');
    const a = await ck.readFloat32('model.norm.weight');
    await ck.close();
    const s = await Checkpoint.open(s16);
    const b = await s.readFloat32('model.norm.weight');
    await s.close();
    expect(Array.from(a.subarray(0, 12))).toEqual(Array.from(b));
    expect(Array.from(a.subarray(12))).toEqual([1, 1, 1, 1]);
  });

  it('zero mode in bf16 with a non-power-of-two ratio is only approximately preserving, and says so; 4x hidden is exact', async () => {
    const z = join(tmp.dir, 'z');
    const r = await growCheckpoint(src, z, applyPlanFlags(allOps(), { mode: 'zero' }), { quiet: true });
    expect(r.resolved.zeroNorm?.exactness).toBe('rounded');
    expect(existsSync(join(z, MASKS_FILE))).toBe(false);
    const d = await compareGrown(src, z, 'zero', randomIds(6, 9, 1));
    expect(d.dLogits).toBeLessThan(0.05 * d.scale);
    const z4 = join(tmp.dir, 'z4');
    const r4 = await growCheckpoint(src, z4, applyPlanFlags(allOps(), { mode: 'zero', hiddenSize: 48 }), { quiet: true });
    expect(r4.resolved.zeroNorm?.exactness).toBe('exact');
    const d4 = await compareGrown(src, z4, 'zero', randomIds(6, 9, 1));
    expect(d4.dLogits).toBeLessThanOrEqual(1e-5 * d4.scale);
  });

  it('bad plans and sources: clear errors, no destination (or temporary folder) created', async () => {
    const dest = join(tmp.dir, 'never');
    await expect(growCheckpoint(src, dest, parsePlan({ targets: { hidden_size: 8 } }), { quiet: true })).rejects.toThrow(
      /targets.hidden_size.*cannot shrink/,
    );
    await expect(
      growCheckpoint(src, dest, parsePlan({ targets: { num_hidden_layers: 3 }, placement: { method: 'explicit' } }), {
        quiet: true,
      }),
    ).rejects.toThrow(/placement.positions/);
    await expect(
      growCheckpoint(src, dest, parsePlan({ targets: { num_hidden_layers: 3 }, placement: { positions: [5] } }), { quiet: true }),
    ).rejects.toThrow(/position 5/);
    await expect(growCheckpoint(join(tmp.dir, 'nope'), dest, allOps(), { quiet: true })).rejects.toThrow(/no such folder/);
    await expect(growCheckpoint(src, src, allOps(), { quiet: true })).rejects.toThrow(/destination is the source/);
    const existing = join(tmp.dir, 'existing');
    mkdirSync(existing);
    await expect(growCheckpoint(src, existing, allOps(), { quiet: true })).rejects.toThrow(/already exists/);
    expect(existsSync(dest)).toBe(false);
    expect(readdirSync(tmp.dir).filter((f) => f.startsWith('.flm-grow-tmp'))).toEqual([]);
  });
});

describe('bake', () => {
  it('refuses while masks are below 1, naming the groups; --force drops them', async () => {
    const g = await grownAllOps('bake-below-one');
    await expect(bakeCheckpoint(g, join(tmp.dir, 'bk0'), { quiet: true })).rejects.toThrow(
      /masks still below 1: hidden.*heads.*ffn.*layers/,
    );
    expect(existsSync(join(tmp.dir, 'bk0'))).toBe(false);
    const warnings: string[] = [];
    await bakeCheckpoint(g, join(tmp.dir, 'bk0'), { quiet: true, force: true, warn: (w) => warnings.push(w) });
    expect(warnings.join()).toMatch(/dropping masks/);
  });

  it('at masks = 1 the masked model is the plain model; bake writes the same tensors without masks', async () => {
    const g = join(tmp.dir, 'ones');
    const r = await growCheckpoint(src, g, allOps(), { quiet: true });
    const m = await readMasks(join(g, MASKS_FILE), r.target);
    const ones = applyMaskValues(m, { hidden: 1, heads: 1, ffn: 1, layers: 1 });
    rmSync(join(g, MASKS_FILE));
    await writeMasks(join(g, MASKS_FILE), ones);
    const b = join(tmp.dir, 'baked');
    await bakeCheckpoint(g, b, { quiet: true });
    expect(existsSync(join(b, MASKS_FILE))).toBe(false);
    const [tg, tb] = await Promise.all([tensorBytes(g), tensorBytes(b)]);
    expect([...tb.keys()].sort()).toEqual([...tg.keys()].sort());
    for (const [n, v] of tg) expect(Buffer.compare(v, tb.get(n) as Uint8Array), n).toBe(0);
    const man = readManifest(b);
    expect(await verifyManifestFiles(b, man as NonNullable<typeof man>)).toEqual([]);
    // masked forward at ones (vocab padding aside) == plain forward of the baked weights
    const G = await loadAll(g),
      B = await loadAll(b);
    const ids = randomIds(5, 9, 2);
    const x = naive(G.cfg, G.w, ids, ones),
      y = naive(B.cfg, B.w, ids);
    for (let t = 0; t < 5; t++) for (let v = 0; v < 9; v++) expect(Math.abs(x.logits[t][v] - y.logits[t][v])).toBeLessThan(1e-9);
  });
});

describe.each([
  ['llama-tiny-f32', false],
  ['llama-tiny-bf16', true],
])("growing the HF fixture %s: the grown model reproduces transformers' logits of the source", (name, bf16Rope) => {
  it('all operators at once (masked), checked against reference.safetensors', async () => {
    const out = join(tmp.dir, `hf-${name}`);
    const plan = applyPlanFlags(readPlanFile(join(PLANS, 'tiny-stage1-to-stage2.json')), {
      numAttentionHeads: 10,
      numKeyValueHeads: 5,
      vocabSize: 336,
      positions: '2',
    });
    await growCheckpoint(join(FIX, name), out, plan, { quiet: true });
    const G = await loadAll(out);
    const masks = await readMasks(join(out, MASKS_FILE), G.cfg);
    const ref = await SafetensorsFile.open(join(FIX, name, 'reference.safetensors'));
    const idsInfo = ref.info('input_ids');
    const ids = bytesToFloat32(await ref.read('input_ids'), idsInfo.dtype);
    const logits = bytesToFloat32(await ref.read('logits'), 'F32');
    await ref.close();
    const [B, T] = idsInfo.shape;
    const V = 320;
    const inv = ropeInvFreq(16, 10000);
    const invFreq = bf16Rope ? roundToDtype(Float32Array.from(inv), 'BF16') : inv;
    let max = 0;
    for (let b = 0; b < B; b++) {
      const o = naive(G.cfg, G.w, Array.from(ids.subarray(b * T, (b + 1) * T)), masks, invFreq);
      for (let t = 0; t < T; t++) {
        for (let v = 0; v < V; v++) max = Math.max(max, Math.abs(o.logits[t][v] - logits[(b * T + t) * V + v]));
        for (let v = V; v < 336; v++) expect(o.logits[t][v]).toBe(-Infinity);
      }
    }
    expect(max).toBeLessThan(1e-4);
  });
});
