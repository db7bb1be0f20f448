/**
 * Growth plans: what to grow to and how. A plan is JSON (growth-plans/*.json) or CLI flags named
 * like the HF config keys, or both (flags override the file). parsePlan validates the shape and
 * names the offending field; resolveTarget checks the plan against a source config (no shrinking,
 * head_dim fixed, KV groups kept: each operator's own checks, see operators.ts) and computes the
 * target config.
 */
import { LLAMA_TENSORS } from '../spec/arch.ts';
import type { ModelConfig } from '../spec/config.ts';
import { PlanError } from '../util/errors.ts';
import type { DType } from '../util/dtype.ts';
import { MASK_GROUPS, SCHEDULE_SHAPES, type MaskGroup } from '../checkpoint/masks.ts';
import type { MaskSchedule } from '../checkpoint/masks.ts';
import {
  grows,
  OPERATORS,
  PLACEMENT_METHODS,
  WIDTH_INITS,
  type PlacementMethod,
  type WidthInit,
  type ZeroModeNorm,
} from './operators.ts';
import { defaultInitStd } from '../util/init.ts';
import { growMemoryProblem, MAX_DIM, MAX_LAYERS, MAX_SEQ_LEN, MAX_TOKENS, modelSizeProblem } from '../util/limits.ts';
import { readFailure, readJsonFile } from '../util/files.ts';

export type GrowthMode = 'masked' | 'zero';

/** Target sizes under their HF config keys; an absent key keeps the source's value. */
export interface GrowthTargets {
  hidden_size?: number;
  intermediate_size?: number;
  num_attention_heads?: number;
  num_key_value_heads?: number;
  num_hidden_layers?: number;
  vocab_size?: number;
  /** Tele-FLM µP: a new logit divisor; output_mult is scaled by the same ratio (SPEC §4). */
  mup_scale_factor?: number;
  /** Only allowed equal to the source's (head_dim never changes). */
  head_dim?: number;
}

export const TARGET_KEYS = [
  'hidden_size',
  'intermediate_size',
  'num_attention_heads',
  'num_key_value_heads',
  'num_hidden_layers',
  'vocab_size',
  'mup_scale_factor',
  'head_dim',
] as const satisfies readonly (keyof GrowthTargets)[];

export interface InitPlan {
  /** Std of new random weights: keys `default`, a kind (`embedding`, `matrix`) or a role (`q`, `lm_head`, ...). */
  std: Record<string, number>;
  /** How inserted layers start: a copy of the layer they follow (MSG) or random. */
  layers: 'copy' | 'random';
  /**
   * New width units (hidden, FFN, heads, KV heads): random normal or zero entries (masked, MSG),
   * or copies of seeded existing units (Net2Net / HyperCloning; operators.ts says where that
   * preserves the function unmasked and where the copies stay masked). Norm gains start at 1.
   */
  new: WidthInit['new'];
  /** Symmetry-breaking noise for clones, relative to each row's std (0: exact copies; layout.ts NoiseOp). */
  noise: number;
}

/**
 * What new vocabulary ids are (SPEC §2, the vocab mask). `padding`: rows that exist only to round
 * the vocabulary up (Tele-FLM pads 80,000 ids to 80,384); their mask stays 0, so their logits are
 * -inf for good and train refuses data that uses them. `tokens`: real, learnable ids (a switched or
 * extended tokenizer); their mask anneals 0 -> 1 like the other groups (group "vocab") and their
 * embedding and LM-head rows start at the mean of the existing rows.
 */
export interface VocabPlan {
  new: 'padding' | 'tokens';
}

export interface PlacementPlan {
  /** Where inserted layers go (operators.ts PLACEMENTS); only `distance` runs the calibration pass. */
  method: PlacementMethod;
  metric: 'cosine' | 'l2';
  order: 'smallest' | 'largest';
  /** Source layers after which a copy is inserted (method explicit; length L' - L). */
  positions?: number[];
  /** Method interleave: a copy after every `every`-th layer (absent: floor(L / (L' - L))). */
  every?: number;
}

export interface CalibrationPlan {
  /** Total calibration tokens and sequence length (random ids from `seed` unless file/text). */
  tokens: number;
  seq: number;
  seed: number;
  /** A file of token ids (JSON array or whitespace-separated integers). */
  file?: string;
  /** Text tokenised with the checkpoint's tokenizer (bytes when it has none). */
  text?: string;
}

/** Config keys a plan may name under `source`: the source it was written for. */
export const SOURCE_KEYS = [
  'hidden_size',
  'intermediate_size',
  'num_attention_heads',
  'num_key_value_heads',
  'num_hidden_layers',
  'vocab_size',
  'head_dim',
] as const;
export type SourceKey = (typeof SOURCE_KEYS)[number];

const SOURCE_FIELD: Record<SourceKey, keyof ModelConfig> = {
  hidden_size: 'hiddenSize',
  intermediate_size: 'intermediateSize',
  num_attention_heads: 'numHeads',
  num_key_value_heads: 'numKvHeads',
  num_hidden_layers: 'numLayers',
  vocab_size: 'vocabSize',
  head_dim: 'headDim',
};

export interface GrowthPlan {
  description?: string;
  /** The source the plan expects (checked by resolveTarget); a target flag drops the same key. */
  source?: Partial<Record<SourceKey, number>>;
  targets: GrowthTargets;
  mode: GrowthMode;
  init: InitPlan;
  vocab: VocabPlan;
  placement: PlacementPlan;
  calibration: CalibrationPlan;
  seed: number;
  /** Explicit mask schedule; absent: every grown group linear over `annealSteps` from step 0. */
  schedule?: MaskSchedule[];
  annealSteps: number;
}

/** MSG's default annealing length (optimizer steps). */
export const DEFAULT_ANNEAL_STEPS = 5000;

export function defaultPlan(): GrowthPlan {
  return {
    targets: {},
    mode: 'masked',
    init: { std: {}, layers: 'copy', new: 'random', noise: 0 },
    vocab: { new: 'padding' },
    placement: { method: 'distance', metric: 'cosine', order: 'smallest' },
    calibration: { tokens: 256, seq: 64, seed: 0 },
    seed: 0,
    annealSteps: DEFAULT_ANNEAL_STEPS,
  };
}

// ---- validation helpers --------------------------------------------------------------------

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function obj(v: unknown, field: string, src: string): Obj {
  if (!isObj(v)) throw new PlanError(field, `must be an object, got ${JSON.stringify(v)}`, src);
  return v;
}

function noUnknown(o: Obj, allowed: readonly string[], prefix: string, src: string): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw new PlanError(`${prefix}${k}`, `unknown field (allowed: ${allowed.join(', ')})`, src);
  }
}

function int(v: unknown, field: string, src: string, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min)
    throw new PlanError(field, `must be an integer >= ${min}, got ${JSON.stringify(v)}`, src);
  if (v > max) throw new PlanError(field, `must be at most ${max}, got ${v}`, src);
  return v;
}

function posNum(v: unknown, field: string, src: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
    throw new PlanError(field, `must be a number > 0, got ${JSON.stringify(v)}`, src);
  return v;
}

function oneOf<T extends string>(v: unknown, allowed: readonly T[], field: string, src: string): T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw new PlanError(field, `must be one of ${allowed.map((a) => `"${a}"`).join(', ')}, got ${JSON.stringify(v)}`, src);
  }
  return v as T;
}

/** `default`, then the init kinds and roles of arch.ts that get random entries (norms are constants). */
const RANDOM_SPECS = LLAMA_TENSORS.filter((s) => s.kind !== 'norm');
const STD_KEYS = ['default', ...new Set(RANDOM_SPECS.map((s) => s.kind)), ...RANDOM_SPECS.map((s) => s.role)];

/** Parse a plan object (from JSON) over the defaults; errors name the field and the source. */
export function parsePlan(json: unknown, src = 'plan'): GrowthPlan {
  const p = defaultPlan();
  const o = obj(json, '<root>', src);
  noUnknown(
    o,
    [
      'description',
      'source',
      'targets',
      'mode',
      'init',
      'vocab',
      'placement',
      'calibration',
      'seed',
      'schedule',
      'anneal_steps',
      '$comment',
    ],
    '',
    src,
  );
  if (o.description !== undefined) {
    if (typeof o.description !== 'string') throw new PlanError('description', 'must be a string', src);
    p.description = o.description;
  }
  if (o.source !== undefined) {
    const s = obj(o.source, 'source', src);
    noUnknown(s, SOURCE_KEYS, 'source.', src);
    p.source = {};
    for (const k of SOURCE_KEYS) if (s[k] !== undefined) p.source[k] = int(s[k], `source.${k}`, src);
  }
  if (o.targets !== undefined) {
    const t = obj(o.targets, 'targets', src);
    noUnknown(t, TARGET_KEYS, 'targets.', src);
    for (const k of TARGET_KEYS) {
      if (t[k] === undefined) continue;
      p.targets[k] =
        k === 'mup_scale_factor'
          ? posNum(t[k], `targets.${k}`, src)
          : int(t[k], `targets.${k}`, src, 1, k === 'num_hidden_layers' ? MAX_LAYERS : MAX_DIM);
    }
  }
  if (o.mode !== undefined) p.mode = oneOf(o.mode, ['masked', 'zero'] as const, 'mode', src);
  if (o.init !== undefined) {
    const i = obj(o.init, 'init', src);
    noUnknown(i, ['std', 'layers', 'new', 'noise'], 'init.', src);
    if (i.std !== undefined) {
      if (typeof i.std === 'number') p.init.std = { default: posNum(i.std, 'init.std', src) };
      else {
        const s = obj(i.std, 'init.std', src);
        noUnknown(s, STD_KEYS, 'init.std.', src);
        for (const [k, v] of Object.entries(s)) p.init.std[k] = posNum(v, `init.std.${k}`, src);
      }
    }
    if (i.layers !== undefined) p.init.layers = oneOf(i.layers, ['copy', 'random'] as const, 'init.layers', src);
    if (i.new !== undefined) p.init.new = oneOf(i.new, WIDTH_INITS, 'init.new', src);
    if (i.noise !== undefined) {
      if (typeof i.noise !== 'number' || !Number.isFinite(i.noise) || i.noise < 0)
        throw new PlanError('init.noise', `must be a number >= 0, got ${JSON.stringify(i.noise)}`, src);
      p.init.noise = i.noise;
    }
  }
  // zero mode zeroes the out-weights of new units, which would undo clone's split; masked mode
  // already gives exact clones masks of 1 and no annealing, i.e. a mask-free growth where it holds
  if (p.mode === 'zero' && p.init.new === 'clone')
    throw new PlanError(
      'init.new',
      '"clone" needs mode "masked" (zero mode zeroes the new units\' out-weights; exact clones need no mask anyway)',
      src,
    );
  if (p.init.noise > 0 && p.init.new !== 'clone')
    throw new PlanError('init.noise', `only applies to init.new "clone" (init.new is "${p.init.new}")`, src);
  if (o.vocab !== undefined) {
    const v = obj(o.vocab, 'vocab', src);
    noUnknown(v, ['new'], 'vocab.', src);
    if (v.new !== undefined) p.vocab.new = oneOf(v.new, ['padding', 'tokens'] as const, 'vocab.new', src);
  }
  if (o.placement !== undefined) {
    const l = obj(o.placement, 'placement', src);
    noUnknown(l, ['method', 'metric', 'order', 'positions', 'every'], 'placement.', src);
    if (l.method !== undefined) p.placement.method = oneOf(l.method, PLACEMENT_METHODS, 'placement.method', src);
    if (l.metric !== undefined) p.placement.metric = oneOf(l.metric, ['cosine', 'l2'] as const, 'placement.metric', src);
    if (l.order !== undefined) p.placement.order = oneOf(l.order, ['smallest', 'largest'] as const, 'placement.order', src);
    if (l.positions !== undefined) {
      if (!Array.isArray(l.positions)) throw new PlanError('placement.positions', 'must be an array of layer indices', src);
      p.placement.positions = l.positions.map((v, k) => int(v, `placement.positions[${k}]`, src, 0));
      if (l.method === undefined) p.placement.method = 'explicit';
    }
    if (l.every !== undefined) {
      p.placement.every = int(l.every, 'placement.every', src, 1, MAX_LAYERS);
      if (l.method === undefined) p.placement.method = 'interleave';
      if (p.placement.method !== 'interleave')
        throw new PlanError('placement.every', `is read only by method "interleave", not "${p.placement.method}"`, src);
    }
  }
  if (o.calibration !== undefined) {
    const c = obj(o.calibration, 'calibration', src);
    noUnknown(c, ['tokens', 'seq', 'seed', 'file', 'text'], 'calibration.', src);
    if (c.tokens !== undefined) p.calibration.tokens = int(c.tokens, 'calibration.tokens', src, 1, MAX_TOKENS);
    if (c.seq !== undefined) p.calibration.seq = int(c.seq, 'calibration.seq', src, 1, MAX_SEQ_LEN);
    if (c.seed !== undefined) p.calibration.seed = int(c.seed, 'calibration.seed', src, 0);
    for (const k of ['file', 'text'] as const) {
      if (c[k] === undefined) continue;
      if (typeof c[k] !== 'string' || c[k] === '') throw new PlanError(`calibration.${k}`, 'must be a non-empty string', src);
      p.calibration[k] = c[k];
    }
  }
  if (o.seed !== undefined) p.seed = int(o.seed, 'seed', src, 0);
  if (o.anneal_steps !== undefined) p.annealSteps = int(o.anneal_steps, 'anneal_steps', src);
  if (o.schedule !== undefined) {
    if (!Array.isArray(o.schedule)) throw new PlanError('schedule', 'must be an array of {group, startStep, length, shape}', src);
    const seen = new Set<string>();
    p.schedule = o.schedule.map((e, k) => {
      const f = `schedule[${k}]`;
      const s = obj(e, f, src);
      noUnknown(s, ['group', 'startStep', 'length', 'shape'], `${f}.`, src);
      const group = oneOf(s.group, MASK_GROUPS, `${f}.group`, src);
      if (seen.has(group)) throw new PlanError(`${f}.group`, `"${group}" is scheduled twice`, src);
      seen.add(group);
      return {
        group,
        startStep: s.startStep === undefined ? 0 : int(s.startStep, `${f}.startStep`, src, 0),
        length: s.length === undefined ? p.annealSteps : int(s.length, `${f}.length`, src),
        shape: s.shape === undefined ? 'linear' : oneOf(s.shape, SCHEDULE_SHAPES, `${f}.shape`, src),
      };
    });
  }
  return p;
}

export function readPlanFile(path: string): GrowthPlan {
  let json: unknown;
  try {
    json = readJsonFile(path, { what: 'growth plan' });
  } catch (e) {
    throw new PlanError(undefined, readFailure(e), path);
  }
  return parsePlan(json, path);
}

/** CLI overrides (already parsed by yargs), keyed like the flags in camelCase. */
export interface PlanFlags {
  hiddenSize?: number;
  intermediateSize?: number;
  numAttentionHeads?: number;
  numKeyValueHeads?: number;
  numHiddenLayers?: number;
  vocabSize?: number;
  mupScaleFactor?: number;
  headDim?: number;
  mode?: string;
  init?: string;
  initNoise?: number;
  layerInit?: string;
  std?: number;
  vocabNew?: string;
  placement?: string;
  positions?: (number | string)[] | string;
  placementEvery?: number;
  metric?: string;
  order?: string;
  calibrationTokens?: number;
  calibrationSeq?: number;
  calibrationSeed?: number;
  calibrationFile?: string;
  calibrationText?: string;
  seed?: number;
  annealSteps?: number;
}

/** Apply flags over a plan (re-validated through parsePlan so flags get the same checks). */
export function applyPlanFlags(plan: GrowthPlan, f: PlanFlags): GrowthPlan {
  const j = planToJson(plan);
  const t = j.targets as Obj;
  const set = (o: Obj, k: string, v: unknown) => {
    if (v !== undefined) o[k] = v;
  };
  set(t, 'hidden_size', f.hiddenSize);
  set(t, 'intermediate_size', f.intermediateSize);
  set(t, 'num_attention_heads', f.numAttentionHeads);
  set(t, 'num_key_value_heads', f.numKeyValueHeads);
  set(t, 'num_hidden_layers', f.numHiddenLayers);
  set(t, 'vocab_size', f.vocabSize);
  set(t, 'mup_scale_factor', f.mupScaleFactor);
  set(t, 'head_dim', f.headDim);
  // a target given on the command line re-plans that dimension: the plan's expectation of the
  // source's value for it no longer applies (e.g. a 2-layer rehearsal of a 64 -> 80 layer plan)
  if (j.source !== undefined) {
    const s = j.source as Obj;
    const flagged: [string, unknown][] = [
      ['hidden_size', f.hiddenSize],
      ['intermediate_size', f.intermediateSize],
      ['num_attention_heads', f.numAttentionHeads],
      ['num_key_value_heads', f.numKeyValueHeads],
      ['num_hidden_layers', f.numHiddenLayers],
      ['vocab_size', f.vocabSize],
      ['head_dim', f.headDim],
    ];
    for (const [k, v] of flagged) if (v !== undefined) delete s[k];
  }
  set(j, 'mode', f.mode);
  const init = j.init as Obj;
  set(init, 'new', f.init);
  set(init, 'noise', f.initNoise);
  set(init, 'layers', f.layerInit);
  if (f.std !== undefined) init.std = { ...(init.std as Obj), default: f.std };
  set(j.vocab as Obj, 'new', f.vocabNew);
  const pl = j.placement as Obj;
  set(pl, 'method', f.placement);
  set(pl, 'metric', f.metric);
  set(pl, 'order', f.order);
  if (f.positions !== undefined) {
    const raw = Array.isArray(f.positions) ? f.positions : [f.positions];
    pl.positions = raw
      .flatMap((v) => String(v).split(','))
      .filter((s) => s.trim() !== '')
      .map((s) => Number(s));
    if (f.placement === undefined) pl.method = 'explicit';
  }
  // --placement-every implies interleave; another --placement drops the file's every with its method
  if (f.placementEvery !== undefined) {
    pl.every = f.placementEvery;
    if (f.placement === undefined) pl.method = 'interleave';
  } else if (f.placement !== undefined && f.placement !== 'interleave') delete pl.every;
  const cal = j.calibration as Obj;
  set(cal, 'tokens', f.calibrationTokens);
  set(cal, 'seq', f.calibrationSeq);
  set(cal, 'seed', f.calibrationSeed);
  set(cal, 'file', f.calibrationFile);
  set(cal, 'text', f.calibrationText);
  set(j, 'seed', f.seed);
  set(j, 'anneal_steps', f.annealSteps);
  return parsePlan(j, 'command-line flags');
}

/** The plan as JSON (the file format; also what the manifest records). */
export function planToJson(p: GrowthPlan): Obj {
  const j: Obj = {};
  if (p.description !== undefined) j.description = p.description;
  if (p.source !== undefined) j.source = { ...p.source };
  j.targets = { ...p.targets };
  j.mode = p.mode;
  j.init = { std: { ...p.init.std }, layers: p.init.layers, new: p.init.new, noise: p.init.noise };
  j.vocab = { ...p.vocab };
  j.placement = { ...p.placement, ...(p.placement.positions ? { positions: [...p.placement.positions] } : {}) };
  j.calibration = { ...p.calibration };
  j.seed = p.seed;
  j.anneal_steps = p.annealSteps;
  if (p.schedule !== undefined) j.schedule = p.schedule.map((s) => ({ ...s }));
  return j;
}

// ---- against a source ----------------------------------------------------------------------

export interface ResolvedTarget {
  target: ModelConfig;
  /** Zero mode only: how norms were rescaled and whether that is exact. */
  zeroNorm: ZeroModeNorm | undefined;
  /** Said in plan and grow output: sizes the plan did not name but that change with the ones it did; what new vocabulary ids are. */
  notes: string[];
  /** Groups that grow (the ones that get masks and a schedule). */
  grownGroups: MaskGroup[];
  schedule: MaskSchedule[];
}

/**
 * Target config from a source config and a plan; every impossible plan fails here, before any
 * write. `outDtype` is the output tensor dtype (decides whether zero mode is exact).
 */
export function resolveTarget(src: ModelConfig, plan: GrowthPlan, outDtype: DType, where = 'plan'): ResolvedTarget {
  const targets = plan.targets;
  for (const k of SOURCE_KEYS) {
    const want = plan.source?.[k];
    const have = src[SOURCE_FIELD[k]];
    if (want !== undefined && want !== have) {
      throw new PlanError(
        `source.${k}`,
        `the plan is for a source with ${k} ${want}, this source has ${String(have)} (a target flag for ${k} re-plans that dimension)`,
        where,
      );
    }
  }
  let target: ModelConfig = { ...src };
  for (const op of OPERATORS) target = { ...target, ...op.resolve(src, targets) };
  for (const op of OPERATORS) {
    if (op.extent === undefined) continue;
    const [v, s] = [op.extent(target), op.extent(src)];
    if (v < s)
      throw new PlanError(
        `targets.${op.targets[0]}`,
        `${v} is smaller than the source's ${s}; growth cannot shrink a dimension`,
        where,
      );
  }
  // sizes that cannot exist, or would not fit this machine, are refused before any allocation
  const dims = {
    hidden_size: target.hiddenSize,
    intermediate_size: target.intermediateSize,
    num_hidden_layers: target.numLayers,
    num_attention_heads: target.numHeads,
    num_key_value_heads: target.numKvHeads,
    head_dim: target.headDim,
    vocab_size: target.vocabSize,
  };
  const size = modelSizeProblem(dims, 'targets.') ?? growMemoryProblem(dims, 'targets.');
  if (size !== undefined) throw new PlanError(size.field, size.message, where);
  for (const op of OPERATORS) op.validate?.(src, target, targets, where);
  const normOp = OPERATORS.find((op) => op.normRule !== undefined);
  const zeroNorm = plan.mode === 'zero' && normOp?.normRule !== undefined ? normOp.normRule(src, target, outDtype) : undefined;
  target = {
    ...target,
    rmsNormEps: zeroNorm !== undefined ? src.rmsNormEps * zeroNorm.epsScale : src.rmsNormEps,
    dtype: outDtype,
    raw: { ...src.raw },
  };
  // exact clones are ordinary units from the start (mask 1): their group does not anneal
  const cloned = (op: (typeof OPERATORS)[number]) => plan.init.new === 'clone' && op.clone?.exact(src, target) === true;
  const grownGroups: MaskGroup[] = MASK_GROUPS.filter((g) =>
    OPERATORS.some((op) => op.maskGroup === g && grows(op, src, target) && !cloned(op) && (op.anneals?.(plan) ?? true)),
  );
  let schedule: MaskSchedule[];
  if (plan.mode === 'zero') schedule = [];
  else if (plan.schedule !== undefined) {
    schedule = plan.schedule.filter((s) => grownGroups.includes(s.group));
    for (const g of grownGroups) {
      if (!schedule.some((s) => s.group === g))
        throw new PlanError('schedule', `group "${g}" grows but has no schedule entry`, where);
    }
  } else schedule = grownGroups.map((group) => ({ group, startStep: 0, length: plan.annealSteps, shape: 'linear' as const }));
  const notes: string[] = [];
  if (
    plan.init.new === 'clone' &&
    (outDtype === 'BF16' || outDtype === 'F16') &&
    OPERATORS.some((op) => grows(op, src, target) && cloned(op))
  )
    notes.push(
      `init.new clone in ${outDtype}: split out-weights w/c are rounded unless every copy count c is a power of two (and init.noise is 0), so the function is kept only to ${outDtype} rounding; --dtype f32 keeps it to f32 rounding`,
    );
  if (targets.num_key_value_heads === undefined && target.numKvHeads !== src.numKvHeads) {
    notes.push(
      `num_key_value_heads ${src.numKvHeads} -> ${target.numKvHeads}: not in the plan; it follows num_attention_heads because the source has one query head per KV head (give num_key_value_heads to choose it)`,
    );
  }
  const vocabNote = describeNewIds(src.vocabSize, target.vocabSize, plan);
  if (vocabNote !== undefined) notes.push(vocabNote);
  return { target, zeroNorm, notes, grownGroups, schedule };
}

/** What the plan makes of new vocabulary ids (vocab.new), for plan and grow output. */
function describeNewIds(V: number, V2: number, plan: GrowthPlan): string | undefined {
  const n = V2 - V;
  if (n <= 0) return plan.vocab.new === 'tokens' ? `vocab.new "tokens" has no effect: vocab_size stays ${V}` : undefined;
  const ids = `vocab_size ${V} -> ${V2}: the ${n} new ids (${V}..${V2 - 1})`;
  if (plan.vocab.new === 'padding')
    return plan.mode === 'zero'
      ? `${ids} are padding (vocab.new "padding"): zero mode has no mask, so they get logits of their own; never use them in data`
      : `${ids} are padding (vocab.new "padding"): masked for good (logit -inf), never predicted; train refuses data that uses them (--vocab-new tokens makes them learnable)`;
  return plan.mode === 'zero'
    ? `${ids} are learnable tokens (vocab.new "tokens"): embedding/LM-head rows start at the mean of the existing rows; zero mode has no mask, so they get logits from the start (the softmax over old ids changes)`
    : `${ids} are learnable tokens (vocab.new "tokens"): embedding/LM-head rows start at the mean of the existing rows; their vocab mask anneals 0 -> 1 (group "vocab"; logit bias log(m))`;
}

/** Std of new random entries of a role: role, then kind, then default, then config, then Tele-FLM's 4e-3. */
export function stdFor(plan: GrowthPlan, src: ModelConfig, role: string, kind: string): number {
  const s = plan.init.std;
  return s[role] ?? s[kind] ?? s.default ?? defaultInitStd(src.raw.initializer_range);
}
