/**
 * Issue 16 follow-ups: every folder flm-grow writes carries its manifest from the moment it
 * appears. `synth` output is recognisable as flm-grow's (plain --overwrite replaces it), and the
 * pipeline's init stage (writeRandomInit) has its manifest before the rename into place.
 */
import { afterAll, describe, expect, it, vi } from 'vitest';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { makeTempDir } from '../support/model.ts';
import { makeConfig } from '../../src/spec/config.ts';
import { synthCheckpoint } from '../../src/growth/synth.ts';
import { initConfig, writeRandomInit } from '../../src/train/random-init.ts';
import { MANIFEST_FILE, readManifest, verifyManifestFiles, type SynthManifest } from '../../src/checkpoint/manifest.ts';

/** Every rename AtomicDir does, with whether the folder being renamed held a manifest then. */
const renames = vi.hoisted(() => [] as { from: string; to: string; manifest: boolean }[]);
vi.mock('node:fs/promises', async (importOriginal) => {
  const fsp = await importOriginal<typeof import('node:fs/promises')>();
  const { existsSync: exists } = await import('node:fs');
  const { join: j } = await import('node:path');
  const rename = async (from: string, to: string): Promise<void> => {
    renames.push({ from, to, manifest: exists(j(from, 'flm-grow-manifest.json')) });
    return fsp.rename(from, to);
  };
  return { ...fsp, rename, default: { ...fsp, rename } };
});

const tmp = makeTempDir('flm-grow-own-outputs-');
afterAll(() => tmp.cleanup());
let n = 0;
const fresh = (name: string): string => {
  const d = join(tmp.dir, `${++n}-${name}`);
  mkdirSync(d, { recursive: true });
  return d;
};
const tiny = () => makeConfig({ hiddenSize: 16, intermediateSize: 32, numLayers: 2, numHeads: 2, vocabSize: 64 });

describe("synth output is flm-grow's", () => {
  it('synth writes a verifying manifest (kind synth), so synth --overwrite replaces its own output without --force-overwrite', async () => {
    const p = fresh('synth');
    for (const [name, maxShardSize] of [
      ['one', '1GB'],
      ['sharded', 3000],
    ] as const) {
      const dest = join(p, name);
      await synthCheckpoint(dest, { config: tiny(), seed: 1, quiet: true, maxShardSize });
      const m = readManifest(dest);
      expect(m?.kind).toBe('synth');
      expect(Object.keys(m?.files ?? {}).sort()).toEqual(
        readdirSync(dest)
          .filter((f) => f !== MANIFEST_FILE)
          .sort(),
      );
      expect(await verifyManifestFiles(dest, m as NonNullable<typeof m>)).toEqual([]);
      // before the fix: DestinationNotOurs (no manifest)
      await synthCheckpoint(dest, { config: tiny(), seed: 2, quiet: true, maxShardSize, overwrite: true });
      expect((readManifest(dest) as SynthManifest | undefined)?.extra?.seed).toBe(2);
    }
    // a folder flm-grow did not write still needs --force-overwrite
    const foreign = join(p, 'foreign');
    mkdirSync(foreign);
    writeFileSync(join(foreign, 'notes.txt'), 'keep');
    await expect(synthCheckpoint(foreign, { config: tiny(), quiet: true, overwrite: true })).rejects.toMatchObject({
      code: 'DestinationNotOurs',
    });
    await synthCheckpoint(foreign, { config: tiny(), quiet: true, overwrite: true, forceOverwrite: true });
    expect(existsSync(join(foreign, 'notes.txt'))).toBe(false);
  });
});

describe('init stage output', () => {
  it('writeRandomInit: the folder holds its verifying manifest when it is renamed into place (a kill cannot leave it without one)', async () => {
    const dest = join(fresh('init'), 'init');
    renames.length = 0;
    await writeRandomInit(
      dest,
      initConfig({ hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, vocab_size: 64 }),
      { seed: 3 },
    );
    const into = renames.filter((r) => resolve(r.to) === resolve(dest));
    expect(into).toHaveLength(1);
    expect(into[0].manifest).toBe(true);
    const m = readManifest(dest);
    expect(await verifyManifestFiles(dest, m as NonNullable<typeof m>)).toEqual([]);
  });
});
