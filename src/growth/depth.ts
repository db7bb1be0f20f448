/**
 * Depth L -> L': new layers are inserted right after chosen source layers. A pre-norm block
 * computes x + r·f(x); with r = 0 (masked mode: residual mask) or with o_proj and down_proj all 0
 * (zero mode, LLaMA-Pro's block expansion) it is the identity, so the stack computes the old
 * function whatever the inserted layer holds. MSG's default fills it with a copy of the layer it
 * follows (`copy`); `random` is the alternative.
 */
import { PlanError } from '../errors.ts';

export interface LayerMapEntry {
  /** Source layer copied (or, for a random inserted layer, the one it follows). */
  source: number;
  inserted: boolean;
}

/**
 * `positions`: source layers after which one new layer each is inserted (repeats allowed:
 * several copies after the same layer). Length must be L' - L.
 */
export function buildLayerMap(
  L: number,
  L2: number,
  positions: readonly number[],
  field = 'placement.positions',
): LayerMapEntry[] {
  if (L2 < L)
    throw new PlanError('targets.num_hidden_layers', `${L2} is fewer than the source's ${L} layers; growth cannot remove layers`);
  if (positions.length !== L2 - L) {
    throw new PlanError(field, `${positions.length} positions given but growing ${L} -> ${L2} layers inserts ${L2 - L}`);
  }
  const after = new Array<number>(L).fill(0);
  for (const p of positions) {
    if (!Number.isInteger(p) || p < 0 || p >= L)
      throw new PlanError(field, `position ${p} is not a source layer index in [0, ${L})`);
    after[p]++;
  }
  const out: LayerMapEntry[] = [];
  for (let l = 0; l < L; l++) {
    out.push({ source: l, inserted: false });
    for (let r = 0; r < after[l]; r++) out.push({ source: l, inserted: true });
  }
  return out;
}

/**
 * The k layers to duplicate given per-layer distances: sorted by distance (ties by index), the
 * first k; when k > L the ranking is cycled (every layer once, then again).
 */
export function pickLayers(distances: readonly number[], k: number, order: 'smallest' | 'largest'): number[] {
  const idx = distances.map((_, i) => i);
  idx.sort((a, b) => (order === 'smallest' ? distances[a] - distances[b] : distances[b] - distances[a]) || a - b);
  const picks: number[] = [];
  for (let i = 0; i < k; i++) picks.push(idx[i % idx.length]);
  return picks;
}

/** Position in the grown stack of the residual stream that source boundary n (0..L) maps to. */
export { grownBoundary } from './boundary.ts';
