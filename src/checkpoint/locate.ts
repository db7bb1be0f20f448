/**
 * Where a checkpoint argument points. flm-grow reads local folders; a Hugging Face Hub id
 * (`meta-llama/Llama-3.2-1B`) is found only in the local HF cache, as huggingface_hub lays it
 * out: <cache>/models--<org>--<name>/snapshots/<revision>/, the revision named by refs/main.
 * Anything else that does not exist gets a message that says how to download it.
 * Light (node built-ins only): cli.ts uses it before any command module loads.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** The HF hub caches to look in, in huggingface_hub's order: HF_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME, ~/.cache. */
export function hfCacheDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  const set = (v: string | undefined) => v !== undefined && v !== '';
  const dirs = [
    set(env.HF_HUB_CACHE) ? env.HF_HUB_CACHE : undefined,
    set(env.HUGGINGFACE_HUB_CACHE) ? env.HUGGINGFACE_HUB_CACHE : undefined,
    set(env.HF_HOME) ? join(env.HF_HOME as string, 'hub') : undefined,
    set(env.XDG_CACHE_HOME) ? join(env.XDG_CACHE_HOME as string, 'huggingface', 'hub') : undefined,
    join(homedir(), '.cache', 'huggingface', 'hub'),
  ];
  return [...new Set(dirs.filter((d): d is string => d !== undefined))];
}

/** `org/name` (optionally `org/name@revision`) that is not a path on disk. */
export function looksLikeHubId(s: string): boolean {
  return /^[A-Za-z0-9][\w.-]*\/[\w.-]+(@[\w.-]+)?$/.test(s) && !existsSync(s) && !s.startsWith('.');
}

/** The cached snapshot folder of a Hub id (with config.json), or undefined. */
export function cachedSnapshot(id: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const [repo, rev] = id.split('@');
  const folder = `models--${repo.replace('/', '--')}`;
  for (const cache of hfCacheDirs(env)) {
    const base = join(cache, folder);
    let revision = rev ?? 'main';
    const ref = join(base, 'refs', revision);
    try {
      if (existsSync(ref)) revision = readFileSync(ref, 'utf8').trim();
    } catch {
      continue;
    }
    const snap = join(base, 'snapshots', revision);
    if (existsSync(join(snap, 'config.json'))) return snap;
  }
  return undefined;
}

/** A local folder for `arg`: itself, or the cached snapshot of a Hub id; undefined when neither. */
export function resolveCheckpointArg(arg: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (existsSync(arg)) return arg;
  return looksLikeHubId(arg) ? cachedSnapshot(arg, env) : undefined;
}

/** Why `dir` cannot be opened as a checkpoint folder, and what to do. */
export function notAFolderMessage(dir: string): string {
  if (existsSync(dir)) {
    return statSync(dir).isDirectory() ? `${dir}: not a checkpoint folder` : `${dir}: not a folder (a checkpoint is a folder)`;
  }
  if (looksLikeHubId(dir)) {
    const local = dir.split('@')[0].split('/')[1];
    return (
      `${dir}: no such folder, and not in the local Hugging Face cache (${hfCacheDirs().join(', ')}). ` +
      `flm-grow reads local checkpoint folders: download it first, e.g. huggingface-cli download ${dir.split('@')[0]} --local-dir ${local}, then pass ${local}`
    );
  }
  return `${dir}: no such folder (flm-grow reads local checkpoint folders; a Hub model is downloaded with huggingface-cli download <org/name> --local-dir <folder>)`;
}
