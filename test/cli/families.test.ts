/**
 * Every family through the commands (issue 13): `synth --like <family>` makes a random
 * checkpoint of the family's tiny config (tied head, biases, qk-norm, sliding window, RoPE
 * scaling as families.ts sets them), then plan, grow, verify, forward, train and bake run on it.
 * Two variants through `synth --like <config.json>` add what the tiny configs leave out: an
 * untied Llama with linear RoPE in transformers 5's `rope_parameters`, and an untied Qwen2.
 * Where a Python with torch is found, `train --engine torch` runs on each grown checkpoint too.
 * The commands run in-process through the same yargs wiring as src/cli.ts (a process per
 * command would cost seconds each).
 */
import { describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import yargs from 'yargs';
import { loadCommands } from '../../src/commands/index.ts';
import { FlmGrowError } from '../../src/util/errors.ts';
import { FAMILY_NAMES, familyByName } from '../../src/spec/families.ts';
import { findTorchPython } from '../../src/engines/torch-process.ts';
import { Checkpoint } from '../../src/checkpoint/checkpoint.ts';
import { parseConfig } from '../../src/spec/config.ts';
import { compareGrown, randomIds, tempDir } from '../support/growth.ts';

const ROOT = join(import.meta.dirname, '../..');
const commands = await loadCommands();
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

const torch = findTorchPython() !== undefined;

const llamaLinear: Record<string, unknown> = { ...familyByName('llama').tiny, tie_word_embeddings: false };
delete llamaLinear.rope_scaling;
delete llamaLinear.rope_theta;
llamaLinear.rope_parameters = { rope_type: 'linear', factor: 2, rope_theta: 20000 };

/** [label, family, config.json for `synth --like` (undefined: the family name itself)] */
const CASES: [string, string, Record<string, unknown> | undefined][] = [
  ...FAMILY_NAMES.map((f): [string, string, undefined] => [f, f, undefined]),
  ['llama untied, linear rope_parameters', 'llama', llamaLinear],
  ['qwen2 untied', 'qwen2', { ...familyByName('qwen2').tiny, tie_word_embeddings: false }],
];

describe.each(CASES)('flm-grow commands on a random %s checkpoint', (_label, family, config) => {
  it(`synth, plan, grow, verify, forward, train${torch ? ' (tfjs and torch)' : ''}, bake`, async () => {
    const { dir, cleanup } = tempDir(`flm-grow-${family}-`);
    try {
      const src = join(dir, 'src'),
        grown = join(dir, 'grown'),
        run = join(dir, 'run'),
        baked = join(dir, 'baked');
      let like = family;
      if (config !== undefined) {
        like = join(dir, 'like-config.json');
        writeFileSync(like, JSON.stringify(config));
      }
      await cli('synth', src, '--like', like, '--dtype', 'f32', '--quiet');
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
      expect(out.config.rope).toEqual(parseConfig(cfg).rope); // incl. rope_parameters (transformers 5)
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
      if (torch) {
        // the torch engine's model covers every family (its numbers: test/torch/families.test.ts)
        const tr = join(dir, 'run-torch');
        await cli(
          'train',
          grown,
          '--data',
          DATA,
          '--out',
          tr,
          '--steps',
          '1',
          '--batch-size',
          '2',
          '--seq-len',
          '12',
          '--engine',
          'torch',
          '--quiet',
        );
        const t = await Checkpoint.open(join(tr, 'checkpoint-000001'));
        expect([t.config.family, t.has('lm_head.weight')]).toEqual([family, cfg.tie_word_embeddings !== true]);
        await t.close();
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
