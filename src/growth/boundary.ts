/**
 * Where the source's residual-stream boundaries sit in a grown stack. Boundary n (0..L) is the
 * stream after source layer n-1 (0: the embeddings; L: the last layer's output, which
 * hidden_states reports after the final norm). In the grown stack it is found after the last
 * layer that came from source layer n-1, i.e. past its inserted copies: those are identities at
 * growth (residual mask 0, or o/down zero), so the stream there is the source's.
 */
import { FlmGrowError } from '../errors.ts';

type LayerMap = readonly { source: number; inserted: boolean }[];

/** Grown boundary of source boundary n: 0 -> 0, L -> L', else past source layer n-1's inserted copies. */
export function grownBoundary(layerMap: LayerMap, n: number): number {
  if (n === 0) return 0;
  let last = -1;
  layerMap.forEach((e, i) => {
    if (e.source === n - 1) last = i;
  });
  return last + 1;
}

/**
 * grownBoundary for every source boundary 0..Ls. Without a layer map the depths must match
 * (identity); otherwise only 0 and Ls -> Lg are known (-1: not compared).
 */
export function boundaryMap(Ls: number, Lg: number, layerMap: LayerMap | undefined): number[] {
  if (layerMap === undefined) {
    if (Ls !== Lg) return [0, ...Array.from({ length: Ls - 1 }, () => -1), Lg];
    return Array.from({ length: Ls + 1 }, (_, n) => n);
  }
  if (layerMap.length !== Lg)
    throw new FlmGrowError(
      'BadManifest',
      `manifest layerMap has ${layerMap.length} entries but the grown config has ${Lg} layers`,
    );
  return Array.from({ length: Ls + 1 }, (_, n) => grownBoundary(layerMap, n));
}
