/**
 * `node --import ./test/support/record-modules.mjs ...` with FLM_RECORD_MODULES=<file>: appends
 * the path of every module the process loads to <file>, one a line. ES modules are seen by a
 * resolve hook (it runs on the loader thread, hence the append per module); CommonJS modules
 * (tfjs's bundles, cli-progress) are read from require's cache at exit. For the start-up tests,
 * which check what a command does not load.
 */
import { appendFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';
import { fileURLToPath } from 'node:url';

const OUT = process.env.FLM_RECORD_MODULES;
const path = (url) => (url.startsWith('file:') ? fileURLToPath(url) : url);

export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  if (OUT !== undefined) appendFileSync(OUT, `${path(r.url)}\n`);
  return r;
}

// this file is also the hooks module: register it only from the main thread's --import
if (!import.meta.url.endsWith('?hooks') && OUT !== undefined) {
  register(`${import.meta.url}?hooks`);
  const cache = createRequire(import.meta.url).cache;
  process.on('exit', () =>
    appendFileSync(
      OUT,
      Object.keys(cache)
        .map((k) => `${k}\n`)
        .join(''),
    ),
  );
}
