/**
 * Depth L -> L': the layer maps of the placements (operators.ts PLACEMENTS says which is which and
 * why each preserves the function). A pre-norm block computes x + r·f(x); with r = 0 (masked
 * mode: residual mask) or with o_proj and down_proj all 0 (zero mode, LLaMA-Pro's block
 * expansion) it is the identity, so the stack computes the old function wherever the inserted
 * layers sit and whatever they hold. MSG's default fills an inserted layer with a copy of a
 * source layer (`copy`); `random` is the alternative.
 */
import { PlanError } from '../util/errors.ts';

export interface LayerMapEntry {
  /**
   * Source layer copied (init.layers copy). An inserted random layer keeps the layer a copy would
   * have taken: the one it follows, or for `stack` the repeated one.
   */
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

/**
 * `uniform`: copy i (0 <= i < k) goes after source layer ceil((i+1)·L/k) − 1, the last layer of
 * the i-th of k equal segments of the stack. For k <= L these are k distinct layers, the top one
 * always among them; when k divides L they are every (L/k)-th layer, `interleave`'s default.
 * For k > L layer l gets floor((l+1)·k/L) − floor(l·k/L) copies (floor or ceil of k/L).
 */
export function uniformPositions(L: number, k: number): number[] {
  // integer ceil: no float rounding decides a layer
  return Array.from({ length: k }, (_, i) => Math.floor(((i + 1) * L + k - 1) / k) - 1);
}

/**
 * `top` / `bottom`: after the k top-most (bottom-most) layers, one each; for k > L the order is
 * cycled as distance placement cycles its ranking (pickLayers): every layer once, then again.
 */
export function edgePositions(L: number, k: number, edge: 'top' | 'bottom'): number[] {
  const rank = Array.from({ length: L }, (_, i) => (edge === 'bottom' ? i : L - 1 - i));
  return Array.from({ length: k }, (_, i) => rank[i % L]).sort((a, b) => a - b);
}

/**
 * `interleave` (LLaMA-Pro): the L layers in groups of `every`, a copy of each group's last layer
 * after it: after layers every−1, 2·every−1, ..., floor(L/every) copies in all. Absent, `every`
 * is floor(L/k); a growth that no group size gives is refused, naming placement.every.
 */
export function interleavePositions(L: number, k: number, every: number | undefined): number[] {
  const e = every ?? Math.max(1, Math.floor(L / k));
  const fits = Math.floor(L / e);
  if (fits !== k) {
    const options = [...new Set(Array.from({ length: L }, (_, i) => L + Math.floor(L / (i + 1))))].sort((a, b) => a - b);
    throw new PlanError(
      'placement.every',
      every === undefined
        ? `no group size inserts ${k} layers into ${L} (one copy after every k-th layer inserts floor(${L}/k)); interleave reaches num_hidden_layers ${options.join(', ')}; use placement.method "uniform" for any count`
        : `a copy after every ${e} of ${L} layers inserts ${fits}, but growing to ${L + k} layers inserts ${k}; interleave reaches num_hidden_layers ${options.join(', ')}`,
    );
  }
  return Array.from({ length: k }, (_, i) => (i + 1) * e - 1);
}

/**
 * `stack` (G_stack): the source stack, then k new layers on top copying source layers
 * 0, 1, ..., L−1, 0, 1, ... in order (L' = 2L repeats the whole stack once).
 */
export function stackLayerMap(L: number, L2: number): LayerMapEntry[] {
  if (L2 < L)
    throw new PlanError('targets.num_hidden_layers', `${L2} is fewer than the source's ${L} layers; growth cannot remove layers`);
  return [
    ...Array.from({ length: L }, (_, l) => ({ source: l, inserted: false })),
    ...Array.from({ length: L2 - L }, (_, j) => ({ source: j % L, inserted: true })),
  ];
}

/** Position in the grown stack of the residual stream that source boundary n (0..L) maps to. */
export { grownBoundary } from './boundary.ts';
