/**
 * The writer hashes what it writes: every sha256 it returns equals the sha256 of the file on
 * disk (shards, empty-tensor shards, side files, index), and a part records the index its
 * assembly writes. A hasher fed anything but the written bytes (a rebuilt header, a skipped or
 * reordered chunk) fails here.
 */
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointWriter, indexText, PART_FILE, type PartJson } from './checkpoint-writer.ts';
import { INDEX_FILE } from './checkpoint.ts';
import type { StreamHasher, TensorDecl } from './safetensors-writer.ts';
import { sha256Bytes, sha256File } from '../util/hash.ts';
import { makeTempDir } from '../../test/support/model.ts';

const decls: TensorDecl[] = [
  { name: 'a', dtype: 'F32', shape: [300] },
  { name: 'b', dtype: 'BF16', shape: [7, 90] },
  { name: 'empty', dtype: 'F32', shape: [0, 4] },
  { name: 'c', dtype: 'U8', shape: [2000] },
  { name: 'd', dtype: 'F16', shape: [33] },
];

function bytesOf(d: TensorDecl, seed: number): Uint8Array {
  const n = d.shape.reduce((a, b) => a * b, 1) * { F32: 4, BF16: 2, F16: 2, U8: 1 }[d.dtype as 'F32'];
  return Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 7) & 255);
}

/** Write every tensor in uneven chunks, several writes in flight at once. */
async function writeAll(w: CheckpointWriter): Promise<void> {
  const pending: Promise<void>[] = [];
  decls.forEach((d, k) => {
    if (!w.wants(d.name)) return;
    const data = bytesOf(d, k);
    for (let at = 0, step = 1; at < data.byteLength; at += step, step = step * 3 + 1)
      pending.push(w.write(d.name, data.subarray(at, Math.min(data.byteLength, at + step))));
  });
  await Promise.all(pending);
}

async function diskHashes(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(dir)) out[f] = await sha256File(join(dir, f));
  return out;
}

describe('CheckpointWriter hashes what it writes', () => {
  it('sharded: shards (one holding only an empty tensor), side files and the index match the files on disk', async () => {
    const tmp = makeTempDir();
    try {
      const dest = join(tmp.dir, 'out');
      const seen: string[] = [];
      const w = await CheckpointWriter.create(dest, decls, {
        maxShardSize: 1500,
        // a hasher of our own sees the same bytes: it records which files it was asked for
        hasher: (file) => {
          seen.push(file);
          const chunks: Uint8Array[] = [];
          const h: StreamHasher = {
            update: (d) => {
              chunks.push(d.slice());
            },
            digest: () => sha256Bytes(Buffer.concat(chunks)),
          };
          return h;
        },
      });
      expect(w.shards.length).toBeGreaterThan(2);
      await writeAll(w);
      await w.writeSideFile('config.json', '{"x": 1}\n');
      writeFileSync(w.path('masks.safetensors'), 'not really masks');
      await w.recordFile('masks.safetensors');
      const files = await w.finish();
      await w.commit();
      expect(files).toEqual(await diskHashes(dest));
      expect(seen).toEqual(w.shards.map((s) => s.file));
      // key order: shards in plan order, side files as written, the index last
      expect(Object.keys(files)).toEqual([...w.shards.map((s) => s.file), 'config.json', 'masks.safetensors', INDEX_FILE]);
      expect(readFileSync(join(dest, INDEX_FILE), 'utf8')).toBe(indexText(w.shards));
    } finally {
      tmp.cleanup();
    }
  });

  it('default hasher, one shard: no index unless asked; alwaysIndex writes and hashes it', async () => {
    const tmp = makeTempDir();
    try {
      for (const alwaysIndex of [false, true]) {
        const dest = join(tmp.dir, `one-${alwaysIndex}`);
        const w = await CheckpointWriter.create(dest, decls, { alwaysIndex });
        await writeAll(w);
        const files = await w.finish();
        await w.commit();
        expect(files).toEqual(await diskHashes(dest));
        expect(INDEX_FILE in files).toBe(alwaysIndex);
      }
    } finally {
      tmp.cleanup();
    }
  });

  it('parts: each hashes its own shards; the index hash is that of the index assembled from part.json', async () => {
    const tmp = makeTempDir();
    try {
      const all: Record<string, string> = {};
      for (let i = 1; i <= 2; i++) {
        const dest = join(tmp.dir, `part-${i}`);
        const w = await CheckpointWriter.create(dest, decls, { maxShardSize: 1500, part: { index: i, count: 2 } });
        await writeAll(w);
        const files = await w.finish();
        await w.commit();
        const part = JSON.parse(readFileSync(join(dest, PART_FILE), 'utf8')) as PartJson;
        const { [INDEX_FILE]: index, ...rest } = files;
        expect(index).toBe(sha256Bytes(indexText(part.shards)));
        const disk = await diskHashes(dest);
        delete disk[PART_FILE];
        expect(rest).toEqual(disk);
        Object.assign(all, rest);
      }
      // the parts together wrote the single writer's shards, byte for byte
      const single = join(tmp.dir, 'single');
      const w = await CheckpointWriter.create(single, decls, { maxShardSize: 1500 });
      await writeAll(w);
      const { [INDEX_FILE]: _index, ...shards } = await w.finish();
      await w.commit();
      expect(all).toEqual(shards);
    } finally {
      tmp.cleanup();
    }
  });
});
