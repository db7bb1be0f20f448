/**
 * Grow's write pipeline (pooled shared blocks reused as soon as written, several writes in flight,
 * sha256 on a second thread, shards fsync'd together at the end) against a straightforward
 * reference writer written here from the format: length, space-padded JSON header, tensor bytes
 * back to back, one sha256 over the file. Random data and tensor sizes on both sides of the
 * writer's coalescing threshold; a block reused before its bytes were written or hashed, an
 * offset reserved twice or a hash fed out of order shows up as a differing byte or digest.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { BlockPipeline, createHashedWriter } from './hash-worker.ts';
import type { TensorDecl } from '../checkpoint/safetensors-writer.ts';
import { makeTempDir } from '../../test/support/model.ts';

const MB = 1 << 20;

/** Tensors of random sizes (seeded by the test's own generator), some above the 8 MB threshold. */
function randomDecls(): { decl: TensorDecl; data: Uint8Array }[] {
  let s = 12345;
  const next = () => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const rows = [1, 700, 17, 5000, 5, 300, 1100, 2];
  return rows.map((r, k) => {
    const cols = r === 5000 ? 2048 : 1 + Math.floor(next() * 2048); // t3: 20 MB, three pooled blocks
    const decl: TensorDecl = { name: `t${k}`, dtype: 'BF16', shape: [r, cols] };
    return { decl, data: new Uint8Array(randomBytes(r * cols * 2)) };
  });
}

/** The reference: a safetensors file built in one piece (shapes, offsets, 8-byte padding by hand). */
function referenceShard(tensors: { decl: TensorDecl; data: Uint8Array }[]): Buffer {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let off = 0;
  for (const { decl, data } of tensors) {
    header[decl.name] = { dtype: decl.dtype, shape: decl.shape, data_offsets: [off, off + data.byteLength] };
    off += data.byteLength;
  }
  let json = JSON.stringify(header);
  while (Buffer.byteLength(json) % 8 !== 0) json += ' ';
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return Buffer.concat([len, Buffer.from(json), ...tensors.map((t) => t.data)]);
}

/** Write every tensor the way grow does: blocks of at most blockBytes from the pipeline's pool. */
async function pipelinedWrite(dest: string, tensors: { decl: TensorDecl; data: Uint8Array }[], maxShardSize: number) {
  const { writer, hasher } = await createHashedWriter(
    dest,
    tensors.map((t) => t.decl),
    { maxShardSize },
  );
  try {
    const blockBytes = 9 * MB; // above the writer's 8 MB threshold: pooled blocks, written without a copy
    const pipe = new BlockPipeline(writer, blockBytes);
    for (const { decl, data } of tensors) {
      const rowBytes = data.byteLength / decl.shape[0];
      const rowsPerBlock = Math.max(1, Math.floor(blockBytes / rowBytes));
      for (let r = 0; r < decl.shape[0]; r += rowsPerBlock) {
        const part = data.subarray(r * rowBytes, Math.min(data.byteLength, (r + rowsPerBlock) * rowBytes));
        const block = await pipe.acquire(part.byteLength);
        block.fill(0xa5); // a stale pool buffer: every byte must be overwritten below
        block.set(part);
        await pipe.emit(decl.name, block);
      }
    }
    await pipe.drain();
    const files = await writer.finish();
    await writer.commit();
    return { files, shards: writer.shards };
  } catch (e) {
    await writer.abort();
    throw e;
  } finally {
    await hasher.close();
  }
}

describe('grow write pipeline', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('writes shards byte-identical to a reference writer, with the same sha256', async () => {
    const tmp = makeTempDir();
    try {
      const tensors = randomDecls();
      const total = tensors.reduce((a, t) => a + t.data.byteLength, 0);
      expect(Math.max(...tensors.map((t) => t.data.byteLength))).toBeGreaterThan(8 * MB);
      const dest = join(tmp.dir, 'out');
      const { files, shards } = await pipelinedWrite(dest, tensors, total / 2);
      expect(shards.length).toBeGreaterThan(1);
      const byName = new Map(tensors.map((t) => [t.decl.name, t]));
      for (const s of shards) {
        const ref = referenceShard(s.tensors.map((d) => byName.get(d.name) as (typeof tensors)[number]));
        const got = readFileSync(join(dest, s.file));
        expect(got.byteLength, s.file).toBe(ref.byteLength);
        expect(got.equals(ref), `${s.file} differs from the reference`).toBe(true);
        expect(files[s.file], s.file).toBe(createHash('sha256').update(ref).digest('hex'));
      }
    } finally {
      tmp.cleanup();
    }
  });

  it('a failed write leaves nothing under the destination name (and no temporary folder)', async () => {
    const tmp = makeTempDir();
    try {
      const probe = join(tmp.dir, 'probe');
      writeFileSync(probe, '');
      const fh = await open(probe, 'r');
      const proto = Object.getPrototypeOf(fh) as { write: (...a: unknown[]) => Promise<unknown> };
      await fh.close();
      const real = proto.write;
      let calls = 0;
      vi.spyOn(proto, 'write').mockImplementation(function (this: unknown, ...a: unknown[]) {
        if (++calls === 4) return Promise.reject(Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' }));
        return real.apply(this, a);
      });
      const tensors = randomDecls();
      const dest = join(tmp.dir, 'out');
      await expect(pipelinedWrite(dest, tensors, 64 * MB)).rejects.toThrow(/ENOSPC/);
      expect(calls).toBeGreaterThanOrEqual(4);
      expect(existsSync(dest)).toBe(false);
      expect(readdirSync(tmp.dir)).toEqual(['probe']);
    } finally {
      tmp.cleanup();
    }
  });
});
