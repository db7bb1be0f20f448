/**
 * One declaration per fact: every training option (its flag, default, range and help) lives in
 * python/flm_grow_torch/_data/train_options.json, read by both engines. This test fails when a
 * declared option is declared again by hand: a yargs `.option('<flag>'`, an argparse
 * `add_argument("--<flag>"`, or a literal fallback default (`o.lr ?? 1e-3`, `beta1=0.9`).
 * (The family table's counterpart is in test/torch/families-table.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { camelKey, snakeKey, TRAIN_OPTIONS } from '../../src/train/options.ts';

const ROOT = join(import.meta.dirname, '..', '..');

function walk(dir: string, ext: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? walk(join(dir, e.name), ext)
      : e.name.endsWith(ext) && !e.name.endsWith(`.test${ext}`)
        ? [join(dir, e.name)]
        : [],
  );
}

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Hand-written declarations of declared options in `text` (a TS or Python source). */
export function redeclarations(text: string, lang: 'ts' | 'py'): string[] {
  const hits: string[] = [];
  for (const o of TRAIN_OPTIONS) {
    const patterns =
      lang === 'ts'
        ? [
            new RegExp(`\\.option\\(\\s*'${esc(o.flag)}'`), // a yargs flag written by hand
            new RegExp(`\\b${esc(camelKey(o.flag))}\\s*\\?\\?\\s*[-\\d'"]`), // o.lr ?? 1e-3
          ]
        : [
            new RegExp(`add_argument\\(\\s*"--${esc(o.flag)}"`),
            new RegExp(`def \\w+\\([^)]*\\b${esc(snakeKey(o.flag))}\\s*=\\s*[-\\d]`), // def f(self, beta1=0.9)
          ];
    for (const p of patterns) {
      const m = p.exec(text);
      if (m !== null) hits.push(`${o.flag}: ${m[0]}`);
    }
  }
  return hits;
}

describe('training options are declared once (train_options.json)', () => {
  it('finds a redeclaration when there is one (the check can fail)', () => {
    expect(redeclarations("const lr = o.lr ?? 1e-3;\ny.option('eval-batches', {})", 'ts')).toEqual([
      'lr: lr ?? 1',
      "eval-batches: .option('eval-batches'",
    ]);
    expect(redeclarations('def f(self, beta1=0.9):\n    p.add_argument("--seq-len", type=int)\n    opt(lr=0.0)', 'py')).toEqual([
      'seq-len: add_argument("--seq-len"',
      'beta1: def f(self, beta1=0',
    ]);
  });

  it('no source file declares a training option flag or default by hand', () => {
    // the training code: src/train/, the pipeline and the train command (other commands have
    // options of the same name, e.g. synth's --seed, with their own meaning), and the torch engine
    const ts = [
      ...walk(join(ROOT, 'src', 'train'), '.ts').filter((f) => !f.endsWith('random-init.ts')), // its seed is the init stage's
      join(ROOT, 'src', 'pipeline.ts'),
      join(ROOT, 'src', 'commands', 'train.ts'),
    ];
    const files = [
      ...ts.map((f) => [f, 'ts'] as const),
      ...walk(join(ROOT, 'python', 'flm_grow_torch'), '.py').map((f) => [f, 'py'] as const),
    ];
    expect(files.length).toBeGreaterThan(25);
    const hits = files.flatMap(([f, lang]) =>
      redeclarations(readFileSync(f, 'utf8'), lang).map((h) => `${relative(ROOT, f)}: ${h}`),
    );
    expect(hits).toEqual([]);
  });
});
