import { afterAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ShardedTensorIndex } from './tensor-index.ts';
import { Checkpoint } from './checkpoint.ts';
import { CheckpointWriter } from './checkpoint-writer.ts';
import { CheckpointError } from '../util/errors.ts';
import { tempDir } from '../../test/checkpoint/raw.ts';

const tmp = tempDir('index');
afterAll(() => tmp.cleanup());

// names and shapes no architecture knows about, and no config.json
const tensors = [
  {
    name: 'encoder.blocks.0.conv',
    dtype: 'F32' as const,
    shape: [3, 4],
    data: new Uint8Array(Float32Array.from({ length: 12 }, (_, k) => k).buffer),
  },
  { name: 'scale', dtype: 'F16' as const, shape: [5], data: new Uint8Array(10).fill(0x3c) },
  { name: 'table', dtype: 'BF16' as const, shape: [6, 2], data: new Uint8Array(24).map((_, k) => k) },
];

async function writeFolder(dest: string, maxShardSize: number): Promise<void> {
  const w = await CheckpointWriter.create(dest, tensors, { maxShardSize });
  for (const t of tensors) await w.write(t.name, t.data);
  await w.commit();
}

describe('ShardedTensorIndex', () => {
  for (const [what, maxShardSize] of [
    ['single file', 1 << 20],
    ['sharded', 40],
  ] as const) {
    it(`reads a ${what} folder without config.json: names, dtypes, shapes, bytes and rows`, async () => {
      const dir = join(tmp.dir, what.replace(' ', '-'));
      await writeFolder(dir, maxShardSize);
      expect(existsSync(join(dir, 'config.json'))).toBe(false);
      const ix = await ShardedTensorIndex.open(dir);
      try {
        expect([...ix.tensors.keys()].sort()).toEqual(tensors.map((t) => t.name).sort());
        expect(ix.shards.length > 1).toBe(maxShardSize === 40);
        expect(ix.index === undefined).toBe(maxShardSize !== 40);
        for (const t of tensors) {
          expect(ix.info(t.name).dtype).toBe(t.dtype);
          expect(ix.info(t.name).shape).toEqual(t.shape);
          expect(await ix.read(t.name)).toEqual(t.data);
        }
        expect(await ix.readRows('table', 2, 4)).toEqual(tensors[2].data.subarray(8, 16));
        expect(Array.from(await ix.readFloat32('encoder.blocks.0.conv'))).toEqual(Array.from({ length: 12 }, (_, k) => k));
        expect(ix.parameterCount).toBe(12 + 5 + 12);
        expect(ix.totalBytes).toBe(48 + 10 + 24);
        expect(ix.largestTensorBytes).toBe(48);
        expect(ix.has('scale')).toBe(true);
        expect(() => ix.info('nope')).toThrow(CheckpointError);
      } finally {
        await ix.close();
      }
      // the same folder is not a model checkpoint: that needs config.json
      await expect(Checkpoint.open(dir)).rejects.toThrow(/no config\.json/);
    });
  }

  it('float32 reads reuse their raw buffers but return fresh arrays, also when reads overlap', async () => {
    const dir = join(tmp.dir, 'f32-reads');
    await writeFolder(dir, 1 << 20);
    const ix = await ShardedTensorIndex.open(dir);
    try {
      // expected values from the stored bytes: bf16 is the high half of an f32, f16 0x3c3c is 1 + 60/1024
      const bf16 = (k: number) => new Float32Array(new Uint32Array([((2 * k + 1) << 24) | ((2 * k) << 16)]).buffer)[0];
      const table = Array.from({ length: 12 }, (_, k) => bf16(k));
      const rows = await Promise.all([
        ix.readRowsFloat32('table', 0, 3),
        ix.readRowsFloat32('table', 3, 6),
        ix.readFloat32('scale'),
        ix.readFloat32('table'),
      ]);
      const again = await ix.readRowsFloat32('table', 1, 2); // would overwrite an earlier result if it shared a buffer
      expect(Array.from(rows[0])).toEqual(table.slice(0, 6));
      expect(Array.from(rows[1])).toEqual(table.slice(6, 12));
      expect(Array.from(rows[2])).toEqual(new Array(5).fill(1 + 60 / 1024));
      expect(Array.from(rows[3])).toEqual(table);
      expect(Array.from(again)).toEqual(table.slice(2, 4));
      expect(Array.from(await ix.readRowsFloat32('encoder.blocks.0.conv', 1, 3))).toEqual(
        Array.from({ length: 8 }, (_, k) => k + 4),
      );
    } finally {
      await ix.close();
    }
  });

  it('refuses a folder with no tensors and a path that is not a folder', async () => {
    await expect(ShardedTensorIndex.open(tmp.dir)).rejects.toThrow(
      /neither model\.safetensors\.index\.json nor model\.safetensors/,
    );
    await expect(ShardedTensorIndex.open(join(tmp.dir, 'missing'))).rejects.toThrow(
      /no such folder \(flm-grow reads local checkpoint folders; a Hub model is downloaded with huggingface-cli download/,
    );
  });
});
