/**
 * Input -> output distance of one layer on the residual stream (SPEC §2, distance-based layer
 * selection), averaged over tokens. x_in, x_out: [tokens, H] row-major.
 *   cosine: 1 - cos(x_l, x_{l+1})      l2: |x_{l+1} - x_l| / |x_l|
 * A layer that writes nothing (identity) has distance 0 under both.
 */
export type DistanceMetric = 'cosine' | 'l2';

export function layerDistance(xIn: Float32Array, xOut: Float32Array, H: number, metric: DistanceMetric): number {
  const T = Math.floor(xIn.length / H);
  if (T === 0) return 0;
  let total = 0;
  for (let t = 0; t < T; t++) {
    let dot = 0,
      nIn = 0,
      nOut = 0,
      nDiff = 0;
    for (let i = t * H; i < (t + 1) * H; i++) {
      const a = xIn[i];
      const b = xOut[i];
      dot += a * b;
      nIn += a * a;
      nOut += b * b;
      nDiff += (b - a) * (b - a);
    }
    if (nDiff === 0) continue; // identical rows: exactly 0 (avoids sqrt rounding in the cosine)
    if (metric === 'cosine') {
      const den = Math.sqrt(nIn * nOut);
      total += den === 0 ? (nDiff === 0 ? 0 : 1) : Math.max(0, 1 - dot / den);
    } else {
      total += nIn === 0 ? (nDiff === 0 ? 0 : Infinity) : Math.sqrt(nDiff / nIn);
    }
  }
  return total / T;
}
