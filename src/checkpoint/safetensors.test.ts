import { afterAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { SafetensorsFile } from './safetensors.ts';
import { FlmGrowError, SafetensorsError } from '../util/errors.ts';
import { rawFile, tempDir } from '../../test/checkpoint/raw.ts';

const tmp = tempDir('st');
afterAll(() => tmp.cleanup());
let counter = 0;

function put(bytes: Uint8Array): string {
  const p = join(tmp.dir, `f${counter++}.safetensors`);
  writeFileSync(p, bytes);
  return p;
}

async function openBytes(bytes: Uint8Array): Promise<SafetensorsFile> {
  return SafetensorsFile.open(put(bytes));
}

/** Expect opening these bytes to fail with `code`, naming the file (and tensor, when given). */
async function expectError(bytes: Uint8Array, code: string, tensor?: string): Promise<SafetensorsError> {
  const p = put(bytes);
  let err: unknown;
  try {
    const f = await SafetensorsFile.open(p);
    await f.close();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(SafetensorsError);
  const e = err as SafetensorsError;
  expect(e.code).toBe(code);
  expect(e.message).toContain(p);
  if (tensor !== undefined) {
    expect(e.tensor).toBe(tensor);
    expect(e.message).toContain(tensor);
  }
  return e;
}

const h = (o: unknown) => JSON.stringify(o);
const t = (dtype: string, shape: unknown, offs: unknown) => ({ dtype, shape, data_offsets: offs });

describe('valid files', () => {
  it('reads tensors and row ranges by position', async () => {
    const data = new Uint8Array(24).map((_, k) => k);
    const f = await openBytes(
      rawFile(h({ __metadata__: { format: 'pt' }, a: t('F32', [2, 2], [0, 16]), b: t('U8', [8], [16, 24]) }), data),
    );
    expect(f.metadata).toEqual({ format: 'pt' });
    expect([...(await f.read('a'))]).toEqual([...data.subarray(0, 16)]);
    expect([...(await f.readRows('a', 1, 2))]).toEqual([...data.subarray(8, 16)]);
    expect([...(await f.read('b'))]).toEqual([...data.subarray(16, 24)]);
    // into: a reused buffer receives the bytes, the result is a view of it
    const scratch = new Uint8Array(32).fill(0xaa);
    const view = await f.read('b', scratch);
    expect(view.buffer).toBe(scratch.buffer);
    expect([...view]).toEqual([...data.subarray(16, 24)]);
    expect(scratch[8]).toBe(0xaa);
    expect([...(await f.readRows('a', 0, 1, scratch))]).toEqual([...data.subarray(0, 8)]);
    await expect(f.read('a', new Uint8Array(4))).rejects.toMatchObject({ code: 'InvalidOffset' });
    // a fresh result is a plain Uint8Array whose slice() copies
    const fresh = await f.read('a');
    expect(Buffer.isBuffer(fresh)).toBe(false);
    await expect(f.read('zz')).rejects.toMatchObject({ code: 'TensorNotFound' });
    await expect(f.readRows('a', 1, 3)).rejects.toMatchObject({ code: 'InvalidOffset' });
    await f.close();
  });
  it('accepts empty tensors and an empty header object', async () => {
    const f = await openBytes(rawFile(h({ e: t('BF16', [0, 4], [0, 0]), s: t('F32', [], [0, 4]) }), new Uint8Array(4)));
    expect(f.tensors.get('e')?.shape).toEqual([0, 4]);
    await f.close();
    (await openBytes(rawFile('{}'))).close();
  });
});

describe('malformed files: one typed error each, naming the file and tensor', () => {
  const ok = t('F32', [2], [0, 8]);
  const data8 = new Uint8Array(8);
  it('header too small: file shorter than 8 bytes', () => expectError(Uint8Array.of(1, 0, 0), 'HeaderTooSmall'));
  it('header too large: length over 100 MB', () => expectError(rawFile('{}', new Uint8Array(0), 100_000_001n), 'HeaderTooLarge'));
  it('header length past EOF', () => expectError(rawFile('{}', new Uint8Array(0), 1000n), 'InvalidHeaderLength'));
  it('header length of 2^64-1 does not allocate', () =>
    expectError(rawFile('{}', new Uint8Array(0), 0xffffffffffffffffn), 'HeaderTooLarge'));
  it('non-UTF-8 header', () => expectError(rawFile(Uint8Array.of(0x7b, 0xff, 0xfe, 0x7d)), 'InvalidHeader'));
  it('invalid JSON', () => expectError(rawFile('{"a": '), 'InvalidHeaderDeserialization'));
  it('header not an object', () => expectError(rawFile('[1,2]'), 'InvalidHeaderDeserialization'));
  it('non-object entry', () => expectError(rawFile(h({ w: 5 })), 'InvalidHeaderDeserialization', 'w'));
  it('unknown dtype', async () => {
    const e = await expectError(rawFile(h({ w: t('Q7', [2], [0, 8]) }), data8), 'InvalidHeaderDeserialization', 'w');
    expect(e.message).toContain('Q7');
  });
  it('known but unsupported dtype is named', async () => {
    const e = await expectError(rawFile(h({ w: t('F8_E4M3', [8], [0, 8]) }), data8), 'UnsupportedDtype', 'w');
    expect(e.message).toContain('F8_E4M3');
  });
  it('negative dim', () => expectError(rawFile(h({ w: t('F32', [-2], [0, 8]) }), data8), 'InvalidHeaderDeserialization', 'w'));
  it('non-integer dim', () =>
    expectError(rawFile(h({ w: t('F32', [1.5], [0, 8]) }), data8), 'InvalidHeaderDeserialization', 'w'));
  it('string dim', () => expectError(rawFile(h({ w: t('F32', ['2'], [0, 8]) }), data8), 'InvalidHeaderDeserialization', 'w'));
  it('overflowing shape product', () =>
    expectError(rawFile(h({ w: t('F32', [2 ** 40, 2 ** 40], [0, 8]) }), data8), 'ValidationOverflow', 'w'));
  it('dimension beyond 2^53 (would parse to a different integer)', () =>
    expectError(
      rawFile('{"w":{"dtype":"F32","shape":[0,9007199254740993],"data_offsets":[0,0]}}', new Uint8Array(0)),
      'ValidationOverflow',
      'w',
    ));
  it('bad data_offsets', () => expectError(rawFile(h({ w: t('F32', [2], [0]) }), data8), 'InvalidHeaderDeserialization', 'w'));
  it('end before begin', () => expectError(rawFile(h({ w: t('F32', [0], [8, 0]) }), data8), 'InvalidOffset', 'w'));
  it('offsets not matching shape × dtype', () =>
    expectError(rawFile(h({ w: t('F32', [3], [0, 8]) }), data8), 'TensorInvalidInfo', 'w'));
  it('overlapping tensors', () =>
    expectError(rawFile(h({ a: ok, b: t('F32', [2], [4, 12]) }), new Uint8Array(12)), 'InvalidOffset', 'b'));
  it('hole in the buffer', () =>
    expectError(rawFile(h({ a: ok, b: t('F32', [2], [12, 20]) }), new Uint8Array(20)), 'InvalidOffset', 'b'));
  it('hole at the start', () => expectError(rawFile(h({ a: t('F32', [2], [4, 12]) }), new Uint8Array(12)), 'InvalidOffset', 'a'));
  it('incomplete buffer (file truncated)', () =>
    expectError(rawFile(h({ a: ok }), new Uint8Array(5)), 'MetadataIncompleteBuffer'));
  it('trailing bytes', () => expectError(rawFile(h({ a: ok }), new Uint8Array(9)), 'MetadataIncompleteBuffer'));
  it('duplicate names', () =>
    expectError(rawFile(`{"a": ${h(ok)}, "a": ${h(t('F32', [2], [8, 16]))}}`, new Uint8Array(16)), 'DuplicateTensor', 'a'));
  it('escaped duplicate names are still duplicates', () =>
    expectError(rawFile(`{"a": ${h(ok)}, "\\u0061": ${h(t('F32', [2], [8, 16]))}}`, new Uint8Array(16)), 'DuplicateTensor', 'a'));
  it('same key nested is not a duplicate', async () => {
    (await openBytes(rawFile(`{"__metadata__": {"a": "x"}, "a": ${h(ok)}}`, data8))).close();
  });
  it('__metadata__ with a non-string value', () =>
    expectError(rawFile(h({ __metadata__: { a: 1 }, a: ok }), data8), 'InvalidHeaderDeserialization'));
  it('__metadata__ not an object', () =>
    expectError(rawFile(h({ __metadata__: 'x', a: ok }), data8), 'InvalidHeaderDeserialization'));
  it('missing file', async () => {
    await expect(SafetensorsFile.open(join(tmp.dir, 'nope.safetensors'))).rejects.toBeInstanceOf(FlmGrowError);
  });
});

describe('property: mutated files either parse or throw a typed error', () => {
  const header = h({
    __metadata__: { format: 'pt' },
    a: t('F32', [2, 3], [0, 24]),
    b: t('BF16', [4], [24, 32]),
    c: t('I64', [1], [32, 40]),
  });
  const pad = ' '.repeat((8 - (header.length % 8)) % 8);
  const valid = rawFile(
    header + pad,
    new Uint8Array(40).map((_, k) => k * 7),
  );

  async function check(bytes: Uint8Array): Promise<void> {
    let f: SafetensorsFile | undefined;
    try {
      f = await openBytes(bytes);
      for (const name of f.tensors.keys()) {
        const info = f.tensors.get(name);
        expect((await f.read(name)).byteLength).toBe((info?.end ?? 0) - (info?.begin ?? 0));
      }
    } catch (e) {
      if (!(e instanceof FlmGrowError)) throw e;
    } finally {
      await f?.close();
    }
  }

  it('byte edits, length prefixes, truncation, appended bytes', async () => {
    const mutation = fc.oneof(
      fc
        .array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 })
        .map((edits) => {
          const b = valid.slice();
          for (const [i, v] of edits) b[i] = v;
          return b;
        }),
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map((n) => {
        const b = valid.slice();
        new DataView(b.buffer).setBigUint64(0, n, true);
        return b;
      }),
      fc.integer({ min: 0, max: 300 }).map((n) => {
        const b = valid.slice();
        new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
        return b;
      }),
      fc.nat(valid.length).map((n) => valid.slice(0, n)),
      fc.uint8Array({ minLength: 1, maxLength: 16 }).map((extra) => {
        const b = new Uint8Array(valid.length + extra.length);
        b.set(valid);
        b.set(extra, valid.length);
        return b;
      }),
    );
    await fc.assert(fc.asyncProperty(mutation, check), { numRuns: 300 });
  });
  it('the unmutated file parses', async () => {
    const f = await openBytes(valid);
    expect([...f.tensors.keys()].sort()).toEqual(['a', 'b', 'c']);
    await f.close();
  });
});
