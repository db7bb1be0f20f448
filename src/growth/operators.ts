/**
 * Every growth operator, one entry each in OPERATORS: the plan fields it owns, the size it grows,
 * how it sets the target config, what it validates, the index maps of the arch.ts dimensions it
 * grows, which new entries zero mode must zero (and, for hidden, the norm rule), and which mask
 * vector and annealing group it gets. Each entry's comment is its preservation argument (SPEC
 * §2, §3). plan.ts (resolve, validate, grown groups), layout.ts (maps, zero mode, masks) and
 * grow.ts iterate this table; none of them names an operator. Adding an operator (a width-init
 * variant, a depth placement, biases, qk-norm) is one entry here plus its test
 * (operators-table.test.ts checks that every entry is exercised and every field owned once).
 *
 * The common language is the axis map (axis-map.ts): for each output index, the source index it
 * copies or NEW. layout.ts turns the maps into per-tensor operations.
 */
import { isHiddenNorm, LLAMA_TENSORS, type Dim, type Role } from '../spec/arch.ts';
import { hashSeed, mulberry32, uniformInt } from '../util/random.ts';
import { say, type ModelConfig } from '../spec/config.ts';
import type { DType } from '../util/dtype.ts';
import { PlanError } from '../util/errors.ts';
import type { MaskGroup } from '../checkpoint/masks.ts';
import { appendMap, expandBlocks, NEW, type AxisMap } from './axis-map.ts';
import type { GrowthPlan, GrowthTargets, PlacementPlan } from './plan.ts';
import {
  buildLayerMap,
  edgePositions,
  interleavePositions,
  stackLayerMap,
  uniformPositions,
  type LayerMapEntry,
} from './depth.ts';

/** The vectors of masks.safetensors (SPEC §2): global `hidden`, `vocab`; per layer `heads`, `ffn`, `residual`. */
export type MaskVector = 'hidden' | 'vocab' | 'heads' | 'ffn' | 'residual';

/** How new width units start (plan `init.new`) and the growth's seed, which picks the units clones copy. */
export interface WidthInit {
  new: 'random' | 'zero' | 'clone';
  seed: number;
}

/** The width-init modes (plan `init.new`); `clone` is refused in zero mode (plan.ts). */
export const WIDTH_INITS = ['random', 'zero', 'clone'] as const satisfies readonly WidthInit['new'][];

/**
 * An operator's clone construction (init.new clone): which grown tensors consume its dimension
 * (their columns along it are split among a unit and its copies) and whether the construction
 * preserves the function on its own. Where it does, the copies are ordinary units: mask 1 (or
 * the carried value of the unit they copy), no annealing group. Where it does not, the copies are
 * new units like random ones: mask 0, annealed, and nothing is split.
 */
export interface CloneRule {
  exact(src: ModelConfig, target: ModelConfig): boolean;
  /** Roles whose columns along this dimension are input weights: split w/count among copies. */
  readonly splitRoles: readonly Role[];
  /** Extra whole-tensor multipliers an exact clone needs (tied embeddings: the final norm). */
  scaled?(src: ModelConfig, target: ModelConfig): Partial<Record<Role, number>>;
}

export interface GrowthOperator {
  readonly name: string;
  /** Plan target fields (HF config keys) this operator owns; every field has exactly one owner. */
  readonly targets: readonly (keyof GrowthTargets)[];
  /** The size it grows, set by its first target field (never shrinks; grows when the target's is larger). Absent: not a size. */
  readonly extent?: (c: ModelConfig) => number;
  /** The target config fields it sets from the plan's targets (absent targets keep the source's). */
  resolve(src: ModelConfig, targets: GrowthTargets): Partial<ModelConfig>;
  /** Checks beyond "no shrinking", on the fully resolved target; throws PlanError naming the field. */
  validate?(src: ModelConfig, target: ModelConfig, targets: GrowthTargets, where: string): void;
  /** arch.ts dimensions whose index maps it builds (each dimension has exactly one owner). */
  readonly dims: readonly Dim[];
  /** With init.new clone a new index maps to the source index it copies (still new for its mask unless the clone is exact). */
  indexMaps(src: ModelConfig, target: ModelConfig, init: WidthInit): Partial<Record<Dim, AxisMap>>;
  /** Its mask vector and the map over its units (heads: query heads, not rows); an exact clone maps to its source unit. */
  readonly mask?: MaskVector;
  units?(src: ModelConfig, target: ModelConfig, init: WidthInit): AxisMap;
  /** Its clone construction (absent: the operator grows no width that can be cloned). */
  readonly clone?: CloneRule;
  /** The mask group annealed for it (absent: no annealing, e.g. vocab padding stays 0). */
  readonly maskGroup?: MaskGroup;
  /** Whether that group anneals under this plan (absent: always; vocab padding stays 0). */
  readonly anneals?: (plan: GrowthPlan) => boolean;
  /** Zero mode: (role, dim) pairs whose new entries write into the old residual stream and must be 0. */
  readonly zeroModeAxes: Partial<Record<Role, readonly Dim[]>>;
  /** Zero mode: tensors of inserted layers that are all 0. */
  readonly zeroModeInserted?: readonly Role[];
  /** Zero mode: rescaling of norm gains and eps the operator needs (at most one operator has one). */
  readonly normRule?: (src: ModelConfig, target: ModelConfig, gainDtype: DType) => ZeroModeNorm;
  /** Zero mode, with normRule: the roles whose every value is multiplied by its gainScale. */
  readonly normScaledRoles?: (target: ModelConfig) => readonly Role[];
}

// ---- hidden: the zero-mode norm rule -------------------------------------------------------

export type NormExactness = 'exact' | 'f32-rounding' | 'rounded';

export interface ZeroModeNorm {
  /** Multiplier of every RMSNorm gain. */
  gainScale: number;
  /** Multiplier of rms_norm_eps. */
  epsScale: number;
  /** exact: power-of-two factor (or no growth); f32-rounding: ~6e-8 relative; rounded: to the 16-bit dtype. */
  exactness: NormExactness;
  note: string;
}

export function zeroModeNorm(H: number, H2: number, gainDtype: DType): ZeroModeNorm {
  const gainScale = Math.sqrt(H / H2);
  const epsScale = H / H2;
  const pow2 = Number.isInteger(Math.log2(gainScale));
  const exactness: NormExactness = pow2 ? 'exact' : gainDtype === 'F32' || gainDtype === 'F64' ? 'f32-rounding' : 'rounded';
  const note =
    H === H2
      ? 'hidden size unchanged: norms untouched (exact)'
      : exactness === 'exact'
        ? `norm gains × ${gainScale} (a power of two): exact`
        : exactness === 'f32-rounding'
          ? `norm gains × sqrt(${H}/${H2}) = ${gainScale.toPrecision(8)} stored in f32: preserved to f32 rounding (~1e-7 relative)`
          : `norm gains × sqrt(${H}/${H2}) = ${gainScale.toPrecision(8)} rounded to ${gainDtype}: preserved only to that rounding (bf16 keeps 8 significant bits); use --dtype f32 for an exact zero-mode growth`;
  return { gainScale, epsScale, exactness, note };
}

// ---- heads / kv heads: GQA groups ------------------------------------------------------------

/** Whether old query heads can keep their KV head (group size may grow, never shrink). */
export function checkGroups(nh: number, nkv: number, nh2: number, nkv2: number, where = 'plan'): void {
  if (nh2 % nkv2 !== 0) {
    throw new PlanError('targets.num_key_value_heads', say('kvHeadsDivide', { value: nkv2, heads: nh2 }), where);
  }
  const g = nh / nkv;
  const g2 = nh2 / nkv2;
  if (g2 < g) {
    throw new PlanError(
      'targets.num_key_value_heads',
      `group size would shrink from ${g} to ${g2} query heads per KV head (${nh}/${nkv} -> ${nh2}/${nkv2}): the ${g} query heads sharing an old KV head would no longer fit in one group`,
      where,
    );
  }
}

/** Query head map: old heads first in their (possibly larger) group, new heads fill the rest. */
export function queryHeadMap(nh: number, nkv: number, nh2: number, nkv2: number): AxisMap {
  checkGroups(nh, nkv, nh2, nkv2);
  const g = nh / nkv;
  const g2 = nh2 / nkv2;
  const m = new Int32Array(nh2).fill(NEW);
  for (let j = 0; j < nh; j++) {
    const k = Math.floor(j / g);
    m[k * g2 + (j % g)] = j;
  }
  return m;
}

export function kvRowMap(nkv: number, nkv2: number, headDim: number): AxisMap {
  return expandBlocks(appendMap(nkv, nkv2), headDim);
}

// ---- clone maps (init.new clone) ---------------------------------------------------------------

/** Stream tags of the clone maps: one seeded stream per dimension, from the growth's seed. */
const CLONE_STREAM = { H: 1, F: 2, KV: 3, Q: 4 } as const;

function cloneRng(init: WidthInit, dim: keyof typeof CLONE_STREAM): () => number {
  return mulberry32(hashSeed(init.seed, 0x636c6f6e /* "clon" */, CLONE_STREAM[dim]));
}

/**
 * Net2WiderNet's random mapping g (Chen et al. 2016, "Net2Net", arXiv:1511.05641): old units
 * keep their index, each new unit j >= n copies a source unit drawn uniformly from [0, n) with
 * the growth's seed.
 */
export function cloneAppendMap(n: number, n2: number, next: () => number): AxisMap {
  const m = appendMap(n, n2);
  for (let j = n; j < n2; j++) m[j] = uniformInt(next, n);
  return m;
}

/** HyperCloning's layout (Samragh et al. 2024): H' = k·H, coordinate j copies j mod H, so every one is replicated k times. */
export function tileMap(n: number, n2: number): AxisMap {
  return Int32Array.from({ length: n2 }, (_, j) => j % n);
}

/** Whether the hidden clone is exact: H' a whole multiple of H (RMSNorm needs every coordinate replicated equally). */
export function hiddenCloneExact(H: number, H2: number): boolean {
  return H2 % H === 0;
}

function hiddenCloneMap(s: ModelConfig, t: ModelConfig, init: WidthInit): AxisMap {
  const [H, H2] = [s.hiddenSize, t.hiddenSize];
  return hiddenCloneExact(H, H2) ? tileMap(H, H2) : cloneAppendMap(H, H2, cloneRng(init, 'H'));
}

/** New KV heads: each copies a seeded old KV head (block map over heads). */
export function cloneKvHeadMap(nkv: number, nkv2: number, init: WidthInit): AxisMap {
  return cloneAppendMap(nkv, nkv2, cloneRng(init, 'KV'));
}

/**
 * Query heads with clones: old heads where queryHeadMap puts them; a new head in group k copies
 * an old query head of the group whose KV head k copies (k itself when k is old, the KV clone
 * map's source when k is new), so the clone reads the same keys and values as its original.
 */
export function cloneQueryHeadMap(nh: number, nkv: number, nh2: number, nkv2: number, init: WidthInit): AxisMap {
  const m = queryHeadMap(nh, nkv, nh2, nkv2);
  const kvMap = cloneKvHeadMap(nkv, nkv2, init);
  const g = nh / nkv;
  const g2 = nh2 / nkv2;
  const next = cloneRng(init, 'Q');
  for (let j = 0; j < nh2; j++) {
    if (m[j] >= 0) continue;
    const k0 = kvMap[Math.floor(j / g2)];
    m[j] = k0 * g + uniformInt(next, g);
  }
  return m;
}

// ---- the table -------------------------------------------------------------------------------

/**
 * Hidden size H -> H'. Old coordinates keep their index; new ones are appended.
 *
 * Masked mode: the embedding output and every write into the residual stream are multiplied by
 * the hidden mask, so the new coordinates of x stay exactly 0, and mask-aware RMSNorm averages
 * over the H old coordinates only; new input columns of q/k/v/gate/up/lm_head multiply zeros.
 * Whatever the new weights are, the old function is unchanged.
 *
 * Zero mode (no masks): new embed columns and the new rows of o_proj/down_proj are 0, so the new
 * coordinates stay 0. Plain RMSNorm over H' then divides by rms·sqrt(H/H') instead of rms, so
 * every gain is multiplied by sqrt(H/H') and eps by H/H':
 *   (sum x²/H' + eps·H/H') = (H/H')·(sum x²/H + eps)  =>  x/rms' · g·sqrt(H/H') = x/rms · g.
 * Exact when sqrt(H/H') is a power of two; otherwise it holds to the rounding of the gains in
 * the output dtype. Only the norms over H are rescaled (arch.ts isHiddenNorm).
 *
 * Qwen3's q_norm / k_norm (RMSNorm over head_dim, eps = rms_norm_eps) see the new eps too. Their
 * inputs q = W_q h (+ b_q), k likewise, are unchanged (h is), so zero mode also multiplies q_proj
 * and k_proj (and their biases) by s = sqrt(H/H'):
 *   s·q / sqrt(mean(s²q²) + eps·H/H') = s·q / (s·sqrt(mean(q²) + eps)) = q / sqrt(mean(q²) + eps),
 * so the normed q and k, hence RoPE, scores and everything after, are the old ones (exact to the
 * same rounding as the gains). q_norm/k_norm gains themselves stay.
 *
 * Tied embeddings: embed_tokens is also the LM head. Its new columns multiply the new
 * coordinates of the final normed state, which are 0 in both modes (masked: x_new = 0 and the
 * mask-aware norm gives 0·g; zero mode: x_new = 0 by the zero rows above), so the logits of old
 * ids are unchanged whatever the new columns hold; zero mode's 0 columns serve both uses.
 *
 * Clone (HyperCloning, Samragh et al. 2024, "Scaling Smart", arXiv:2409.12903: the expanded
 * vector is [x, x], a hidden-to-hidden weight becomes W tiled k×k divided by k, i.e. its output
 * rows copied and its input columns split). With H' = k·H, coordinate j copies j mod H: the
 * embedding's columns, the norm gains and the rows of o_proj / down_proj (the producers of the
 * residual stream) are copied, so by induction every residual vector is x' = x tiled k times
 * (each write is the old one tiled; with a carried hidden mask m, m' is m tiled, and so is the
 * masked stream). RMSNorm is preserved because each coordinate appears exactly k times:
 *   sum_j m'_j x'_j² / sum_j m'_j = k·sum_i m_i x_i² / (k·sum_i m_i),
 * so the normed state is n tiled. The consumers (q/k/v/gate/up/lm_head) have their columns
 * split: W'[:, j] = W[:, j mod H]/k, hence W' n' = sum_i k·(W[:, i]/k) n_i = W n. Tied
 * embeddings cannot be both copied (producer) and split (consumer): the columns are copied and
 * the final norm's gains, read only by the LM head, are divided by k instead (logits = E·(n/k)
 * summed over k copies = E n; the final normed state, which verify reports as its last hidden
 * state, is then n/k). The masks stay 1 (no annealing). A ratio that is not a whole number
 * replicates some coordinates more often than others and the norm changes, so there the clones
 * are masked new coordinates (Net2Net's seeded map, nothing split, preserved by the mask as
 * above whatever they hold). Exact up to the rounding of w/k in the output dtype (none for k a
 * power of two).
 */
const hidden: GrowthOperator = {
  name: 'hidden',
  targets: ['hidden_size'],
  extent: (c) => c.hiddenSize,
  resolve: (s, targets) => ({ hiddenSize: targets.hidden_size ?? s.hiddenSize }),
  dims: ['H'],
  indexMaps: (s, t, init) => ({
    H: init.new === 'clone' ? hiddenCloneMap(s, t, init) : appendMap(s.hiddenSize, t.hiddenSize),
  }),
  mask: 'hidden',
  units: (s, t, init) =>
    init.new === 'clone' && hiddenCloneExact(s.hiddenSize, t.hiddenSize)
      ? tileMap(s.hiddenSize, t.hiddenSize)
      : appendMap(s.hiddenSize, t.hiddenSize),
  clone: {
    exact: (s, t) => hiddenCloneExact(s.hiddenSize, t.hiddenSize),
    splitRoles: ['q', 'k', 'v', 'gate', 'up', 'lm_head'],
    scaled: (s, t) => (t.tieWordEmbeddings ? { final_norm: s.hiddenSize / t.hiddenSize } : {}),
  },
  maskGroup: 'hidden',
  zeroModeAxes: { embed: ['H'], o: ['H'], down: ['H'] },
  normRule: (s, t, gainDtype) => zeroModeNorm(s.hiddenSize, t.hiddenSize, gainDtype),
  normScaledRoles: (t) => [
    ...LLAMA_TENSORS.filter(isHiddenNorm).map((x) => x.role),
    ...(t.qkNorm ? (['q', 'k', ...(t.qkvBias ? (['q_bias', 'k_bias'] as const) : [])] as const) : []),
  ],
};

function ffnMap(s: ModelConfig, t: ModelConfig, init: WidthInit): AxisMap {
  const [F, F2] = [s.intermediateSize, t.intermediateSize];
  return init.new === 'clone' ? cloneAppendMap(F, F2, cloneRng(init, 'F')) : appendMap(F, F2);
}

/**
 * FFN size F -> F'. Old units keep their index; new ones are appended (rows of gate/up, columns
 * of down). A unit contributes down[:, f] · silu(gate_f·h)·up_f·h to the residual stream.
 * Masked mode: the ffn mask multiplies the new units' activations by 0. Zero mode: their
 * down_proj columns are 0. Either way the new units add exactly 0, whatever gate/up hold.
 *
 * Clone (Net2Net's Net2WiderNet, Chen et al. 2016, arXiv:1511.05641): new unit j copies the
 * gate/up rows of a seeded source unit g(j); every unit u and its copies share u's activation
 * a_u (same input weights, same mask value: the copies carry u's), and each gets down[:, u]/c_u,
 * c_u = 1 + the number of copies of u, so their sum c_u·(down[:, u]/c_u)·a_u = down[:, u]·a_u
 * is the old contribution, in the plain model as well as the masked one: the copies are
 * ordinary units (mask 1, no annealing; multiplying them by a 0 mask would halve u's output).
 */
const ffn: GrowthOperator = {
  name: 'ffn',
  targets: ['intermediate_size'],
  extent: (c) => c.intermediateSize,
  resolve: (s, targets) => ({ intermediateSize: targets.intermediate_size ?? s.intermediateSize }),
  dims: ['F'],
  indexMaps: (s, t, init) => ({ F: ffnMap(s, t, init) }),
  mask: 'ffn',
  units: (s, t, init) => ffnMap(s, t, init),
  clone: { exact: () => true, splitRoles: ['down'] },
  maskGroup: 'ffn',
  zeroModeAxes: { down: ['F'] },
};

function headMap(s: ModelConfig, t: ModelConfig, init: WidthInit): AxisMap {
  const args = [s.numHeads, s.numKvHeads, t.numHeads, t.numKvHeads] as const;
  return init.new === 'clone' ? cloneQueryHeadMap(...args, init) : queryHeadMap(...args);
}

/**
 * Attention heads nh -> nh' (whole blocks of head_dim rows of q_proj, columns of o_proj).
 *
 * Query head j reads KV head floor(j / g), g = nh/nkv. If the group size stays (g' = g), old
 * heads keep their index and new ones are appended (with the new KV heads). If it grows
 * (g' > g), the g old heads of group k go to the first g slots of new group k and the new heads
 * fill the rest: a permutation of q_proj rows and o_proj columns together (itself
 * function-preserving: o_proj·concat(heads) is a sum over heads), after which each old head
 * still reads KV head k. New heads contribute 0: their output is multiplied by the head mask
 * (masked mode) or by zero o_proj columns (zero mode).
 *
 * Qwen2's q/k/v biases ([nh·hd], [nkv·hd], [nkv·hd]) carry the Q and KV dimensions, so they move
 * with their heads' rows (the same maps). Head j's output is softmax((W_q,j h + b_q,j)·(W_k,k h +
 * b_k,k)ᵀ/√hd)·(W_v,k h + b_v,k): for an old head every term is the old one (same rows, same
 * biases, same KV head k). A new head's bias entries, whatever they hold, only change that new
 * head's output, which is multiplied by its head mask (masked mode) or by its zero o_proj columns
 * (zero mode): the residual stream gets exactly 0 from it. New KV heads' biases are read only by
 * new query heads (kv-heads below). Qwen3's q_norm/k_norm gains [hd] are shared by all heads of a
 * layer (transformers' Qwen3Attention has one RMSNorm(head_dim) for q and one for k), so new heads
 * use the same gains as the old ones; head_dim (HD), which this operator owns, never changes and
 * its map is the identity. An inserted layer initialised at random gets gains of ones.
 *
 * It also owns head_dim, which never changes (RoPE and every head's weights depend on it), and
 * checks the GQA groups (kv heads) and, where the config derives head_dim, H = nh × head_dim.
 *
 * Clone (Net2Net's widening applied to whole heads; HyperCloning doubles the heads with the
 * width the same way, head_dim kept): a new query head copies the q rows (and q bias) of an old
 * head that reads the same keys and values: in an old group k, an old head of group k; in a new
 * group k, an old head of the group whose KV head the new KV head k copies (kv-heads below). So
 * the copy's scores, softmax and values are its original's exactly (RoPE and q_norm act per head
 * and are shared). Each old head u and its copies then produce the same a_u, and their o_proj
 * columns are split, o[:, u]/c_u each, so
 * o_proj·concat(heads) is the old sum: exact in the plain model for every GQA layout that
 * checkGroups accepts (the group size never shrinks, so every group has an old head to copy);
 * masks stay 1 (or the original's carried value), no annealing.
 */
const heads: GrowthOperator = {
  name: 'heads',
  targets: ['num_attention_heads', 'head_dim'],
  extent: (c) => c.numHeads,
  resolve: (s, targets) => ({ numHeads: targets.num_attention_heads ?? s.numHeads }),
  validate: (s, target, targets, where) => {
    if (targets.head_dim !== undefined && targets.head_dim !== s.headDim) {
      throw new PlanError(
        'targets.head_dim',
        `${targets.head_dim} differs from the source's ${s.headDim}; head_dim cannot change (RoPE and every head's weights depend on it)`,
        where,
      );
    }
    checkGroups(s.numHeads, s.numKvHeads, target.numHeads, target.numKvHeads, where);
    const rawHasHeadDim = s.raw.head_dim !== undefined && s.raw.head_dim !== null;
    const H = target.hiddenSize;
    const nh = target.numHeads;
    if (!rawHasHeadDim && H !== nh * s.headDim) {
      throw new PlanError(
        'targets.hidden_size',
        `${H} must equal num_attention_heads × head_dim = ${nh} × ${s.headDim} = ${nh * s.headDim}: the source config has no head_dim, so runtimes derive it as hidden_size / num_attention_heads`,
        where,
      );
    }
  },
  dims: ['Q', 'HD'],
  indexMaps: (s, t, init) => ({
    Q: expandBlocks(headMap(s, t, init), s.headDim),
    HD: appendMap(s.headDim, s.headDim),
  }),
  mask: 'heads',
  units: (s, t, init) => headMap(s, t, init),
  clone: { exact: () => true, splitRoles: ['o'] },
  maskGroup: 'heads',
  zeroModeAxes: { o: ['Q'] },
};

/**
 * KV heads nkv -> nkv' (whole blocks of head_dim rows of k_proj/v_proj). Old KV heads keep their
 * index, new ones are appended; the heads operator places the query heads so each old query head
 * still reads its old KV head. A new KV head is read only by new query heads, whose output is
 * masked (masked mode) or has zero o_proj columns (zero mode), so it adds exactly 0: no mask of
 * its own, nothing to zero. Absent, it follows num_attention_heads for a multi-head source.
 *
 * Clone: a new KV head copies the k/v rows (and biases) of a seeded old KV head; the query heads
 * of its group copy query heads of that old head's group (heads above), so nothing is split here:
 * the new KV head feeds only exact copies, whose o_proj columns the heads operator splits.
 */
const kvHeads: GrowthOperator = {
  name: 'kv-heads',
  targets: ['num_key_value_heads'],
  extent: (c) => c.numKvHeads,
  resolve: (s, targets) => ({
    numKvHeads:
      targets.num_key_value_heads ??
      (targets.num_attention_heads !== undefined && s.numKvHeads === s.numHeads ? targets.num_attention_heads : s.numKvHeads),
  }),
  dims: ['KV'],
  indexMaps: (s, t, init) => ({
    KV:
      init.new === 'clone'
        ? expandBlocks(cloneKvHeadMap(s.numKvHeads, t.numKvHeads, init), s.headDim)
        : kvRowMap(s.numKvHeads, t.numKvHeads, s.headDim),
  }),
  clone: { exact: () => true, splitRoles: [] },
  zeroModeAxes: {},
};

/**
 * Depth L -> L': new layers are inserted where the plan's placement puts them (PLACEMENTS below;
 * depth.ts builds the layer map). A pre-norm block computes x + r·f(x); with r = 0 (masked mode:
 * residual mask) or with o_proj and down_proj all 0 (zero mode, LLaMA-Pro's block expansion) it
 * is the identity, so the stack computes the old function whatever the inserted layer holds.
 * MSG's default fills it with a copy of the layer it follows (`copy`); `random` is the
 * alternative. No dimension map: every tensor of an inserted layer has the widths of the others.
 */
const depth: GrowthOperator = {
  name: 'depth',
  targets: ['num_hidden_layers'],
  extent: (c) => c.numLayers,
  resolve: (s, targets) => ({ numLayers: targets.num_hidden_layers ?? s.numLayers }),
  dims: [],
  indexMaps: () => ({}),
  mask: 'residual',
  maskGroup: 'layers',
  zeroModeAxes: {},
  zeroModeInserted: ['o', 'down'],
};

// ---- depth placements: where inserted layers go (plan key placement.method) -----------------

export type PlacementMethod = 'distance' | 'explicit' | 'uniform' | 'top' | 'bottom' | 'stack' | 'interleave';

export interface Placement {
  readonly name: PlacementMethod;
  /** Chooses its layers from the source's activations: runs the calibration forward pass at grow time. */
  readonly calibrated: boolean;
  /** Deterministic placements: the layer map L -> L2 (L2 > L), from the config alone; throws PlanError naming the field. */
  readonly layerMap?: (L: number, L2: number, p: PlacementPlan) => LayerMapEntry[];
  /** For `plan`: how the layers were placed. */
  describe(p: PlacementPlan, L: number, L2: number): string;
}

/**
 * Every placement inserts whole layers and marks them `inserted`; the depth operator above makes
 * each inserted layer the identity at growth (masked: residual mask 0; zero mode: o_proj and
 * down_proj all 0, LLaMA-Pro's identity init), whatever init.layers put in it (a copy of a source
 * layer, or random). An identity block anywhere in the stack leaves the residual stream it hands
 * on unchanged, so each placement below preserves the function for both modes and both inits;
 * they differ only in where training starts from once the masks anneal (or the zeros move).
 * The comments cite the construction each follows; the maps are depth.ts's.
 */
export const PLACEMENTS: Readonly<Record<PlacementMethod, Placement>> = {
  /**
   * Tele-FLM's layer selection (Li et al. 2024, "Tele-FLM technical report", 64 -> 80 -> 140
   * layers; SPEC §2): a copy after the layers that move the residual stream least (or most) on
   * calibration tokens, chosen at grow time (select-layers.ts).
   */
  distance: {
    name: 'distance',
    calibrated: true,
    describe: (p) => `chosen at grow time by ${p.metric} distance (${p.order} first)`,
  },
  /** A copy after each listed source layer (repeats: several copies after one layer); MSG's per-layer choice made by hand. */
  explicit: {
    name: 'explicit',
    calibrated: false,
    layerMap: (L, L2, p) => {
      if (p.positions === undefined)
        throw new PlanError(
          'placement.positions',
          `method "explicit" needs ${L2 - L} positions (source layers after which to insert)`,
        );
      return buildLayerMap(L, L2, p.positions);
    },
    describe: (p) => `explicit positions: ${(p.positions ?? []).join(', ')}`,
  },
  /** Evenly spread through the stack: after source layer ceil((i+1)·L/k) − 1 for copy i of k (depth.ts uniformPositions). */
  uniform: {
    name: 'uniform',
    calibrated: false,
    layerMap: (L, L2) => buildLayerMap(L, L2, uniformPositions(L, L2 - L), 'placement.method'),
    describe: () => 'uniform: a copy after source layer ceil((i+1)·L/k) − 1 for each new layer i of k',
  },
  /** After the top-most k layers, one copy each (cycling top-down for k > L). */
  top: {
    name: 'top',
    calibrated: false,
    layerMap: (L, L2) => buildLayerMap(L, L2, edgePositions(L, L2 - L, 'top'), 'placement.method'),
    describe: () => 'top: a copy after each of the top-most layers',
  },
  /** After the bottom-most k layers, one copy each (cycling bottom-up for k > L). */
  bottom: {
    name: 'bottom',
    calibrated: false,
    layerMap: (L, L2) => buildLayerMap(L, L2, edgePositions(L, L2 - L, 'bottom'), 'placement.method'),
    describe: () => 'bottom: a copy after each of the bottom-most layers',
  },
  /**
   * G_stack (Du et al. 2024, "Stacking Your Transformers: A Closer Look at Model Growth for
   * Efficient LLM Pre-Training"): the whole block sequence repeated on top, new layer L + j a copy
   * of source layer j mod L. G_stack itself is not function-preserving (its copies are live);
   * here they start as identities and the masks (or the zero out-projections) bring them in.
   */
  stack: {
    name: 'stack',
    calibrated: false,
    layerMap: (L, L2) => stackLayerMap(L, L2),
    describe: () => 'stack: the source layers 0, 1, ... repeated on top',
  },
  /**
   * LLaMA-Pro's block expansion (Wu et al. 2024, "LLaMA Pro: Progressive LLaMA with Block
   * Expansion"): the L layers in groups of placement.every, a copy of each group's last layer
   * after it, o_proj/down_proj zero (zero mode here; masked mode sets its residual to 0 instead).
   */
  interleave: {
    name: 'interleave',
    calibrated: false,
    layerMap: (L, L2, p) => buildLayerMap(L, L2, interleavePositions(L, L2 - L, p.every), 'placement.every'),
    describe: (p, L, L2) => `interleave: a copy after every ${p.every ?? Math.floor(L / (L2 - L))} layers`,
  },
};

export const PLACEMENT_METHODS = Object.keys(PLACEMENTS) as PlacementMethod[];

/**
 * Vocabulary V -> V': new rows of embed_tokens and lm_head are appended. Old token ids read the
 * same embedding rows; the old logits are the same rows of lm_head. Masked mode adds log(m_v) to
 * logit v (SPEC §2), i.e. multiplies its softmax weight by m_v. The new ids start at m = 0, a
 * bias of -inf, so every softmax over the old ids is the old one, whatever the new rows hold:
 * exp(l_v)·0 adds 0 to the normaliser.
 *
 * `vocab.new: "padding"`: m stays 0 for good (no annealing group), the ids are never predicted.
 * `vocab.new: "tokens"`: the "vocab" group anneals m from 0 to 1; in between the new ids get
 * weight m·exp(l_v), and at 1 the bias is 0 (the plain model: bake drops the mask). Their rows
 * start at the mean of the existing rows (layout.ts, fill "mean"): a new id reads the average
 * embedding and, tied or not, its logit is the mean of the old logits, a neutral start.
 *
 * Zero mode has no mask: the old logits are unchanged, the new ids get logits of their own from
 * the start (padding: never targets; tokens: trained as ordinary ids).
 */
const vocab: GrowthOperator = {
  name: 'vocab',
  targets: ['vocab_size'],
  extent: (c) => c.vocabSize,
  resolve: (s, targets) => ({ vocabSize: targets.vocab_size ?? s.vocabSize }),
  dims: ['V'],
  indexMaps: (s, t) => ({ V: appendMap(s.vocabSize, t.vocabSize) }),
  mask: 'vocab',
  units: (s, t) => appendMap(s.vocabSize, t.vocabSize),
  maskGroup: 'vocab',
  anneals: (plan) => plan.vocab.new === 'tokens',
  zeroModeAxes: {},
};

/**
 * Tele-FLM µP logit divisor (SPEC §4): a new mup_scale_factor scales output_mult by the same
 * ratio, so output_mult / mup_scale_factor, hence every logit, is unchanged. No tensor changes.
 */
const mupLogitScale: GrowthOperator = {
  name: 'mup-logit-scale',
  targets: ['mup_scale_factor'],
  resolve: (s, targets) =>
    targets.mup_scale_factor === undefined
      ? {}
      : {
          outputMult: s.outputMult * (targets.mup_scale_factor / s.mupScaleFactor),
          mupScaleFactor: targets.mup_scale_factor,
        },
  validate: (s, _target, t, where) => {
    if (t.mup_scale_factor !== undefined && !s.useMup)
      throw new PlanError('targets.mup_scale_factor', 'the source config does not use µP (use_mup is not true)', where);
  },
  dims: [],
  indexMaps: () => ({}),
  zeroModeAxes: {},
};

/** In this order plan.ts checks sizes (no shrinking) and then runs each entry's validate. */
export const OPERATORS: readonly GrowthOperator[] = [hidden, ffn, heads, kvHeads, depth, vocab, mupLogitScale];

/** Zero mode: per role, the dimensions whose new entries are 0 (the union of the operators'). */
export const ZERO_MODE_AXES: Partial<Record<Role, readonly Dim[]>> = (() => {
  const out: Partial<Record<Role, Dim[]>> = {};
  for (const op of OPERATORS)
    for (const [role, dims] of Object.entries(op.zeroModeAxes) as [Role, readonly Dim[]][]) (out[role] ??= []).push(...dims);
  return out;
})();

/** Zero mode: tensors of inserted layers that are all 0. */
export const ZERO_MODE_INSERTED: readonly Role[] = OPERATORS.flatMap((op) => op.zeroModeInserted ?? []);

/** Whether `op` grows from `src` to `target` (a size that got larger). */
export function grows(op: GrowthOperator, src: ModelConfig, target: ModelConfig): boolean {
  return op.extent !== undefined && op.extent(target) > op.extent(src);
}
