/**
 * The manifest written beside every grown (or trained) checkpoint: what was done, from what,
 * with which masks and schedule, and a sha256 of every output file so a pipeline can tell a
 * complete output from an interrupted one.
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { readFailure, readJsonFile } from './util/files.ts';
import { join } from 'node:path';
import { FlmGrowError } from './errors.ts';
import type { MaskGroup } from './masks.ts';

export const MANIFEST_FILE = 'flm-grow-manifest.json';
export const MANIFEST_FORMAT = 'flm-grow/1';

export interface MaskSchedule {
  group: MaskGroup;
  /** Optimizer step (counted from the start of training the grown model) where annealing starts. */
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
  masks?: { file: string; schedule: MaskSchedule[] };
  /** For each output layer: the source layer it came from, and whether it was inserted. */
  layerMap?: { source: number; inserted: boolean }[];
  layerSelection?: unknown;
  /** Anything else a stage wants to record (training step, metrics file, ...). */
  extra?: Record<string, unknown>;
  /** sha256 of every other file in the folder. */
  files: Record<string, string>;
}

export function sha256File(path: string): Promise<string> {
  return new Promise((res, rej) => {
    const h = createHash('sha256');
    createReadStream(path, { highWaterMark: 8 << 20 }).on('data', (d) => h.update(d)).on('error', rej).on('end', () => res(h.digest('hex')));
  });
}

export function sha256Bytes(b: Uint8Array | string): string {
  return createHash('sha256').update(b).digest('hex');
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
  if (typeof m !== 'object' || m === null || (m as Manifest).format !== MANIFEST_FORMAT) {
    throw new FlmGrowError('BadManifest', `${p}: not a ${MANIFEST_FORMAT} manifest`);
  }
  // every reader iterates the hashes: a manifest without them is malformed, not a crash later
  const files = (m as { files?: unknown }).files;
  if (typeof files !== 'object' || files === null || Array.isArray(files) || Object.values(files).some((h) => typeof h !== 'string')) {
    throw new FlmGrowError('BadManifest', `${p}: field "files" must be an object of file name -> sha256`);
  }
  return m as Manifest;
}

/** Recompute every recorded sha256; returns the files that differ or are missing. */
export async function verifyManifestFiles(dir: string, m: Manifest): Promise<string[]> {
  const bad: string[] = [];
  for (const [f, h] of Object.entries(m.files)) {
    const p = join(dir, f);
    if (!existsSync(p) || (await sha256File(p)) !== h) bad.push(f);
  }
  return bad;
}
