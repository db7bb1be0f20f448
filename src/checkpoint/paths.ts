/**
 * Path safety, in one place. Names read from files we did not write ourselves in this run
 * (manifests, indexes, part files) must stay inside their folder; an output must never be,
 * contain, or sit inside one of its inputs (replacing it would delete the input); symlinked side
 * files are copied only from where checkpoints legitimately keep their files.
 */
import { lstatSync, realpathSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, posix, relative, resolve, sep } from 'node:path';
import { CheckpointError } from '../util/errors.ts';

/**
 * `name` (from `where`: a manifest, index or part file) as a normalised relative path that stays
 * inside its folder; anything else (absolute, `..` escapes, backslashes, NUL, empty) is refused
 * before any read or write, so a crafted file cannot make us touch paths outside the folder.
 */
export function safeRelativeName(name: unknown, where: string): string {
  const bad = (why: string): never => {
    throw new CheckpointError('UnsafePath', `${where}: file name ${JSON.stringify(name)} ${why}; refusing to read or write it`);
  };
  if (typeof name !== 'string' || name === '') return bad('is not a non-empty string');
  if (name.includes('\0') || name.includes('\\')) return bad('contains a NUL or backslash');
  if (isAbsolute(name) || posix.isAbsolute(name) || /^[A-Za-z]:/.test(name)) return bad('is absolute');
  const n = posix.normalize(name);
  if (n === '.' || n === '..' || n.startsWith('../') || n.endsWith('/')) return bad('escapes its folder');
  return n;
}

/** `dir`/`name` after checking `name` with safeRelativeName. */
export function joinInside(dir: string, name: unknown, where: string): string {
  return join(dir, safeRelativeName(name, where));
}

/**
 * Absolute path with the symlinks of its existing part resolved, so that two spellings of one
 * folder (relative, `..`, a symlinked parent) compare equal even before the path exists.
 */
export function canonicalPath(p: string): string {
  let abs = resolve(p);
  const rest: string[] = [];
  for (;;) {
    try {
      return join(realpathSync(abs), ...rest.reverse());
    } catch {
      const parent = dirname(abs);
      if (parent === abs) return join(abs, ...rest.reverse());
      rest.push(basename(abs));
      abs = parent;
    }
  }
}

/** Whether `child` is `parent` or inside it (after resolving symlinks). */
export function isInside(child: string, parent: string): boolean {
  const r = relative(canonicalPath(parent), canonicalPath(child));
  return r === '' || (r !== '..' && !r.startsWith(`..${sep}`) && !isAbsolute(r));
}

/**
 * Refuse an output that is, contains, or is inside one of its inputs: committing it (or replacing
 * it with --overwrite) would delete or change the input it is being made from.
 */
export function assertOutputApart(dest: string, inputs: readonly string[], what = 'input'): void {
  for (const input of inputs) {
    const inside = isInside(dest, input),
      contains = isInside(input, dest);
    if (inside && contains)
      throw new CheckpointError('DestinationIsSource', `${dest}: destination is the source ${input}; refusing to write over it`);
    if (contains)
      throw new CheckpointError(
        'DestinationContainsInput',
        `${dest}: destination contains the ${what} ${input}; writing (or --overwrite) there would delete it`,
      );
    if (inside)
      throw new CheckpointError(
        'DestinationInsideInput',
        `${dest}: destination is inside the ${what} ${input}; write it somewhere else`,
      );
  }
}

/**
 * The file to copy for side file `path` (tokenizer, generation config): the file itself, or, for
 * a symlink, its target when that lies inside the checkpoint folder or in the `blobs/` folder of
 * the HF cache repository the checkpoint is a snapshot of (snapshots link there). Any other
 * symlink is refused: following it would copy (and later publish) an arbitrary file.
 */
export function sideFileSource(path: string): string {
  if (!lstatSync(path).isSymbolicLink()) return path;
  let target: string;
  try {
    target = realpathSync(path);
  } catch (e) {
    throw new CheckpointError('BrokenSymlink', `${path}: symlink to a missing file (${(e as Error).message})`);
  }
  const folder = canonicalPath(dirname(path));
  if (isInside(target, folder)) return target;
  if (basename(dirname(folder)) === 'snapshots' && isInside(target, join(dirname(dirname(folder)), 'blobs'))) return target;
  throw new CheckpointError(
    'UnsafeSymlink',
    `${path}: symlink to ${target}, outside the checkpoint folder and its HF cache blobs/; refusing to copy it (copy the file into the folder if it belongs there)`,
  );
}
