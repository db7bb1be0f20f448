/**
 * One declaration per fact: every training option (its flag, default, range and help) lives in
 * python/flm_grow_torch/_data/train_options.json, read by both engines. This test fails when a
 * declared option is declared again by hand: a yargs `.option('<flag>'`, an argparse
 * `add_argument("--<flag>"`, or a literal fallback default (`o.lr ?? 1e-3`, `beta1=0.9`).
 * The same for the rules of reading a config.json (_data/config_rules.json: defaults such as
 * rope_theta 10000, the refusal messages) and the checkpoint manifest (_data/manifest.json: its
 * file name and format, the mask groups, schedule shapes, carried modes, the training record's
 * counters, the side-file pattern): written again in code in either language, the test fails.
 * (The family table's counterpart is in test/torch/families-table.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { camelKey, snakeKey, trainOption, TRAIN_OPTIONS } from '../../src/train/options.ts';
import { CONFIG_RULES } from '../../src/spec/config.ts';
import { MANIFEST_RULES } from '../../src/checkpoint/checkpoint.ts';

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

// ---- config.json rules and the manifest (config_rules.json, manifest.json) -----------------

/** A number literal's value (`1e-6`, `10000.0`, `2048`). */
const numberAt = (s: string): number => Number(s.replace(/_/g, ''));
const NUM = String.raw`(-?\d[\d_]*(?:\.\d*)?(?:e[-+]?\d+)?)`;

/** Every default the rules declare: config.json numbers and RoPE parameters (snake key, parsed name, value). */
function declaredDefaults(): { key: string; name: string; value: number }[] {
  return [
    ...CONFIG_RULES.optional.map((o) => ({ key: o.key, name: o.name, value: o.default as number })),
    ...Object.values(CONFIG_RULES.rope)
      .flat()
      .flatMap((f) => [
        ...(f.default !== undefined ? [{ key: f.key, name: f.name, value: f.default }] : []),
        ...(f.fallback !== undefined ? [{ key: f.key, name: f.name, value: f.fallback }] : []),
      ]),
  ];
}

/** Wordings shared with other checks (a plan's, a manifest's): not config.json's own. */
const GENERIC = new Set([
  'required',
  'notFinite',
  'notInteger',
  'notPositive',
  'notPositiveNumber',
  'notBoolean',
  'ropeNotBoolean',
  'notObject',
]);

/** The fixed texts of config.json's refusal messages ("partial rotary embeddings are not supported", ...). */
const refusalTexts = (): string[] =>
  [
    ...CONFIG_RULES.refused.map((r) => r.why),
    ...Object.entries(CONFIG_RULES.messages)
      .filter(([k]) => !GENERIC.has(k))
      .map(([, m]) => m),
  ]
    .flatMap((m) => m.split(/\{\w+\}/))
    .map((t) => t.trim())
    .filter((t) => t.length >= 16);

/** The manifest's lists as code would write them (each item quoted, in order, comma-separated). */
const manifestLists = (): [string, string[]][] => [
  ['kinds', MANIFEST_RULES.kinds],
  ['maskGroups', MANIFEST_RULES.maskGroups],
  ['scheduleShapes', MANIFEST_RULES.scheduleShapes],
  ['carriedHow', MANIFEST_RULES.carriedHow],
  ['trainCounters', MANIFEST_RULES.trainCounters],
  ['lr schedules (train_options.json schedule)', trainOption('schedule').choices ?? []],
];

/** Config and manifest rules written in `text` (a TS or Python source) instead of read from the data. */
export function ruleRedeclarations(text: string, lang: 'ts' | 'py'): string[] {
  const hits: string[] = [];
  for (const d of declaredDefaults()) {
    // o.ropeTheta ?? 10000, num(r, 'rope_theta', { def: 10000 }), r.get("beta_fast", 32.0), default=1e-6 beside the key
    const names = lang === 'ts' ? `(?:'${esc(d.key)}'|\\b${esc(d.name)}\\b)` : `"${esc(d.key)}"`;
    const p = new RegExp(`${names}[^\\n;]*?(?:\\bdef:|\\bdefault\\s*=|\\?\\?|\\|\\||\\bor\\b|,)\\s*${NUM}(?![\\w.])`, 'g');
    for (const m of text.matchAll(p)) if (numberAt(m[1]) === d.value) hits.push(`${d.key} default ${d.value}: ${m[0]}`);
  }
  for (const t of refusalTexts()) if (text.includes(t)) hits.push(`refusal message: ${t}`);
  const q = lang === 'ts' ? "'" : '"';
  for (const [name, items] of manifestLists()) {
    const p = new RegExp(items.map((i) => `${q}${esc(i)}${q}`).join(String.raw`\s*,\s*`));
    const m = p.exec(text);
    if (m !== null) hits.push(`manifest ${name}: ${m[0]}`);
  }
  for (const v of [MANIFEST_RULES.file, MANIFEST_RULES.format])
    if (text.includes(`${q}${v}${q}`)) hits.push(`manifest literal: ${q}${v}${q}`);
  // the side-file pattern's core (its alternatives), in a regex literal or string
  const core = MANIFEST_RULES.sideFilePattern.slice(MANIFEST_RULES.sideFilePattern.indexOf('(tokenizer'));
  if (text.includes(core.slice(0, 60))) hits.push('manifest sideFilePattern');
  return hits;
}

/**
 * Copies that must stand alone: the remote code written into masked checkpoints (hf_remote/, and
 * masks.py, copied as flm_grow_masks.py) imports only torch and transformers, so it repeats the
 * manifest's file name and the mask groups; checked equal to the data below.
 */
const STANDALONE = ['python/flm_grow_torch/masks.py', 'python/flm_grow_torch/hf_remote/'];
/** TypeScript literal tuples that give a type its members, checked equal to the data when the module loads. */
const TYPE_TUPLES: [string, string][] = [
  ['src/checkpoint/masks.ts', 'manifest maskGroups'],
  ['src/checkpoint/masks.ts', 'manifest scheduleShapes'],
];

describe('config.json and manifest rules are declared once (config_rules.json, manifest.json)', () => {
  it('finds a rule written in code (the check can fail)', () => {
    const ts = [
      'const theta = o.ropeTheta ?? 10000;',
      "num(raw, 'rms_norm_eps', file, { positive: true, def: 1e-6 })",
      "p.add(key, 'partial rotary embeddings are not supported');",
      "const SHAPES = ['linear', 'cosine'];",
      "export const MANIFEST_FORMAT = 'flm-grow/1';",
      "for (const k of ['step', 'stageStart', 'tokens', 'targetStep']) check(k);",
      'const fine = o.ropeTheta ?? 500000; // not the default',
    ].join('\n');
    expect(ruleRedeclarations(ts, 'ts')).toEqual([
      "rms_norm_eps default 0.000001: 'rms_norm_eps', file, { positive: true, def: 1e-6",
      'rope_theta default 10000: ropeTheta ?? 10000',
      'refusal message: partial rotary embeddings are not supported',
      "manifest scheduleShapes: 'linear', 'cosine'",
      "manifest trainCounters: 'step', 'stageStart', 'tokens', 'targetStep'",
      "manifest literal: 'flm-grow/1'",
    ]);
    const py = [
      'self.max_position_embeddings = p.num(raw, "max_position_embeddings", default=2048, integer=True)',
      'low = corr(r.get("beta_fast", 32.0))',
      'MASK_GROUPS = ("hidden", "heads", "ffn", "layers", "vocab")',
      '_LR_KINDS = ("cosine", "linear", "constant")',
      'p = os.path.join(d, "flm-grow-manifest.json")',
    ].join('\n');
    expect(ruleRedeclarations(py, 'py')).toEqual([
      'max_position_embeddings default 2048: "max_position_embeddings", default=2048',
      'beta_fast default 32: "beta_fast", 32.0',
      'manifest maskGroups: "hidden", "heads", "ffn", "layers", "vocab"',
      'manifest lr schedules (train_options.json schedule): "cosine", "linear", "constant"',
      'manifest literal: "flm-grow-manifest.json"',
    ]);
  });

  it('no source file writes a config default, a refusal message or a manifest fact by hand', () => {
    const files = [
      ...walk(join(ROOT, 'src'), '.ts').map((f) => [f, 'ts'] as const),
      ...walk(join(ROOT, 'python', 'flm_grow_torch'), '.py').map((f) => [f, 'py'] as const),
    ];
    expect(files.length).toBeGreaterThan(100);
    const hits = files.flatMap(([f, lang]) => {
      const rel = relative(ROOT, f);
      if (STANDALONE.some((s) => rel.startsWith(s))) return [];
      return ruleRedeclarations(readFileSync(f, 'utf8'), lang)
        .filter((h) => !TYPE_TUPLES.some(([file, what]) => file === rel && h.startsWith(what)))
        .map((h) => `${rel}: ${h}`);
    });
    expect(hits).toEqual([]);
  });

  it('the standalone copies in the remote code equal the data', () => {
    const masksPy = readFileSync(join(ROOT, 'python', 'flm_grow_torch', 'masks.py'), 'utf8');
    const groups = /^GROUPS = \(([^)]*)\)/m.exec(masksPy);
    expect(groups?.[1].split(',').map((g) => g.trim().replace(/"/g, ''))).toEqual(MANIFEST_RULES.maskGroups);
    for (const f of ['masks.py', 'hf_remote/modeling_flm_grow.py']) {
      const text = readFileSync(join(ROOT, 'python', 'flm_grow_torch', f), 'utf8');
      for (const m of text.matchAll(/"(flm-grow-[\w.-]*\.json)"/g)) expect(m[1], f).toBe(MANIFEST_RULES.file);
    }
  });
});
