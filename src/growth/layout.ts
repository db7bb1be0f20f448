/**
 * The composed growth: axis maps of every dimension (from the operator table, operators.ts), the layer map
 * (depth), and from them, for every output tensor, where each entry comes from. This is the one
 * place that turns operators into per-tensor operations; grow.ts only executes them.
 *
 * An output entry (i, j) of a tensor with dims (d0, d1) copies source entry (rows[i], cols[j])
 * when both are old; otherwise it is new and gets a fill: `one` for norm gains, `zero` where
 * zero mode needs it (a new entry that would write into the old residual stream) or init.new is
 * zero, else `random` (seeded normal, std per role). With `vocab.new: "tokens"` a new vocabulary
 * row (embed_tokens, untied lm_head) is `mean`: each old column holds the mean of the source rows
 * there (new columns, if H grows too, get the usual fill).
 */
import { LLAMA_TENSORS, SPEC_BY_ROLE, expectedTensors, tensorName, type Dim, type Role } from '../arch.ts';
import type { ModelConfig } from '../config.ts';
import type { MaskSet } from '../masks.ts';
import { allNew, countOld, type AxisMap } from './axis-map.ts';
import { OPERATORS, ZERO_MODE_AXES, ZERO_MODE_INSERTED, type MaskVector } from './operators.ts';
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
  newInit: 'random' | 'zero';
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
  for (const op of OPERATORS) {
    Object.assign(maps, op.indexMaps(s, t));
    if (op.mask !== undefined && op.units !== undefined) units[op.mask] = op.units(s, t);
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
  /** Multiply every value (norm rescaling), 1 = none. */
  scale: number;
  std: number;
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
      scale: g.normScaled.includes(e.role) ? g.normScale : 1,
      std: g.std[e.role],
    };
  });
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
