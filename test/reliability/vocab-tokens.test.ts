/**
 * Issue 15, "Vocabulary: padding versus new tokens": `vocab.new: "tokens"` makes new vocabulary
 * ids real, learnable tokens. Judged by independent means: the float64 naive reference (its own
 * log(m) vocab bias) for the function at growth time and mid-annealing, a mean computed here in
 * float64 for the new rows, and a real training run that must end in a bakeable checkpoint whose
 * plain model equals the trained masked one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { makeConfig, type ModelConfig } from '../../src/spec/config.ts';
import { initBackend } from '../../src/engines/tfjs-backend.ts';
import { Checkpoint } from '../../src/checkpoint/checkpoint.ts';
import { PlanError } from '../../src/util/errors.ts';
import { growCheckpoint } from '../../src/growth/grow.ts';
import { bakeCheckpoint } from '../../src/growth/bake.ts';
import { applyPlanFlags, defaultPlan, parsePlan, planToJson, resolveTarget } from '../../src/growth/plan.ts';
import { planReport } from '../../src/growth/plan-report.ts';
import { applyMaskValues, groupsBelowOne, readMasks, MASKS_FILE, type MaskSet } from '../../src/checkpoint/masks.ts';
import { readManifest } from '../../src/checkpoint/manifest.ts';
import { forward } from '../../src/model/llama.ts';
import { masksToTensors, disposeMaskTensors } from '../../src/model/mask-tensors.ts';
import { streamedForward } from '../../src/model/streaming.ts';
import { train } from '../../src/train/trainer.ts';
import { checkMaskedIds, TokenDataset } from '../../src/train/data.ts';
import { verifyGrowth } from '../../src/growth/verify.ts';
import { makeTempDir, weightsFromArrays } from '../support/model.ts';
import { loadAll, naive, randomIds, writeRandomCheckpoint } from '../support/growth.ts';

const tmp = makeTempDir('flm-grow-vocab-tokens-');
afterAll(() => tmp.cleanup());
beforeAll(async () => {
  await initBackend('wasm');
});

const catchMsg = (f: () => unknown): unknown => {
  try {
    f();
  } catch (e) {
    return e;
  }
  return undefined;
};

describe('plan: vocab.new', () => {
  it('parses "padding" (default) and "tokens", refuses anything else naming the field, round-trips, and takes --vocab-new', () => {
    expect(defaultPlan().vocab.new).toBe('padding');
    expect(parsePlan({}).vocab.new).toBe('padding');
    expect(parsePlan({ vocab: { new: 'tokens' } }).vocab.new).toBe('tokens');
    const bad = catchMsg(() => parsePlan({ vocab: { new: 'words' } }, 'p.json'));
    expect(bad).toBeInstanceOf(PlanError);
    expect((bad as Error).message).toMatch(/vocab\.new/);
    expect((bad as Error).message).toMatch(/"padding", "tokens"/);
    expect((catchMsg(() => parsePlan({ vocab: { fresh: 'tokens' } })) as Error).message).toMatch(/vocab\.fresh/);
    expect((catchMsg(() => parsePlan({ vocab: 'tokens' })) as Error).message).toMatch(/vocab/);
    const p = parsePlan({ vocab: { new: 'tokens' } });
    expect(parsePlan(planToJson(p)).vocab.new).toBe('tokens');
    expect(applyPlanFlags(defaultPlan(), { vocabNew: 'tokens' }).vocab.new).toBe('tokens');
    expect(catchMsg(() => applyPlanFlags(defaultPlan(), { vocabNew: 'maybe' }))).toBeInstanceOf(PlanError);
  });

  it('tokens schedule the "vocab" mask group, padding does not; plan says which in its notes and JSON', () => {
    const src = makeConfig({ hiddenSize: 8, intermediateSize: 16, numLayers: 2, numHeads: 2, vocabSize: 32 });
    const tok = resolveTarget(src, parsePlan({ targets: { vocab_size: 40 }, vocab: { new: 'tokens' }, anneal_steps: 7 }), 'F32');
    expect(tok.grownGroups).toEqual(['vocab']);
    expect(tok.schedule).toEqual([{ group: 'vocab', startStep: 0, length: 7, shape: 'linear' }]);
    const pad = resolveTarget(src, parsePlan({ targets: { vocab_size: 40 } }), 'F32');
    expect(pad.grownGroups).toEqual([]);
    expect(pad.schedule).toEqual([]);
    expect(pad.notes.join('\n')).toMatch(/8 new ids \(32\.\.39\) are padding/);
    const r = planReport(src, parsePlan({ targets: { vocab_size: 40 }, vocab: { new: 'tokens' } }), { dtype: 'F32' });
    expect((r.plan.vocab as { new: string }).new).toBe('tokens');
    expect(r.notes.join('\n')).toMatch(/8 new ids \(32\.\.39\) are learnable tokens/);
    // the new embedding/LM-head rows are shown as mean rows
    expect(r.tensors.find((t) => t.name === 'model.embed_tokens.weight')?.fill).toBe('mean');
    expect(r.tensors.find((t) => t.name === 'lm_head.weight')?.fill).toBe('mean');
  });
});

/** Random tiny configs, tied and untied, GQA, µP multipliers. */
const CONFIGS: [string, ModelConfig][] = [
  ['untied, MHA', makeConfig({ hiddenSize: 8, intermediateSize: 12, numLayers: 2, numHeads: 2, headDim: 4, vocabSize: 24 })],
  [
    'tied, GQA, µP',
    makeConfig({
      hiddenSize: 12,
      intermediateSize: 20,
      numLayers: 2,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 4,
      vocabSize: 30,
      tieWordEmbeddings: true,
      useMup: true,
      inputMult: 1.5,
      outputMult: 0.5,
      mupScaleFactor: 4,
    }),
  ],
];

/** Mean of the rows of a [rows, cols] matrix, in float64. */
function meanRow(a: Float32Array, rows: number, cols: number): Float64Array {
  const m = new Float64Array(cols);
  for (let r = 0; r < rows; r++) for (let j = 0; j < cols; j++) m[j] += a[r * cols + j];
  return m.map((x) => x / rows);
}

describe.each(CONFIGS)('vocab.new "tokens" (%s)', (name, src) => {
  const dir = join(tmp.dir, name.replace(/\W+/g, '-'));
  const V2 = src.vocabSize + 7;
  let grown: string;
  let grownH: string;
  beforeAll(async () => {
    await writeRandomCheckpoint(join(dir, 'src'), src, 'F32', { seed: 5 });
    grown = join(dir, 'grown');
    await growCheckpoint(join(dir, 'src'), grown, parsePlan({ targets: { vocab_size: V2 }, vocab: { new: 'tokens' }, seed: 3 }), {
      quiet: true,
    });
    // vocabulary and width at once: new rows' new columns get the usual fill, old ones the mean
    grownH = join(dir, 'grown-h');
    await growCheckpoint(
      join(dir, 'src'),
      grownH,
      parsePlan({ targets: { vocab_size: V2, hidden_size: src.hiddenSize + 4 }, vocab: { new: 'tokens' }, seed: 3 }),
      { quiet: true },
    );
  });

  it('new embedding (and untied LM-head) rows are the mean of the existing rows', async () => {
    const s = await loadAll(join(dir, 'src'));
    for (const g of [grown, grownH]) {
      const o = await loadAll(g);
      const H = src.hiddenSize,
        H2 = o.cfg.hiddenSize;
      const names = src.tieWordEmbeddings ? ['model.embed_tokens.weight'] : ['model.embed_tokens.weight', 'lm_head.weight'];
      expect(o.w.has('lm_head.weight')).toBe(!src.tieWordEmbeddings);
      for (const n of names) {
        const want = meanRow(s.w.get(n) as Float32Array, src.vocabSize, H);
        const got = o.w.get(n) as Float32Array;
        for (let v = src.vocabSize; v < V2; v++)
          for (let j = 0; j < H; j++) expect(Math.abs(got[v * H2 + j] - want[j]), `${n}[${v}, ${j}]`).toBeLessThan(1e-6);
        // old rows are copied
        for (let j = 0; j < H; j++) expect(got[3 * H2 + j]).toBe((s.w.get(n) as Float32Array)[3 * H + j]);
      }
    }
  });

  it('masks: new ids at 0 and marked as tokens; the manifest records vocab.new and the vocab schedule', async () => {
    const o = await loadAll(grown);
    const m = await readMasks(join(grown, MASKS_FILE), o.cfg);
    expect(Array.from(m.vocab.subarray(0, src.vocabSize)).every((x) => x === 1)).toBe(true);
    expect(Array.from(m.vocab.subarray(src.vocabSize)).every((x) => x === 0)).toBe(true);
    expect(Array.from(m.vocabTokens ?? []).map((x, k) => (k >= src.vocabSize ? x === 1 : x === 0))).not.toContain(false);
    expect(groupsBelowOne(m)).toEqual([{ group: 'vocab', minValue: 0, count: 7 }]);
    const man = readManifest(grown);
    expect((man as { plan?: { vocab?: unknown } } | undefined)?.plan?.vocab).toEqual({ new: 'tokens' });
    expect(man?.masks?.schedule.map((e) => e.group)).toEqual(['vocab']);
  });

  it('at growth time the function on old ids is preserved (naive float64 source), whatever the new rows hold', async () => {
    const s = await loadAll(join(dir, 'src'));
    const ids = randomIds(10, src.vocabSize, 11);
    const ref = naive(s.cfg, s.w, ids);
    for (const g of [grown, grownH]) {
      const ck = await Checkpoint.open(g);
      // LM head in blocks of 5 rows: the bias is sliced per block
      const ours = await streamedForward(ck, [ids], { lmHeadBlockRows: 5 });
      await ck.close();
      let d = 0,
        scale = 0;
      for (let t = 0; t < ids.length; t++) {
        for (let v = 0; v < src.vocabSize; v++) {
          d = Math.max(d, Math.abs(ours.logits[t * V2 + v] - ref.logits[t][v]));
          scale = Math.max(scale, Math.abs(ref.logits[t][v]));
        }
        // new ids: softmax weight exactly 0, so the distribution over old ids is the source's
        for (let v = src.vocabSize; v < V2; v++) expect(ours.logits[t * V2 + v]).toBe(-Infinity);
      }
      expect(d / scale, g).toBeLessThan(1e-5);
    }
  });

  it('mid-annealing, both tfjs forwards equal the naive reference with its own log(m) vocab bias', async () => {
    const o = await loadAll(grownH);
    const base = await readMasks(join(grownH, MASKS_FILE), o.cfg);
    const ids = randomIds(9, V2, 12); // new ids as inputs too
    for (const c of [0.25, 0.5]) {
      const m: MaskSet = applyMaskValues(base, { vocab: c, hidden: c });
      expect(m.vocab[V2 - 1]).toBeCloseTo(c, 7);
      const ref = naive(o.cfg, o.w, ids, m);
      const ck = await Checkpoint.open(grownH);
      const streamed = await streamedForward(ck, [ids], { masks: m, lmHeadBlockRows: 4 });
      await ck.close();
      const mt = masksToTensors(m);
      const w = weightsFromArrays(o.cfg, o.w);
      const idsT = tf.tensor2d([ids], [1, ids.length], 'int32');
      const direct = forward(o.cfg, w, idsT, { masks: mt });
      const full = (await direct.logits.data()) as Float32Array;
      tf.dispose([idsT, direct.logits, ...(direct.hidden ?? [])]);
      disposeMaskTensors(mt);
      let d1 = 0,
        d2 = 0,
        scale = 0;
      for (let t = 0; t < ids.length; t++)
        for (let v = 0; v < V2; v++) {
          const r = ref.logits[t][v];
          scale = Math.max(scale, Math.abs(r));
          d1 = Math.max(d1, Math.abs(streamed.logits[t * V2 + v] - r));
          d2 = Math.max(d2, Math.abs(full[t * V2 + v] - r));
        }
      expect(d1 / scale, `streamed c=${c}`).toBeLessThan(1e-5);
      expect(d2 / scale, `llama.ts c=${c}`).toBeLessThan(1e-5);
    }
  });
});

describe('training on data with the new ids', () => {
  const u16 = (name: string, ids: number[]): string => {
    const p = join(tmp.dir, name);
    writeFileSync(p, new Uint8Array(Uint16Array.from(ids).buffer));
    return p;
  };
  const src = makeConfig({
    hiddenSize: 8,
    intermediateSize: 16,
    numLayers: 1,
    numHeads: 2,
    vocabSize: 32,
    maxPositionEmbeddings: 64,
  });
  const V2 = 40;
  // every 5th token is a new id (32..39)
  const ids = Array.from({ length: 600 }, (_, i) => (i % 5 === 4 ? 32 + ((i / 5) % 8) : (i * 7) % 32));

  it('padding refuses the data; tokens accept it: finite loss, masks reach 1, bake without --force equals the trained model', async () => {
    const base = join(tmp.dir, 'train-src');
    await writeRandomCheckpoint(base, src, 'F32', { seed: 8, std: 0.3 });
    const data = u16('new-ids.u16', ids);
    const quiet = { quiet: true, log: () => undefined, backend: 'wasm' as const };
    const opts = { ...quiet, data, steps: 8, batchSize: 2, seqLen: 16, lr: 1e-2, warmupSteps: 1 };

    const padded = join(tmp.dir, 'padded');
    await growCheckpoint(base, padded, parsePlan({ targets: { vocab_size: V2 } }), { quiet: true });
    await expect(train({ ...opts, checkpoint: padded, out: join(tmp.dir, 'padded-run') })).rejects.toMatchObject({
      code: 'PaddingTokenInData',
      message: expect.stringMatching(/token id 32 at position 4 is a padding id.*--vocab-new tokens/),
    });

    const grown = join(tmp.dir, 'tokens');
    await growCheckpoint(base, grown, parsePlan({ targets: { vocab_size: V2 }, vocab: { new: 'tokens' }, anneal_steps: 5 }), {
      quiet: true,
    });
    const out = join(tmp.dir, 'tokens-run');
    const r = await train({ ...opts, checkpoint: grown, out });
    // step 0 runs at m = 0 (new-id targets left out), every later step with them in the loss
    expect(r.losses).toHaveLength(8);
    for (const l of r.losses) expect(Number.isFinite(l) && l < 10, `loss ${l}`).toBe(true);
    expect(r.masksAllOne).toBe(true);
    const ck = await Checkpoint.open(r.checkpoint);
    const m = await readMasks(join(r.checkpoint, MASKS_FILE), ck.config);
    await ck.close();
    expect(Array.from(m.vocab).every((x) => x === 1)).toBe(true);
    expect(groupsBelowOne(m)).toEqual([]);
    // the new rows trained: they moved away from their mean-row start
    const before = (await loadAll(grown)).w.get('lm_head.weight') as Float32Array;
    const after = (await loadAll(r.checkpoint)).w.get('lm_head.weight') as Float32Array;
    let moved = 0;
    for (let k = 32 * 8; k < V2 * 8; k++) moved = Math.max(moved, Math.abs(after[k] - before[k]));
    expect(moved).toBeGreaterThan(1e-4);

    const baked = join(tmp.dir, 'baked');
    await bakeCheckpoint(r.checkpoint, baked, { quiet: true });
    expect(existsSync(join(baked, MASKS_FILE))).toBe(false);
    const v = await verifyGrowth(r.checkpoint, baked, { tokens: 64, seq: 16, seed: 2 });
    expect(v.passed).toBe(true);
    expect(v.relativeLogitDiff).toBeLessThan(1e-6);
  }, 120_000);

  it('bake refuses a tokens checkpoint whose vocab mask is below 1 unless forced', async () => {
    const base = join(tmp.dir, 'bake-src');
    await writeRandomCheckpoint(base, src, 'F32', { seed: 9 });
    const grown = join(tmp.dir, 'bake-tokens');
    await growCheckpoint(base, grown, parsePlan({ targets: { vocab_size: V2 }, vocab: { new: 'tokens' } }), { quiet: true });
    await expect(bakeCheckpoint(grown, join(tmp.dir, 'bake-out'), { quiet: true })).rejects.toMatchObject({
      code: 'MasksBelowOne',
      message: expect.stringMatching(/vocab \(8 units, min 0\)/),
    });
    const forced = await bakeCheckpoint(grown, join(tmp.dir, 'bake-forced'), { quiet: true, force: true });
    expect(forced.droppedGroups.map((g) => g.group)).toEqual(['vocab']);
  });

  it('checkMaskedIds: a new token at m = 0 passes, a padding id is refused', () => {
    const ds = new TokenDataset(Uint32Array.from([1, 2, 5, 3, 4, 1]), { source: 'x.u32' });
    const vocab = Float32Array.from([1, 1, 1, 1, 1, 0, 0]);
    expect(() => checkMaskedIds(ds, vocab, 'x.u32', Float32Array.from([0, 0, 0, 0, 0, 1, 0]))).not.toThrow();
    expect(() => checkMaskedIds(ds, vocab, 'x.u32')).toThrow(/token id 5 at position 2 is a padding id/);
    const ds6 = new TokenDataset(Uint32Array.from([1, 6, 5]), { source: 'y.u32' });
    expect(() => checkMaskedIds(ds6, vocab, 'y.u32', Float32Array.from([0, 0, 0, 0, 0, 1, 0]))).toThrow(
      /token id 6 at position 1/,
    );
  });
});
