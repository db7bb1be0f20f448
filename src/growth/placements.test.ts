/**
 * Depth placements (operators.ts PLACEMENTS, depth.ts): each method's layer map against maps
 * written out by hand here, their refusals, what `plan` says about them (layer map, no
 * calibration pass), and the property: every placement × init.layers × mode preserves the
 * function, judged by the naive float64 reference (test/reference/naive-llama.ts).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { makeConfig, type ModelConfig } from '../spec/config.ts';
import { FAMILY_NAMES, type FamilyName } from '../spec/families.ts';
import { readManifest } from '../checkpoint/manifest.ts';
import { PLACEMENTS, PLACEMENT_METHODS, type PlacementMethod } from './operators.ts';
import { applyPlanFlags, defaultPlan, parsePlan, type GrowthPlan, type PlacementPlan } from './plan.ts';
import { planReport } from './plan-report.ts';
import { growCheckpoint } from './grow.ts';
import { verifyGrowth } from './verify.ts';
import { compareGrown, loadAll, randomIds, tempDir, writeRandomCheckpoint } from '../../test/support/growth.ts';

/** "0 1 1* 2": the source layer of each output layer, `*` marking an inserted one. */
function map(s: string): { source: number; inserted: boolean }[] {
  return s.split(' ').map((t) => ({ source: Number(t.replace('*', '')), inserted: t.endsWith('*') }));
}

function layerMap(method: PlacementMethod, L: number, L2: number, extra: Partial<PlacementPlan> = {}) {
  const p: PlacementPlan = { method, metric: 'cosine', order: 'smallest', ...extra };
  const build = PLACEMENTS[method].layerMap;
  if (build === undefined) throw new Error(`${method} has no deterministic map`);
  return build(L, L2, p);
}

const HAND_MAPS = [
  // uniform: after layer ceil((i+1)·L/k) − 1
  ['uniform', 4, 6, {}, '0 1 1* 2 3 3*'],
  ['uniform', 5, 7, {}, '0 1 2 2* 3 4 4*'],
  ['uniform', 3, 4, {}, '0 1 2 2*'],
  ['uniform', 6, 9, {}, '0 1 1* 2 3 3* 4 5 5*'],
  ['uniform', 2, 7, {}, '0 0* 0* 1 1* 1* 1*'], // k = 5 > L = 2: 2 then 3 copies
  ['uniform', 1, 3, {}, '0 0* 0*'],
  // top / bottom: one copy after each of the k top-most / bottom-most layers, cycling past L
  ['top', 3, 5, {}, '0 1 1* 2 2*'],
  ['top', 3, 7, {}, '0 0* 1 1* 2 2* 2*'],
  ['top', 4, 5, {}, '0 1 2 3 3*'],
  ['bottom', 3, 5, {}, '0 0* 1 1* 2'],
  ['bottom', 3, 7, {}, '0 0* 0* 1 1* 2 2*'],
  ['bottom', 4, 5, {}, '0 0* 1 2 3'],
  // stack: the source sequence repeated on top
  ['stack', 3, 6, {}, '0 1 2 0* 1* 2*'],
  ['stack', 3, 5, {}, '0 1 2 0* 1*'],
  ['stack', 2, 7, {}, '0 1 0* 1* 0* 1* 0*'],
  ['stack', 1, 3, {}, '0 0* 0*'],
  // interleave: a copy of the last layer of each group of `every`
  ['interleave', 4, 6, {}, '0 1 1* 2 3 3*'],
  ['interleave', 6, 8, {}, '0 1 2 2* 3 4 5 5*'],
  ['interleave', 5, 7, {}, '0 1 1* 2 3 3* 4'], // every defaults to floor(5/2) = 2; layer 4 is a group of one, no copy
  ['interleave', 6, 8, { every: 3 }, '0 1 2 2* 3 4 5 5*'],
  ['interleave', 7, 9, { every: 3 }, '0 1 2 2* 3 4 5 5* 6'],
  ['interleave', 3, 6, { every: 1 }, '0 0* 1 1* 2 2*'],
  ['interleave', 3, 4, {}, '0 1 2 2*'],
  // explicit: after each listed layer, repeats allowed, any order
  ['explicit', 3, 5, { positions: [2, 0] }, '0 0* 1 2 2*'],
  ['explicit', 2, 5, { positions: [1, 1, 0] }, '0 0* 1 1* 1*'],
] as const;

describe('placement layer maps (written out by hand)', () => {
  it('every method but distance has hand-written maps here', () => {
    expect([...new Set(HAND_MAPS.map((h) => h[0]))].sort()).toEqual(PLACEMENT_METHODS.filter((m) => m !== 'distance').sort());
  });

  it.each(HAND_MAPS)('%s %i -> %i %o', (method, L, L2, extra, want) => {
    expect(layerMap(method, L, L2, extra as Partial<PlacementPlan>)).toEqual(map(want));
  });

  it('uniform with k | L is interleave with every = L/k (LLaMA-Pro spacing)', () => {
    for (const [L, k] of [
      [4, 2],
      [6, 3],
      [8, 2],
      [6, 1],
      [5, 5],
    ])
      expect(layerMap('uniform', L, L + k), `${L} + ${k}`).toEqual(layerMap('interleave', L, L + k, { every: L / k }));
  });

  it('refuses what a method cannot do, naming the field', () => {
    // interleave: no group size inserts 3 layers into 5 (floor(5/e) is 5, 2, 1, 1, 1)
    expect(() => layerMap('interleave', 5, 8)).toThrow(/placement\.every.*interleave reaches num_hidden_layers 6, 7, 10/);
    expect(() => layerMap('interleave', 6, 8, { every: 2 })).toThrow(/placement\.every.*every 2 of 6 layers inserts 3/);
    expect(() => layerMap('interleave', 2, 5)).toThrow(/placement\.every/); // more copies than layers
    expect(() => layerMap('interleave', 4, 5, { every: 5 })).toThrow(/placement\.every.*inserts 0/);
    expect(() => layerMap('explicit', 3, 5)).toThrow(/placement\.positions.*needs 2 positions/);
    expect(() => layerMap('explicit', 3, 5, { positions: [0] })).toThrow(/placement\.positions/);
    expect(() => layerMap('explicit', 3, 4, { positions: [3] })).toThrow(/placement\.positions.*not a source layer index/);
    expect(PLACEMENTS.distance.layerMap).toBeUndefined();
    expect(PLACEMENT_METHODS.filter((m) => PLACEMENTS[m].calibrated)).toEqual(['distance']);
  });
});

describe('plan fields', () => {
  it('placement.method takes every method; placement.every implies interleave and belongs to it alone', () => {
    expect(PLACEMENT_METHODS.map((m) => parsePlan({ placement: { method: m } }).placement.method)).toEqual([
      'distance',
      'explicit',
      'uniform',
      'top',
      'bottom',
      'stack',
      'interleave',
    ]);
    expect(() => parsePlan({ placement: { method: 'diagonal' } })).toThrow(/placement\.method.*"stack", "interleave"/);
    expect(parsePlan({ placement: { every: 3 } }).placement).toMatchObject({ method: 'interleave', every: 3 });
    expect(() => parsePlan({ placement: { method: 'uniform', every: 2 } })).toThrow(
      /placement\.every.*"interleave", not "uniform"/,
    );
    expect(() => parsePlan({ placement: { every: 0 } })).toThrow(/placement\.every.*integer >= 1/);
    expect(() => parsePlan({ placement: { every: 1.5 } })).toThrow(/placement\.every/);
  });

  it('--placement-every sets placement.every (and interleave); another --placement drops a file’s every', () => {
    expect(applyPlanFlags(defaultPlan(), { placementEvery: 2 }).placement).toMatchObject({ method: 'interleave', every: 2 });
    const file = parsePlan({ placement: { method: 'interleave', every: 4 } });
    expect(applyPlanFlags(file, { placement: 'top' }).placement.every).toBeUndefined();
    expect(applyPlanFlags(file, { placement: 'interleave' }).placement.every).toBe(4);
    expect(() => applyPlanFlags(defaultPlan(), { placement: 'stack', placementEvery: 2 })).toThrow(/placement\.every/);
  });
});

describe('plan report', () => {
  const src = makeConfig({ hiddenSize: 64, intermediateSize: 176, numLayers: 4, numHeads: 4, vocabSize: 256, dtype: 'F32' });
  const grow = (placement: Record<string, unknown>) => parsePlan({ targets: { num_hidden_layers: 6 }, placement });

  it('deterministic methods: the layer map, and no calibration pass in the text or the memory estimate', () => {
    const want: [Record<string, unknown>, string][] = [
      [{ method: 'uniform' }, '0 1 1* 2 3 3*'],
      [{ method: 'top' }, '0 1 2 2* 3 3*'],
      [{ method: 'bottom' }, '0 0* 1 1* 2 3'],
      [{ method: 'stack' }, '0 1 2 3 0* 1*'],
      [{ method: 'interleave' }, '0 1 1* 2 3 3*'],
      [{ method: 'explicit', positions: [3, 0] }, '0 0* 1 2 3 3*'],
    ];
    for (const [placement, m] of want) {
      const r = planReport(src, grow(placement));
      expect(r.layerMap, String(placement.method)).toEqual(map(m));
      expect(r.peakMemory.calibration, String(placement.method)).toBeUndefined();
      expect(r.peakMemoryBytes).toBe(r.peakMemory.write);
      expect(r.layerPositionsNote, String(placement.method)).not.toMatch(/calibration|random token ids|distance/);
      // every inserted layer's tensors name the source layer they copy
      const ins = r.layerMap?.findIndex((e) => e.inserted) ?? -1;
      const q = r.tensors.find((t) => t.name === `model.layers.${ins}.self_attn.q_proj.weight`);
      expect(q?.source).toBe(`model.layers.${map(m)[ins].source}.self_attn.q_proj.weight`);
    }
  });

  it('distance: no map before grow time, and the calibration pass in the estimate', () => {
    const r = planReport(src, grow({ method: 'distance' }));
    expect(r.layerMap).toBeNull();
    expect(r.peakMemory.calibration).toBeGreaterThan(0);
    expect(r.layerPositionsNote).toMatch(/chosen at grow time by cosine distance/);
  });
});

// ---- the property ----------------------------------------------------------------------------

const DETERMINISTIC = PLACEMENT_METHODS.filter((m) => !PLACEMENTS[m].calibrated);

interface Case {
  H: number;
  F: number;
  nkv: number;
  g: number;
  L: number;
  family: FamilyName;
  tied: boolean;
  /** New layers (interleave: derived from `every`). */
  k: number;
  every: number;
  giveEvery: boolean;
  /** Width growth alongside (0: none): placements compose with the other operators. */
  dH: number;
  dF: number;
  positions: number[];
  seed: number;
}

const caseArb: fc.Arbitrary<Case> = fc
  .record({
    H: fc.constantFrom(4, 6, 8),
    F: fc.integer({ min: 2, max: 6 }),
    nkv: fc.integer({ min: 1, max: 2 }),
    g: fc.integer({ min: 1, max: 2 }),
    L: fc.integer({ min: 1, max: 4 }),
    family: fc.constantFrom<FamilyName>(...FAMILY_NAMES),
    tied: fc.boolean(),
    k: fc.integer({ min: 1, max: 5 }),
    every: fc.integer({ min: 1, max: 4 }),
    giveEvery: fc.boolean(),
    dH: fc.constantFrom(0, 0, 2, 3),
    dF: fc.integer({ min: 0, max: 2 }),
    seed: fc.integer({ min: 0, max: 1000 }),
  })
  .chain(
    (c) =>
      fc.record({
        ...Object.fromEntries(Object.entries(c).map(([k, v]) => [k, fc.constant(v)])),
        positions: fc.array(fc.integer({ min: 0, max: c.L - 1 }), { minLength: c.k, maxLength: c.k }),
      }) as fc.Arbitrary<Case>,
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
    headDim: 2,
    vocabSize: 9,
    useMup: c.family === 'tele-flm',
    inputMult: c.family === 'tele-flm' ? 1.5 : 1,
    outputMult: c.family === 'tele-flm' ? 0.5 : 1,
    mupScaleFactor: c.family === 'tele-flm' ? 4 : 1,
    slidingWindow: c.family === 'mistral' ? 3 : undefined,
    dtype: 'F32',
    rmsNormEps: 1e-5,
  });
}

function planOf(c: Case, method: PlacementMethod, layers: 'copy' | 'random', mode: 'masked' | 'zero'): GrowthPlan {
  const every = Math.min(c.every, c.L);
  const k = method === 'interleave' ? Math.floor(c.L / every) : c.k;
  return parsePlan({
    targets: { num_hidden_layers: c.L + k, hidden_size: c.H + c.dH, intermediate_size: c.F + c.dF },
    mode,
    init: { std: 0.7, layers },
    placement: {
      method,
      ...(method === 'explicit' ? { positions: c.positions.slice(0, k) } : {}),
      ...(method === 'interleave' && c.giveEvery ? { every } : {}),
    },
    seed: c.seed,
  });
}

describe('every placement × init.layers × mode preserves the function (property, naive float64 judge)', () => {
  const combos = DETERMINISTIC.flatMap((m) =>
    (['copy', 'random'] as const).flatMap((init) => (['masked', 'zero'] as const).map((mode) => [m, init, mode] as const)),
  );
  // one random config per combination, a different one for each (24 in all): a few seconds
  it.each(combos.map((c, i) => [...c, i] as const))('%s, init.layers %s, %s mode', async (method, init, mode, i) => {
    const { dir, cleanup } = tempDir();
    let n = 0;
    try {
      await fc.assert(
        fc.asyncProperty(caseArb, async (c) => {
          const src = sourceOf(c);
          const plan = planOf(c, method, init, mode);
          const [s, o] = [join(dir, `s${n}`), join(dir, `o${n++}`)];
          await writeRandomCheckpoint(s, src, 'F32', { seed: c.seed + 1 });
          const r = await growCheckpoint(s, o, plan, { quiet: true });
          // the map the grow used is the one plan states, recorded in the manifest
          expect(readManifest(o)?.layerMap).toEqual(r.layerMap);
          expect(r.layerMap.filter((e) => !e.inserted).map((e) => e.source)).toEqual([...Array(c.L).keys()]);
          const d = await compareGrown(s, o, mode, randomIds(6, src.vocabSize, c.seed));
          expect(d.dLogits).toBeLessThanOrEqual(1e-5 * d.scale);
          expect(d.dHidden).toBeLessThanOrEqual(1e-5 * Math.max(1, d.scale));
        }),
        { numRuns: 1, seed: 7 + i },
      );
    } finally {
      cleanup();
    }
  });
});

// stack is the one placement whose copies do not follow the layer they copy; interleave stands for the positional ones
describe('inserted layers hold what init.layers says, where the placement puts them', () => {
  const src = makeConfig({
    hiddenSize: 8,
    intermediateSize: 6,
    numLayers: 3,
    numHeads: 4,
    numKvHeads: 2,
    vocabSize: 9,
    dtype: 'F32',
  });
  const roles = ['self_attn.q_proj', 'self_attn.k_proj', 'mlp.gate_proj', 'mlp.up_proj', 'input_layernorm'];

  it.each([
    ['stack', {}, 6, '0 1 2 0* 1* 2*'],
    ['interleave', {}, 6, '0 0* 1 1* 2 2*'],
  ] as const)(
    '%s: copy init copies the named source layer (zero mode: o/down 0); random init copies none',
    async (method, extra, L2, want) => {
      const { dir, cleanup } = tempDir();
      try {
        await writeRandomCheckpoint(join(dir, 's'), src, 'F32', { seed: 3 });
        const s = await loadAll(join(dir, 's'));
        const expected = map(want);
        for (const [init, mode] of [
          ['copy', 'zero'],
          ['random', 'masked'],
        ] as const) {
          const out = join(dir, `${init}-${mode}`);
          const plan = parsePlan({
            targets: { num_hidden_layers: L2 },
            mode,
            init: { layers: init },
            placement: { method, ...extra },
          });
          const r = await growCheckpoint(join(dir, 's'), out, plan, { quiet: true });
          expect(r.layerMap).toEqual(expected);
          // the project's verify maps boundaries past inserted layers by position (stack's sit on top)
          expect((await verifyGrowth(join(dir, 's'), out, { tokens: 8, seq: 4, throwOnFail: false })).passed).toBe(true);
          const o = await loadAll(out);
          expected.forEach((e, i) => {
            for (const role of roles) {
              const got = o.w.get(`model.layers.${i}.${role}.weight`);
              const from = s.w.get(`model.layers.${e.source}.${role}.weight`);
              if (!e.inserted || init === 'copy') expect(got, `${init} ${i} ${role}`).toEqual(from);
              else if (role !== 'input_layernorm')
                for (let l = 0; l < src.numLayers; l++)
                  expect(got, `${init} ${i} ${role}`).not.toEqual(s.w.get(`model.layers.${l}.${role}.weight`));
            }
            if (e.inserted && mode === 'zero')
              for (const role of ['self_attn.o_proj', 'mlp.down_proj'])
                expect(
                  o.w.get(`model.layers.${i}.${role}.weight`)?.every((x) => x === 0),
                  `${i} ${role}`,
                ).toBe(true);
          });
        }
      } finally {
        cleanup();
      }
    },
  );
});

describe('flm-grow plan --placement (CLI)', () => {
  const ROOT = join(import.meta.dirname, '../..');
  const FIX = join(ROOT, 'fixtures/hf/llama-tiny-f32'); // 4 layers
  const cli = (...args: string[]) => {
    const r = spawnSync(process.execPath, [join(ROOT, 'bin/flm-grow.js'), ...args], { encoding: 'utf8', cwd: ROOT });
    return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
  };

  it('--json gives the layer map of a deterministic placement; the text prints it; a bad --placement-every exits 2 naming the field', () => {
    const j = cli('plan', FIX, '--num-hidden-layers', '7', '--placement', 'stack', '--json');
    expect(j.code, j.err).toBe(0);
    const r = JSON.parse(j.out) as { layerMap: unknown; plan: { placement: unknown }; peakMemory: { calibration?: number } };
    expect(r.layerMap).toEqual(map('0 1 2 3 0* 1* 2*'));
    expect(r.peakMemory.calibration).toBeUndefined();
    const t = cli('plan', FIX, '--num-hidden-layers', '6', '--placement-every', '2');
    expect(t.code, t.err).toBe(0);
    expect(t.out).toContain('layer map:  0 1 1* 2 3 3*');
    expect(t.out).toContain('interleave: a copy after every 2 layers');
    const bad = cli('plan', FIX, '--num-hidden-layers', '6', '--placement-every', '3');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/placement\.every/);
  });
});
