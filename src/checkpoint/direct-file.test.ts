import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DIRECT_MIN_BYTES, DirectAppendFile } from './direct-file.ts';
import { SafetensorsWriter, type TensorDecl } from './safetensors-writer.ts';
import { parseRaw, randomBytes, tempDir } from '../../test/checkpoint/raw.ts';

const tmp = tempDir('direct');
afterAll(() => tmp.cleanup());

/** Chunk sizes that cross slot (8 MB) and alignment (4 KB) boundaries in every way, from a seed. */
function chunkSizes(total: number, seed: number): number[] {
  const sizes: number[] = [];
  let s = seed;
  for (let left = total; left > 0;) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const pick = [1, 7, 4096, 4095, 65537, 3 << 20, 9 << 20][s % 7];
    const n = Math.min(left, pick);
    sizes.push(n);
    left -= n;
  }
  return sizes;
}

async function directOrSkip(path: string): Promise<DirectAppendFile | undefined> {
  const f = await DirectAppendFile.create(path);
  if (f === undefined)
    console.log(`skipped: the file system of ${path} refuses O_DIRECT (the writer uses buffered writes there)`);
  return f;
}

describe('DirectAppendFile', () => {
  it('appends of any size, issued without awaiting, give exactly the bytes in call order, with no padding left', async () => {
    // 41 MB + 123: more than the 4-slot ring (32 MB), and a tail that is no multiple of 4096
    const total = (41 << 20) + 123;
    const data = randomBytes(total, 5);
    const p = join(tmp.dir, 'order.bin');
    const f = await directOrSkip(p);
    if (f === undefined) return;
    const pending: Promise<void>[] = [];
    let at = 0;
    for (const n of chunkSizes(total, 9)) {
      pending.push(f.append(data.subarray(at, at + n)));
      at += n;
    }
    await Promise.all(pending);
    await f.close();
    expect(statSync(p).size).toBe(total);
    expect(createHash('sha256').update(readFileSync(p)).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
  });

  it("a chunk's memory may be reused as soon as its append resolves; a slot is refilled only once written", async () => {
    const p = join(tmp.dir, 'reuse.bin');
    const f = await directOrSkip(p);
    if (f === undefined) return;
    // a slow disk: every write starts 30 ms late, so refilling a slot early would corrupt it
    const fh = (f as unknown as { fh: { write: (...a: unknown[]) => Promise<unknown> } }).fh;
    const write = fh.write.bind(fh);
    fh.write = (...a: unknown[]) => new Promise((res) => setTimeout(res, 30)).then(() => write(...a));
    const chunk = new Uint8Array(3 << 20);
    const expected: Uint8Array[] = [];
    for (let k = 0; k < 12; k++) {
      chunk.fill(k + 1);
      expected.push(chunk.slice());
      await f.append(chunk); // then overwritten by the next fill
    }
    await f.close();
    expect(Buffer.compare(readFileSync(p), Buffer.concat(expected))).toBe(0);
  });

  it('goes on through a buffered descriptor when the file system refuses an O_DIRECT write (EINVAL)', async () => {
    const p = join(tmp.dir, 'fallback.bin');
    const f = await directOrSkip(p);
    if (f === undefined) return;
    // what such a file system does: accepts O_DIRECT at open, refuses the write
    const fh = (f as unknown as { fh: { write: (...a: unknown[]) => Promise<unknown> } }).fh;
    fh.write = () => Promise.reject(Object.assign(new Error('EINVAL: invalid argument, write'), { code: 'EINVAL' }));
    const data = randomBytes((17 << 20) + 5, 3);
    await f.append(data);
    await f.close();
    expect(Buffer.compare(readFileSync(p), Buffer.from(data))).toBe(0);
  });

  it('a full disk fails the write or the close naming the file (2 MB tmpfs, as root)', async (ctx) => {
    const mnt = join(tmp.dir, 'full');
    mkdirSync(mnt);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt], { stdio: 'ignore' });
    } catch {
      console.log('skipped: the full-disk case needs root and mount -t tmpfs');
      ctx.skip();
    }
    try {
      const p = join(mnt, 'big.bin');
      const f = await directOrSkip(p);
      if (f === undefined) return;
      const run = async () => {
        await f.append(new Uint8Array(9 << 20));
        await f.close();
      };
      const err = await run().then(
        () => undefined,
        (e: unknown) => e as Error & { code?: string },
      );
      await f.abort();
      expect(err?.code).toBe('ENOSPC');
      expect((err as { path?: string }).path).toBe(p); // the CLI's handler prints it (os-errors.ts)
    } finally {
      execFileSync('umount', [mnt]);
    }
  });
});

describe('SafetensorsWriter on the direct path', () => {
  it(`a file over ${DIRECT_MIN_BYTES >> 20} MB is byte-identical to the same tensors written by the reference layout`, async () => {
    const decls: TensorDecl[] = [
      { name: 'a', dtype: 'BF16', shape: [4099, 4096] }, // 33.6 MB
      { name: 'b', dtype: 'F32', shape: [3] },
      { name: 'c', dtype: 'F32', shape: [4097, 2049] }, // 33.6 MB
    ];
    const bytes = decls.map((d, k) => randomBytes(d.shape.reduce((x, y) => x * y, 1) * (d.dtype === 'BF16' ? 2 : 4), k + 11));
    const p = join(tmp.dir, 'big.safetensors');
    const w = await SafetensorsWriter.create(p, decls, undefined, undefined);
    const probe = await DirectAppendFile.create(join(tmp.dir, 'probe.bin'));
    await probe?.abort();
    rmSync(join(tmp.dir, 'probe.bin'), { force: true });
    // where the file system allows O_DIRECT, this file must have taken that path
    expect((w as unknown as { direct?: unknown }).direct !== undefined).toBe(probe !== undefined);
    const writes: Promise<void>[] = [];
    bytes.forEach((b, k) => {
      let at = 0;
      for (const n of chunkSizes(b.byteLength, k + 1)) {
        writes.push(w.write(decls[k].name, b.subarray(at, at + n)));
        at += n;
      }
    });
    await Promise.all(writes);
    await w.close();
    const file = readFileSync(p);
    const raw = parseRaw(file);
    const dataBytes = bytes.reduce((a, b) => a + b.byteLength, 0);
    expect(file.byteLength).toBe(8 + raw.headerLength + dataBytes); // no alignment padding left at the end
    decls.forEach((d, k) =>
      expect(Buffer.compare(Buffer.from(raw.tensors.get(d.name)?.bytes ?? []), Buffer.from(bytes[k]))).toBe(0),
    );
    expect(readdirSync(tmp.dir).filter((f) => f.startsWith('big.'))).toEqual(['big.safetensors']);
    rmSync(p);
  });
});
