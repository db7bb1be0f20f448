/**
 * verifyGrowth on a model grown by hand (model/test-utils.ts, independent of src/growth): it
 * must pass with the masks, fail (typed, exit code 1) without them, and map layer boundaries
 * around inserted layers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { rmSync, writeFileSync } from 'node:fs';
import { makeConfig } from '../spec/config.ts';
import { masksPath, writeMasks } from '../checkpoint/masks.ts';
import { MANIFEST_FILE, MANIFEST_FORMAT } from '../checkpoint/manifest.ts';
import { writeSafetensors } from '../checkpoint/safetensors-writer.ts';
import { ModelInputError } from '../util/errors.ts';
import { initBackend } from '../engines/tfjs-backend.ts';
import { formatReport, verifyGrowth, VerifyFailedError } from './verify.ts';
import { boundaryMap } from './boundary.ts';
import { buildHandGrown, makeTempDir, writeCheckpoint, writeRandomCheckpoint } from '../../test/support/model.ts';

const tmp = makeTempDir('flm-grow-verify-');
const base = makeConfig({
  hiddenSize: 16,
  intermediateSize: 24,
  numLayers: 3,
  numHeads: 2,
  numKvHeads: 1,
  headDim: 8,
  vocabSize: 40,
});
const src = join(tmp.dir, 'src');

/** Growth appends new units; the hand-built model interleaves them, so move the old ones first. */
function appendLayout<T extends { hiddenPos: number[] }>(
  g: T & ReturnType<typeof buildHandGrown>,
): ReturnType<typeof buildHandGrown> {
  const H2 = g.cfg.hiddenSize;
  const order = [...g.hiddenPos, ...Array.from({ length: H2 }, (_, p) => p).filter((p) => !g.hiddenPos.includes(p))];
  const permuteCols = (a: Float32Array, rows: number) => {
    const out = new Float32Array(a.length);
    for (let r = 0; r < rows; r++) for (let c = 0; c < H2; c++) out[r * H2 + c] = a[r * H2 + order[c]];
    return out;
  };
  const permuteRows = (a: Float32Array, cols: number) => {
    const out = new Float32Array(a.length);
    for (let r = 0; r < H2; r++) out.set(a.subarray(order[r] * cols, (order[r] + 1) * cols), r * cols);
    return out;
  };
  const arrays = new Map<string, Float32Array>();
  for (const [name, a] of g.arrays) {
    if (/norm\.weight$/.test(name)) arrays.set(name, permuteCols(a, 1));
    else if (/(o_proj|down_proj)\.weight$/.test(name)) arrays.set(name, permuteRows(a, a.length / H2));
    else arrays.set(name, permuteCols(a, a.length / H2));
  }
  const hidden = Float32Array.from(order, (p) => g.masks.hidden[p]);
  return { ...g, arrays, masks: { ...g.masks, hidden }, hiddenPos: g.hiddenPos.map((_, i) => i) };
}

beforeAll(async () => {
  await initBackend('wasm');
  const arrays = await writeRandomCheckpoint(src, base, { seed: 31 });
  const g = appendLayout(buildHandGrown(base, arrays));
  for (const name of ['grown', 'nomasks']) {
    const dir = join(tmp.dir, name);
    await writeCheckpoint(dir, g.cfg, g.arrays);
    writeFileSync(
      join(dir, MANIFEST_FILE),
      JSON.stringify({
        format: MANIFEST_FORMAT,
        kind: 'grow',
        mode: 'masked',
        created: new Date().toISOString(),
        tool: { name: 'flm-grow', version: 'test' },
        layerMap: g.layerMap,
        files: {},
      }),
    );
  }
  await writeMasks(masksPath(join(tmp.dir, 'grown')), g.masks);
});
afterAll(() => tmp.cleanup());

describe('verifyGrowth', () => {
  it('passes on a masked grown model: logits and old hidden coordinates agree, compared past the inserted layer', async () => {
    const r = await verifyGrowth(src, join(tmp.dir, 'grown'), { tokens: 20, seq: 10, seed: 4 });
    console.log(formatReport(r));
    expect(r.passed).toBe(true);
    expect(r.grownMasked).toBe(true);
    expect([r.batch, r.seqLen]).toEqual([2, 10]);
    expect(r.relativeLogitDiff).toBeLessThanOrEqual(1e-5);
    expect(r.insertedLayers).toEqual([1]);
    // boundary 1 (after source layer 0) sits past its inserted copy (grown layer 1): grown boundary 2
    expect(r.hidden.map((h) => [h.source, h.grown])).toEqual([
      [0, 0],
      [1, 2],
      [2, 3],
      [3, 4],
    ]);
    for (const h of r.hidden) {
      expect(h.maxAbs).toBeLessThanOrEqual(1e-5);
      if (h.source < 3) expect(h.maxAbsNewCoords).toBe(0);
    }
  });

  it('fails with a typed VerifyFailed error (CLI exit 1) when the masks are missing', async () => {
    const p = verifyGrowth(src, join(tmp.dir, 'nomasks'), { tokens: 10, seq: 10 });
    await expect(p).rejects.toThrow(VerifyFailedError);
    const e = (await p.catch((x: unknown) => x)) as VerifyFailedError;
    expect(e.code).toBe('VerifyFailed');
    expect(e.report.passed).toBe(false);
    expect(e.report.relativeLogitDiff).toBeGreaterThan(1e-3);
    const r = await verifyGrowth(src, join(tmp.dir, 'nomasks'), { tokens: 10, seq: 10, throwOnFail: false });
    expect(r.passed).toBe(false);
  });

  it('reads input_ids from a file (I64 or I32) and rejects other dtypes', async () => {
    const file = join(tmp.dir, 'in.safetensors');
    const ids = [
      [1, 5, 9, 39],
      [0, 2, 2, 7],
    ];
    await writeSafetensors(file, [
      { name: 'input_ids', dtype: 'I64', shape: [2, 4], data: new Uint8Array(BigInt64Array.from(ids.flat(), BigInt).buffer) },
    ]);
    const r = await verifyGrowth(src, join(tmp.dir, 'grown'), { input: file });
    expect([r.inputs, r.batch, r.seqLen, r.passed]).toEqual(['file', 2, 4, true]);
    const bad = join(tmp.dir, 'bad.safetensors');
    await writeSafetensors(bad, [
      { name: 'input_ids', dtype: 'F32', shape: [1, 2], data: new Uint8Array(Float32Array.of(1, 2).buffer) },
    ]);
    await expect(verifyGrowth(src, join(tmp.dir, 'grown'), { input: bad })).rejects.toThrow(
      /dtype F32; token ids must be I64 or I32/,
    );
    await expect(verifyGrowth(src, join(tmp.dir, 'grown'), { input: bad })).rejects.toThrow(ModelInputError);
    rmSync(file);
    rmSync(bad);
  });
});

describe('boundaryMap', () => {
  it('maps source boundaries past inserted layers (grownBoundary); final norm to final norm', () => {
    const lm = [
      { source: 0, inserted: false },
      { source: 0, inserted: true },
      { source: 1, inserted: false },
      { source: 1, inserted: true },
      { source: 1, inserted: true },
      { source: 2, inserted: false },
    ];
    expect(boundaryMap(3, 6, lm)).toEqual([0, 2, 5, 6]);
    expect(boundaryMap(3, 3, undefined)).toEqual([0, 1, 2, 3]);
    expect(boundaryMap(3, 5, undefined)).toEqual([0, -1, -1, 5]);
  });
});
