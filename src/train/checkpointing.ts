/**
 * Training checkpoints: `<out>/checkpoint-<step>/` in HF layout (config.json, model.safetensors,
 * F32 weights; the masked form of config.json with its modeling files while masks are below 1,
 * hf-folder.ts), masks.safetensors (current annealing values), optimizer.safetensors, README.md
 * (model card), tokenizer files copied along, and flm-grow-manifest.json (kind 'train') written LAST, after everything
 * else is in place: a folder without a manifest that verifies is an interrupted save.
 */
import { closeSync, existsSync, openSync, readdirSync, readSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { isInside } from '../checkpoint/paths.ts';
import { expectedTensors } from '../spec/arch.ts';
import type { ModelConfig } from '../spec/config.ts';
import { writeModelFiles } from '../checkpoint/hf-folder.ts';
import { CheckpointWriter } from '../checkpoint/checkpoint-writer.ts';
import { float32ToBytes } from '../util/dtype.ts';
import { readFailure, readJsonFile } from '../util/files.ts';
import {
  MANIFEST_FILE,
  parseManifest,
  readManifest,
  SIDE_FILE_PATTERN,
  verifyManifestFiles,
  type Manifest,
  type ManifestDraft,
} from '../checkpoint/manifest.ts';
import { MASKS_FILE, writeMasks, type MaskSet } from '../checkpoint/masks.ts';
import { TrainError } from '../util/errors.ts';
import { OPTIMIZER_FILE, writeOptimizerState, type OptimizerState } from '../checkpoint/optimizer-state.ts';

export const CHECKPOINT_PREFIX = 'checkpoint-';
/** The metrics file of a run folder (trainer.ts METRICS_FILE). */
export const RUN_METRICS_FILE = 'metrics.jsonl';

export function checkpointDirName(step: number): string {
  return `${CHECKPOINT_PREFIX}${String(step).padStart(6, '0')}`;
}

/**
 * Close the writer's files and write the manifest inside its temporary folder, with the sha256
 * the writer took of every file as it wrote it (nothing is read back from disk).
 */
export async function finishWithManifest(w: CheckpointWriter, m: ManifestDraft): Promise<Manifest> {
  const full = { ...m, files: await w.finish() } as Manifest;
  await w.writeSideFile(MANIFEST_FILE, JSON.stringify(full, null, 2) + '\n');
  return full;
}

export interface SaveCheckpointArgs {
  dir: string;
  cfg: ModelConfig;
  weights: ReadonlyMap<string, Float32Array>;
  masks: MaskSet | undefined;
  optimizer: OptimizerState;
  /** Tokenizer and generation files come from here. */
  sideFilesFrom?: string;
  /** The checkpoint training started from: never written over. */
  input?: string;
  manifest: ManifestDraft;
}

export async function saveCheckpoint(a: SaveCheckpointArgs): Promise<void> {
  const tensors = expectedTensors(a.cfg);
  // force: `<out>/checkpoint-<step>` names belong to the trainer, and a folder there without a
  // manifest is an interrupted save (older versions) that a resume must be able to redo
  const w = await CheckpointWriter.create(
    a.dir,
    tensors.map((t) => ({ name: t.name, dtype: 'F32' as const, shape: t.shape })),
    { overwrite: true, force: true, sources: a.input === undefined ? [] : [a.input] },
  );
  try {
    for (const t of tensors) await w.writeTensor(t.name, float32ToBytes(a.weights.get(t.name) as Float32Array, 'F32'));
    // config.json (masked form while masks are below 1), modeling files, model card
    const m = a.manifest;
    await writeModelFiles(w, { ...a.cfg, dtype: 'F32' }, a.masks, {
      kind: 'train',
      folder: a.dir,
      source: m.source,
      schedule: m.masks?.schedule,
      train: m.kind === 'train' ? m.extra : undefined,
    });
    if (a.masks !== undefined) {
      await writeMasks(w.path(MASKS_FILE), a.masks);
      await w.recordFile(MASKS_FILE);
    }
    await writeOptimizerState(w.path(OPTIMIZER_FILE), new Map(tensors.map((t) => [t.name, t.shape])), a.optimizer);
    await w.recordFile(OPTIMIZER_FILE);
    if (a.sideFilesFrom !== undefined) {
      for (const f of readdirSync(a.sideFilesFrom))
        if (SIDE_FILE_PATTERN.test(f)) await w.copySideFile(join(a.sideFilesFrom, f), f);
    }
    // the manifest goes into the temporary folder too: a save that fails at any point (a full
    // disk while hashing or writing it) never leaves checkpoint-N/ under its final name
    await finishWithManifest(w, a.manifest);
    await w.commit();
  } catch (e) {
    await w.abort();
    throw e;
  }
}

/** Saved checkpoints of a training folder, oldest first (complete or not). */
export function listCheckpoints(outDir: string): { dir: string; step: number }[] {
  if (!existsSync(outDir)) return [];
  return readdirSync(outDir)
    .filter((f) => f.startsWith(CHECKPOINT_PREFIX) && /^\d+$/.test(f.slice(CHECKPOINT_PREFIX.length)))
    .map((f) => ({ dir: join(outDir, f), step: Number(f.slice(CHECKPOINT_PREFIX.length)) }))
    .sort((a, b) => a.step - b.step);
}

/**
 * What is wrong with a saved checkpoint folder, or undefined when it is complete (its manifest
 * is there and every file it lists has the recorded sha256). Damage (an interrupted save, a
 * truncated or altered file, a manifest that is not JSON) is described in words; a manifest that
 * parses but whose fields are impossible was edited by hand and is refused (parseManifest
 * throws BadManifest naming the field), never skipped.
 */
export async function checkpointDamage(dir: string): Promise<string | undefined> {
  const mp = join(dir, MANIFEST_FILE);
  if (!existsSync(mp)) return `no ${MANIFEST_FILE} (an interrupted save)`;
  let json: unknown;
  try {
    json = readJsonFile(mp, { what: 'manifest' });
  } catch (e) {
    return `${MANIFEST_FILE} is unreadable (${readFailure(e)})`;
  }
  const m = parseManifest(json, mp);
  for (const f of await verifyManifestFiles(dir, m)) {
    const p = join(dir, f);
    if (!existsSync(p)) return `${f}, listed in its manifest, is missing`;
    const size = statSync(p).size;
    const need = f.endsWith('.safetensors') ? safetensorsSize(p) : undefined;
    if (need !== undefined && size < need) return `${f} is truncated (${size} of the ${need} bytes its header needs)`;
    return `${f} does not match its manifest (sha256 differs; ${size} bytes)`;
  }
  return undefined;
}

/** The size a safetensors file's header says it has (8 + header + data), or undefined if unreadable. */
function safetensorsSize(path: string): number | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const b = Buffer.alloc(8);
    if (readSync(fd, b, 0, 8, 0) < 8) return 8;
    const n = Number(b.readBigUInt64LE(0));
    if (n > 100 << 20) return undefined;
    const h = Buffer.alloc(n);
    if (readSync(fd, h, 0, n, 8) < n) return 8 + n;
    const header = JSON.parse(h.toString('utf8')) as Record<string, { data_offsets?: [number, number] }>;
    let end = 0;
    for (const [k, t] of Object.entries(header)) if (k !== '__metadata__') end = Math.max(end, t.data_offsets?.[1] ?? 0);
    return 8 + n + end;
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** A checkpoint folder whose manifest exists and whose files match it. */
export async function isCompleteCheckpoint(dir: string): Promise<boolean> {
  return (await checkpointDamage(dir)) === undefined;
}

/** The newest complete checkpoint of a training folder (or undefined), and the newer ones skipped as damaged. */
export async function findLatestCheckpoint(
  outDir: string,
): Promise<{ dir: string | undefined; step: number | undefined; skipped: { dir: string; why: string }[] }> {
  const all = listCheckpoints(outDir);
  const skipped: { dir: string; why: string }[] = [];
  for (let k = all.length - 1; k >= 0; k--) {
    const why = await checkpointDamage(all[k].dir);
    if (why === undefined) {
      const m = readManifest(all[k].dir);
      return { dir: all[k].dir, step: m?.kind === 'train' ? m.extra.step : all[k].step, skipped };
    }
    skipped.push({ dir: all[k].dir, why });
  }
  return { dir: undefined, step: undefined, skipped };
}

/** The one line that says which checkpoints a resume went past, why, and where it resumes. */
export function skippedCheckpointsLine(r: Awaited<ReturnType<typeof findLatestCheckpoint>>): string | undefined {
  if (r.skipped.length === 0) return undefined;
  return (
    `skipped damaged checkpoint${r.skipped.length > 1 ? 's' : ''} ${r.skipped.map((s) => `${s.dir} (${s.why})`).join(', ')}; ` +
    (r.dir !== undefined
      ? `resuming from ${r.dir} at step ${r.step}`
      : 'no complete checkpoint is left: starting again from the input checkpoint')
  );
}

/**
 * The newest complete checkpoint of a training folder, or undefined. A newer folder that is
 * damaged is gone past, never silently: `warn` gets one line naming it, why, and the step resumed from.
 */
export async function latestCheckpoint(outDir: string, warn?: (line: string) => void): Promise<string | undefined> {
  const r = await findLatestCheckpoint(outDir);
  const line = skippedCheckpointsLine(r);
  if (line !== undefined) warn?.(line);
  return r.dir;
}

/** Whether `outDir` holds a training run (metrics.jsonl or checkpoint-<step> folders). */
export function holdsRun(outDir: string): boolean {
  return existsSync(join(outDir, RUN_METRICS_FILE)) || listCheckpoints(outDir).length > 0;
}

/** Training from one of the run folder's own checkpoints continues that run (its metrics are kept). */
export function continuesRun(outDir: string, checkpoint: string | undefined): boolean {
  return checkpoint !== undefined && isInside(checkpoint, outDir) && resolve(checkpoint) !== resolve(outDir);
}

/**
 * A run folder is written by one run (or continued from one of its own checkpoints): training into one that holds a run needs `resume`
 * (continue it) or `overwrite` (start over; clearRun removes the old run's files).
 */
export function checkRunFolder(outDir: string, o: { resume?: boolean; overwrite?: boolean; checkpoint?: string }): void {
  if (o.resume === true && o.overwrite === true) throw new TrainError('BadArgs', '--resume and --overwrite exclude each other');
  if (o.resume === true || o.overwrite === true || continuesRun(outDir, o.checkpoint) || !holdsRun(outDir)) return;
  const cks = listCheckpoints(outDir);
  throw new TrainError(
    'RunExists',
    `--out ${outDir} already holds a training run (${cks.length > 0 ? `${cks.length} checkpoint folder(s), newest ${cks[cks.length - 1].dir}` : RUN_METRICS_FILE}); ` +
      'pass --resume to continue it, --overwrite to replace it, or give another --out',
  );
}

/** Remove a previous run's files from `outDir` (checkpoint-<step> folders, metrics.jsonl, tokenized data); nothing else. */
export function clearRun(outDir: string): void {
  for (const c of listCheckpoints(outDir)) rmSync(c.dir, { recursive: true, force: true });
  for (const f of [RUN_METRICS_FILE, '.data-tokens.u32']) rmSync(join(outDir, f), { force: true });
}

/** Remove all but the newest `keep` checkpoints (never `protect`). */
export function pruneCheckpoints(outDir: string, keep: number, protect: string): void {
  const all = listCheckpoints(outDir);
  for (const c of all.slice(0, Math.max(0, all.length - keep)))
    if (c.dir !== protect) rmSync(c.dir, { recursive: true, force: true });
}
