/**
 * The README is read in five minutes: at most about 200 lines, the sections a user looks for in
 * order, the two commands first, every link to a local file alive; and no document speaks to the
 * tool's developers or to an issue tracker outside the repository.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

const ROOT = join(import.meta.dirname, '..');
const README = readFileSync(join(ROOT, 'README.md'), 'utf8');
const DOCS = [
  join(ROOT, 'README.md'),
  ...readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => join(ROOT, 'docs', f)),
];

describe('README', () => {
  it('is at most 200 lines, with its paragraphs short', () => {
    expect(README.split('\n').length).toBeLessThanOrEqual(200);
    // paragraphs and list items (a list is read item by item)
    const paragraphs = README.split(/\n\s*\n|\n(?=- )/).filter((p) => !p.startsWith('```') && !p.startsWith('|'));
    const longest = Math.max(...paragraphs.map((p) => p.split(/\s+/).length));
    expect(longest).toBeLessThanOrEqual(120);
  });

  it('starts with the two commands, then has the sections a user looks for, in order', () => {
    const firstBlock = README.slice(README.indexOf('```sh'), README.indexOf('```', README.indexOf('```sh') + 5));
    expect(firstBlock).toContain('npm ci && npm run demo');
    expect(firstBlock).toContain('npm ci && npm test');
    const want = [
      '## Install',
      '## Quick start',
      '## The commands',
      '## Loading the results in transformers',
      '## How it is proven',
      '## Documentation',
      '## Citations',
    ];
    const at = want.map((h) => README.indexOf(`\n${h}`));
    expect(
      at.every((i) => i > 0),
      `missing: ${want.filter((_, k) => at[k] < 0).join(', ')}`,
    ).toBe(true);
    expect([...at].sort((a, b) => a - b)).toEqual(at);
  });

  it('cites the papers the methods come from', () => {
    for (const id of ['2305.02869', '2404.16645', '2407.02783', '1511.05641', '2409.12903', '2405.15319', '2401.02415'])
      expect(README).toContain(id);
  });
});

describe('documentation', () => {
  it('every relative link in README.md and docs/ points to a file that exists', () => {
    const dead: string[] = [];
    for (const f of DOCS) {
      for (const m of readFileSync(f, 'utf8').matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)) {
        const target = m[1];
        if (/^[a-z]+:/.test(target)) continue;
        if (!existsSync(join(dirname(f), target))) dead.push(`${f.slice(ROOT.length + 1)} -> ${target}`);
      }
    }
    expect(dead).toEqual([]);
  });

  it('speaks to users, not to the tool developers or an outside tracker', () => {
    const bad = /\b(your note|say so in|issue \d+|Issue \d+)\b/;
    const hits = DOCS.flatMap((f) =>
      readFileSync(f, 'utf8')
        .split('\n')
        .map((l, k) => [l, k] as const)
        .filter(([l]) => bad.test(l))
        .map(([l, k]) => `${f.slice(ROOT.length + 1)}:${k + 1}: ${l.trim().slice(0, 80)}`),
    );
    expect(hits).toEqual([]);
  });
});
