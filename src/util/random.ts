/**
 * Small seeded PRNGs. Training batches must be a pure function of (seed, step) so a resumed run
 * replays exactly the batches an uninterrupted one would have seen; Math.random cannot do that.
 */

/** One round of the splitmix32 finaliser: a bijective 32-bit mix with good avalanche. */
export function mix32(x: number): number {
  x = (x + 0x9e3779b9) | 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** Hash any number of 32-bit integers into one seed (order-sensitive). */
export function hashSeed(...parts: number[]): number {
  let h = 0x2545f491;
  for (const p of parts) {
    // Fold the high part too so steps beyond 2^32 still give distinct seeds.
    h = mix32(h ^ mix32(p >>> 0) ^ mix32(Math.floor(p / 0x1_0000_0000) + 0x632be5ab));
  }
  return h;
}

/** mulberry32: returns a generator of uint32 values. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/**
 * Uniform integer in [0, n) from a uint32 source, n ≤ 2^32. Rejection sampling avoids the modulo
 * bias that would favour early offsets in the corpus.
 */
export function uniformInt(next: () => number, n: number): number {
  if (!Number.isInteger(n) || n <= 0 || n > 0x1_0000_0000)
    throw new RangeError(`uniformInt: n must be an integer in [1, 2^32], got ${n}`);
  const limit = 0x1_0000_0000 - (0x1_0000_0000 % n);
  for (;;) {
    const r = next();
    if (r < limit) return r % n;
  }
}
