/**
 * Every repository path that the code and the docs mention exists: a comment in src/ or python/
 * that says "as src/masks.ts does", a docs/ page that names `python/flm_grow_torch/train.py`, must
 * point at a real file, or a reader is sent to something that moved or never was. Checked: any
 * `dir/…/name.ext` whose first folder is one of the repository's own (src/, python/, docs/, test/,
 * …), and bare module names (`masks.ts`, `data.py`) with a known source extension, which must be
 * the name of some file in the repository (names of other projects' files are listed below).
 */
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ROOT } from './imports.ts';

/** Tracked files, and the untracked ones git does not ignore (a file just added). */
const FILES = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, encoding: 'utf8' })
  .split('\n')
  .filter((f) => f !== '' && existsSync(join(ROOT, f)));
const TOP = [...new Set(FILES.filter((f) => f.includes('/')).map((f) => f.split('/')[0]))];
const NAMES = new Set(FILES.map((f) => basename(f)));

/**
 * Bare file names that are not this repository's: other projects' files that comments cite as the
 * source of a rule (transformers, nanoGPT, torchtitan), the remote code flm-grow writes into a
 * masked checkpoint, and the hostile file names the tests and the fault sweep build.
 */
const FOREIGN = new Set([
  'modeling_llama.py',
  'modular_qwen2.py',
  'masking_utils.py',
  'modeling_rope_utils.py',
  'train.py',
  'job_config.py',
  'flm_grow_masks.py',
  'tokenizer.py',
  'tokenization_custom.py',
  'bad.py',
]);

/** Paths that the docs' own commands write (`jq … > pipelines/x.torch.json`) or that name a case folder. */
const WRITTEN = new Set(['pipelines/tiny-tele-flm.torch.json', 'pipelines/r1.torch.json', 'src/out']);

/** Repo paths and bare source-file names mentioned in `text`. */
export function mentions(text: string): { paths: string[]; names: string[] } {
  const paths: string[] = [];
  const names: string[] = [];
  const top = TOP.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|');
  // a path starts a token (not `$CASE/src/x`, `node_modules/x/src/y` or `../src/x`, which a link checker reads)
  const pathRe = new RegExp(`(?<![\\w/.$~@-])(?:${top})/[\\w./*<>{}$-]+`, 'g');
  for (const m of text.matchAll(pathRe)) {
    const p = m[0].replace(/[.-]+$/, '');
    if (/[*<>{}$]/.test(p) || p.endsWith('/')) continue; // a pattern (`_data/*.json`, `test_<name>.py`), not a path
    if (!WRITTEN.has(p)) paths.push(p);
  }
  for (const m of text.matchAll(/(?<![\w/.$~@-])[\w-]+\.(ts|mts|py)\b(?![\w/-])/g)) names.push(m[0]);
  return { paths, names };
}

/** Mentions under `dirs` that name nothing in the repository. */
export function staleMentions(files: string[], read: (f: string) => string, exists: (p: string) => boolean): string[] {
  const out: string[] = [];
  for (const f of files) {
    const { paths, names } = mentions(read(f));
    for (const p of paths) if (!exists(p)) out.push(`${f}: ${p}`);
    for (const n of names) if (!NAMES.has(n) && !FOREIGN.has(n)) out.push(`${f}: ${n}`);
  }
  return [...new Set(out)];
}

const SCANNED = FILES.filter(
  (f) => /^(src|python|docs)\//.test(f) && /\.(ts|mts|py|md|json|toml)$/.test(f) && !f.startsWith('python/tests/fixtures'),
);

describe('paths mentioned in src/, python/ and docs/', () => {
  it('finds a stale path and a stale module name (the check can fail)', () => {
    const text = [
      '// as src/masks.ts applyMaskValues does',
      '# the row stream of src/train/rng.ts',
      'see `docs/engines.md` and src/checkpoint/masks.ts',
      'a name: torch-engine.ts; a real one: manifest.ts; a foreign one: modeling_llama.py',
      'not paths: $CASE/src/config.json, ../src/spec/families.ts, python/flm_grow_torch/_data/*.json',
    ].join('\n');
    const found = staleMentions(
      ['x.ts'],
      () => text,
      (p) => existsSync(join(ROOT, p)),
    );
    expect(found).toEqual(['x.ts: src/masks.ts', 'x.ts: src/train/rng.ts', 'x.ts: torch-engine.ts']);
  });

  it('every one names a file or folder that exists', () => {
    expect(SCANNED.length).toBeGreaterThan(150);
    const stale = staleMentions(
      SCANNED,
      (f) => readFileSync(join(ROOT, f), 'utf8'),
      (p) => existsSync(join(ROOT, p)),
    );
    expect(stale).toEqual([]);
  });
});
