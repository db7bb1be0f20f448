/**
 * Every family through the commands (issue 13): `synth --like <family>` makes a random
 * checkpoint of the family's tiny config (tied head, biases, qk-norm, sliding window, RoPE
 * scaling as families.ts sets them), then plan, grow, verify, forward, train and bake run on it.
 * The commands run in-process through the same yargs wiring as src/cli.ts (a process per
 * command would cost seconds each).
 */
import { describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import yargs from 'yargs';
import { commands } from '../../src/commands/index.ts';
import { FlmGrowError } from '../../src/errors.ts';
import { FAMILY_NAMES } from '../../src/families.ts';
import { Checkpoint } from '../../src/checkpoint/checkpoint.ts';
import { compareGrown, randomIds, tempDir } from '../support/growth.ts';

const ROOT = join(import.meta.dirname, '../..');
const DATA = join(ROOT, 'fixtures/corpus/fortunes.txt');

async function cli(...argv: string[]): Promise<void> {
  let y = yargs(argv)
    .strict()
    .demandCommand(1)
    .fail((msg, err) => {
      throw err ?? new FlmGrowError('UsageError', msg);
    });
  for (const c of commands) y = y.command(c);
  await y.parseAsync();
}

describe.each(FAMILY_NAMES)('flm-grow commands on a random %s checkpoint', (family) => {
  it('synth, plan, grow, verify, forward, train, bake', async () => {
    const { dir, cleanup } = tempDir(`flm-grow-${family}-`);
    try {
      const src = join(dir, 'src'),
        grown = join(dir, 'grown'),
        run = join(dir, 'run'),
        baked = join(dir, 'baked');
      await cli('synth', src, '--like', family, '--dtype', 'f32', '--quiet');
      const cfg = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
      const growth = [
        '--hidden-size',
        '80',
        '--intermediate-size',
        '160',
        '--num-attention-heads',
        '6',
        '--num-hidden-layers',
        '3',
        '--positions',
        '0',
        '--vocab-size',
        '260',
      ];
      await cli('plan', src, ...growth);
      await cli('grow', src, grown, ...growth, '--quiet');
      const out = await Checkpoint.open(grown);
      expect(out.config.family).toBe(family);
      expect(out.has('lm_head.weight')).toBe(cfg.tie_word_embeddings !== true); // a tied source stays tied
      expect(out.config.raw.rope_scaling ?? null).toEqual(cfg.rope_scaling ?? null); // RoPE parameters pass through
      expect(out.config.slidingWindow).toBe(
        typeof cfg.sliding_window === 'number' && family === 'mistral' ? cfg.sliding_window : undefined,
      );
      await out.close();
      const d = await compareGrown(src, grown, 'masked', randomIds(12, 256, 3)); // 12 > mistral's window 8, > RoPE originals
      expect(d.dLogits).toBeLessThanOrEqual(1e-5 * d.scale);
      await cli('verify', src, grown, '--tokens', '24', '--seq', '12', '--quiet');
      await cli('forward', grown, '--ids', '1,2,3,4,5,6,7,8,9,10;3,4,5,6,7,8,9,10,11,12', '--quiet');
      await cli(
        'train',
        grown,
        '--data',
        DATA,
        '--out',
        run,
        '--steps',
        '2',
        '--batch-size',
        '2',
        '--seq-len',
        '12',
        '--engine',
        'tfjs',
        '--quiet',
      );
      if (family !== 'tele-flm') {
        // the torch engine does not cover the other families' features yet: refused, not ignored
        await expect(
          cli('train', grown, '--data', DATA, '--out', join(dir, 'run-torch'), '--steps', '1', '--engine', 'torch', '--quiet'),
        ).rejects.toThrow(/does not cover/);
      }
      const ck = readdirSync(run)
        .filter((f) => f.startsWith('checkpoint-'))
        .sort()
        .at(-1) as string;
      expect(ck).toBeDefined();
      await cli('bake', join(run, ck), baked, '--force', '--quiet');
      expect(existsSync(join(baked, 'config.json'))).toBe(true);
      const b = await Checkpoint.open(baked);
      expect(b.has('lm_head.weight')).toBe(cfg.tie_word_embeddings !== true);
      await b.close();
    } finally {
      cleanup();
    }
  });
});
