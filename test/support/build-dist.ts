/**
 * vitest globalSetup: tests that spawn bin/flm-grow.js run the compiled dist/, so rebuild it
 * when any file under src/ (or the build config) is newer than the last build.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..', '..');
const STAMP = join(ROOT, 'dist', '.build-stamp');

function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

export function distIsStale(): boolean {
  if (!existsSync(STAMP)) return true;
  const built = statSync(STAMP).mtimeMs;
  return (
    newest(join(ROOT, 'src')) > built ||
    statSync(join(ROOT, 'tsconfig.build.json')).mtimeMs > built ||
    statSync(join(ROOT, 'tsconfig.json')).mtimeMs > built
  );
}

export default function setup(): void {
  // `npm test` sets FLM_GROW_REQUIRE_TORCH=1 after building .venv: there the torch and transformers
  // tests must run, so a missing interpreter fails the suite instead of skipping those tests
  if (process.env.FLM_GROW_REQUIRE_TORCH === '1') {
    const venv = join(ROOT, '.venv', 'bin', 'python');
    const probe = spawnSync(venv, ['-c', 'import torch, transformers, safetensors'], { encoding: 'utf8' });
    if (probe.status !== 0)
      throw new Error(
        `FLM_GROW_REQUIRE_TORCH=1 but ${venv} cannot import torch/transformers/safetensors: ${probe.stderr ?? probe.error}; run node scripts/python-env.mjs`,
      );
  }
  if (!distIsStale()) return;
  execFileSync(
    process.execPath,
    [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.build.json')],
    { cwd: ROOT, stdio: 'inherit' },
  );
  writeFileSync(STAMP, `${new Date().toISOString()}\n`);
}
