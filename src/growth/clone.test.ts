/**
 * init.new clone (Net2Net / HyperCloning, operators.ts): the grown model computes the source's
 * function, judged by the naive float64 reference (test/reference/naive-llama.ts). Where the
 * construction is exact (FFN, heads, KV heads, hidden at a whole ratio) also the plain model,
 * every mask forced to 1: that fails if the out-weights were copied instead of split. And the
 * clones are copies: rows found among the source's rows, out-weights split between them.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { join } from 'node:path';
import { readFileSync, rmSync } from 'node:fs';
import { makeConfig, type ModelConfig } from '../spec/config.ts';
import { growCheckpoint } from './grow.ts';
import { applyPlanFlags, defaultPlan, parsePlan, resolveTarget, type GrowthPlan } from './plan.ts';
import { compareGrown, loadAll, naive, randomIds, tempDir, writeRandomCheckpoint } from '../../test/support/growth.ts';
import { FAMILY_NAMES, type FamilyName } from '../spec/families.ts';
import { applyMaskValues, readMasks, writeMasks, MASKS_FILE } from '../checkpoint/masks.ts';
import { grownBoundary } from './boundary.ts';
import { readManifest, type Manifest } from '../checkpoint/manifest.ts';
import { roundingTolerance } from './verify.ts';
import { PlanError } from '../util/errors.ts';
import { buildLayout } from './layout.ts';
import { buildLayerMap } from './depth.ts';
import { growMomentTensor, layoutFromManifest } from './moments.ts';

interface Case {
  family: FamilyName;
  tied: boolean;
  H: number;
  F: number;
  nkv: number;
  g: number;
  hd: number;
  L: number;
  /** hidden_size' = H·hMul (exact) or H + dH (dH > 0: masked unless it happens to be a multiple). */
  hMul: number;
  dH: number;
  dF: number;
  kvMul: number;
  gAdd: number;
  dV: number;
  positions: number[];
  noise: number;
  seed: number;
}

const caseArb: fc.Arbitrary<Case> = fc
  .record({
    family: fc.constantFrom<FamilyName>(...FAMILY_NAMES),
    tied: fc.boolean(),
    H: fc.integer({ min: 3, max: 7 }),
    F: fc.integer({ min: 2, max: 6 }),
    nkv: fc.integer({ min: 1, max: 2 }),
    g: fc.integer({ min: 1, max: 2 }),
    hd: fc.constantFrom(2, 4),
    L: fc.integer({ min: 1, max: 2 }),
    hMul: fc.integer({ min: 1, max: 3 }),
    dH: fc.constantFrom(0, 0, 1, 2),
    dF: fc.integer({ min: 0, max: 5 }),
    kvMul: fc.integer({ min: 1, max: 2 }),
    gAdd: fc.integer({ min: 0, max: 2 }),
    dV: fc.integer({ min: 0, max: 2 }),
    noise: fc.constantFrom(0, 0, 0.1, 0.5),
    seed: fc.integer({ min: 0, max: 1000 }),
  })
  .chain((c) =>
    fc
      .record({
        // mostly no inserted layers: those cases are also checked unmasked
        positions: fc.oneof(
          fc.constant<number[]>([]),
          fc.constant<number[]>([]),
          fc.array(fc.integer({ min: 0, max: c.L - 1 }), { maxLength: 2 }),
        ),
      })
      .map((p) => ({ ...c, ...p })),
  );

function sourceOf(c: Case): ModelConfig {
  return makeConfig({
    family: c.family,
    tieWordEmbeddings: c.tied,
    hiddenSize: c.H,
    intermediateSize: c.F,
    numLayers: c.L,
    numHeads: c.nkv * c.g,
    numKvHeads: c.nkv,
    headDim: c.hd,
    vocabSize: 9,
    useMup: c.family === 'tele-flm',
    inputMult: c.family === 'tele-flm' ? 1.5 : 1,
    outputMult: c.family === 'tele-flm' ? 0.5 : 1,
    mupScaleFactor: c.family === 'tele-flm' ? 4 : 1,
    dtype: 'F32',
    rmsNormEps: 1e-5,
    ...(c.family === 'mistral' ? { slidingWindow: 3 } : {}),
  });
}

function planOf(src: ModelConfig, c: Case): GrowthPlan {
  const nkv2 = src.numKvHeads * c.kvMul;
  return parsePlan({
    targets: {
      hidden_size: src.hiddenSize * c.hMul + c.dH,
      intermediate_size: src.intermediateSize + c.dF,
      num_key_value_heads: nkv2,
      num_attention_heads: nkv2 * (c.g + c.gAdd),
      num_hidden_layers: src.numLayers + c.positions.length,
      vocab_size: src.vocabSize + c.dV,
    },
    init: { new: 'clone', noise: c.noise, std: 0.7 },
    placement: { method: 'explicit', positions: c.positions },
    seed: c.seed,
  });
}

/** Max |Δ| of logits over the source vocab and of the residual stream's old coordinates before the final norm. */
async function compare(srcDir: string, outDir: string, ids: number[], plain: boolean) {
  const s = await loadAll(srcDir);
  const o = await loadAll(outDir);
  const masks = plain ? undefined : await readMasks(join(outDir, MASKS_FILE), o.cfg);
  const a = naive(s.cfg, s.w, ids);
  const b = naive(o.cfg, o.w, ids, masks);
  const layerMap = readManifest(outDir)?.layerMap ?? [];
  let dLogits = 0;
  let dHidden = 0;
  let scale = 1;
  for (let t = 0; t < ids.length; t++) {
    for (let v = 0; v < s.cfg.vocabSize; v++) {
      dLogits = Math.max(dLogits, Math.abs(a.logits[t][v] - b.logits[t][v]));
      scale = Math.max(scale, Math.abs(a.logits[t][v]));
    }
    // boundary L is after the final norm (a tied hidden clone divides its gains by k there)
    for (let n = 0; n < s.cfg.numLayers; n++) {
      const m = grownBoundary(layerMap, n);
      for (let i = 0; i < s.cfg.hiddenSize; i++) dHidden = Math.max(dHidden, Math.abs(a.hidden[n][t][i] - b.hidden[m][t][i]));
    }
  }
  return { dLogits, dHidden, scale };
}

describe('init.new clone preserves the function (property, naive float64 judge)', () => {
  it('random configs (every family, GQA, tied) × clone with and without noise, whole and other hidden ratios', async () => {
    const { dir, cleanup } = tempDir();
    let k = 0;
    let exactCases = 0;
    let worst = 0;
    try {
      await fc.assert(
        fc.asyncProperty(caseArb, async (c) => {
          const src = sourceOf(c);
          const plan = planOf(src, c);
          const srcDir = join(dir, `s${k}`);
          const outDir = join(dir, `o${k++}`);
          await writeRandomCheckpoint(srcDir, src, 'F32', { seed: c.seed + 1 });
          const r = await growCheckpoint(srcDir, outDir, plan, { quiet: true });
          const ids = randomIds(5, src.vocabSize, c.seed);
          const masked = await compare(srcDir, outDir, ids, false);
          expect(masked.dLogits).toBeLessThanOrEqual(1e-5 * masked.scale);
          expect(masked.dHidden).toBeLessThanOrEqual(1e-5 * Math.max(1, masked.scale));
          worst = Math.max(worst, masked.dLogits / masked.scale);
          // exact: every width clone preserves unmasked; inserted layers (residual 0) and vocab padding aside
          const H2 = r.target.hiddenSize;
          if (H2 % src.hiddenSize === 0 && c.positions.length === 0) {
            exactCases++;
            expect(r.resolved.grownGroups).toEqual([]);
            const plain = await compare(srcDir, outDir, ids, true);
            expect(plain.dLogits).toBeLessThanOrEqual(1e-5 * plain.scale);
            expect(plain.dHidden).toBeLessThanOrEqual(1e-5 * Math.max(1, plain.scale));
            worst = Math.max(worst, plain.dLogits / plain.scale);
          }
        }),
        { numRuns: 20, seed: 7 },
      );
      expect(exactCases).toBeGreaterThanOrEqual(5);
      console.log(`[clone] worst relative |Δlogits| ${worst.toExponential(2)} (${exactCases} of 20 cases also unmasked)`);
    } finally {
      cleanup();
    }
  }, 120_000);
});

const BASE: Case = {
  family: 'llama',
  tied: false,
  H: 4,
  F: 3,
  nkv: 2,
  g: 2,
  hd: 2,
  L: 1,
  hMul: 1,
  dH: 0,
  dF: 0,
  kvMul: 1,
  gAdd: 0,
  dV: 0,
  positions: [],
  noise: 0,
  seed: 12, // its FFN clone map copies more than one source unit (seed 11's copies unit 0 five times)
};

/** Row r of a [rows, cols] tensor. */
const row = (w: Float32Array, cols: number, r: number) => Array.from(w.subarray(r * cols, (r + 1) * cols));
const col = (w: Float32Array, rows: number, cols: number, c: number) => Array.from({ length: rows }, (_, r) => w[r * cols + c]);

async function grown(c: Case, over: Record<string, unknown> = {}) {
  const { dir, cleanup } = tempDir();
  const src = sourceOf(c);
  await writeRandomCheckpoint(join(dir, 's'), src, 'F32', { seed: 3 });
  const plan = parsePlan({ ...(await import('./plan.ts')).planToJson(planOf(src, c)), ...over });
  await growCheckpoint(join(dir, 's'), join(dir, 'o'), plan, { quiet: true });
  const s = await loadAll(join(dir, 's'));
  const o = await loadAll(join(dir, 'o'));
  const masks = await readMasks(join(dir, 'o', MASKS_FILE), o.cfg);
  const manifest = JSON.parse(readFileSync(join(dir, 'o', 'flm-grow-manifest.json'), 'utf8')) as {
    plan: { init: unknown };
    masks: { schedule: { group: string }[] };
  };
  cleanup();
  return { s: s.w, o: o.w, src, masks, manifest };
}

const W = (l: number, n: string) => `model.layers.${l}.${n}.weight`;

describe('clones are copies with split out-weights', () => {
  it('FFN: each new unit is a source unit; its down column and the original share the old one', async () => {
    const { s, o, masks, manifest } = await grown({ ...BASE, dF: 5 });
    const [H, F, F2] = [4, 3, 8];
    const gate = o.get(W(0, 'mlp.gate_proj')) as Float32Array;
    const up = o.get(W(0, 'mlp.up_proj')) as Float32Array;
    const down = o.get(W(0, 'mlp.down_proj')) as Float32Array;
    const sGate = s.get(W(0, 'mlp.gate_proj')) as Float32Array;
    const sUp = s.get(W(0, 'mlp.up_proj')) as Float32Array;
    const sDown = s.get(W(0, 'mlp.down_proj')) as Float32Array;
    // which source unit each grown unit copies, found by comparing rows (not from the code's map)
    const srcOf = Array.from({ length: F2 }, (_, j) => {
      const hits = Array.from({ length: F }, (_, u) => u).filter(
        (u) =>
          JSON.stringify(row(gate, H, j)) === JSON.stringify(row(sGate, H, u)) &&
          JSON.stringify(row(up, H, j)) === JSON.stringify(row(sUp, H, u)),
      );
      expect(hits, `unit ${j}`).toHaveLength(1);
      return hits[0];
    });
    expect(srcOf.slice(0, F)).toEqual([0, 1, 2]);
    const count = (u: number) => srcOf.filter((x) => x === u).length;
    expect(new Set(srcOf.slice(F)).size).toBeGreaterThan(1); // seeded choice, not always one unit
    for (let j = 0; j < F2; j++) {
      const want = col(sDown, H, F, srcOf[j]).map((x) => x / count(srcOf[j]));
      const got = col(down, H, F2, j);
      for (let r = 0; r < H; r++) expect(got[r]).toBeCloseTo(want[r], 6);
    }
    // exact clones are ordinary units: mask 1, no ffn annealing
    expect(Array.from(masks.layers[0].ffn)).toEqual(new Array(F2).fill(1));
    expect(manifest.masks.schedule.map((e) => e.group)).not.toContain('ffn');
    expect(manifest.plan.init).toMatchObject({ new: 'clone', noise: 0 });
  });

  it('FFN with noise: copies differ, each group still sums to the old down column', async () => {
    const { s, o } = await grown({ ...BASE, dF: 3, noise: 0.2 });
    const [H, F, F2] = [4, 3, 6];
    const sDown = s.get(W(0, 'mlp.down_proj')) as Float32Array;
    const down = o.get(W(0, 'mlp.down_proj')) as Float32Array;
    const gate = o.get(W(0, 'mlp.gate_proj')) as Float32Array;
    const sGate = s.get(W(0, 'mlp.gate_proj')) as Float32Array;
    const srcOf = Array.from({ length: F2 }, (_, j) =>
      [0, 1, 2].find((u) => JSON.stringify(row(gate, H, j)) === JSON.stringify(row(sGate, H, u))),
    );
    let differs = 0;
    for (let u = 0; u < F; u++) {
      const group = srcOf.flatMap((x, j) => (x === u ? [j] : []));
      for (let r = 0; r < H; r++) {
        const sum = group.reduce((a, j) => a + down[r * F2 + j], 0);
        expect(sum).toBeCloseTo(sDown[r * F + u], 5);
        if (group.length > 1 && Math.abs(down[r * F2 + group[0]] - down[r * F2 + group[1]]) > 1e-4) differs++;
      }
    }
    expect(differs).toBeGreaterThan(0);
  });

  it('heads (GQA, new KV heads): a new query head copies an old head that reads the KV head its own KV head copies', async () => {
    // nh 4 / nkv 2 -> nh 12 / nkv 4 (group size 2 -> 3)
    const { s, o } = await grown({ ...BASE, kvMul: 2, gAdd: 1 });
    const [H, hd, g, g2, nh2, nkv2] = [4, 2, 2, 3, 12, 4];
    const head = (w: Float32Array, h: number) => JSON.stringify([...row(w, H, h * hd), ...row(w, H, h * hd + 1)]);
    const sq = s.get(W(0, 'self_attn.q_proj')) as Float32Array;
    const sk = s.get(W(0, 'self_attn.k_proj')) as Float32Array;
    const sv = s.get(W(0, 'self_attn.v_proj')) as Float32Array;
    const q = o.get(W(0, 'self_attn.q_proj')) as Float32Array;
    const k = o.get(W(0, 'self_attn.k_proj')) as Float32Array;
    const v = o.get(W(0, 'self_attn.v_proj')) as Float32Array;
    const kvSrc = Array.from({ length: nkv2 }, (_, kk) => {
      const hit = [0, 1].filter((u) => head(k, kk) === head(sk, u) && head(v, kk) === head(sv, u));
      expect(hit, `kv head ${kk}`).toHaveLength(1);
      return hit[0];
    });
    expect(kvSrc.slice(0, 2)).toEqual([0, 1]);
    for (let j = 0; j < nh2; j++) {
      const hit = [0, 1, 2, 3].filter((u) => head(q, j) === head(sq, u));
      expect(hit, `query head ${j}`).toHaveLength(1);
      // the source head's KV head is the one this head's KV head copies
      expect(Math.floor(hit[0] / g)).toBe(kvSrc[Math.floor(j / g2)]);
    }
  });

  it('hidden at a whole ratio: [x, x] (HyperCloning), consumer columns halved, producers copied', async () => {
    const { s, o, masks } = await grown({ ...BASE, hMul: 2 });
    const [H, F] = [4, 3];
    const sEmb = s.get('model.embed_tokens.weight') as Float32Array;
    const emb = o.get('model.embed_tokens.weight') as Float32Array;
    const sGate = s.get(W(0, 'mlp.gate_proj')) as Float32Array;
    const gate = o.get(W(0, 'mlp.gate_proj')) as Float32Array;
    const sDown = s.get(W(0, 'mlp.down_proj')) as Float32Array;
    const down = o.get(W(0, 'mlp.down_proj')) as Float32Array;
    for (let t = 0; t < 9; t++) expect(row(emb, 2 * H, t)).toEqual([...row(sEmb, H, t), ...row(sEmb, H, t)]);
    for (let f = 0; f < F; f++) {
      const half = row(sGate, H, f).map((x) => x / 2);
      expect(row(gate, 2 * H, f)).toEqual([...half, ...half]);
    }
    for (let r = 0; r < 2 * H; r++) expect(row(down, F, r)).toEqual(row(sDown, F, r % H));
    expect(Array.from(masks.hidden)).toEqual(new Array(2 * H).fill(1));
  });

  it('hidden at another ratio: masked, nothing split, new coordinates start at mask 0', async () => {
    const { s, o, masks, manifest } = await grown({ ...BASE, dH: 2 });
    const sGate = s.get(W(0, 'mlp.gate_proj')) as Float32Array;
    const gate = o.get(W(0, 'mlp.gate_proj')) as Float32Array;
    for (let f = 0; f < 3; f++) expect(row(gate, 6, f).slice(0, 4)).toEqual(row(sGate, 4, f));
    expect(Array.from(masks.hidden)).toEqual([1, 1, 1, 1, 0, 0]);
    expect(manifest.masks.schedule.map((e) => e.group)).toEqual(['hidden']);
  });

  it('random and zero are unchanged: new units are masked, zero writes zeros, random copies nothing', async () => {
    for (const init of ['random', 'zero'] as const) {
      const { s, o, masks } = await grown({ ...BASE, dF: 2 }, { init: { new: init, std: 0.7 } });
      const gate = o.get(W(0, 'mlp.gate_proj')) as Float32Array;
      const sGate = s.get(W(0, 'mlp.gate_proj')) as Float32Array;
      expect(Array.from(masks.layers[0].ffn)).toEqual([1, 1, 1, 0, 0]);
      for (const j of [3, 4]) {
        const r = row(gate, 4, j);
        if (init === 'zero') expect(r).toEqual([0, 0, 0, 0]);
        else for (let u = 0; u < 3; u++) expect(r).not.toEqual(row(sGate, 4, u));
      }
    }
  });
});

describe('cloning a source whose masks are still annealing', () => {
  it('clones carry the value of the unit they copy: the grown masked model is the masked source', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const src = sourceOf({ ...BASE, L: 2 });
      await writeRandomCheckpoint(join(dir, 'a'), src, 'F32', { seed: 5 });
      // a: H 4, F 3, 4/2 heads -> b: random new units, masks half annealed
      const toB = parsePlan({ targets: { hidden_size: 6, intermediate_size: 5, num_attention_heads: 6 }, init: { std: 0.7 } });
      await growCheckpoint(join(dir, 'a'), join(dir, 'b'), toB, { quiet: true });
      const b = await loadAll(join(dir, 'b'));
      const half = applyMaskValues(await readMasks(join(dir, 'b', MASKS_FILE), b.cfg), { hidden: 0.5, ffn: 0.25, heads: 0.75 });
      rmSync(join(dir, 'b', MASKS_FILE));
      await writeMasks(join(dir, 'b', MASKS_FILE), half);
      // b -> c cloned: hidden ×2 (exact), FFN and heads (exact), noise on
      const toC = parsePlan({
        targets: { hidden_size: 12, intermediate_size: 9, num_attention_heads: 12, num_key_value_heads: 4 },
        init: { new: 'clone', noise: 0.2 },
        seed: 3,
      });
      await growCheckpoint(join(dir, 'b'), join(dir, 'c'), toC, { quiet: true });
      const r = await compareGrown(join(dir, 'b'), join(dir, 'c'), 'masked', randomIds(6, 9, 4));
      expect(r.dLogits).toBeLessThanOrEqual(1e-5 * r.scale);
      const c = await readMasks(join(dir, 'c', MASKS_FILE), (await loadAll(join(dir, 'c'))).cfg);
      expect(Array.from(c.hidden)).toEqual([...half.hidden, ...half.hidden]);
    } finally {
      cleanup();
    }
  });
});

describe('Adam moments across a clone growth', () => {
  it('exact clones carry the moments of what they copy; masked clones (hidden at another ratio) start at 0', () => {
    const src = sourceOf(BASE);
    const plan = parsePlan({ targets: { hidden_size: 6, intermediate_size: 5 }, init: { new: 'clone' }, seed: 1 });
    const { target } = resolveTarget(src, plan, 'F32');
    const layout = buildLayout(src, target, plan, buildLayerMap(1, 1, []));
    const v = Float32Array.from({ length: 4 * 3 }, (_, k) => k + 1); // down [H 4, F 3]
    const g = growMomentTensor(layout, W(0, 'mlp.down_proj'), v); // [6, 5]
    for (let j = 0; j < 5; j++) {
      const column = col(g, 6, 5, j);
      expect(column.slice(4)).toEqual([0, 0]); // new hidden rows: masked clones
      const matches = [0, 1, 2].filter((u) => JSON.stringify(column.slice(0, 4)) === JSON.stringify(col(v, 4, 3, u)));
      expect(matches, `column ${j}`).toHaveLength(1);
      if (j < 3) expect(matches[0]).toBe(j);
    }
  });
});

describe('the trainer rebuilds a clone layout from the manifest', () => {
  it('same clone maps as the growth (moments land where their weights went)', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const src = sourceOf(BASE);
      await writeRandomCheckpoint(join(dir, 's'), src, 'F32', { seed: 3 });
      const plan = planOf(src, { ...BASE, dF: 4, kvMul: 2, dH: 2 });
      const r = await growCheckpoint(join(dir, 's'), join(dir, 'o'), plan, { quiet: true });
      const m = readManifest(join(dir, 'o')) as Manifest;
      expect((m as { plan?: { clones?: unknown } }).plan?.clones).toEqual({ exact: ['F', 'Q', 'KV'], masked: ['H'] });
      const again = layoutFromManifest(src, r.target, m);
      const direct = buildLayout(src, r.target, plan, r.layerMap);
      for (const d of ['H', 'F', 'Q', 'KV'] as const) expect(Array.from(again.maps[d])).toEqual(Array.from(direct.maps[d]));
    } finally {
      cleanup();
    }
  });
});

describe('verify of a clone growth in a 16-bit dtype', () => {
  it('gets a rounding tolerance from the manifest (split weights rounded), none in f32 or without exact clones', () => {
    const m = (exact: string[]) => ({ kind: 'grow', plan: { clones: { exact, masked: [] } } }) as unknown as Manifest;
    expect(roundingTolerance(m(['F']), 2, 'BF16')?.tolerance).toBe(15 * 2 ** -8);
    expect(roundingTolerance(m(['F']), 2, 'F32')).toBeUndefined();
    expect(roundingTolerance(m([]), 2, 'BF16')).toBeUndefined();
  });
});

describe('plan fields init.new / init.noise', () => {
  it('parses, refuses bad values naming the field, and takes the CLI flags', () => {
    expect(parsePlan({ init: { new: 'clone', noise: 0.1 } }).init).toMatchObject({ new: 'clone', noise: 0.1 });
    expect(() => parsePlan({ init: { new: 'copy' } })).toThrow(/init\.new.*"random", "zero", "clone"/);
    expect(() => parsePlan({ init: { new: 'clone', noise: -1 } })).toThrow(/init\.noise/);
    expect(() => parsePlan({ init: { new: 'clone', noise: 'a lot' } })).toThrow(/init\.noise/);
    expect(() => parsePlan({ init: { noise: 0.1 } })).toThrow(/init\.noise.*only applies to init\.new "clone"/);
    const zero = (() => {
      try {
        parsePlan({ mode: 'zero', init: { new: 'clone' } });
      } catch (e) {
        return e;
      }
    })();
    expect(zero).toBeInstanceOf(PlanError);
    expect(String(zero)).toMatch(/init\.new.*masked/);
    const p = applyPlanFlags(defaultPlan(), { init: 'clone', initNoise: 0.05 });
    expect(p.init).toMatchObject({ new: 'clone', noise: 0.05 });
  });

  it('exact clone groups do not anneal; a hidden ratio that is not whole does', () => {
    const src = sourceOf(BASE);
    const t = (hidden: number) =>
      resolveTarget(
        src,
        parsePlan({ targets: { hidden_size: hidden, intermediate_size: 6, num_attention_heads: 8 }, init: { new: 'clone' } }),
        'F32',
      ).grownGroups;
    expect(t(8)).toEqual([]);
    expect(t(6)).toEqual(['hidden']);
  });
});

describe('verify of a tied exact hidden clone', () => {
  it('compares the final normed state as k·(n/k): every boundary within f32 rounding, not 1 - 1/k', async () => {
    const { verifyGrowth } = await import('./verify.ts');
    const { initBackend } = await import('../engines/tfjs-backend.ts');
    await initBackend('wasm');
    const { dir, cleanup } = tempDir();
    try {
      const c: Case = { ...BASE, family: 'qwen2', tied: true, hMul: 2 };
      const src = sourceOf(c);
      await writeRandomCheckpoint(join(dir, 's'), src, 'F32', { seed: 5 });
      await growCheckpoint(join(dir, 's'), join(dir, 'o'), planOf(src, c), { quiet: true });
      const r = await verifyGrowth(join(dir, 's'), join(dir, 'o'), { tokens: 16, seq: 8, backend: 'wasm' });
      expect(r.passed).toBe(true);
      const last = r.hidden.find((h) => h.source === src.numLayers);
      expect(last?.grownScaledBy).toBe(2);
      for (const h of r.hidden) expect(h.relative).toBeLessThan(1e-5);
    } finally {
      cleanup();
    }
  });
});
