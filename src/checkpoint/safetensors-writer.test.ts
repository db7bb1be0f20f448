import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync, openSync, readSync, closeSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { COALESCE_BYTES, SafetensorsWriter, encodeHeader, writeSafetensors } from './safetensors-writer.ts';
import { SafetensorsFile } from './safetensors.ts';
import { SUPPORTED_DTYPES, dtypeSize, type DType } from '../util/dtype.ts';
import { SafetensorsError } from '../util/errors.ts';
import { parseRaw, randomBytes, tempDir } from '../../test/checkpoint/raw.ts';

const tmp = tempDir('stw');
afterAll(() => tmp.cleanup());

function valuesFor(dtype: DType, n: number, seed: number): Uint8Array {
  const b = randomBytes(n * dtypeSize(dtype), seed);
  if (dtype === 'BOOL') return b.map((v) => v & 1);
  return b;
}

describe('round trip, single file, every supported dtype', () => {
  it('write then read bit-exact (our reader and an independent one)', async () => {
    const tensors = SUPPORTED_DTYPES.map((dtype, k) => ({
      name: `t.${dtype}`,
      dtype,
      shape: [3, k + 2],
      data: valuesFor(dtype, 3 * (k + 2), k + 1),
    }));
    tensors.push({ name: 'scalar', dtype: 'F32', shape: [], data: valuesFor('F32', 1, 99) });
    tensors.push({ name: 'empty', dtype: 'BF16', shape: [0, 5], data: new Uint8Array(0) });
    const p = join(tmp.dir, 'all.safetensors');
    await writeSafetensors(p, tensors);
    const raw = readFileSync(p);
    const indep = parseRaw(raw);
    expect(indep.headerLength % 8).toBe(0);
    expect(indep.metadata).toEqual({ format: 'pt' });
    const f = await SafetensorsFile.open(p);
    for (const t of tensors) {
      expect(indep.tensors.get(t.name)?.dtype).toBe(t.dtype);
      expect(indep.tensors.get(t.name)?.shape).toEqual(t.shape);
      expect(Buffer.from(indep.tensors.get(t.name)?.bytes ?? []).equals(Buffer.from(t.data))).toBe(true);
      expect(Buffer.from(await f.read(t.name)).equals(Buffer.from(t.data))).toBe(true);
    }
    await f.close();
  });

  it('header padded with spaces to a multiple of 8 for every name length', () => {
    for (let n = 1; n < 20; n++) {
      const hb = encodeHeader([{ name: 'x'.repeat(n), dtype: 'F32', shape: [1] }], { format: 'pt' });
      expect(hb.byteLength % 8).toBe(0);
      const text = new TextDecoder().decode(hb);
      expect(JSON.parse(text)).toBeTruthy();
      expect(/^[^ ]*\}? *$/.test(text.slice(text.lastIndexOf('}')))).toBe(true);
    }
  });
});

describe('streaming writes', () => {
  it('overlapping writes (issued without awaiting, in order) give the same file as sequential ones', async () => {
    const big = COALESCE_BYTES + 4321;
    const decls = [
      { name: 'a', dtype: 'U8' as const, shape: [3 * big + 50] },
      { name: 'n', dtype: 'U8' as const, shape: [64] },
      { name: 'b', dtype: 'U8' as const, shape: [2 * big] },
    ];
    const a = randomBytes(3 * big + 50, 11),
      n = randomBytes(64, 12),
      b = randomBytes(2 * big, 13);
    const pieces: [string, Uint8Array][] = [
      ['a', a.subarray(0, 20)],
      ['a', a.subarray(20, 20 + big)],
      ['a', a.subarray(20 + big, 30 + big)],
      ['a', a.subarray(30 + big, 30 + 3 * big)],
      ['a', a.subarray(30 + 3 * big)],
      ['n', n],
      ['b', b.subarray(0, big)],
      ['b', b.subarray(big)],
    ];
    const seq = join(tmp.dir, 'seq.safetensors');
    const ws = await SafetensorsWriter.create(seq, decls);
    for (const [name, chunk] of pieces) await ws.write(name, chunk);
    await ws.close();
    const par = join(tmp.dir, 'par.safetensors');
    const wp = await SafetensorsWriter.create(par, decls);
    await Promise.all(pieces.map(([name, chunk]) => wp.write(name, chunk)));
    await wp.close();
    expect(readFileSync(par).equals(readFileSync(seq))).toBe(true);
    const f = await SafetensorsFile.open(par);
    expect(Buffer.from(await f.read('a')).equals(Buffer.from(a))).toBe(true);
    expect(Buffer.from(await f.read('b')).equals(Buffer.from(b))).toBe(true);
    await f.close();
  });

  it('chunks of any size, mixing small and ≥ threshold, land in order', async () => {
    const big = COALESCE_BYTES + 12345;
    const decls = [
      { name: 'a', dtype: 'U8' as const, shape: [1000] },
      { name: 'b', dtype: 'U8' as const, shape: [big * 2 + 777] },
      { name: 'c', dtype: 'U8' as const, shape: [3] },
    ];
    const a = randomBytes(1000, 1);
    const b = randomBytes(big * 2 + 777, 2);
    const c = randomBytes(3, 3);
    const p = join(tmp.dir, 'stream.safetensors');
    const w = await SafetensorsWriter.create(p, decls);
    // small chunks are copied: the caller may reuse their memory right away
    const scratch = new Uint8Array(100);
    for (let i = 0; i < 1000; i += 100) {
      scratch.set(a.subarray(i, i + 100));
      await w.write('a', scratch);
      scratch.fill(0xee);
    }
    await w.write('b', b.subarray(0, 10));
    await w.write('b', b.subarray(10, 10 + big)); // large chunk after pending small ones
    await w.write('b', b.subarray(10 + big, 20 + big));
    await w.write('b', b.subarray(20 + big));
    expect(w.current).toBe('c');
    await w.write('c', c);
    await w.close();
    const f = await SafetensorsFile.open(p);
    expect(Buffer.from(await f.read('a')).equals(Buffer.from(a))).toBe(true);
    expect(Buffer.from(await f.read('b')).equals(Buffer.from(b))).toBe(true);
    expect(Buffer.from(await f.read('c')).equals(Buffer.from(c))).toBe(true);
    await f.close();
  });

  it('a chunk ≥ the threshold is on disk once write() resolves (callers reuse the buffer)', async () => {
    const n = COALESCE_BYTES;
    const p = join(tmp.dir, 'ondisk.safetensors');
    const w = await SafetensorsWriter.create(p, [
      { name: 's', dtype: 'U8', shape: [5] },
      { name: 'big', dtype: 'U8', shape: [2 * n] },
    ]);
    await w.write('s', Uint8Array.of(1, 2, 3, 4, 5));
    const buf = new Uint8Array(n).fill(7);
    await w.write('big', buf);
    buf.fill(9); // reuse
    const hdr = encodeHeader(
      [
        { name: 's', dtype: 'U8', shape: [5] },
        { name: 'big', dtype: 'U8', shape: [2 * n] },
      ],
      { format: 'pt' },
    ).byteLength;
    const fd = openSync(p, 'r');
    const probe = Buffer.alloc(16);
    readSync(fd, probe, 0, 16, 8 + hdr);
    expect([...probe.subarray(0, 8)]).toEqual([1, 2, 3, 4, 5, 7, 7, 7]);
    readSync(fd, probe, 0, 16, 8 + hdr + 5 + n - 8);
    expect([...probe.subarray(0, 8)]).toEqual([7, 7, 7, 7, 7, 7, 7, 7]);
    closeSync(fd);
    await w.write('big', buf);
    await w.close();
    const f = await SafetensorsFile.open(p);
    const got = await f.read('big');
    expect(got[0]).toBe(7);
    expect(got[n - 1]).toBe(7);
    expect(got[n]).toBe(9);
    await f.close();
  });

  it('refuses out-of-order names, excess bytes, short tensors, duplicate declarations', async () => {
    const decls = [
      { name: 'a', dtype: 'F32' as const, shape: [2] },
      { name: 'b', dtype: 'F32' as const, shape: [1] },
    ];
    const w = await SafetensorsWriter.create(join(tmp.dir, 'bad1.safetensors'), decls);
    await expect(w.write('b', new Uint8Array(4))).rejects.toMatchObject({ code: 'WriteMismatch' });
    await expect(w.write('a', new Uint8Array(12))).rejects.toMatchObject({ code: 'WriteMismatch' });
    await expect(w.writeTensor('a', new Uint8Array(4))).rejects.toMatchObject({ code: 'WriteMismatch' });
    await w.write('a', new Uint8Array(8));
    await expect(w.close()).rejects.toBeInstanceOf(SafetensorsError);
    expect(() => encodeHeader([...decls, decls[0]], undefined)).toThrow(SafetensorsError);
    const p = join(tmp.dir, 'bad1.safetensors');
    expect(existsSync(p)).toBe(true);
    await expect(SafetensorsWriter.create(p, decls)).rejects.toThrow(); // never overwrites
  });
});
