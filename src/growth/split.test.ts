/** Split grow: n parts + assemble == one single-machine grow, byte for byte; bad part sets refused. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeConfig } from '../spec/config.ts';
import { assignShards, PART_FILE } from '../checkpoint/checkpoint-writer.ts';
import { Checkpoint } from '../checkpoint/checkpoint.ts';
import { growCheckpoint } from './grow.ts';
import { parsePlan, type GrowthPlan } from './plan.ts';
import { MANIFEST_FILE, verifyManifestFiles, readManifest } from '../checkpoint/manifest.ts';
import { makeTempDir, writeRandomCheckpoint } from '../../test/support/model.ts';
import { assembleParts } from './split.ts';
import { parsePart } from '../commands/grow.ts';

let tmp: { dir: string; cleanup: () => void };
let src: string;
const SHARD = 20_000;
const cfg = makeConfig({
  hiddenSize: 32,
  intermediateSize: 48,
  numLayers: 2,
  numHeads: 2,
  headDim: 16,
  vocabSize: 50,
  dtype: 'BF16',
});
const plan = (seed = 5): GrowthPlan =>
  parsePlan({
    targets: {
      hidden_size: 48,
      intermediate_size: 80,
      num_attention_heads: 3,
      num_key_value_heads: 3,
      num_hidden_layers: 3,
      vocab_size: 64,
    },
    placement: { positions: [0] },
    seed,
  });
const p = (name: string) => join(tmp.dir, name);

async function growParts(prefix: string, n: number, pl: GrowthPlan, only?: number[]): Promise<string[]> {
  const dirs: string[] = [];
  for (let i = 1; i <= n; i++) {
    if (only !== undefined && !only.includes(i)) continue;
    const d = p(`${prefix}-${i}`);
    await growCheckpoint(src, d, pl, { maxShardSize: SHARD, quiet: true, writerOptions: { part: { index: i, count: n } } });
    dirs.push(d);
  }
  return dirs;
}

beforeAll(async () => {
  tmp = makeTempDir('flm-split-');
  src = p('src');
  await writeRandomCheckpoint(src, cfg, { seed: 2, dtype: 'BF16', maxShardSize: 30_000 });
  writeFileSync(join(src, 'tokenizer.json'), '{"fake": true}');
  await growCheckpoint(src, p('single'), plan(), { maxShardSize: SHARD, quiet: true });
});
afterAll(() => tmp.cleanup());

describe('assignShards', () => {
  it('gives each shard one part, deterministically, and balances bytes like LPT', () => {
    const shards = [5, 9, 2, 9, 7, 1, 3].map((bytes) => ({ bytes }));
    const a = assignShards(shards, 3);
    expect(assignShards(shards, 3)).toEqual(a);
    const load = [0, 0, 0];
    a.forEach((part, k) => {
      load[part] += shards[k].bytes;
    });
    // LPT by hand: 9(#1)->p0, 9(#3)->p1, 7->p2, 5->p2 (12), 3->p0 (12), 2->p1 (11), 1->p1 (12)
    expect(a).toEqual([2, 0, 1, 1, 2, 1, 0]);
    expect(load).toEqual([12, 12, 12]);
    expect(assignShards(shards, 1).every((x) => x === 0)).toBe(true);
  });

  it('parsePart reads 1-based i/n and rejects the rest', () => {
    expect(parsePart('2/8')).toEqual({ index: 2, count: 8 });
    for (const bad of ['0/3', '4/3', '1', 'a/b', '1/0']) expect(() => parsePart(bad)).toThrow(/--part/);
  });
});

describe('split grow', () => {
  it('3 parts + assemble are byte-identical to a single grow', async () => {
    const single = p('single');
    const ck = await Checkpoint.open(single);
    expect(ck.shards.length).toBeGreaterThanOrEqual(5); // the split is exercised
    await ck.close();
    const dirs = await growParts('part', 3, plan());
    // each part holds only its shards, part.json, no index
    const written = dirs.flatMap((d) => readdirSync(d).filter((f) => f.endsWith('.safetensors') && f.startsWith('model-')));
    expect(written.sort()).toEqual(
      readdirSync(single)
        .filter((f) => f.startsWith('model-') && f.endsWith('.safetensors'))
        .sort(),
    );
    for (const d of dirs) {
      expect(existsSync(join(d, PART_FILE))).toBe(true);
      expect(existsSync(join(d, 'model.safetensors.index.json'))).toBe(false);
    }
    await assembleParts(p('assembled'), [dirs[2], dirs[0], dirs[1]], { quiet: true });
    const names = readdirSync(single).sort();
    expect(readdirSync(p('assembled')).sort()).toEqual(names);
    for (const f of names) {
      if (f === MANIFEST_FILE) continue;
      expect(readFileSync(join(p('assembled'), f)).equals(readFileSync(join(single, f))), f).toBe(true);
    }
    // the manifest differs only in its timestamp
    const strip = (d: string) => JSON.stringify({ ...JSON.parse(readFileSync(join(d, MANIFEST_FILE), 'utf8')), created: 0 });
    expect(strip(p('assembled'))).toBe(strip(single));
    const m = readManifest(p('assembled'));
    expect(m).toBeDefined();
    expect(await verifyManifestFiles(p('assembled'), m as NonNullable<typeof m>)).toEqual([]);
    const ck2 = await Checkpoint.open(p('assembled'));
    await ck2.close();
  });

  it('--move --no-verify moves the shards, removes the parts, and gives the same bytes', async () => {
    const dirs = await growParts('mv', 2, plan());
    await assembleParts(p('moved'), dirs, { quiet: true, move: true, verify: false });
    for (const d of dirs) expect(existsSync(d)).toBe(false);
    for (const f of readdirSync(p('single'))) {
      if (f === MANIFEST_FILE) continue;
      expect(readFileSync(join(p('moved'), f)).equals(readFileSync(join(p('single'), f))), f).toBe(true);
    }
  });

  it('more parts than shards: the empty parts still assemble into the single-file checkpoint', async () => {
    await growCheckpoint(src, p('one'), plan(), { maxShardSize: 10e6, quiet: true });
    const dirs: string[] = [];
    for (let i = 1; i <= 3; i++) {
      dirs.push(p(`one-${i}`));
      await growCheckpoint(src, dirs[i - 1], plan(), {
        maxShardSize: 10e6,
        quiet: true,
        writerOptions: { part: { index: i, count: 3 } },
      });
    }
    expect(dirs.filter((d) => existsSync(join(d, 'model.safetensors'))).length).toBe(1);
    await assembleParts(p('one-joined'), dirs, { quiet: true });
    expect(readdirSync(p('one-joined')).sort()).toEqual(readdirSync(p('one')).sort());
    expect(
      readFileSync(join(p('one-joined'), 'model.safetensors')).equals(readFileSync(join(p('one'), 'model.safetensors'))),
    ).toBe(true);
  });

  it('refuses parts of different plans, missing or duplicated parts, and corrupt shards', async () => {
    const a = await growParts('a', 3, plan(5));
    const b = await growParts('b', 3, plan(6), [2]);
    await expect(assembleParts(p('x1'), [a[0], b[0], a[2]], { quiet: true })).rejects.toThrow(/b-2.*"plan" differs/);
    await expect(assembleParts(p('x2'), [a[0], a[2]], { quiet: true })).rejects.toThrow(/part 2\/3 missing/);
    await expect(assembleParts(p('x3'), [a[0], a[1], a[1]], { quiet: true })).rejects.toThrow(/given twice/);
    const c = await growParts('c', 2, plan(5));
    await expect(assembleParts(p('x4'), [a[0], a[1], c[0]], { quiet: true })).rejects.toThrow(/part of 2/);
    // a flipped byte in one shard is caught by its sha256
    const part = JSON.parse(readFileSync(join(a[1], PART_FILE), 'utf8')) as { mine: string[] };
    const f = join(a[1], part.mine[0]);
    const bytes = readFileSync(f);
    bytes[bytes.length - 1] ^= 1;
    writeFileSync(f, bytes);
    await expect(assembleParts(p('x5'), a, { quiet: true })).rejects.toThrow(/sha256/);
    for (const x of ['x1', 'x2', 'x3', 'x4', 'x5']) expect(existsSync(p(x))).toBe(false);
  });
});
