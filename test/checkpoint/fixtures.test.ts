/**
 * The HF fixtures read by our reader equal what numpy reads (test/checkpoint/fixture-digest.json,
 * made by make_fixture_digest.py from the files alone).
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { Checkpoint } from '../../src/checkpoint/checkpoint.ts';
import { SafetensorsFile } from '../../src/checkpoint/safetensors.ts';
import { bytesToFloat32 } from '../../src/util/dtype.ts';

interface Digest {
  dtype: string;
  shape: number[];
  sum: number;
  abs_sum: number;
  first: number[];
  last: number;
  file?: string;
}
const ROOT = join(import.meta.dirname, '..', '..');
const digest = JSON.parse(readFileSync(join(import.meta.dirname, 'fixture-digest.json'), 'utf8')) as Record<
  string,
  { tensors: Record<string, Digest>; reference: Record<string, Digest> }
>;

function compare(name: string, d: Digest, dtype: string, shape: number[], values: Float32Array): void {
  expect(dtype, name).toBe(d.dtype);
  expect(shape, name).toEqual(d.shape);
  let sum = 0;
  let abs = 0;
  for (const v of values) {
    sum += v;
    abs += Math.abs(v);
  }
  // sums in float64 in a different order: only rounding differences allowed
  expect(Math.abs(sum - d.sum), name).toBeLessThanOrEqual(1e-9 * d.abs_sum + 1e-12);
  expect(Math.abs(abs - d.abs_sum), name).toBeLessThanOrEqual(1e-9 * d.abs_sum + 1e-12);
  expect([...values.subarray(0, 4)], name).toEqual(d.first);
  expect(values[values.length - 1], name).toBe(d.last);
}

describe.each(Object.keys(digest))('fixture %s', (fixture) => {
  const dir = join(ROOT, 'fixtures', 'hf', fixture);
  it('every tensor matches the numpy digest (sum, |sum|, first and last values, dtype, shape, file)', async () => {
    const ck = await Checkpoint.open(dir);
    const want = digest[fixture].tensors;
    expect([...ck.tensors.keys()].sort()).toEqual(Object.keys(want).sort());
    for (const [name, d] of Object.entries(want)) {
      const info = ck.info(name);
      expect(basename(info.file)).toBe(d.file);
      compare(name, d, info.dtype, info.shape, await ck.readFloat32(name));
    }
    await ck.close();
  });
  it('reference.safetensors (I64 input_ids, F32 logits and hidden states)', async () => {
    const f = await SafetensorsFile.open(join(dir, 'reference.safetensors'));
    const want = digest[fixture].reference;
    expect([...f.tensors.keys()].sort()).toEqual(Object.keys(want).sort());
    expect(f.tensors.get('input_ids')?.dtype).toBe('I64');
    for (const [name, d] of Object.entries(want)) {
      const info = f.info(name);
      compare(name, d, info.dtype, info.shape, bytesToFloat32(await f.read(name), info.dtype));
    }
    await f.close();
  });
});
