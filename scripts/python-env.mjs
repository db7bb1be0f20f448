#!/usr/bin/env node
/**
 * Creates (or checks) the project's Python environment in .venv: the exact versions of
 * python/requirements.lock (torch 2.13.0 CPU build, transformers, safetensors, pytest, ruff) and
 * the flm_grow_torch package installed editable. `npm test` runs this first; it is a no-op when
 * .venv/.flm-grow-env matches the lock file and pyproject.toml. No dependencies beyond Node.
 *
 * FLM_GROW_PYTHON_BASE picks the interpreter the venv is made from (default: python3).
 * Exit 2 with one line saying what failed (no python3, no venv module, pip's error).
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const venv = join(root, '.venv');
const py = join(venv, 'bin', 'python');
const stamp = join(venv, '.flm-grow-env');
const lock = join(root, 'python', 'requirements.lock');
const want = createHash('sha256')
  .update(readFileSync(lock))
  .update(readFileSync(join(root, 'python', 'pyproject.toml')))
  .digest('hex');

function fail(msg) {
  process.stderr.write(`python-env: ${msg}\n`);
  process.exit(2);
}

function run(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], cwd: root });
  if (r.error !== undefined) fail(`cannot run ${cmd}: ${r.error.message}`);
  if (r.status !== 0) fail(`${cmd} ${args.join(' ')} exited with code ${r.status}`);
}

if (existsSync(stamp) && readFileSync(stamp, 'utf8').trim() === want && existsSync(py)) process.exit(0);

const t0 = Date.now();
const base = process.env.FLM_GROW_PYTHON_BASE || 'python3';
process.stderr.write(`python-env: creating ${venv} from ${base} (python/requirements.lock; about 1 GB, mostly torch)\n`);
if (existsSync(venv)) rmSync(venv, { recursive: true, force: true });
run(base, ['-m', 'venv', venv]);
run(py, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '-r', lock]);
// editable, from the venv's own setuptools: no build environment to download
run(py, [
  '-m',
  'pip',
  'install',
  '--quiet',
  '--disable-pip-version-check',
  '--no-deps',
  '--no-build-isolation',
  '-e',
  join(root, 'python'),
]);
writeFileSync(stamp, want + '\n');
process.stderr.write(`python-env: ready in ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
