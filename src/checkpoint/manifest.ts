/**
 * The manifest written beside every grown (or trained) checkpoint: what was done, from what,
 * with which masks and schedule, and a sha256 of every output file so a pipeline can tell a
 * complete output from an interrupted one.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CONFIG_FILE, INDEX_FILE, MANIFEST_RULES, type Checkpoint } from './checkpoint.ts';
import { readFailure, readJsonFile } from '../util/files.ts';
import { FlmGrowError } from '../util/errors.ts';
import { sha256File } from '../util/hash.ts';
import { joinInside, safeRelativeName } from './paths.ts';
import { MASK_GROUPS, SCHEDULE_SHAPES, type MaskSchedule } from './masks.ts';
import { readDataFile } from '../util/data-files.ts';
import type { ModelConfig } from '../spec/config.ts';

/** Its name lives with the other checkpoint file names (atomic.ts tells flm-grow's folders by it). */
export { MANIFEST_FILE } from './checkpoint.ts';
import { MANIFEST_FILE } from './checkpoint.ts';
export const MANIFEST_FORMAT = MANIFEST_RULES.format;

/** The version recorded in every manifest's `tool` field. */
export const TOOL_VERSION = '0.1.0';

/**
 * Files copied along unchanged (tokenizer and generation settings). Never code: a `tokenizer*.py`
 * (a custom class transformers runs with trust_remote_code) is not carried into outputs.
 */
export const SIDE_FILE_PATTERN = new RegExp(MANIFEST_RULES.sideFilePattern);

/** What a manifest records about the checkpoint a stage read. */
export interface SourceIdentity {
  path: string;
  configSha256: string;
  indexSha256?: string;
  parameters: number;
  bytes: number;
}

/** For each output layer: the source layer it came from, and whether it was inserted. */
export interface LayerMapEntry {
  source: number;
  inserted: boolean;
}

/** Fields every kind of manifest has (format, kind, created, tool and files are required). */
interface ManifestCommon {
  format: typeof MANIFEST_FORMAT;
  created: string;
  tool: { name: 'flm-grow'; version: string };
  source?: SourceIdentity;
  /**
   * `carried`: the source was still annealing when it grew (growth/carry.ts): the groups it
   * carried and how each goes on (a carried entry's startStep may be negative).
   */
  masks?: { file: string; schedule: MaskSchedule[]; carried?: unknown };
  layerMap?: LayerMapEntry[];
  /** sha256 of every other file in the folder. */
  files: Record<string, string>;
}

export interface GrowManifest extends ManifestCommon {
  kind: 'grow';
  mode: 'masked' | 'zero';
  /** The fully resolved plan (growth-specific shape; see src/growth/plan.ts). */
  plan?: unknown;
  layerSelection?: unknown;
  extra?: { queryHeadMap?: number[] };
}

export interface BakeManifest extends ManifestCommon {
  kind: 'bake';
  extra?: { droppedMasks?: { group: string; minValue: number; count: number }[]; grownFrom?: SourceIdentity | null };
}

/** What the trainer records with each saved checkpoint (step, stageStart, tokens, targetStep and lrSchedule are required). */
export interface TrainRecord {
  step: number;
  stageStart: number;
  tokens: number;
  targetStep: number;
  /** The LR schedule (checked by the trainer's validateLrSchedule when resuming). */
  lrSchedule: unknown;
  stageStep?: number;
  /** The step this run started at (`--steps` counts from it, also across --resume). */
  runStartStep?: number;
  /** True for the save at the end of the run (older manifests lack it). */
  complete?: boolean;
  seed?: number;
  dtype?: string;
  batchSize?: number;
  seqLen?: number;
  data?: { path: string; sha256: string; tokens: number; tokenizer: string };
  masksAllOne?: boolean;
  lastLoss?: number | null;
  evalLoss?: number | null;
}

export interface TrainManifest extends ManifestCommon {
  kind: 'train';
  extra: TrainRecord;
}

/** A synthetic or randomly initialised checkpoint (`synth`, a pipeline's init stage). */
export interface SynthManifest extends ManifestCommon {
  kind: 'synth';
  extra?: { like?: string; seed?: number; dtype?: string; init?: string; std?: number };
}

/** The manifest, by kind. */
export type Manifest = GrowManifest | BakeManifest | TrainManifest | SynthManifest;
export type ManifestKind = Manifest['kind'];
export const MANIFEST_KINDS = MANIFEST_RULES.kinds as readonly ManifestKind[];

/** A manifest before its file hashes are known (`Omit` of each kind). */
export type ManifestDraft = Manifest extends infer M ? (M extends Manifest ? Omit<M, 'files'> : never) : never;

type Json = Record<string, unknown>;
const isObject = (x: unknown): x is Json => typeof x === 'object' && x !== null && !Array.isArray(x);

/**
 * Check a parsed manifest (`where` names it in errors): the common fields, then the fields its
 * kind requires. Unknown kinds and missing or mistyped required fields are refused, naming the field.
 */
export function parseManifest(m: unknown, where: string): Manifest {
  const bad = (msg: string): never => {
    throw new FlmGrowError('BadManifest', `${where}: ${msg}`);
  };
  if (!isObject(m) || m.format !== MANIFEST_FORMAT) return bad(`not a ${MANIFEST_FORMAT} manifest`);
  // every name in `files` is opened by whoever verifies or copies them: check them all up front;
  // a manifest without them is malformed, not a crash later
  const files = m.files;
  if (!isObject(files)) return bad('field "files" must be an object of file name -> sha256');
  for (const [f, h] of Object.entries(files)) {
    safeRelativeName(f, `${where}: files`);
    if (typeof h !== 'string') bad(`files[${JSON.stringify(f)}] must be a sha256 string`);
  }
  const field = (
    obj: Json,
    key: string,
    path: string,
    type: 'string' | 'number' | 'boolean' | 'object' | 'array',
    required: boolean,
  ): void => {
    const v = obj[key];
    if (v === undefined) {
      if (required) bad(`field "${path}" is missing`);
      return;
    }
    const ok =
      type === 'array'
        ? Array.isArray(v)
        : type === 'object'
          ? isObject(v)
          : type === 'number'
            ? typeof v === 'number' && Number.isFinite(v)
            : typeof v === type;
    if (!ok) bad(`field "${path}" must be ${type === 'array' || type === 'object' ? 'an' : 'a'} ${type}`);
  };
  if (typeof m.kind !== 'string' || !(MANIFEST_KINDS as readonly string[]).includes(m.kind)) {
    return bad(`field "kind" is ${JSON.stringify(m.kind)}, not one of ${MANIFEST_KINDS.join(', ')}`);
  }
  field(m, 'created', 'created', 'string', true);
  field(m, 'tool', 'tool', 'object', true);
  field(m, 'source', 'source', 'object', false);
  field(m, 'layerMap', 'layerMap', 'array', false);
  field(m, 'masks', 'masks', 'object', false);
  if (isObject(m.masks)) {
    field(m.masks, 'file', 'masks.file', 'string', true);
    field(m.masks, 'schedule', 'masks.schedule', 'array', true);
  }
  field(m, 'extra', 'extra', 'object', m.kind === 'train');
  const extra = isObject(m.extra) ? m.extra : {};
  // the fields that drive computation (annealing, layer boundaries, resume state) are checked
  // like a plan's: a hand-edited or tampered value is refused here, naming the field
  if (isObject(m.masks)) {
    safeRelativeName(m.masks.file, `${where}: field "masks.file"`);
    if (Array.isArray(m.masks.schedule)) checkSchedule(m.masks.schedule, 'masks.schedule', bad);
    if (m.masks.carried !== undefined) checkCarried(m.masks.carried, bad);
  }
  if (Array.isArray(m.layerMap)) checkLayerMap(m.layerMap, bad);
  switch (m.kind as ManifestKind) {
    case 'grow':
      if (m.mode !== 'masked' && m.mode !== 'zero')
        bad(
          m.mode === undefined ? 'field "mode" is missing' : `field "mode" is ${JSON.stringify(m.mode)}, not "masked" or "zero"`,
        );
      field(extra, 'queryHeadMap', 'extra.queryHeadMap', 'array', false);
      break;
    case 'train':
      for (const k of MANIFEST_RULES.trainCounters) field(extra, k, `extra.${k}`, 'number', true);
      field(extra, 'lrSchedule', 'extra.lrSchedule', 'object', true);
      field(extra, 'complete', 'extra.complete', 'boolean', false);
      checkTrainRecord(extra, bad);
      break;
    case 'bake':
      field(extra, 'droppedMasks', 'extra.droppedMasks', 'array', false);
      break;
    case 'synth':
      break;
  }
  return m as unknown as Manifest;
}

type Bad = (msg: string) => never;
const CARRIED_HOW = MANIFEST_RULES.carriedHow;
/** extra.lrSchedule.schedule: the training option's choices (train_options.json `schedule`). */
const LR_SCHEDULES =
  readDataFile<{ options: { flag: string; choices?: string[] }[] }>('train_options.json').options.find(
    (o) => o.flag === 'schedule',
  )?.choices ?? [];
const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);
const show = (v: unknown): string => (v === undefined ? 'missing' : JSON.stringify(v));

/** One masks.schedule entry: a known group, integer start (negative: carried) and length >= 0, a known shape. */
function checkScheduleEntry(e: unknown, path: string, bad: Bad): void {
  if (!isObject(e)) bad(`field "${path}" must be an object {group, startStep, length, shape}`);
  const x = e as Json;
  if (!(MASK_GROUPS as readonly unknown[]).includes(x.group))
    bad(`field "${path}.group" must be one of ${MASK_GROUPS.join(', ')}, got ${show(x.group)}`);
  if (!isInt(x.startStep)) bad(`field "${path}.startStep" must be an integer, got ${show(x.startStep)}`);
  if (!(isInt(x.length) && x.length >= 0)) bad(`field "${path}.length" must be an integer >= 0, got ${show(x.length)}`);
  if (!(SCHEDULE_SHAPES as readonly unknown[]).includes(x.shape))
    bad(`field "${path}.shape" must be one of ${SCHEDULE_SHAPES.join(', ')}, got ${show(x.shape)}`);
}

function checkSchedule(s: unknown[], path: string, bad: Bad): void {
  const seen = new Set<unknown>();
  s.forEach((e, i) => {
    checkScheduleEntry(e, `${path}[${i}]`, bad);
    const g = (e as Json).group;
    if (seen.has(g)) bad(`field "${path}[${i}].group": group "${String(g)}" is scheduled twice`);
    seen.add(g);
  });
}

/** masks.carried (growth/carry.ts CarriedAnnealing). */
function checkCarried(c: unknown, bad: Bad): void {
  if (!isObject(c)) return bad('field "masks.carried" must be an object {sourceStageStep, groups}');
  if (!(isInt(c.sourceStageStep) && c.sourceStageStep >= 0))
    bad(`field "masks.carried.sourceStageStep" must be an integer >= 0, got ${show(c.sourceStageStep)}`);
  if (!Array.isArray(c.groups)) return bad('field "masks.carried.groups" must be an array');
  c.groups.forEach((g: unknown, i: number) => {
    const p = `masks.carried.groups[${i}]`;
    if (!isObject(g)) return bad(`field "${p}" must be an object {group, how, entry}`);
    if (!(MASK_GROUPS as readonly unknown[]).includes(g.group))
      bad(`field "${p}.group" must be one of ${MASK_GROUPS.join(', ')}, got ${show(g.group)}`);
    if (!CARRIED_HOW.includes(g.how as string))
      bad(`field "${p}.how" must be one of ${CARRIED_HOW.join(', ')}, got ${show(g.how)}`);
    checkScheduleEntry(g.entry, `${p}.entry`, bad);
  });
}

/**
 * layerMap: the source layers kept in order (inserted false: 0, 1, 2, ...) with inserted copies
 * among them, each naming a source layer that exists (growth/depth.ts buildLayerMap).
 */
function checkLayerMap(map: unknown[], bad: Bad): void {
  const kept = map.filter((e) => isObject(e) && e.inserted === false).length;
  let next = 0;
  map.forEach((e, i) => {
    const p = `layerMap[${i}]`;
    if (!isObject(e)) return bad(`field "${p}" must be an object {source, inserted}`);
    if (typeof e.inserted !== 'boolean') bad(`field "${p}.inserted" must be a boolean, got ${show(e.inserted)}`);
    if (!(isInt(e.source) && e.source >= 0 && e.source < kept))
      bad(`field "${p}.source" must be a source layer index in [0, ${kept}), got ${show(e.source)}`);
    if (e.inserted === false) {
      if (e.source !== next)
        bad(`field "${p}.source": the kept source layers must be 0, 1, 2, ... in order; expected ${next}, got ${show(e.source)}`);
      next++;
    }
  });
}

/** A training manifest's resume state: steps and tokens, and the LR schedule (lr-schedule.ts validateLrSchedule's rules). */
function checkTrainRecord(x: Json, bad: Bad): void {
  for (const k of MANIFEST_RULES.trainCounters)
    if (!(isInt(x[k]) && x[k] >= 0)) bad(`field "extra.${k}" must be an integer >= 0, got ${show(x[k])}`);
  const step = x.step as number;
  if ((x.stageStart as number) > step) bad(`field "extra.stageStart" ${show(x.stageStart)} is after extra.step ${step}`);
  if (x.runStartStep !== undefined && !(isInt(x.runStartStep) && x.runStartStep >= 0 && x.runStartStep <= step))
    bad(`field "extra.runStartStep" must be an integer in [0, extra.step=${step}], got ${show(x.runStartStep)}`);
  if (x.stageStep !== undefined && x.stageStep !== step - (x.stageStart as number))
    bad(
      `field "extra.stageStep" must be extra.step - extra.stageStart = ${step - (x.stageStart as number)}, got ${show(x.stageStep)}`,
    );
  const s = x.lrSchedule as Json;
  const p = 'extra.lrSchedule';
  if (!LR_SCHEDULES.includes(s.schedule as string))
    bad(`field "${p}.schedule" must be one of ${LR_SCHEDULES.join(', ')}, got ${show(s.schedule)}`);
  const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
  if (!(num(s.lr) && s.lr >= 0)) bad(`field "${p}.lr" must be a finite number >= 0, got ${show(s.lr)}`);
  if (!(num(s.minLr) && s.minLr >= 0 && s.minLr <= (s.lr as number)))
    bad(`field "${p}.minLr" must be in [0, lr=${show(s.lr)}], got ${show(s.minLr)}`);
  if (!(isInt(s.totalSteps) && s.totalSteps > 0))
    bad(`field "${p}.totalSteps" must be an integer > 0, got ${show(s.totalSteps)}`);
  if (!(isInt(s.warmupSteps) && s.warmupSteps >= 0 && s.warmupSteps <= (s.totalSteps as number)))
    bad(`field "${p}.warmupSteps" must be an integer in [0, totalSteps=${show(s.totalSteps)}], got ${show(s.warmupSteps)}`);
  if (s.startStep !== undefined && !(isInt(s.startStep) && s.startStep >= 0))
    bad(`field "${p}.startStep" must be an integer >= 0, got ${show(s.startStep)}`);
}

/**
 * The manifest against the folder's config.json: a layer map covers every layer of the model it
 * describes. (`where` names the manifest file.)
 */
export function checkManifestAgainstConfig(m: Manifest, cfg: ModelConfig, where: string): void {
  if (m.layerMap !== undefined && m.layerMap.length !== cfg.numLayers)
    throw new FlmGrowError(
      'BadManifest',
      `${where}: field "layerMap" has ${m.layerMap.length} entries, but config.json has num_hidden_layers ${cfg.numLayers}`,
    );
}

export function readManifest(dir: string): Manifest | undefined {
  const p = join(dir, MANIFEST_FILE);
  if (!existsSync(p)) return undefined;
  let m: unknown;
  try {
    m = readJsonFile(p, { what: 'manifest' });
  } catch (e) {
    throw new FlmGrowError('BadManifest', `${p}: ${readFailure(e)}`);
  }
  return parseManifest(m, p);
}

/** Recompute every recorded sha256; returns the files that differ or are missing. */
export async function verifyManifestFiles(dir: string, m: Manifest): Promise<string[]> {
  const bad: string[] = [];
  for (const [f, h] of Object.entries(m.files)) {
    const p = joinInside(dir, f, `${join(dir, MANIFEST_FILE)}: files`);
    if (!existsSync(p) || (await sha256File(p)) !== h) bad.push(f);
  }
  return bad;
}

/** What a manifest records about the checkpoint a stage read (`source`). */
export async function sourceIdentity(ck: Checkpoint, source: string): Promise<SourceIdentity> {
  const idx = join(ck.dir, INDEX_FILE);
  return {
    path: resolve(source),
    configSha256: await sha256File(join(ck.dir, CONFIG_FILE)),
    ...(existsSync(idx) ? { indexSha256: await sha256File(idx) } : {}),
    parameters: ck.parameterCount,
    bytes: ck.totalBytes,
  };
}
