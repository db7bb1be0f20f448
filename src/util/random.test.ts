import { describe, expect, it } from 'vitest';
import { hashSeed, mulberry32, uniformInt } from './random.ts';

describe('rng', () => {
  it('mulberry32 is reproducible per seed and differs across seeds', () => {
    const a = mulberry32(7);
    const b = mulberry32(7);
    const c = mulberry32(8);
    const sa = Array.from({ length: 5 }, a);
    expect(Array.from({ length: 5 }, b)).toEqual(sa);
    expect(Array.from({ length: 5 }, c)).not.toEqual(sa);
    for (const v of sa) expect(Number.isInteger(v) && v >= 0 && v < 2 ** 32).toBe(true);
  });

  it('hashSeed separates steps beyond 2^32 and depends on order', () => {
    expect(hashSeed(1, 2 ** 32 + 5)).not.toBe(hashSeed(1, 5));
    expect(hashSeed(1, 2)).not.toBe(hashSeed(2, 1));
    expect(hashSeed(3, 4)).toBe(hashSeed(3, 4));
  });

  it('uniformInt stays in range and is roughly uniform (chi-square)', () => {
    const next = mulberry32(123);
    const n = 10;
    const counts = new Array<number>(n).fill(0);
    const draws = 100_000;
    for (let i = 0; i < draws; i++) counts[uniformInt(next, n)]++;
    const expected = draws / n;
    const chi2 = counts.reduce((acc, c) => acc + (c - expected) ** 2 / expected, 0);
    expect(chi2).toBeLessThan(27.88); // p = 0.001 critical value, 9 degrees of freedom
    expect(() => uniformInt(next, 0)).toThrow(RangeError);
  });
});
