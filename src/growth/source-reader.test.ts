import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { Checkpoint } from '../checkpoint/checkpoint.ts';
import { SourceReader } from './source-reader.ts';

const FIX = join(import.meta.dirname, '../../fixtures/hf/llama-tiny-f32');

describe('SourceReader.readRowsInto (vectored scatter reads)', () => {
  it('scatters rows into many parts (more than one preadv takes) exactly as a plain read gives them', async () => {
    const ck = await Checkpoint.open(FIX);
    const reader = new SourceReader(ck);
    try {
      const rows = reader.rows('model.embed_tokens.weight'); // [320, 64] f32: 256-byte rows
      const [a, b] = [1, 319];
      const plain = Buffer.from(await rows.readRows(a, b));
      // each row in 4 uneven parts, placed with gaps in a bigger destination: 1272 parts > IOV_MAX
      const cuts = [0, 12, 100, 104, 256];
      const stride = 300;
      const dest = new Uint8Array((b - a) * stride).fill(0xee);
      const parts: Uint8Array[] = [];
      for (let r = 0; r < b - a; r++)
        for (let c = 0; c + 1 < cuts.length; c++)
          parts.push(dest.subarray(r * stride + cuts[c] + 2 * c, r * stride + cuts[c + 1] + 2 * c));
      await rows.readRowsInto?.(a, b, parts);
      for (let r = 0; r < b - a; r++)
        for (let c = 0; c + 1 < cuts.length; c++) {
          const got = Buffer.from(dest.subarray(r * stride + cuts[c] + 2 * c, r * stride + cuts[c + 1] + 2 * c));
          expect(got.equals(plain.subarray(r * 256 + cuts[c], r * 256 + cuts[c + 1]))).toBe(true);
        }
      // the gaps are untouched
      expect(dest[12]).toBe(0xee);
      expect(dest[stride - 1]).toBe(0xee);
    } finally {
      await reader.close();
      await ck.close();
    }
  });
});
