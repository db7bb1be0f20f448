/**
 * The declarations both engines load (python/flm_grow_torch/_data/*.json: families, config rules,
 * training options, the checkpoint manifest), read once at import.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** python/flm_grow_torch/_data (src/ and dist/ sit at the same depth under the project root). */
export const DATA_DIR = join(import.meta.dirname, '..', '..', 'python', 'flm_grow_torch', '_data');

export function readDataFile<T>(name: string): T {
  return JSON.parse(readFileSync(join(DATA_DIR, name), 'utf8')) as T;
}
