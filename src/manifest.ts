/**
 * The manifest written beside every grown (or trained) checkpoint: what was done, from what,
 * with which masks and schedule, and a sha256 of every output file so a pipeline can tell a
 * complete output from an interrupted one.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CONFIG_FILE, INDEX_FILE, type Checkpoint } from './checkpoint/checkpoint.ts';
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
export const SIDE_FILE_PATTERN = /^(tokenizer.*|generation_config\.json|special_tokens_map\.json|added_tokens\.json|vocab\.(json|txt)|merges\.txt|chat_template\.(json|jinja))$/;

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

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  kind: 'grow' | 'train' | 'bake' | 'synth';
  created: string;
  tool: { name: 'flm-grow'; version: string };
  source?: { path: string; configSha256: string; indexSha256?: string; parameters: number; bytes: number };
  mode?: 'masked' | 'zero';
  /** The fully resolved plan (growth-specific shape; see src/growth/plan.ts). */
  plan?: unknown;
  /**
   * `carried`: the source was still annealing when it grew (growth/carry.ts): the groups it
   * carried and how each goes on (a carried entry's startStep may be negative).
   */
  masks?: { file: string; schedule: MaskSchedule[]; carried?: unknown };
  /** For each output layer: the source layer it came from, and whether it was inserted. */
  layerMap?: { source: number; inserted: boolean }[];
  layerSelection?: unknown;
  /** Anything else a stage wants to record (training step, metrics file, ...). */
  extra?: Record<string, unknown>;
  /** sha256 of every other file in the folder. */
  files: Record<string, string>;
}

export function readManifest(dir: string): Manifest | undefined {
  const p = join(dir, MANIFEST_FILE);
  if (!existsSync(p)) return undefined;
  let m: unknown;
  try {
    m = JSON.parse(readFileSync(p, 'utf8'));
  } catch (e) {
    throw new FlmGrowError('BadManifest', `${p}: invalid JSON: ${(e as Error).message}`);
  }
  if (typeof m !== 'object' || m === null || (m as Manifest).format !== MANIFEST_FORMAT) {
    throw new FlmGrowError('BadManifest', `${p}: not a ${MANIFEST_FORMAT} manifest`);
  }
  // every name in `files` is opened by whoever verifies or copies them: check them all up front
  const files = (m as Manifest).files as unknown;
  if (typeof files !== 'object' || files === null || Array.isArray(files)) throw new FlmGrowError('BadManifest', `${p}: field "files" must be an object`);
  for (const [f, h] of Object.entries(files)) {
    safeRelativeName(f, `${p}: files`);
    if (typeof h !== 'string') throw new FlmGrowError('BadManifest', `${p}: files[${JSON.stringify(f)}] must be a sha256 string`);
  }
  return m as Manifest;
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
export async function sourceIdentity(ck: Checkpoint, source: string): Promise<NonNullable<Manifest['source']>> {
  const idx = join(ck.dir, INDEX_FILE);
  return {
    path: resolve(source),
    configSha256: await sha256File(join(ck.dir, CONFIG_FILE)),
    ...(existsSync(idx) ? { indexSha256: await sha256File(idx) } : {}),
    parameters: ck.parameterCount,
    bytes: ck.totalBytes,
  };
}
