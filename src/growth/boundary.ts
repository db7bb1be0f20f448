/**
 * Where the source's residual-stream boundaries sit in a grown stack. Boundary n (0..L) is the
 * stream after source layer n-1 (0: the embeddings; L: the last layer's output, which
 * hidden_states reports after the final norm). In the grown stack it is found after the original
 * layer n-1 and the inserted layers right behind it: those are identities at growth (residual
 * mask 0, or o/down zero), so the stream there is the source's. Found by position, not by the
 * inserted layers' source: a `stack` placement's copies of layer 0 sit on top, after layer L-1.
 */
import { FlmGrowError } from '../util/errors.ts';

type LayerMap = readonly { source: number; inserted: boolean }[];

/** Grown boundary of source boundary n: 0 -> 0, L -> L', else past original layer n-1 and the inserted layers after it. */
export function grownBoundary(layerMap: LayerMap, n: number): number {
  if (n === 0) return 0;
  let i = layerMap.findIndex((e) => !e.inserted && e.source === n - 1);
  if (i < 0) return -1;
  while (i + 1 < layerMap.length && layerMap[i + 1].inserted) i++;
  return i + 1;
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
