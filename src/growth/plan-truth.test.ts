/**
 * Plans that tell the truth (issue 15): a plan names the source it expects and is refused on
 * another; sizes that change without being named are said; distance placement prints no layer
 * map it cannot know; the memory estimate includes the calibration pass; calibration takes text
 * and token files; grow with nothing to grow to refuses.
 */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeConfig } from '../spec/config.ts';
import { Checkpoint } from '../checkpoint/checkpoint.ts';
import { applyPlanFlags, defaultPlan, parsePlan, readPlanFile, resolveTarget } from './plan.ts';
import { planReport } from './plan-report.ts';
import { requirePlanOrTarget } from './plan-flags.ts';
import { calibrationIds, describeCalibration } from './select-layers.ts';
import { tempDir, writeRandomCheckpoint } from '../../test/support/growth.ts';

const ROOT = join(import.meta.dirname, '../..');
const PLANS = join(ROOT, 'growth-plans');
const c52 = makeConfig({
  hiddenSize: 8192,
  intermediateSize: 21824,
  numLayers: 64,
  numHeads: 64,
  vocabSize: 80384,
  dtype: 'BF16',
});
const c102 = makeConfig({
  hiddenSize: 10240,
  intermediateSize: 27264,
  numLayers: 80,
  numHeads: 80,
  vocabSize: 80384,
  dtype: 'BF16',
});

describe('plans name their source', () => {
  it('the 102B -> 1T plan is refused on a 52B config, naming the field; each plan takes its own source', () => {
    expect(() => planReport(c52, readPlanFile(join(PLANS, 'tele-flm-102b-to-1t.json')))).toThrow(
      /field "source\.hidden_size".*10240.*8192/,
    );
    expect(() => planReport(c102, readPlanFile(join(PLANS, 'tele-flm-52b-to-102b.json')))).toThrow(/source\.hidden_size/);
    expect(planReport(c52, readPlanFile(join(PLANS, 'tele-flm-52b-to-102b.json'))).parametersLabel).toMatch(/^102\.2\d B$/);
    expect(planReport(c102, readPlanFile(join(PLANS, 'tele-flm-102b-to-1t.json'))).parametersLabel).toMatch(/^1,083\.7\d B$/);
    expect(() => parsePlan({ source: { hidden: 3 } })).toThrow(/source\.hidden/);
  });

  it('a target flag re-plans that dimension (a 2-layer rehearsal of the 64 -> 80 plan), other source fields still checked', () => {
    const two = { ...c52, numLayers: 2 };
    const plan = readPlanFile(join(PLANS, 'tele-flm-52b-to-102b.json'));
    expect(() => resolveTarget(two, plan, 'BF16')).toThrow(/source\.num_hidden_layers/);
    const rehearsal = applyPlanFlags(plan, { numHiddenLayers: 3 });
    expect(resolveTarget(two, rehearsal, 'BF16').target.numLayers).toBe(3);
    expect(() => resolveTarget({ ...c102, numLayers: 2 }, rehearsal, 'BF16')).toThrow(/source\.hidden_size/);
  });
});

describe('plan output', () => {
  const small = makeConfig({ hiddenSize: 64, intermediateSize: 176, numLayers: 4, numHeads: 4, vocabSize: 256, dtype: 'F32' });

  it('says when KV heads follow the query heads (4 -> 5)', () => {
    const r = planReport(small, applyPlanFlags(defaultPlan(), { numAttentionHeads: 5, hiddenSize: 80 }));
    expect((r.targetConfig as Record<string, number>).num_key_value_heads).toBe(5);
    expect(r.notes.join('\n')).toMatch(/num_key_value_heads 4 -> 5: not in the plan/);
    expect(planReport(small, applyPlanFlags(defaultPlan(), { hiddenSize: 80 })).notes).toEqual([]);
  });

  it('distance placement: no layer map (chosen at grow time), says the calibration ids are random; explicit: the map', () => {
    const d = planReport(small, applyPlanFlags(defaultPlan(), { numHiddenLayers: 6 }));
    expect(d.layerMap).toBeNull();
    expect(d.layerPositionsNote).toMatch(/chosen at grow time by cosine distance/);
    expect(d.layerPositionsNote).toMatch(/random token ids \(seed 0\), not text/);
    expect(d.tensors.filter((t) => t.name.startsWith('model.layers.3.')).every((t) => t.source === undefined)).toBe(true);
    expect(JSON.parse(JSON.stringify(d)).layerMap).toBeNull();
    const e = planReport(small, applyPlanFlags(defaultPlan(), { numHiddenLayers: 6, positions: '1,2' }));
    expect(e.layerMap?.filter((m) => m.inserted).map((m) => m.source)).toEqual([1, 2]);
    expect(e.peakMemory.calibration).toBeUndefined();
  });

  it('peak memory includes the calibration pass at 52B widths and says how to lower it', () => {
    const plan = applyPlanFlags(readPlanFile(join(PLANS, 'tele-flm-52b-to-102b.json')), { numHiddenLayers: 3 });
    const r = planReport({ ...c52, numLayers: 2 }, plan);
    expect(r.peakMemory.calibration).toBeGreaterThan(2e9);
    expect(r.peakMemory.calibration).toBeLessThan(4.5e9);
    expect(r.peakMemoryBytes).toBe(r.peakMemory.calibration);
    expect(r.peakMemory.note).toMatch(/--calibration-tokens/);
    const fewer = planReport({ ...c52, numLayers: 2 }, applyPlanFlags(plan, { calibrationTokens: 512 }));
    expect(fewer.peakMemoryBytes).toBeLessThan(r.peakMemoryBytes);
    const explicit = planReport({ ...c52, numLayers: 2 }, applyPlanFlags(plan, { positions: '0' }));
    expect(explicit.peakMemoryBytes).toBe(explicit.peakMemory.write);
    expect(explicit.peakMemoryBytes).toBeLessThan(1e9);
  });
});

describe('calibration tokens', () => {
  let tmp: { dir: string; cleanup: () => void };
  let dir: string;
  const cfg = makeConfig({
    hiddenSize: 16,
    intermediateSize: 24,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 4,
    vocabSize: 300,
    dtype: 'F32',
  });
  beforeAll(async () => {
    tmp = tempDir('flm-grow-cal-');
    dir = join(tmp.dir, 'ck');
    await writeRandomCheckpoint(dir, cfg, 'F32', { seed: 3 });
  });
  afterAll(() => tmp.cleanup());

  it('a text file is tokenised (byte tokenizer here), a .u16/.u32 file read as ids, an id list as before', async () => {
    const ck = await Checkpoint.open(dir);
    try {
      const cal = { ...defaultPlan().calibration, seq: 4, tokens: 8 };
      writeFileSync(join(tmp.dir, 'a.txt'), 'hello world, calibration text');
      expect((await calibrationIds(ck, { ...cal, file: join(tmp.dir, 'a.txt') })).flat()).toEqual([...Buffer.from('hello wo')]);
      writeFileSync(join(tmp.dir, 'a.u16'), Buffer.from(Uint16Array.from([1, 2, 299, 4]).buffer));
      expect(await calibrationIds(ck, { ...cal, file: join(tmp.dir, 'a.u16') })).toEqual([[1, 2, 299, 4]]);
      writeFileSync(join(tmp.dir, 'a.u32'), Buffer.from(Uint32Array.from([5, 6, 7, 8, 9, 10, 11, 12]).buffer));
      expect(await calibrationIds(ck, { ...cal, file: join(tmp.dir, 'a.u32') })).toEqual([
        [5, 6, 7, 8],
        [9, 10, 11, 12],
      ]);
      writeFileSync(join(tmp.dir, 'ids.txt'), '1 2 3 4');
      expect(await calibrationIds(ck, { ...cal, file: join(tmp.dir, 'ids.txt') })).toEqual([[1, 2, 3, 4]]);
      writeFileSync(join(tmp.dir, 'bad.u16'), Buffer.from(Uint16Array.from([1, 300]).buffer));
      await expect(calibrationIds(ck, { ...cal, file: join(tmp.dir, 'bad.u16') })).rejects.toThrow(
        /calibration\.file.*token 1 = 300/,
      );
      expect(describeCalibration(cal)).toMatch(/random token ids/);
      expect(describeCalibration({ ...cal, file: 'x.txt' })).toBe('calibration tokens from x.txt');
    } finally {
      await ck.close();
    }
  });

  it('grow with neither a plan nor a target refuses (library check and CLI, exit 2, nothing written)', () => {
    expect(() => requirePlanOrTarget({})).toThrow(/nothing to grow to: give --plan FILE or a target/);
    expect(() => requirePlanOrTarget({ 'num-hidden-layers': 3 })).not.toThrow();
    const out = join(tmp.dir, 'copy');
    const r = spawnSync(process.execPath, [join(ROOT, 'bin/flm-grow.js'), 'grow', dir, out], { encoding: 'utf8', cwd: ROOT });
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/nothing to grow to/);
  });
});
