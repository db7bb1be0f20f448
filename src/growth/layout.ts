/**
 * The composed growth: axis maps of every dimension (from the operator table, operators.ts), the layer map
 * (depth), and from them, for every output tensor, where each entry comes from. This is the one
 * place that turns operators into per-tensor operations; grow.ts only executes them.
 *
 * An output entry (i, j) of a tensor with dims (d0, d1) copies source entry (rows[i], cols[j])
 * when both are old; otherwise it is new and gets a fill: `one` for norm gains, `zero` where
 * zero mode needs it (a new entry that would write into the old residual stream) or init.new is
 * zero, else `random` (seeded normal, std per role).
 *
 * init.new clone: the maps of the cloned dimensions point new indices at the source index they
 * copy (operators.ts), so clones are copied like old entries; an exact clone also splits the
 * columns of the tensors that consume the dimension (`split`: 1/copies per column) and may scale
 * a whole tensor (tied embeddings: the final norm). init.noise adds symmetry-breaking noise only
 * where it keeps the function (`noise`, see NoiseOp). New entries no clone reaches (vocab padding,
 * inserted layers initialised at random) are random.
 * zero, else `random` (seeded normal, std per role). With `vocab.new: "tokens"` a new vocabulary
 * row (embed_tokens, untied lm_head) is `mean`: each old column holds the mean of the source rows
 * there (new columns, if H grows too, get the usual fill).
 */
import { LLAMA_TENSORS, SPEC_BY_ROLE, dimSize, expectedTensors, tensorName, type Dim, type Role } from '../spec/arch.ts';
import type { ModelConfig } from '../spec/config.ts';
import type { MaskSet } from '../checkpoint/masks.ts';
import { allNew, countOld, type AxisMap } from './axis-map.ts';
import {
  OPERATORS,
  ZERO_MODE_AXES,
  ZERO_MODE_INSERTED,
  type GrowthOperator,
  type MaskVector,
  type WidthInit,
} from './operators.ts';
import type { LayerMapEntry } from './depth.ts';
import { stdFor, type GrowthPlan } from './plan.ts';

export type Fill = 'random' | 'zero' | 'one' | 'mean';

export interface GrowthLayout {
  source: ModelConfig;
  target: ModelConfig;
  mode: 'masked' | 'zero';
  maps: Record<Dim, AxisMap>;
  /** Query head map (output head -> source head or -1). */
  headMap: AxisMap;
  /** Unit maps of the mask vectors (hidden, vocab, heads, ffn; residual comes from the layer map). */
  units: Partial<Record<MaskVector, AxisMap>>;
  layerMap: LayerMapEntry[];
  layerInit: 'copy' | 'random';
  newInit: WidthInit['new'];
  /** init.noise: symmetry-breaking noise relative to each row's std (0: none). */
  noise: number;
  /** init.new clone: dimensions cloned exactly (copies are ordinary units, consumers split) or masked. */
  clones: Partial<Record<Dim, { exact: boolean; op: GrowthOperator }>>;
  vocabNew: 'padding' | 'tokens';
  seed: number;
  /** Multiplier of every norm gain (zero mode: sqrt(H/H'), else 1). */
  normScale: number;
  /** Roles multiplied by normScale (the hidden operator's normScaledRoles). */
  normScaled: readonly Role[];
  std: Record<Role, number>;
}

export function buildLayout(
  source: ModelConfig,
  target: ModelConfig,
  plan: GrowthPlan,
  layerMap: LayerMapEntry[],
  normScale = 1,
): GrowthLayout {
  const s = source;
  const t = target;
  const maps = {} as Record<Dim, AxisMap>;
  const units: Partial<Record<MaskVector, AxisMap>> = {};
  const init: WidthInit = { new: plan.init.new, seed: plan.seed };
  const clones: GrowthLayout['clones'] = {};
  for (const op of OPERATORS) {
    Object.assign(maps, op.indexMaps(s, t, init));
    if (op.mask !== undefined && op.units !== undefined) units[op.mask] = op.units(s, t, init);
    if (init.new === 'clone' && op.clone !== undefined && op.extent !== undefined && op.extent(t) > op.extent(s)) {
      for (const d of op.dims) if (d !== 'HD') clones[d] = { exact: op.clone.exact(s, t), op };
    }
  }
  const std = Object.fromEntries(LLAMA_TENSORS.map((x) => [x.role, stdFor(plan, s, x.role, x.kind)])) as Record<Role, number>;
  return {
    source,
    target,
    mode: plan.mode,
    maps,
    headMap: units.heads as AxisMap,
    units,
    layerMap,
    layerInit: plan.init.layers,
    newInit: plan.init.new,
    noise: plan.init.noise,
    clones,
    vocabNew: plan.vocab.new,
    seed: plan.seed,
    normScale,
    std,
    normScaled: normScale === 1 ? [] : OPERATORS.flatMap((op) => op.normScaledRoles?.(t) ?? []),
  };
}

export interface TensorOp {
  name: string;
  role: Role;
  layer: number | undefined;
  /** Output shape (1-D norms are treated as one row: rows = [0 or NEW], cols = the H map). */
  shape: number[];
  /** Source tensor copied from; undefined when every entry is new. */
  source: string | undefined;
  rows: AxisMap;
  cols: AxisMap;
  /** Fill of a new entry, by whether its row / column is new. */
  fillNewRow: Fill; // new row, old column
  fillNewCol: Fill; // old row, new column
  fillNewBoth: Fill;
  /** Every entry 0 (zero-mode inserted o/down). */
  zeroAll: boolean;
  /** Multiply every value (norm rescaling; an exact hidden clone's tied final norm), 1 = none. */
  scale: number;
  std: number;
  /** Exact clone: per output column, the multiplier 1/c of the split among a unit and its copies. */
  split?: Float32Array;
  /** init.noise > 0: where noise may go without changing the function. */
  noise?: NoiseOp;
}

/**
 * Symmetry-breaking noise (init.noise), of std `rel` × the std of the row as copied:
 * - split columns (exact clones): each copy's column gets +δ and its group's first column (the
 *   original) −δ, as in HyperCloning's noisy variants (the noise added to one copy's block is
 *   subtracted from the other's, arXiv:2409.12903): the group's columns multiply equal
 *   activations, so the sum, hence the function, is unchanged (to rounding) while the copies'
 *   out-weights, and so their gradients, differ;
 * - rows / columns of masked clones (a hidden ratio that is not whole): independent δ on every
 *   entry of a new coordinate, which the mask keeps out of the function whatever it holds.
 * Exact clones' input weights (gate/up/q rows, copied embeddings) get none: the copies' equal
 * activations are what the split relies on.
 */
export interface NoiseOp {
  rel: number;
  /** Per column: the first column of its copy group (itself for the original), or -1 (not split). */
  origin?: Int32Array;
  freeRows?: Uint8Array;
  freeCols?: Uint8Array;
}

/** 1/c per output index, c the number of output indices copying the same source index. */
function splitOf(map: AxisMap): Float32Array {
  const count = new Map<number, number>();
  for (const s of map) count.set(s, (count.get(s) ?? 0) + 1);
  return Float32Array.from(map, (s) => 1 / (count.get(s) as number));
}

/** Per output index, the first output index copying the same source index. */
function originOf(map: AxisMap): Int32Array {
  const first = new Map<number, number>();
  return Int32Array.from(map, (s, j) => {
    if (!first.has(s)) first.set(s, j);
    return first.get(s) as number;
  });
}

/** 1 on the new indices of a masked clone dimension (its old ones keep their index, new ones are appended). */
function newIndices(map: AxisMap, oldSize: number): Uint8Array {
  return Uint8Array.from(map, (_, j) => (j >= oldSize ? 1 : 0));
}

function sourceName(role: Role, layer: number | undefined): string {
  return tensorName(role, layer);
}

/** Every output tensor's operation, in the output's natural (HF) order. */
export function tensorOps(g: GrowthLayout): TensorOp[] {
  return expectedTensors(g.target).map((e) => {
    const spec = SPEC_BY_ROLE[e.role];
    const entry = e.layer === undefined ? undefined : g.layerMap[e.layer];
    const inserted = entry?.inserted === true;
    const fresh = inserted && g.layerInit === 'random';
    const srcLayer = entry?.source;
    const oneD = e.dims.length === 1;
    const rowDim: Dim | undefined = oneD ? undefined : e.dims[0];
    const colDim: Dim = oneD ? e.dims[0] : e.dims[1];
    let rows: AxisMap = rowDim === undefined ? Int32Array.of(0) : g.maps[rowDim];
    let cols: AxisMap = g.maps[colDim];
    if (fresh) {
      rows = allNew(rows.length);
      cols = allNew(cols.length);
    }
    const isNorm = spec.kind === 'norm';
    const base: Fill = isNorm ? 'one' : g.newInit === 'zero' ? 'zero' : 'random';
    const clone = fresh ? {} : cloneParts(g, e.role, rowDim, colDim, rows, cols, spec.kind === 'norm');
    const zeroAxes = g.mode === 'zero' ? (ZERO_MODE_AXES[e.role] ?? []) : [];
    const rowZero = rowDim !== undefined && zeroAxes.includes(rowDim);
    const colZero = zeroAxes.includes(colDim);
    return {
      name: e.name,
      role: e.role,
      layer: e.layer,
      shape: e.shape,
      source: fresh ? undefined : sourceName(e.role, srcLayer),
      rows,
      cols,
      fillNewRow: rowZero ? 'zero' : rowDim === 'V' && g.vocabNew === 'tokens' ? 'mean' : base,
      fillNewCol: colZero ? 'zero' : base,
      fillNewBoth: rowZero || colZero ? 'zero' : base,
      zeroAll: g.mode === 'zero' && inserted && ZERO_MODE_INSERTED.includes(e.role),
      scale: (g.normScaled.includes(e.role) ? g.normScale : 1) * (clone.scale ?? 1),
      std: g.std[e.role],
      ...(clone.split !== undefined ? { split: clone.split } : {}),
      ...(clone.noise !== undefined ? { noise: clone.noise } : {}),
    };
  });
}

/** What init.new clone adds to one tensor's op: the split of its consumed exact-clone columns, a scale, noise. */
function cloneParts(
  g: GrowthLayout,
  role: Role,
  rowDim: Dim | undefined,
  colDim: Dim,
  rows: AxisMap,
  cols: AxisMap,
  isNorm: boolean,
): { split?: Float32Array; scale?: number; noise?: NoiseOp } {
  const out: { split?: Float32Array; scale?: number; noise?: NoiseOp } = {};
  const c = g.clones[colDim];
  const splits = rowDim !== undefined && c?.exact === true && c.op.clone?.splitRoles.includes(role) === true;
  if (splits) out.split = splitOf(cols);
  for (const d of Object.values(g.clones)) {
    if (!d.exact) continue;
    const f = d.op.clone?.scaled?.(g.source, g.target)[role];
    if (f !== undefined) out.scale = (out.scale ?? 1) * f;
  }
  if (g.noise > 0 && !isNorm) {
    const masked = (d: Dim | undefined) => d !== undefined && g.clones[d]?.exact === false;
    const noise: NoiseOp = { rel: g.noise };
    if (splits) noise.origin = originOf(cols);
    if (masked(rowDim)) noise.freeRows = newIndices(rows, dimSize(g.source, rowDim as Dim));
    if (masked(colDim)) noise.freeCols = newIndices(cols, dimSize(g.source, colDim));
    if (noise.origin !== undefined || noise.freeRows !== undefined || noise.freeCols !== undefined) out.noise = noise;
  }
  return out;
}

/**
 * MSG masks right after growth: 1 on old units, 0 on new ones; inserted layers residual 0.
 * Growing an already-masked checkpoint (masks not yet annealed) carries its masks over: old
 * units keep their current value, so the grown masked model equals the masked source.
 * `vocabTokens` marks the new ids of a `vocab.new: "tokens"` growth (and carries the source's).
 */
export function initialMasks(g: GrowthLayout, sourceMasks?: MaskSet): MaskSet {
  const carry = (map: AxisMap, old: ArrayLike<number> | undefined) =>
    Float32Array.from(map, (s) => (s < 0 ? 0 : old === undefined ? 1 : old[s]));
  const sm = sourceMasks;
  const u = g.units as Record<Exclude<MaskVector, 'residual'>, AxisMap>;
  const tokens =
    g.vocabNew === 'tokens' || sm?.vocabTokens !== undefined
      ? Float32Array.from(u.vocab, (s) => (s < 0 ? (g.vocabNew === 'tokens' ? 1 : 0) : (sm?.vocabTokens?.[s] ?? 0)))
      : undefined;
  return {
    hidden: carry(u.hidden, sm?.hidden),
    vocab: carry(u.vocab, sm?.vocab),
    ...(tokens?.includes(1) === true ? { vocabTokens: tokens } : {}),
    layers: g.layerMap.map((e) => {
      const sl = sm?.layers[e.source];
      return {
        heads: carry(u.heads, sl?.heads),
        ffn: carry(u.ffn, sl?.ffn),
        residual: e.inserted ? 0 : (sl?.residual ?? 1),
      };
    }),
  };
}

/** Human summary of one tensor op for `plan`. */
export function opSummary(op: TensorOp): { copied: number; fresh: number } {
  const copied = op.source === undefined || op.zeroAll ? 0 : countOld(op.rows) * countOld(op.cols);
  const total = op.shape.reduce((a, b) => a * b, 1);
  return { copied, fresh: total - copied };
}
