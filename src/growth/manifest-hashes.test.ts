/** The manifests of grow and bake record the sha256 of exactly the files on disk (sharded outputs, index included). */
import { describe, expect, it } from 'vitest';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeConfig } from '../spec/config.ts';
import { INDEX_FILE } from '../checkpoint/checkpoint.ts';
import { MANIFEST_FILE, readManifest } from '../checkpoint/manifest.ts';
import { sha256File } from '../util/hash.ts';
import { growCheckpoint } from './grow.ts';
import { bakeCheckpoint } from './bake.ts';
import { parsePlan } from './plan.ts';
import { tempDir, writeRandomCheckpoint } from '../../test/support/growth.ts';

async function expectManifestMatchesDisk(dir: string): Promise<void> {
  const m = readManifest(dir);
  const disk: Record<string, string> = {};
  for (const f of readdirSync(dir)) if (f !== MANIFEST_FILE) disk[f] = await sha256File(join(dir, f));
  expect(m?.files).toEqual(disk);
  expect(Object.keys(disk)).toContain(INDEX_FILE);
}

describe('manifest hashes = sha256 of the files written', () => {
  it('grow (masked and zero) and bake, sharded', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const cfg = makeConfig({
        hiddenSize: 12,
        intermediateSize: 10,
        numLayers: 2,
        numHeads: 4,
        numKvHeads: 2,
        headDim: 4,
        vocabSize: 9,
        dtype: 'BF16',
      });
      await writeRandomCheckpoint(join(dir, 's'), cfg, 'BF16', { seed: 3, maxShardSize: 2000 });
      writeFileSync(join(dir, 's', 'tokenizer.json'), '{"fake": true}');
      for (const mode of ['masked', 'zero'] as const) {
        const plan = parsePlan({
          targets: { hidden_size: 16, intermediate_size: 13, num_hidden_layers: 3, vocab_size: 12 },
          placement: { positions: [1] },
          mode,
          seed: 1,
        });
        await growCheckpoint(join(dir, 's'), join(dir, mode), plan, { quiet: true, maxShardSize: 700, dtype: 'F32' });
        await expectManifestMatchesDisk(join(dir, mode));
      }
      await bakeCheckpoint(join(dir, 'zero'), join(dir, 'baked'), { quiet: true, maxShardSize: 900 });
      await expectManifestMatchesDisk(join(dir, 'baked'));
    } finally {
      cleanup();
    }
  });
});
