/**
 * The operator table (operators.ts) is the one place an operator lives: every plan target field,
 * dimension, mask vector and mask group has exactly one owner, and every entry is exercised by
 * the preservation property on its own, in both modes. Adding an entry without adding its case
 * to ALONE below fails here.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { dimSize, type Dim } from '../spec/arch.ts';
import { makeConfig } from '../spec/config.ts';
import { MASK_GROUPS } from '../checkpoint/masks.ts';
import { buildLayerMap } from './depth.ts';
import { buildLayout } from './layout.ts';
import { grows, OPERATORS, ZERO_MODE_AXES, ZERO_MODE_INSERTED, type MaskVector } from './operators.ts';
import { growCheckpoint } from './grow.ts';
import { parsePlan, resolveTarget, TARGET_KEYS, type GrowthTargets } from './plan.ts';
import { compareGrown, randomIds, tempDir, writeRandomCheckpoint } from '../../test/support/growth.ts';

const DIMS: readonly Dim[] = ['V', 'H', 'F', 'Q', 'KV', 'HD'];
const MASK_VECTORS: readonly MaskVector[] = ['hidden', 'vocab', 'heads', 'ffn', 'residual'];

const src = makeConfig({
  hiddenSize: 8,
  intermediateSize: 6,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 2,
  vocabSize: 7,
  useMup: true,
  inputMult: 1.5,
  outputMult: 0.5,
  mupScaleFactor: 4,
  dtype: 'BF16',
  rmsNormEps: 1e-5,
});

/** One growth per operator that changes only that operator's fields (and what it implies). */
const ALONE: Record<string, GrowthTargets> = {
  hidden: { hidden_size: 13 },
  ffn: { intermediate_size: 9 },
  heads: { num_attention_heads: 6 }, // group size 2 -> 3: new heads placed inside the groups
  'kv-heads': { num_attention_heads: 8, num_key_value_heads: 4 }, // new KV heads need new query heads to read them
  depth: { num_hidden_layers: 4 },
  vocab: { vocab_size: 11 },
  'mup-logit-scale': { mup_scale_factor: 8 },
};

function owners<T>(get: (op: (typeof OPERATORS)[number]) => readonly T[] | T | undefined): Map<T, string[]> {
  const m = new Map<T, string[]>();
  for (const op of OPERATORS) {
    const v = get(op);
    for (const x of v === undefined ? [] : Array.isArray(v) ? (v as readonly T[]) : [v as T])
      m.set(x, [...(m.get(x) ?? []), op.name]);
  }
  return m;
}

describe('the operator table', () => {
  it('names are unique and every plan target field has exactly one owner', () => {
    expect(new Set(OPERATORS.map((o) => o.name)).size).toBe(OPERATORS.length);
    const byField = owners((o) => o.targets);
    for (const k of TARGET_KEYS) expect(byField.get(k), k).toHaveLength(1);
    expect([...byField.keys()].sort()).toEqual([...TARGET_KEYS].sort());
  });

  it('every dimension, mask vector and mask group has exactly one owner', () => {
    const byDim = owners((o) => o.dims);
    for (const d of DIMS) expect(byDim.get(d), d).toHaveLength(1);
    expect(byDim.size).toBe(DIMS.length);
    const byMask = owners((o) => o.mask);
    for (const v of MASK_VECTORS) expect(byMask.get(v), v).toHaveLength(1);
    const byGroup = owners((o) => o.maskGroup);
    for (const g of MASK_GROUPS) expect(byGroup.get(g), g).toHaveLength(1);
    // a mask vector with units needs its unit map; the residual's comes from the layer map
    for (const op of OPERATORS) if (op.mask !== undefined && op.mask !== 'residual') expect(op.units, op.name).toBeDefined();
    expect(OPERATORS.filter((o) => o.normRule !== undefined)).toHaveLength(1);
  });

  it('zero mode zeroes exactly the entries SPEC §3 lists', () => {
    const sorted = Object.fromEntries(Object.entries(ZERO_MODE_AXES).map(([r, d]) => [r, [...d].sort()]));
    expect(sorted).toEqual({ embed: ['H'], o: ['H', 'Q'], down: ['F', 'H'] });
    expect([...ZERO_MODE_INSERTED].sort()).toEqual(['down', 'o']);
  });

  it('every operator has a case below, and growing only its fields grows only it', () => {
    expect(Object.keys(ALONE).sort()).toEqual(OPERATORS.map((o) => o.name).sort());
    for (const op of OPERATORS) {
      const plan = parsePlan({
        targets: ALONE[op.name],
        placement: { positions: [0, 1].slice(0, (ALONE[op.name].num_hidden_layers ?? 2) - 2) },
      });
      const { target, grownGroups } = resolveTarget(src, plan, 'F32');
      const grown = OPERATORS.filter((o) => grows(o, src, target)).map((o) => o.name);
      // new KV heads come with new query heads (the heads operator), nothing else does
      expect(grown, op.name).toEqual(op.extent === undefined ? [] : op.name === 'kv-heads' ? ['heads', 'kv-heads'] : [op.name]);
      // a group that anneals only under some plans (vocab: "tokens") is absent under the default
      if (op.maskGroup !== undefined) {
        if (op.anneals?.(plan) ?? true) expect(grownGroups, op.name).toContain(op.maskGroup);
        else expect(grownGroups, op.name).not.toContain(op.maskGroup);
      }
      const layout = buildLayout(
        src,
        target,
        plan,
        buildLayerMap(src.numLayers, target.numLayers, plan.placement.positions ?? []),
      );
      for (const d of DIMS) {
        const map = layout.maps[d];
        expect(map.length, `${op.name} ${d}`).toBe(dimSize(target, d));
        const identity = map.length === dimSize(src, d) && map.every((s, k) => s === k);
        // head_dim (HD) never grows: its owner (heads) keeps the identity map
        const mine = (op.dims.includes(d) && d !== 'HD') || (op.name === 'kv-heads' && d === 'Q');
        expect(identity, `${op.name} ${d}`).toBe(!mine);
      }
    }
  });

  it.each(OPERATORS.flatMap((op) => (['masked', 'zero'] as const).map((mode) => [op.name, mode] as const)))(
    '%s alone, %s mode: the function is preserved',
    async (name, mode) => {
      const { dir, cleanup } = tempDir();
      try {
        const t = ALONE[name];
        const plan = parsePlan({
          targets: t,
          mode,
          placement: { positions: t.num_hidden_layers === undefined ? [] : [1, 0] },
          init: { std: 0.7 },
          seed: 4,
        });
        await writeRandomCheckpoint(join(dir, 's'), src, 'BF16', { seed: 2 });
        await growCheckpoint(join(dir, 's'), join(dir, 'o'), plan, { dtype: mode === 'zero' ? 'F32' : 'BF16', quiet: true });
        const r = await compareGrown(join(dir, 's'), join(dir, 'o'), mode, randomIds(6, src.vocabSize, 9));
        expect(r.dLogits).toBeLessThanOrEqual(1e-5 * r.scale);
        expect(r.dHidden).toBeLessThanOrEqual(1e-5 * r.scale);
        expect(r.newNonZero).toBe(0);
      } finally {
        cleanup();
      }
    },
  );
});

describe('init.new clone in the operator table', () => {
  it('every operator growing a width (H, F, Q, KV) has a clone rule; no other one does', () => {
    const width: readonly Dim[] = ['H', 'F', 'Q', 'KV'];
    for (const op of OPERATORS) expect(op.clone !== undefined, op.name).toBe(op.dims.some((d) => width.includes(d)));
  });

  const cases: [string, GrowthTargets][] = [
    ['hidden (whole ratio)', { hidden_size: 16 }],
    ['hidden (other ratio)', ALONE.hidden],
    ...OPERATORS.filter((op) => op.clone !== undefined && op.name !== 'hidden').map((op): [string, GrowthTargets] => [
      op.name,
      ALONE[op.name],
    ]),
  ];
  it.each(cases)('%s alone, cloned: masked model preserved, and the plain one where the clone is exact', async (_n, t) => {
    const { dir, cleanup } = tempDir();
    try {
      const plan = parsePlan({ targets: t, init: { new: 'clone', noise: 0.3 }, seed: 4 });
      await writeRandomCheckpoint(join(dir, 's'), src, 'BF16', { seed: 2 });
      const r = await growCheckpoint(join(dir, 's'), join(dir, 'o'), plan, { dtype: 'F32', quiet: true });
      const ids = randomIds(6, src.vocabSize, 9);
      const masked = await compareGrown(join(dir, 's'), join(dir, 'o'), 'masked', ids);
      expect(masked.dLogits).toBeLessThanOrEqual(1e-5 * masked.scale);
      const exact = OPERATORS.every((op) => !grows(op, src, r.target) || op.clone?.exact(src, r.target) !== false);
      expect(exact).toBe(r.target.hiddenSize % src.hiddenSize === 0);
      if (exact) {
        // compareGrown's zero mode reads no masks: the plain model
        const plain = await compareGrown(join(dir, 's'), join(dir, 'o'), 'zero', ids);
        expect(plain.dLogits).toBeLessThanOrEqual(1e-5 * plain.scale);
        expect(plain.dHidden).toBeLessThanOrEqual(1e-5 * plain.scale);
      }
    } finally {
      cleanup();
    }
  });
});
