/**
 * Start-up stays short (`npm run bench -- startup` times it): the top-level --help loads no
 * command module, a command loads its own module and not the others', and `plan` and `inspect`,
 * which read headers and configs only, never load tfjs (half a second of start-up on its own).
 * Checked by what the process loads, not by time, so a slow machine cannot fail it.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { tmpdir } from 'node:os';

const ROOT = join(import.meta.dirname, '..', '..');
const FIX = 'fixtures/hf/llama-tiny-f32';
const PLAN = 'growth-plans/tiny-stage1-to-stage2.json';
const NM = `${sep}node_modules${sep}`;

/** Modules (paths relative to the repository root, `/` separators) that `node args` loads; it must exit 0. */
function loaded(args: string[]): string[] {
  const out = join(tmpdir(), `flm-grow-modules-${process.pid}-${Math.random().toString(36).slice(2)}.txt`);
  try {
    const r = spawnSync(process.execPath, ['--import', './test/support/record-modules.mjs', ...args], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...process.env, FLM_RECORD_MODULES: out },
    });
    expect(r.status, r.stderr).toBe(0);
    const lines = readFileSync(out, 'utf8')
      .split('\n')
      .filter((l) => l !== '');
    // packages by their path from node_modules/ on, wherever node_modules really lies (a link in some checkouts)
    const short = (p: string) => (p.includes(NM) ? p.slice(p.indexOf(NM) + 1) : relative(ROOT, p)).split(sep).join('/');
    return [...new Set(lines.map(short))].sort();
  } finally {
    rmSync(out, { force: true });
  }
}

const cli = (...args: string[]) => loaded(['bin/flm-grow.js', ...args]);
const tfjs = (mods: string[]) => mods.filter((m) => m.includes('node_modules/@tensorflow/'));
/** The command modules loaded (dist/commands/plan.js -> plan). */
const commandModules = (mods: string[]) =>
  mods
    .filter((m) => /^dist\/commands\/[^/]+\.js$/.test(m))
    .map((m) => m.slice('dist/commands/'.length, -'.js'.length))
    .sort();

describe('what start-up loads', () => {
  it('the recorder sees ES modules and CommonJS modules', () => {
    const mods = loaded(['--input-type=module', '-e', "import('cli-progress').then(() => import('yargs'))"]);
    expect(mods).toContain('node_modules/cli-progress/cli-progress.js');
    expect(mods).toContain('node_modules/cli-progress/lib/single-bar.js'); // required from CommonJS
    expect(mods).toContain('node_modules/yargs/index.mjs');
  });

  it('--help loads no command module, cli-progress or tfjs', () => {
    const mods = cli('--help');
    expect(mods).toContain('dist/cli.js');
    expect(commandModules(mods)).toEqual(['index', 'options']);
    expect(mods.filter((m) => m.includes('cli-progress'))).toEqual([]);
    expect(tfjs(mods)).toEqual([]);
  });

  it('plan --json loads its own command module only, and no tfjs', () => {
    const mods = cli('plan', FIX, '--plan', PLAN, '--json');
    expect(commandModules(mods)).toEqual(['index', 'options', 'plan', 'plan-options']);
    expect(tfjs(mods)).toEqual([]);
  });

  it('plan on a config.json, text output, loads no tfjs', () => {
    expect(tfjs(cli('plan', `${FIX}/config.json`, '--plan', PLAN, '--placement', 'distance'))).toEqual([]);
  });

  it('inspect --json loads its own command module only, and no tfjs', () => {
    const mods = cli('inspect', FIX, '--json');
    expect(commandModules(mods)).toEqual(['index', 'inspect', 'inspect-report', 'options']);
    expect(tfjs(mods)).toEqual([]);
  });
});
