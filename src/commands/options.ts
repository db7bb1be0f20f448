/**
 * One vocabulary for every command: the shared options (name, type, meaning) in one table, the
 * old spellings kept as hidden deprecated aliases, numbers that echo a bad value as typed, and
 * "did you mean" for misspelt options and commands. docs/cli.md prints the same table.
 *
 * This module is imported by every command's definition, so it stays light: no library module
 * is imported at run time (types only), and the choices below are checked against the library's
 * own lists by test/cli/options.test.ts.
 */
import type { Argv, Options } from 'yargs';
import { FlmGrowError } from '../util/errors.ts';
import { closest } from '../util/suggest.ts';
import type { BackendName } from '../engines/tfjs-backend.ts';
import type { Engine } from '../train/engine.ts';

export const BACKEND_CHOICES = ['auto', 'wasm', 'cpu', 'tensorflow'] as const satisfies readonly BackendName[];
export const ENGINE_CHOICES = ['tfjs', 'torch', 'auto'] as const satisfies readonly Engine[];
/** Ours and the HF `torch_dtype` names (util/dtype.ts parseDtypeName reads both). */
export const DTYPE_CHOICES = ['bf16', 'f16', 'f32', 'bfloat16', 'float16', 'float32'] as const;

export type OptionType = 'string' | 'number' | 'boolean';

export interface SharedOption {
  type: OptionType;
  describe: string;
  /** Old spellings: accepted, hidden from --help. */
  deprecated?: string[];
  /** The key this flag sets in a growth plan or pipeline JSON (dots: nesting), where there is one. */
  jsonKey?: string;
  choices?: readonly string[];
}

/**
 * The shared options. A name means the same thing in every command that takes it. JSON keys are
 * the flag in snake_case under its section (`--calibration-tokens` <-> `calibration.tokens`,
 * `--seq-len` <-> `seq_len`, `--hidden-size` <-> `targets.hidden_size`).
 */
export const SHARED_OPTIONS = {
  json: { type: 'boolean', describe: 'print the result as one JSON object on stdout (progress and logs stay on stderr)' },
  quiet: { type: 'boolean', describe: 'no progress bars or log lines on stderr' },
  out: {
    type: 'string',
    describe:
      'where the command writes (a folder for train, run, grow, bake, export, synth, assemble; a file for forward, plot); grow, bake, export, synth and assemble also take it as a positional',
    deprecated: ['output'],
  },
  input: { type: 'string', describe: 'safetensors file with input_ids (I64 or I32, [batch, seq])' },
  backend: {
    type: 'string',
    choices: BACKEND_CHOICES,
    describe: 'tfjs backend (auto: tensorflow when @tensorflow/tfjs-node-gpu is installed, else wasm)',
  },
  engine: {
    type: 'string',
    choices: ENGINE_CHOICES,
    describe:
      'tfjs (in-process) or torch (python/flm_grow_torch: every core or the GPU); auto: torch when a Python with torch is found (train: with a GPU, several processes, or a model tfjs cannot hold)',
  },
  seed: { type: 'number', describe: 'seed of the random numbers this command draws', jsonKey: 'seed' },
  dtype: { type: 'string', choices: DTYPE_CHOICES, describe: 'tensor dtype written', jsonKey: 'dtype' },
  overwrite: { type: 'boolean', describe: 'replace an existing destination that flm-grow wrote (or an empty folder)' },
  'force-overwrite': { type: 'boolean', describe: 'with --overwrite: replace the destination even if flm-grow did not write it' },
  'take-over-lock': {
    type: 'boolean',
    describe: "take over the --out folder's lock held by a job on another host that is no longer running",
  },
  'out-shard-size': { type: 'string', describe: 'largest output shard, e.g. 5GB, 500MB', jsonKey: 'out_shard_size' },
  'calibration-tokens': {
    type: 'number',
    describe: 'random calibration tokens (rounded up to whole sequences)',
    deprecated: ['tokens'],
    jsonKey: 'calibration.tokens',
  },
  'calibration-seq': {
    type: 'number',
    describe: 'sequence length of the calibration inputs',
    deprecated: ['seq'],
    jsonKey: 'calibration.seq',
  },
  'calibration-seed': { type: 'number', describe: 'seed of the random calibration tokens', jsonKey: 'calibration.seed' },
  'calibration-file': {
    type: 'string',
    describe: 'calibration token ids: JSON array or whitespace-separated file',
    jsonKey: 'calibration.file',
  },
  'calibration-text': {
    type: 'string',
    describe: "calibration text (the checkpoint's tokenizer, else bytes)",
    deprecated: ['text'],
    jsonKey: 'calibration.text',
  },
  metric: {
    type: 'string',
    choices: ['cosine', 'l2'],
    describe: 'layer distance (input -> output of each layer)',
    jsonKey: 'placement.metric',
  },
  order: {
    type: 'string',
    choices: ['smallest', 'largest'],
    describe: 'which layers distance placement picks first',
    jsonKey: 'placement.order',
  },
  'seq-len': { type: 'number', describe: 'training sequence length', jsonKey: 'seq_len' },
  'batch-size': { type: 'number', describe: 'sequences per optimizer step', jsonKey: 'batch_size' },
} satisfies Record<string, SharedOption>;

export type SharedName = keyof typeof SHARED_OPTIONS;

/** Which shared options each command takes (checked by test/cli/options.test.ts). */
/** Layer selection's options: the calibration input and the distance ranking (plan, grow, select-layers). */
export const SELECTION_OPTIONS = [
  'calibration-tokens',
  'calibration-seq',
  'calibration-seed',
  'calibration-file',
  'calibration-text',
  'metric',
  'order',
] as const satisfies readonly SharedName[];

export const COMMAND_OPTIONS: Record<string, SharedName[]> = {
  inspect: ['json'],
  plan: ['json', 'dtype', 'out-shard-size', 'seed', ...SELECTION_OPTIONS],
  grow: [
    'json',
    'quiet',
    'backend',
    'out',
    'dtype',
    'overwrite',
    'force-overwrite',
    'out-shard-size',
    'seed',
    'engine',
    ...SELECTION_OPTIONS,
  ],
  verify: ['json', 'quiet', 'backend', 'engine', 'input', 'seed', 'calibration-tokens', 'calibration-seq', 'calibration-seed'],
  forward: ['json', 'quiet', 'backend', 'engine', 'input', 'out', 'overwrite'],
  'select-layers': ['json', 'quiet', 'backend', 'engine', 'seed', ...SELECTION_OPTIONS],
  train: ['json', 'quiet', 'backend', 'engine', 'out', 'seed', 'seq-len', 'batch-size', 'take-over-lock'],
  bake: ['json', 'quiet', 'out', 'overwrite', 'force-overwrite', 'out-shard-size'],
  export: ['json', 'quiet', 'out', 'overwrite', 'force-overwrite'],
  run: ['json', 'quiet', 'out', 'take-over-lock'],
  plot: ['json', 'out'],
  synth: ['json', 'quiet', 'out', 'dtype', 'seed', 'overwrite', 'force-overwrite', 'out-shard-size'],
  assemble: ['json', 'quiet', 'out', 'overwrite', 'force-overwrite'],
};

/**
 * The destination folder of grow, bake, synth and assemble: `--out` (the name train, run and
 * forward use), or the positional these commands took first, kept for compatibility. Both given
 * must name the same folder; neither is a usage error.
 */
export function destinationArg(command: string, a: Record<string, unknown>, positional: string): string {
  const out = a.out;
  const pos = a[positional];
  if (Array.isArray(out)) throw new FlmGrowError('UsageError', `${command}: --out given ${out.length} times; give it once`);
  if (typeof out === 'string' && out !== '' && typeof pos === 'string' && pos !== out)
    throw new FlmGrowError(
      'UsageError',
      `${command}: the destination is given twice, as --out "${out}" and as <${positional}> "${pos}"; give one (or the same folder)`,
    );
  const dest = typeof out === 'string' && out !== '' ? out : pos;
  if (typeof dest !== 'string' || dest === '')
    throw new FlmGrowError('UsageError', `${command}: no destination: give --out <folder> (or <${positional}>)`);
  return dest;
}

/**
 * assemble's destination and parts. Without --out the first positional is the destination (the
 * old form); with --out every positional is a part folder, except a first one equal to --out
 * (the destination given both ways). The destination and parts cannot be told apart by position
 * once --out is given, so a different first positional is taken as a part, not as a conflict.
 */
export function assembleArgs(a: Record<string, unknown>): { dest: string; parts: string[] } {
  const first = typeof a.destination === 'string' ? [a.destination] : [];
  const rest = Array.isArray(a.parts) ? a.parts.filter((x): x is string => typeof x === 'string') : [];
  const out = a.out;
  let dest: string;
  let parts: string[];
  if (out !== undefined) {
    dest = destinationArg('assemble', { out }, 'destination');
    parts = first[0] === dest ? rest : [...first, ...rest];
  } else {
    dest = destinationArg('assemble', { destination: first[0] }, 'destination');
    parts = rest;
  }
  if (parts.length === 0) throw new FlmGrowError('UsageError', `assemble: no part folders given (write ${dest} from what?)`);
  return { dest, parts };
}

/** A number as typed: "abc" or "five" are reported as typed, not as null or NaN. */
export function parseNumberArg(name: string, v: unknown): number | undefined {
  if (v === undefined) return undefined;
  if (Array.isArray(v))
    throw new FlmGrowError('UsageError', `--${name} given ${v.length} times (${v.map(String).join(', ')}); give it once`);
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  if (typeof v === 'boolean' || !Number.isFinite(n))
    throw new FlmGrowError(
      'UsageError',
      `--${name}: expected a number, got ${typeof v === 'boolean' ? 'no value' : `"${String(v)}"`}`,
    );
  return n;
}

/**
 * A yargs option spec. Numbers are parsed by us (yargs turns "abc" into NaN or null before any
 * check could see it), so their spec has no yargs type; `[number]` is written into the help.
 */
export function spec(name: string, type: OptionType, o: Options = {}): Options {
  if (type !== 'number') return { type, ...o };
  const describe = `${o.describe ?? o.description ?? ''}${o.describe === undefined && o.description === undefined ? '' : ' '}[number]`;
  return { requiresArg: true, ...o, describe, coerce: (v: unknown) => parseNumberArg(name, v) };
}

/** Add shared options to a command, with per-command describe/default overrides. */
export function shared<T>(y: Argv<T>, names: SharedName[], over: Partial<Record<SharedName, Options>> = {}): Argv<T> {
  let out = y;
  for (const n of names) {
    const s: SharedOption = SHARED_OPTIONS[n];
    const o: Options = {
      describe: s.describe,
      ...(s.choices !== undefined ? { choices: [...s.choices] } : {}),
      ...(s.type === 'boolean' ? { default: false } : {}),
      ...over[n],
    };
    out = out.option(n, spec(n, s.type, o));
    for (const old of s.deprecated ?? []) out = deprecatedAlias(out, old, n, s.type);
  }
  return out;
}

/** `old` still works (hidden from --help, no warning) and sets `canonical`. */
export function deprecatedAlias<T>(y: Argv<T>, old: string, canonical: string, type: OptionType): Argv<T> {
  return y
    .option(old, { ...spec(old, type), hidden: true, describe: `deprecated spelling of --${canonical}` })
    .middleware((a: Record<string, unknown>) => {
      if (a[old] !== undefined) {
        a[canonical] = a[old];
        const camel = canonical.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
        if (camel !== canonical) a[camel] = a[old];
      }
    }, true);
}

/** The closest candidates to `word` (HF snake_case spellings map to our kebab-case first). */
export function suggest(word: string, candidates: readonly string[]): string[] {
  return closest(word.replace(/^-+/, '').replace(/_/g, '-').toLowerCase(), candidates);
}
