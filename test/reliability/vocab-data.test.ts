/**
 * Issue 15, "Vocabulary: padding versus new tokens" (the data side): train refuses data that
 * uses padding ids (mask 0 for good), an absurd loss stops training, and ids beyond the vocab
 * tokenized with the checkpoint's own tokenizer are not blamed on "a different tokenizer".
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTempDir, tinyByteConfig } from '../support/model.ts';
import { initBackend } from '../../src/engines/tfjs-backend.ts';
import { growCheckpoint } from '../../src/growth/grow.ts';
import { parsePlan } from '../../src/growth/plan.ts';
import { writeRandomInit } from '../../src/train/random-init.ts';
import { MAX_LOSS, train } from '../../src/train/trainer.ts';
import { checkVocab, TokenDataset } from '../../src/train/data.ts';

const tmp = makeTempDir('flm-grow-vocab-data-');
afterAll(() => tmp.cleanup());
const quiet = { quiet: true, log: () => undefined, backend: 'wasm' as const };
const cfg = () => tinyByteConfig({ num_hidden_layers: 1 });
const u16 = (ids: number[]): string => {
  const p = join(tmp.dir, `ids-${ids.length}-${ids[ids.length - 1]}.u16`);
  writeFileSync(p, new Uint8Array(Uint16Array.from(ids).buffer));
  return p;
};

beforeAll(async () => {
  await initBackend('wasm');
});

describe('training data and the vocabulary', () => {
  it('refuses data containing padding ids of a vocab-grown checkpoint, naming the first id and its position', async () => {
    const base = join(tmp.dir, 'base');
    await writeRandomInit(base, cfg(), { seed: 3 });
    const grown = join(tmp.dir, 'padded');
    await growCheckpoint(base, grown, parsePlan({ targets: { vocab_size: 264 }, placement: { method: 'explicit' } }), {
      quiet: true,
    });
    const ids = Array.from({ length: 400 }, (_, i) => (i * 7) % 256);
    ids[123] = 300 - 40; // 260: a padding id
    const out = join(tmp.dir, 'padded-run');
    await expect(
      train({ ...quiet, checkpoint: grown, data: u16(ids), out, steps: 2, batchSize: 2, seqLen: 8 }),
    ).rejects.toMatchObject({
      code: 'PaddingTokenInData',
      message: expect.stringMatching(/token id 260 at position 123 is a padding id/),
    });
    expect(existsSync(out)).toBe(false);
  });

  it(`stops with an error when the loss is absurd (> ${MAX_LOSS}), not only when it is non-finite`, async () => {
    const wild = join(tmp.dir, 'wild');
    await writeRandomInit(wild, cfg(), { seed: 3, std: 30 });
    const ids = Array.from({ length: 400 }, (_, i) => (i * 13) % 256);
    await expect(
      train({ ...quiet, checkpoint: wild, data: u16(ids), out: join(tmp.dir, 'wild-run'), steps: 2, batchSize: 2, seqLen: 8 }),
    ).rejects.toMatchObject({ code: 'AbsurdLoss', message: expect.stringMatching(/above 100/) });
  });

  it('ids beyond the vocabulary from the checkpoint\'s own tokenizer: no "different tokenizer", the fix named', () => {
    const ds = new TokenDataset(Uint32Array.from([1, 2, 300, 4, 5, 6, 7, 8, 9, 10]), { source: 'corpus.txt' });
    const own = (() => {
      try {
        checkVocab(ds, 256, 'corpus.txt', 'tokenizer.json');
      } catch (e) {
        return (e as Error).message;
      }
      return '';
    })();
    expect(own).toMatch(/checkpoint's own tokenizer .* token id 300 at position 2/);
    expect(own).not.toMatch(/different tokenizer/);
    expect(own).toMatch(/--vocab-size 301 --vocab-new tokens/);
    const file = (() => {
      try {
        checkVocab(ds, 256, 'ids.u32');
      } catch (e) {
        return (e as Error).message;
      }
      return '';
    })();
    expect(file).toMatch(/--vocab-size 301/);
  });
});
