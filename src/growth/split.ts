/**
 * Split growth: `grow --part i/n` writes the output shards assigned to part i (see assignShards in
 * checkpoint-writer.ts) with part.json and a part manifest; `assemble` joins n such folders into
 * the checkpoint a single-machine grow would have written, byte for byte. The parts are plain
 * independent commands, so any batch system (Slurm array, Kubernetes jobs, a shell loop) runs them.
 */
import { existsSync, readdirSync, renameSync, statSync } from 'node:fs';
import { copyFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { INDEX_FILE } from '../checkpoint/checkpoint.ts';
import { SafetensorsFile } from '../checkpoint/safetensors.ts';
import { indexText, PART_FILE, type PartJson } from '../checkpoint/checkpoint-writer.ts';
import { checkDestination, tempFoldersOf, writeAtomically } from '../checkpoint/atomic.ts';
import { joinInside, safeRelativeName } from '../checkpoint/paths.ts';
import { CheckpointError } from '../util/errors.ts';
import { MANIFEST_FILE, readManifest, type Manifest } from '../checkpoint/manifest.ts';
import { readFailure, readFailureCode, readJsonFile } from '../util/files.ts';
import { sha256Bytes, sha256File } from '../util/hash.ts';
import { startProgress, type ProgressFactory } from '../util/progress.ts';

export interface AssembleOptions {
  /** Move shard files out of the part folders instead of copying (same filesystem: a rename). */
  move?: boolean;
  overwrite?: boolean;
  /** With overwrite: replace the destination even if flm-grow did not write it. */
  forceOverwrite?: boolean;
  quiet?: boolean;
  /** Says what was recovered from an interrupted run (the CLI prints it). */
  log?: (msg: string) => void;
  /** Where progress goes (commands/ passes terminal bars); none by default. */
  progress?: ProgressFactory;
  /**
   * Re-hash every shard against its part manifest (default true). The parts hashed their shards
   * while writing; skipping the re-read saves a full pass over the data (2 TB for 1T) when the
   * files never left the shared filesystem (--move).
   */
  verify?: boolean;
}

export interface AssembleResult {
  dest: string;
  shards: number;
  bytes: number;
  files: Record<string, string>;
}

interface Part {
  dir: string;
  part: PartJson;
  manifest: Manifest;
}

function readPart(dir: string): Part {
  const p = join(dir, PART_FILE);
  if (!existsSync(p))
    throw new CheckpointError('NotAPart', `${dir}: no ${PART_FILE} (not the output of \`flm-grow grow --part i/n\`)`);
  let part: PartJson;
  try {
    // a regular file of bounded size: a FIFO or a link to /dev/zero is refused, not waited on
    part = readJsonFile(p, { what: 'part file' }) as PartJson;
  } catch (e) {
    throw new CheckpointError(readFailureCode(e, 'NotAPart'), `${p}: ${readFailure(e)}`);
  }
  if (
    typeof part !== 'object' ||
    part === null ||
    !Number.isInteger(part.index) ||
    !Number.isInteger(part.count) ||
    !Array.isArray(part.shards) ||
    !Array.isArray(part.mine)
  ) {
    throw new CheckpointError('NotAPart', `${p}: expected {index, count, shards, mine}`);
  }
  // shard names are joined to the part and destination folders: each must be a plain file name
  for (const s of part.shards) safeRelativeName((s as { file?: unknown } | null)?.file, `${p}: shards`);
  for (const f of part.mine) safeRelativeName(f, `${p}: mine`);
  const manifest = readManifest(dir);
  if (manifest === undefined) throw new CheckpointError('NotAPart', `${dir}: no ${MANIFEST_FILE}`);
  return { dir, part, manifest };
}

/**
 * What must agree between parts: everything in the manifest except its timestamp, the source's
 * path and the hashes of the shards each part wrote (source config/index hashes and size, plan,
 * layer map, config/masks/index hashes).
 */
function commonOf(m: Manifest, shardFiles: ReadonlySet<string>): Record<string, unknown> {
  const files = Object.fromEntries(Object.entries(m.files).filter(([f]) => !shardFiles.has(f)));
  const { created: _created, files: _files, source, ...rest } = m;
  // the source's path may differ between machines mounting the same storage; its identity is its hashes
  const { path: _path, ...sourceIdentity } = source ?? { path: '' };
  return { ...rest, source: sourceIdentity, files };
}

function firstDifference(a: Record<string, unknown>, b: Record<string, unknown>): string | undefined {
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])];
  for (const k of keys) {
    if (k === 'files') {
      const fa = a.files as Record<string, string>;
      const fb = b.files as Record<string, string>;
      for (const f of new Set([...Object.keys(fa), ...Object.keys(fb)])) if (fa[f] !== fb[f]) return `sha256 of ${f}`;
    } else if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) return k;
  }
  return undefined;
}

/** Check that `dirs` are the n parts of one split grow; returns them ordered by part index. */
export function checkParts(dirs: readonly string[]): Part[] {
  if (dirs.length === 0) throw new CheckpointError('NoParts', 'assemble: no part folders given');
  const parts = dirs.map(readPart);
  const ref = parts[0];
  const n = ref.part.count;
  const shardsJson = JSON.stringify(ref.part.shards);
  const shardFiles = new Set(ref.part.shards.map((s) => s.file));
  const refCommon = commonOf(ref.manifest, shardFiles);
  const byIndex = new Map<number, Part>();
  for (const p of parts) {
    if (p.part.count !== n)
      throw new CheckpointError('PartMismatch', `${p.dir}: part of ${p.part.count}, but ${ref.dir} is part of ${n}`);
    if (JSON.stringify(p.part.shards) !== shardsJson)
      throw new CheckpointError(
        'PartMismatch',
        `${p.dir}: its shard plan differs from ${ref.dir}'s (different plan, source or --out-shard-size)`,
      );
    const diff = firstDifference(refCommon, commonOf(p.manifest, shardFiles));
    if (diff !== undefined)
      throw new CheckpointError(
        'PartMismatch',
        `${p.dir}: manifest field "${diff}" differs from ${ref.dir}'s: the parts do not come from the same source and plan`,
      );
    const other = byIndex.get(p.part.index);
    if (other !== undefined)
      throw new CheckpointError('PartMismatch', `${p.dir}: part ${p.part.index}/${n} given twice (also ${other.dir})`);
    byIndex.set(p.part.index, p);
  }
  const missing = Array.from({ length: n }, (_, i) => i + 1).filter((i) => !byIndex.has(i));
  if (missing.length > 0)
    throw new CheckpointError(
      'PartMissing',
      `assemble: part${missing.length > 1 ? 's' : ''} ${missing.map((i) => `${i}/${n}`).join(', ')} missing (given: ${[...byIndex.keys()].sort((a, b) => a - b).join(', ')})`,
    );
  // every shard written by exactly one part, every tensor in exactly one shard
  const writer = new Map<string, Part>();
  for (const p of byIndex.values()) {
    for (const f of p.part.mine) {
      if (!shardFiles.has(f)) throw new CheckpointError('PartMismatch', `${p.dir}: wrote "${f}", which is not in the shard plan`);
      const w = writer.get(f);
      if (w !== undefined) throw new CheckpointError('PartMismatch', `${f}: written by both ${w.dir} and ${p.dir}`);
      writer.set(f, p);
    }
  }
  for (const f of shardFiles) if (!writer.has(f)) throw new CheckpointError('PartMissing', `${f}: written by no part`);
  const seen = new Map<string, string>();
  for (const s of ref.part.shards) {
    for (const t of s.tensors) {
      const prev = seen.get(t);
      if (prev !== undefined) throw new CheckpointError('PartMismatch', `tensor "${t}" is in both ${prev} and ${s.file}`);
      seen.set(t, s.file);
    }
  }
  return [...byIndex.values()].sort((a, b) => a.part.index - b.part.index);
}

/**
 * `assemble --move` renames shards into its temporary folder; killed midway, the shards sit there
 * and the parts lack them. Put each one back into its part (the next run hashes them as usual)
 * before that temporary folder is cleaned up, and say so.
 */
function recoverMovedShards(dest: string, shards: readonly { file: string; dir: string }[], log: (msg: string) => void): void {
  for (const t of tempFoldersOf(dest)) {
    if (t.alive || !t.local || t.backup) continue;
    const inTmp = new Set(readdirSync(t.path));
    let n = 0;
    for (const s of shards) {
      const home = join(s.dir, s.file);
      if (!inTmp.has(s.file) || existsSync(home)) continue;
      renameSync(join(t.path, s.file), home);
      n++;
    }
    if (n > 0)
      log(
        `assemble: an interrupted \`assemble --move\` (pid ${t.pid}) left ${n} shard${n > 1 ? 's' : ''} in ${t.path}; moved ${n > 1 ? 'them' : 'it'} back into the part folders`,
      );
  }
}

/** Join the parts of a split grow into `dest` (atomically), verifying every file's sha256. */
export async function assembleParts(dest: string, dirs: readonly string[], opts: AssembleOptions = {}): Promise<AssembleResult> {
  const atomicOpts = { overwrite: opts.overwrite, force: opts.forceOverwrite, sources: [...dirs] };
  checkDestination(dest, atomicOpts);
  const parts = checkParts(dirs);
  const ref = parts[0];
  const shards = ref.part.shards;
  const shardFiles = new Set(shards.map((s) => s.file));
  const owner = new Map<string, Part>();
  for (const p of parts) for (const f of p.part.mine) owner.set(f, p);
  recoverMovedShards(
    dest,
    shards.map((s) => ({ file: s.file, dir: (owner.get(s.file) as Part).dir })),
    opts.log ?? (() => undefined),
  );
  for (const s of shards) {
    const p = owner.get(s.file) as Part;
    const path = join(p.dir, s.file);
    if (!existsSync(path)) throw new CheckpointError('PartMissing', `${path}: shard file missing`);
    if (p.manifest.files[s.file] === undefined)
      throw new CheckpointError('PartMismatch', `${p.dir}: manifest has no sha256 for ${s.file}`);
    if (statSync(path).size < s.bytes)
      throw new CheckpointError(
        'PartMismatch',
        `${path}: ${statSync(path).size} bytes, shorter than its ${s.bytes} bytes of tensors`,
      );
  }
  const bytes = shards.reduce((a, s) => a + s.bytes, 0);
  const bar = startProgress(opts.progress, opts.quiet, 'assemble', bytes, 'bytes');
  const moved: { from: string; to: string }[] = [];
  const files: Record<string, string> = {};
  try {
    await writeAtomically(dest, atomicOpts, async (dir) => {
      try {
        let done = 0;
        for (const s of shards) {
          const p = owner.get(s.file) as Part;
          const from = join(p.dir, s.file);
          const to = dir.path(s.file);
          let hex: string;
          if (opts.move === true) {
            try {
              await rename(from, to);
              moved.push({ from, to });
            } catch {
              await copyFile(from, to); // another filesystem
            }
            hex = opts.verify === false ? p.manifest.files[s.file] : await sha256File(to);
          } else if (opts.verify === false) {
            await copyFile(from, to);
            hex = p.manifest.files[s.file];
          } else {
            [hex] = await Promise.all([sha256File(from), copyFile(from, to)]);
          }
          if (opts.verify === false) await (await SafetensorsFile.open(to)).close(); // at least whole: header and length agree
          if (hex !== p.manifest.files[s.file])
            throw new CheckpointError(
              'PartCorrupt',
              `${from}: sha256 ${hex} differs from ${p.dir}'s manifest (${p.manifest.files[s.file]})`,
            );
          files[s.file] = hex;
          done += s.bytes;
          bar.update(done);
        }
        // config, masks, tokenizer files: identical in every part (checked), taken from part 1
        for (const [f, h] of Object.entries(ref.manifest.files)) {
          if (shardFiles.has(f)) continue;
          if (f === INDEX_FILE) {
            const text = indexText(shards);
            if (sha256Bytes(text) !== h)
              throw new CheckpointError(
                'PartMismatch',
                `${ref.dir}: the index rebuilt from ${PART_FILE} does not match the manifest's sha256 of ${INDEX_FILE}`,
              );
            await writeFile(dir.path(f), text);
          } else {
            const from = joinInside(ref.dir, f, `${join(ref.dir, MANIFEST_FILE)}: files`);
            if (!existsSync(from)) throw new CheckpointError('PartMissing', `${from}: listed in the part manifest but missing`);
            // hash before copying: a file that does not match is never written anywhere
            if ((await sha256File(from)) !== h)
              throw new CheckpointError('PartCorrupt', `${from}: sha256 differs from the part manifest`);
            await copyFile(from, dir.path(f));
            if ((await sha256File(dir.path(f))) !== h)
              throw new CheckpointError('PartCorrupt', `${from}: changed while being copied`);
          }
          files[f] = h;
        }
        // The manifest a single run writes, with shards in plan order; `created` is the last part's.
        const ordered: Record<string, string> = {};
        for (const s of shards) ordered[s.file] = files[s.file];
        for (const f of Object.keys(ref.manifest.files)) if (!shardFiles.has(f)) ordered[f] = files[f];
        const created = parts
          .map((p) => p.manifest.created)
          .sort()
          .at(-1) as string;
        const manifest: Manifest = { ...ref.manifest, created, files: ordered };
        await writeFile(dir.path(MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
      } catch (e) {
        // put moved shards back before the temporary folder is removed, so the parts stay usable
        for (const m of moved.reverse()) await rename(m.to, m.from).catch(() => undefined);
        throw e;
      }
    });
  } finally {
    bar.stop();
  }
  if (opts.move === true) for (const p of parts) await rm(p.dir, { recursive: true, force: true });
  return { dest, shards: shards.length, bytes, files };
}
