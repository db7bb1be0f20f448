/**
 * The manifest written beside every grown (or trained) checkpoint: what was done, from what,
 * with which masks and schedule, and a sha256 of every output file so a pipeline can tell a
 * complete output from an interrupted one.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CONFIG_FILE, INDEX_FILE, type Checkpoint } from './checkpoint/checkpoint.ts';
import { readFailure, readJsonFile } from './util/files.ts';
import { FlmGrowError } from './errors.ts';
import { sha256File } from './util/hash.ts';
import { joinInside, safeRelativeName } from './checkpoint/paths.ts';
import type { MaskGroup } from './masks.ts';

/** Its name lives with the other checkpoint file names (atomic.ts tells flm-grow's folders by it). */
export { MANIFEST_FILE } from './checkpoint/checkpoint.ts';
import { MANIFEST_FILE } from './checkpoint/checkpoint.ts';
export const MANIFEST_FORMAT = 'flm-grow/1';

/** The version recorded in every manifest's `tool` field. */
export const TOOL_VERSION = '0.1.0';

/** Files copied along unchanged (tokenizer and generation settings). */
export const SIDE_FILE_PATTERN =
  /^(tokenizer.*|generation_config\.json|special_tokens_map\.json|added_tokens\.json|vocab\.(json|txt)|merges\.txt|chat_template\.(json|jinja))$/;

export interface MaskSchedule {
  group: MaskGroup;
  /**
   * Optimizer step (counted from the start of training the grown model) where annealing starts;
   * negative for a schedule carried from a source that was still annealing (it began earlier).
   */
  startStep: number;
  /** Steps from 0 to 1 (MSG's default: 5000). */
  length: number;
  shape: 'linear' | 'cosine';
}

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
export const MANIFEST_KINDS: readonly ManifestKind[] = ['grow', 'bake', 'train', 'synth'];

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
  switch (m.kind as ManifestKind) {
    case 'grow':
      if (m.mode !== 'masked' && m.mode !== 'zero')
        bad(
          m.mode === undefined ? 'field "mode" is missing' : `field "mode" is ${JSON.stringify(m.mode)}, not "masked" or "zero"`,
        );
      field(extra, 'queryHeadMap', 'extra.queryHeadMap', 'array', false);
      break;
    case 'train':
      for (const k of ['step', 'stageStart', 'tokens', 'targetStep']) field(extra, k, `extra.${k}`, 'number', true);
      field(extra, 'lrSchedule', 'extra.lrSchedule', 'object', true);
      field(extra, 'complete', 'extra.complete', 'boolean', false);
      break;
    case 'bake':
      field(extra, 'droppedMasks', 'extra.droppedMasks', 'array', false);
      break;
    case 'synth':
      break;
  }
  return m as unknown as Manifest;
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
