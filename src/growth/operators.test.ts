/** The operators' index maps, layer placement, distances and plan validation, against hand-derived expectations. */
import { describe, expect, it } from 'vitest';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { makeConfig } from '../spec/config.ts';
import { PlanError } from '../util/errors.ts';
import { parameterCount } from '../spec/arch.ts';
import { appendMap, expandBlocks, runsOf } from './axis-map.ts';
import { queryHeadMap, zeroModeNorm } from './operators.ts';
import { buildLayerMap, grownBoundary, pickLayers } from './depth.ts';
import { layerDistance } from './distance.ts';
import { applyPlanFlags, defaultPlan, parsePlan, readPlanFile, resolveTarget } from './plan.ts';
import { planReport } from './plan-report.ts';
import { countLabel } from '../util/format.ts';
import { growMomentTensor } from './moments.ts';
import { buildLayout } from './layout.ts';

const PLANS = join(import.meta.dirname, '../../growth-plans');

describe('axis maps', () => {
  it('append, expand and runs', () => {
    expect(Array.from(appendMap(2, 4))).toEqual([0, 1, -1, -1]);
    expect(Array.from(expandBlocks(Int32Array.of(1, -1, 0), 2))).toEqual([2, 3, -1, -1, 0, 1]);
    expect(runsOf(Int32Array.of(0, 1, -1, -1, 4, 5))).toEqual([
      { out: 0, src: 0, len: 2 },
      { out: 2, src: -1, len: 2 },
      { out: 4, src: 4, len: 2 },
    ]);
  });
});

describe('query heads keep their KV head (GQA)', () => {
  it('same group size: new heads appended', () => {
    expect(Array.from(queryHeadMap(4, 2, 6, 3))).toEqual([0, 1, 2, 3, -1, -1]);
  });
  it('larger groups: old heads first in their group, new heads fill the rest', () => {
    // nh 4, nkv 2 (g 2) -> nh 8, nkv 2 (g 4): group 0 = heads 0,1 + 2 new; group 1 = heads 2,3 + 2 new
    const m = queryHeadMap(4, 2, 8, 2);
    expect(Array.from(m)).toEqual([0, 1, -1, -1, 2, 3, -1, -1]);
    for (let j = 0; j < 8; j++) if (m[j] >= 0) expect(Math.floor(j / 4)).toBe(Math.floor(m[j] / 2));
  });
  it('shrinking groups is refused, naming the field', () => {
    expect(() => queryHeadMap(4, 1, 4, 2)).toThrow(/num_key_value_heads.*group size would shrink/);
    expect(() => queryHeadMap(4, 2, 6, 4)).toThrow(/does not divide/);
  });
});

describe('depth', () => {
  it('inserts after the chosen layers, repeats allowed', () => {
    const m = buildLayerMap(3, 6, [2, 0, 2]);
    expect(m.map((e) => `${e.source}${e.inserted ? '+' : ''}`)).toEqual(['0', '0+', '1', '2', '2+', '2+']);
    expect(grownBoundary(m, 0)).toBe(0);
    expect(grownBoundary(m, 1)).toBe(2);
    expect(grownBoundary(m, 3)).toBe(6);
  });
  it('wrong counts and indices are refused', () => {
    expect(() => buildLayerMap(3, 5, [0])).toThrow(PlanError);
    expect(() => buildLayerMap(3, 4, [3])).toThrow(/not a source layer index/);
    expect(() => buildLayerMap(3, 2, [])).toThrow(/fewer/);
  });
  it('picks by distance, ties by index, cycling past L', () => {
    expect(pickLayers([0.3, 0.1, 0.2, 0.1], 3, 'smallest')).toEqual([1, 3, 2]);
    expect(pickLayers([0.3, 0.1, 0.2], 2, 'largest')).toEqual([0, 2]);
    expect(pickLayers([0.2, 0.1], 3, 'smallest')).toEqual([1, 0, 1]);
  });
  it('distance of an identity layer is 0, of anything else > 0', () => {
    const x = Float32Array.from([1, 2, 3, -1, 0.5, 2]);
    expect(layerDistance(x, x.slice(), 3, 'cosine')).toBe(0);
    expect(layerDistance(x, x.slice(), 3, 'l2')).toBe(0);
    const y = x.map((v, i) => v + (i === 0 ? 1 : 0));
    expect(layerDistance(x, y, 3, 'cosine')).toBeGreaterThan(0);
    // l2 by hand: token 0 |Δ| = 1, |x| = sqrt(14); token 1 unchanged
    expect(layerDistance(x, y, 3, 'l2')).toBeCloseTo(1 / Math.sqrt(14) / 2, 12);
  });
});

describe('zero-mode norm rescaling', () => {
  it('is exact for power-of-two factors, rounded otherwise', () => {
    expect(zeroModeNorm(16, 64, 'BF16')).toMatchObject({ gainScale: 0.5, epsScale: 0.25, exactness: 'exact' });
    expect(zeroModeNorm(8192, 10240, 'BF16').exactness).toBe('rounded');
    expect(zeroModeNorm(8192, 10240, 'F32').exactness).toBe('f32-rounding');
  });
});

describe('plans', () => {
  const src = makeConfig({ hiddenSize: 64, intermediateSize: 176, numLayers: 4, numHeads: 4, vocabSize: 320, dtype: 'BF16' });
  it('every shipped plan parses', () => {
    for (const f of readdirSync(PLANS).filter((x) => x.endsWith('.json')))
      expect(() => readPlanFile(join(PLANS, f))).not.toThrow();
  });
  it('errors name the field', () => {
    expect(() => parsePlan({ targets: { hidden_sise: 5 } })).toThrow(/field "targets.hidden_sise": unknown field/);
    expect(() => parsePlan({ mode: 'maskd' })).toThrow(/field "mode": must be one of "masked", "zero"/);
    expect(() => parsePlan({ init: { std: { q: -1 } } })).toThrow(/field "init.std.q"/);
    expect(() => parsePlan({ targets: { num_hidden_layers: 2.5 } })).toThrow(/targets.num_hidden_layers.*integer/);
    expect(() => parsePlan({ schedule: [{ group: 'hidden' }, { group: 'hidden' }] })).toThrow(/schedule\[1\].group.*twice/);
    expect(() => parsePlan({ placement: { positions: [0, -1] } })).toThrow(/placement.positions\[1\]/);
  });
  it('impossible plans fail against the source', () => {
    const p = (t: Record<string, number>) => parsePlan({ targets: t });
    expect(() => resolveTarget(src, p({ hidden_size: 32 }), 'BF16')).toThrow(/targets.hidden_size.*cannot shrink/);
    expect(() => resolveTarget(src, p({ num_hidden_layers: 3 }), 'BF16')).toThrow(/targets.num_hidden_layers/);
    expect(() => resolveTarget(src, p({ num_attention_heads: 6, num_key_value_heads: 4 }), 'BF16')).toThrow(/does not divide/);
    expect(() => resolveTarget(src, p({ head_dim: 32 }), 'BF16')).toThrow(/head_dim cannot change/);
    expect(() => resolveTarget(src, p({ mup_scale_factor: 8 }), 'BF16')).toThrow(/use_mup/);
    const noHd = { ...src, raw: { ...src.raw } };
    delete noHd.raw.head_dim;
    expect(() => resolveTarget(noHd, p({ hidden_size: 72 }), 'BF16')).toThrow(/hidden_size.*num_attention_heads × head_dim/);
    expect(resolveTarget(noHd, p({ hidden_size: 80, num_attention_heads: 5 }), 'BF16').target.headDim).toBe(16);
  });
  it('µP: logit scale and input mult kept when mup_scale_factor changes', () => {
    const m = makeConfig({
      hiddenSize: 8,
      intermediateSize: 8,
      numLayers: 1,
      numHeads: 2,
      vocabSize: 8,
      useMup: true,
      inputMult: 1.5,
      outputMult: 0.5,
      mupScaleFactor: 16,
    });
    const t = resolveTarget(m, parsePlan({ targets: { mup_scale_factor: 80 } }), 'F32').target;
    expect(t.outputMult / t.mupScaleFactor).toBeCloseTo(0.5 / 16, 15);
    expect(t.inputMult).toBe(1.5);
  });
  it('CLI flags override the file and get the same validation', () => {
    const p = applyPlanFlags(readPlanFile(join(PLANS, 'tiny-stage1-to-stage2.json')), {
      hiddenSize: 96,
      positions: '0,2',
      mode: 'zero',
    });
    expect(p.targets.hidden_size).toBe(96);
    expect(p.placement).toMatchObject({ method: 'explicit', positions: [0, 2] });
    expect(p.mode).toBe('zero');
    expect(() => applyPlanFlags(defaultPlan(), { mode: 'nope' })).toThrow(/command-line flags: field "mode"/);
  });
  it('Tele-FLM stages: 102B -> 1T prints 1,083.74 B; 52B -> 102B counts like SPEC §6', () => {
    const c102 = makeConfig({
      hiddenSize: 10240,
      intermediateSize: 27264,
      numLayers: 80,
      numHeads: 80,
      vocabSize: 80000,
      dtype: 'BF16',
    });
    delete c102.raw.head_dim;
    const r = planReport(c102, readPlanFile(join(PLANS, 'tele-flm-102b-to-1t.json')));
    expect(r.parametersLabel).toBe('1,083.74 B');
    // independent count: embeddings + head + per layer 4H² + 3HF + 2H + final norm
    const H = 20480,
      F = 98304,
      L = 140,
      V = 80000;
    expect(r.parameters).toBe(2 * V * H + L * (4 * H * H + 3 * H * F + 2 * H) + H);
    const c52 = makeConfig({
      hiddenSize: 8192,
      intermediateSize: 21824,
      numLayers: 64,
      numHeads: 64,
      vocabSize: 80000,
      dtype: 'BF16',
    });
    const r2 = planReport(c52, readPlanFile(join(PLANS, 'tele-flm-52b-to-102b.json')));
    expect(r2.parameters).toBe(parameterCount({ ...c102 }));
    expect(countLabel(r2.parameters)).toBe('102.20 B');
    expect(r2.outputBytes).toBe(2 * r2.parameters);
  });
  it('tiny analogues keep the Tele-FLM ratios', () => {
    const a = readPlanFile(join(PLANS, 'tiny-stage1-to-stage2.json')).targets;
    const b = readPlanFile(join(PLANS, 'tiny-stage2-to-stage3.json')).targets;
    expect((a.hidden_size as number) / 64).toBeCloseTo(10240 / 8192, 6);
    expect((a.num_hidden_layers as number) / 4).toBeCloseTo(80 / 64, 6);
    expect((b.hidden_size as number) / (a.hidden_size as number)).toBeCloseTo(20480 / 10240, 6);
    expect((b.intermediate_size as number) / (a.intermediate_size as number)).toBeCloseTo(98304 / 27264, 2);
  });
});

describe('optimizer moments', () => {
  it('old slices copied, new entries and inserted layers 0', () => {
    const s = makeConfig({ hiddenSize: 2, intermediateSize: 2, numLayers: 1, numHeads: 1, headDim: 2, vocabSize: 3 });
    const plan = parsePlan({ targets: { hidden_size: 3, num_hidden_layers: 2 }, placement: { positions: [0] } });
    const { target } = resolveTarget(s, plan, 'F32');
    const layout = buildLayout(s, target, plan, buildLayerMap(1, 2, [0]));
    const emb = growMomentTensor(layout, 'model.embed_tokens.weight', Float32Array.from([1, 2, 3, 4, 5, 6]));
    expect(Array.from(emb)).toEqual([1, 2, 0, 3, 4, 0, 5, 6, 0]);
    const ins = growMomentTensor(layout, 'model.layers.1.self_attn.q_proj.weight', Float32Array.from([1, 2, 3, 4]));
    expect(Array.from(ins)).toEqual(new Array(6).fill(0));
    expect(() => growMomentTensor(layout, 'model.layers.0.self_attn.q_proj.weight', new Float32Array(3))).toThrow(/needs 4/);
  });
});
