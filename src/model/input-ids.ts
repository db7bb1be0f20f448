/**
 * Token ids for forward/verify: from a safetensors file (`input_ids`, I64 or I32, [B, T], the
 * layout transformers' tokenizers produce), from a "1,2,3" list, or seeded random ids.
 */
import { SafetensorsFile } from '../checkpoint/safetensors.ts';
import { bytesToFloat32 } from '../util/dtype.ts';
import { ModelInputError } from '../util/errors.ts';
import { mulberry32, uniformInt } from '../util/random.ts';

export const INPUT_IDS = 'input_ids';

export async function readInputIds(path: string, name = INPUT_IDS): Promise<number[][]> {
  const f = await SafetensorsFile.open(path);
  try {
    const info = f.tensors.get(name);
    if (info === undefined)
      throw new ModelInputError(`${path}: no tensor "${name}" (tensors: ${[...f.tensors.keys()].join(', ') || 'none'})`);
    if (info.dtype !== 'I64' && info.dtype !== 'I32')
      throw new ModelInputError(`${path}: "${name}" has dtype ${info.dtype}; token ids must be I64 or I32`);
    if (info.shape.length !== 2)
      throw new ModelInputError(`${path}: "${name}" has shape [${info.shape.join(', ')}]; expected [batch, seq]`);
    const [B, T] = info.shape;
    if (B === 0 || T === 0) throw new ModelInputError(`${path}: "${name}" is empty ([${B}, ${T}])`);
    const v = bytesToFloat32(await f.read(name), info.dtype);
    return Array.from({ length: B }, (_, b) => Array.from(v.subarray(b * T, (b + 1) * T)));
  } finally {
    await f.close();
  }
}

/** "1,2,3" -> [[1,2,3]]; ";" separates sequences of equal length. */
export function parseIdList(s: string): number[][] {
  const rows = s.split(';').map((r) =>
    r
      .split(',')
      .map((x) => x.trim())
      .filter((x) => x !== '')
      .map((x) => {
        if (!/^\d+$/.test(x)) throw new ModelInputError(`--ids: "${x}" is not a non-negative integer token id`);
        return Number(x);
      }),
  );
  if (rows.length === 0 || rows[0].length === 0) throw new ModelInputError('--ids: no token ids given');
  for (const r of rows)
    if (r.length !== rows[0].length) throw new ModelInputError('--ids: sequences separated by ";" must have the same length');
  return rows;
}

/** B rows of T ids drawn uniformly from `allowed` (or [0, vocab)), reproducibly from `seed`. */
export function randomIds(B: number, T: number, vocab: number, seed: number, allowed?: ArrayLike<number>): number[][] {
  const next = mulberry32(seed);
  const pick = () => (allowed === undefined ? uniformInt(next, vocab) : allowed[uniformInt(next, allowed.length)]);
  return Array.from({ length: B }, () => Array.from({ length: T }, pick));
}
