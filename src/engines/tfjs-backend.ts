/**
 * Picks and initialises the tfjs backend. wasm is the default: it runs everywhere Node runs and
 * is several times faster than the pure-JS cpu backend; tfjs-node-gpu is an optional dependency
 * used only when it is installed.
 */
import * as tf from '@tensorflow/tfjs';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { createRequire } from 'node:module';
import { dirname, join, sep } from 'node:path';
import { FlmGrowError } from '../util/errors.ts';

export const BACKEND_NAMES = ['auto', 'wasm', 'cpu', 'tensorflow'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

const require = createRequire(import.meta.url);

/** The folder holding the .wasm binaries, found through module resolution (works from any cwd). */
export function wasmDistDir(): string {
  return join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + sep;
}

let wasmPathsSet = false;
let tfNodeTried = false;
let tfNodeLoaded = false;

/** Importing tfjs-node-gpu registers its 'tensorflow' backend; absent is the usual case. */
async function tryLoadTfNode(): Promise<boolean> {
  if (tfNodeTried) return tfNodeLoaded;
  tfNodeTried = true;
  try {
    // A variable specifier keeps TypeScript from requiring the optional package's types.
    const pkg = '@tensorflow/tfjs-node-gpu';
    await import(pkg);
    tfNodeLoaded = tf.findBackend('tensorflow') !== null;
  } catch {
    tfNodeLoaded = false;
  }
  return tfNodeLoaded;
}

/**
 * Initialise a backend and make it current; returns the name actually in use.
 * 'auto' prefers tfjs-node-gpu when installed, else wasm. Calling again with the backend already
 * active is cheap.
 */
export async function initBackend(name: BackendName = 'auto'): Promise<string> {
  if (!(BACKEND_NAMES as readonly string[]).includes(name)) {
    throw new FlmGrowError('BadBackend', `--backend: unknown backend "${String(name)}" (use ${BACKEND_NAMES.join(', ')})`);
  }
  let want: 'wasm' | 'cpu' | 'tensorflow' = name === 'auto' ? 'wasm' : name;
  if (name === 'auto' && (await tryLoadTfNode())) want = 'tensorflow';
  if (want === 'tensorflow' && !(await tryLoadTfNode())) {
    throw new FlmGrowError(
      'BackendUnavailable',
      '--backend tensorflow: @tensorflow/tfjs-node-gpu is not installed (it is an optional dependency: `npm install @tensorflow/tfjs-node-gpu@4.22.0`, needs CUDA); use --backend wasm',
    );
  }
  if (want === 'wasm' && !wasmPathsSet) {
    setWasmPaths(wasmDistDir());
    wasmPathsSet = true;
  }
  // engine().backendName does not initialise a default backend (getBackend() would try webgl first).
  if (tf.engine().backendName !== want) {
    const ok = await tf.setBackend(want);
    if (!ok) throw new FlmGrowError('BackendUnavailable', `--backend ${want}: tfjs could not initialise the backend`);
  }
  await tf.ready();
  return tf.getBackend();
}
