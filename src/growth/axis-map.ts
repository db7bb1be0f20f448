/**
 * The common language of every growth operator: an axis map says, for each output index k along
 * one dimension, which source index it copies (>= 0) or that it is new (-1). A grown tensor is
 * then fully described by the maps of its axes (see layout.ts), so operators compose: each one
 * only decides the map of the dimension it grows.
 */
export type AxisMap = Int32Array;

export const NEW = -1;

/** Old indices keep their place, new ones are appended: the layout of every dimension but Q. */
export function appendMap(oldSize: number, newSize: number): AxisMap {
  const m = new Int32Array(newSize).fill(NEW);
  for (let k = 0; k < oldSize; k++) m[k] = k;
  return m;
}

/** A map of whole blocks (heads) expanded to their rows: block j -> rows j*size .. j*size+size-1. */
export function expandBlocks(blockMap: AxisMap, size: number): AxisMap {
  const m = new Int32Array(blockMap.length * size);
  for (let j = 0; j < blockMap.length; j++) {
    for (let r = 0; r < size; r++) m[j * size + r] = blockMap[j] < 0 ? NEW : blockMap[j] * size + r;
  }
  return m;
}

/** An all-new map (tensors of randomly initialised inserted layers). */
export function allNew(size: number): AxisMap {
  return new Int32Array(size).fill(NEW);
}

export function countOld(m: AxisMap): number {
  let n = 0;
  for (const s of m) if (s >= 0) n++;
  return n;
}

/** 1 where the unit is old, 0 where it is new: MSG's mask right after growth. */
export function maskOf(m: AxisMap): Float32Array {
  return Float32Array.from(m, (s) => (s >= 0 ? 1 : 0));
}

/** Maximal runs of consecutive output indices whose sources are also consecutive (or all new). */
export interface Run {
  out: number;
  src: number; // NEW for a run of new indices
  len: number;
}

export function runsOf(m: AxisMap): Run[] {
  const runs: Run[] = [];
  let k = 0;
  while (k < m.length) {
    const start = k;
    const s = m[k];
    k++;
    if (s < 0) while (k < m.length && m[k] < 0) k++;
    else while (k < m.length && m[k] === s + (k - start)) k++;
    runs.push({ out: start, src: s < 0 ? NEW : s, len: k - start });
  }
  return runs;
}

/** Compact text for plan output: "copy 0..8191, new 8192..10239". */
export function describeMap(m: AxisMap): string {
  const parts = runsOf(m).map((r) =>
    r.src < 0
      ? `new ${r.out}..${r.out + r.len - 1}`
      : r.src === r.out
        ? `copy ${r.out}..${r.out + r.len - 1}`
        : `${r.out}..${r.out + r.len - 1} <- ${r.src}..${r.src + r.len - 1}`,
  );
  if (parts.length <= 6) return parts.join(', ');
  return `${parts.slice(0, 3).join(', ')}, ... (${parts.length} runs), ${parts[parts.length - 1]}`;
}
