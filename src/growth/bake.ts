/**
 * `bake`: after annealing (all masks 1) the masked model is the plain model of the same weights
 * (SPEC §2), so a baked checkpoint is the same tensors, byte for byte, without masks.safetensors.
 * The vocab mask's padding ids lose their -inf (a plain runtime has no mask); nothing else changes.
 * config.json is the plain family config (a masked folder's is the masked form, hf-folder.ts), with
 * no modeling files, and README.md a card saying so.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointFolder } from '../checkpoint/checkpoint-folder.ts';
import { CheckpointWriter } from '../checkpoint/checkpoint-writer.ts';
import type { TensorDecl } from '../checkpoint/safetensors-writer.ts';
import { FlmGrowError } from '../util/errors.ts';
import { checkDestination } from '../checkpoint/atomic.ts';
import {
  MANIFEST_FILE,
  MANIFEST_FORMAT,
  sourceIdentity,
  SIDE_FILE_PATTERN,
  TOOL_VERSION,
  type Manifest,
} from '../checkpoint/manifest.ts';
import { groupsBelowOne } from '../checkpoint/masks.ts';
import { writeModelFiles } from '../checkpoint/hf-folder.ts';
import { startProgress, type ProgressFactory } from '../util/progress.ts';

export interface BakeOptions {
  force?: boolean;
  overwrite?: boolean;
  /** With overwrite: replace the destination even if flm-grow did not write it. */
  forceOverwrite?: boolean;
  maxShardSize?: number;
  quiet?: boolean;
  /** Where progress goes (commands/ passes terminal bars); none by default. */
  progress?: ProgressFactory;
  /** Called when --force drops masks below 1 (the CLI prints it). */
  warn?: (msg: string) => void;
}

export interface BakeResult {
  dest: string;
  droppedGroups: { group: string; minValue: number; count: number }[];
  files: Record<string, string>;
}

const ROW_BLOCK = 64 << 20;

export async function bakeCheckpoint(grown: string, dest: string, opts: BakeOptions = {}): Promise<BakeResult> {
  checkDestination(dest, { overwrite: opts.overwrite, force: opts.forceOverwrite, sources: [grown] });
  const ck = await CheckpointFolder.open(grown);
  try {
    const masks = await ck.masks();
    const below = masks === undefined ? [] : groupsBelowOne(masks);
    if (below.length > 0) {
      const what = below.map((g) => `${g.group} (${g.count} units, min ${g.minValue})`).join(', ');
      if (opts.force !== true) {
        throw new FlmGrowError(
          'MasksBelowOne',
          `${grown}: masks still below 1: ${what}; train until annealing ends, or pass --force to drop them (the model then changes)`,
        );
      }
      opts.warn?.(`dropping masks below 1: ${what}; the baked model is NOT the masked model`);
    }
    const decls: TensorDecl[] = [...ck.tensors.values()]
      .sort((a, b) => a.file.localeCompare(b.file) || a.begin - b.begin)
      .map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape }));
    const writer = await CheckpointWriter.create(dest, decls, {
      maxShardSize: opts.maxShardSize,
      overwrite: opts.overwrite,
      force: opts.forceOverwrite,
      sources: [grown],
    });
    try {
      const total = decls.reduce((a, d) => a + (ck.info(d.name).end - ck.info(d.name).begin), 0);
      const bar = startProgress(opts.progress, opts.quiet, 'bake', total, 'bytes');
      let done = 0;
      for (const d of decls) {
        if (!writer.wants(d.name)) continue;
        const info = ck.info(d.name);
        const rows = info.shape.length === 0 ? 1 : info.shape[0];
        const rowBytes = rows === 0 ? 0 : (info.end - info.begin) / rows;
        const step = Math.max(1, Math.floor(ROW_BLOCK / Math.max(1, rowBytes)));
        for (let r = 0; r < rows; r += step) {
          const chunk = info.shape.length <= 1 ? await ck.read(d.name) : await ck.readRows(d.name, r, Math.min(rows, r + step));
          await writer.write(d.name, chunk);
          done += chunk.byteLength;
          bar.update(done);
          if (info.shape.length <= 1) break;
        }
      }
      bar.stop();
      // the plain family config (a masked folder's config.json is the masked form), no modeling
      // files, and a card that says so
      await writeModelFiles(writer, ck.config, undefined, {
        kind: 'bake',
        folder: dest,
        source: await sourceIdentity(ck, grown),
        grownFrom: ck.manifest?.source ?? null,
        dropped: below,
      });
      for (const f of readdirSync(grown)) {
        // the model's own files only (training leaves optimizer state, logs, ... beside it)
        if (!SIDE_FILE_PATTERN.test(f)) continue;
        await writer.copySideFile(join(grown, f), f);
      }
      // sha256 of what the writer wrote: shards, side files, index
      const files = await writer.finish();
      const prev = ck.manifest;
      const manifest: Manifest = {
        format: MANIFEST_FORMAT,
        kind: 'bake',
        created: new Date().toISOString(),
        tool: { name: 'flm-grow', version: TOOL_VERSION },
        source: await sourceIdentity(ck, grown),
        ...(prev?.layerMap !== undefined ? { layerMap: prev.layerMap } : {}),
        extra: { droppedMasks: below, grownFrom: prev?.source ?? null },
        files,
      };
      await writer.writeSideFile(MANIFEST_FILE, JSON.stringify(manifest, null, 2) + '\n');
      await writer.commit();
      return { dest, droppedGroups: below, files };
    } catch (e) {
      await writer.abort();
      throw e;
    }
  } finally {
    await ck.close();
  }
}
