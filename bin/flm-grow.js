#!/usr/bin/env node
// Runs the compiled CLI in dist/ (built by `npm run build`, which `npm ci` / `npm install` run
// through `prepare`). In a checkout without dist/ it falls back to the TypeScript sources through
// tsx (a devDependency), so a dev tree works before its first build.
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

const dist = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
if (existsSync(dist)) {
  await import(pathToFileURL(dist).href);
} else {
  let register;
  try {
    ({ register } = await import('tsx/esm/api'));
  } catch {
    process.stderr.write('flm-grow: error: dist/cli.js is missing; run `npm run build` (or `npm ci`, which builds)\n');
    process.exit(2);
  }
  register();
  await import('../src/cli.ts');
}
