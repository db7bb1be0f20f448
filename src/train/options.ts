/**
 * The training options, declared once in python/flm_grow_torch/_data/train_options.json (the torch
 * trainer's argparse parser reads the same file: python/flm_grow_torch/options.py). Everything
 * about an option comes from there: the `flm-grow train` flag and its help, the pipeline key, the
 * range check, the default the trainer uses, and whether the torch trainer's argv carries it.
 * Names: the flag is kebab-case (`eval-batches`), the TrainOptions key its camelCase
 * (`evalBatches`), the pipeline and Python key its snake_case (`eval_batches`).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TrainError } from '../util/errors.ts';

export const TRAIN_OPTIONS_FILE = join(
  import.meta.dirname,
  '..',
  '..',
  'python',
  'flm_grow_torch',
  '_data',
  'train_options.json',
);

export type TrainOptionType = 'int' | 'number' | 'string' | 'boolean';

export interface TrainOptionSpec {
  flag: string;
  type: TrainOptionType;
  default?: number | string | boolean;
  /** What an absent value means, where that is not a constant (`lr/10`). */
  defaultText?: string;
  min?: number;
  max?: number;
  minExclusive?: number;
  maxExclusive?: number;
  choices?: string[];
  help: string;
  engines: ('tfjs' | 'torch')[];
  /** A pipeline train stage (or the pipeline's `train` block) may set it, as its snake_case key. */
  pipeline: boolean;
  /** false: not a flag of `flm-grow train`. */
  cli?: boolean;
  /** false: not passed to the torch trainer's argv (handled by flm-grow itself). */
  torch?: boolean;
  required?: boolean;
}

export const TRAIN_OPTIONS: readonly TrainOptionSpec[] = (
  JSON.parse(readFileSync(TRAIN_OPTIONS_FILE, 'utf8')) as { options: TrainOptionSpec[] }
).options;

export const camelKey = (flag: string): string => flag.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
export const snakeKey = (flag: string): string => flag.replace(/-/g, '_');

export function trainOption(flag: string): TrainOptionSpec {
  const o = TRAIN_OPTIONS.find((x) => x.flag === flag);
  if (o === undefined) throw new Error(`${TRAIN_OPTIONS_FILE}: no option "${flag}"`);
  return o;
}

/** The declared default of an option (a number for numeric options). */
export function trainDefault(flag: string): number {
  const d = trainOption(flag).default;
  if (typeof d !== 'number') throw new Error(`${TRAIN_OPTIONS_FILE}: option "${flag}" has no numeric default`);
  return d;
}

/** The range an option's value must lie in, in words ("an integer >= 0", "in [0, 1)"). */
export function rangeText(o: TrainOptionSpec): string {
  if (o.choices !== undefined) return `one of ${o.choices.join(', ')}`;
  if (o.type === 'boolean') return 'true or false';
  if (o.type === 'string') return 'a string';
  const kind = o.type === 'int' ? 'an integer' : 'a number';
  const lo = o.min !== undefined ? `[${o.min}` : o.minExclusive !== undefined ? `(${o.minExclusive}` : undefined;
  const hi = o.max !== undefined ? `${o.max}]` : o.maxExclusive !== undefined ? `${o.maxExclusive})` : undefined;
  if (lo !== undefined && hi !== undefined) return `${o.type === 'int' ? 'an integer ' : ''}in ${lo}, ${hi}`;
  if (o.min !== undefined) return o.type === 'int' && o.min === 1 ? 'a positive integer' : `${kind} >= ${o.min}`;
  if (o.minExclusive !== undefined) return `${kind} > ${o.minExclusive}`;
  return kind;
}

/** The problem with a value of option `o`, or undefined when it is valid. */
export function optionProblem(o: TrainOptionSpec, v: unknown): string | undefined {
  const ok = (() => {
    switch (o.type) {
      case 'boolean':
        return typeof v === 'boolean';
      case 'string':
        return typeof v === 'string' && (o.choices === undefined || o.choices.includes(v));
      case 'int':
      case 'number': {
        if (typeof v !== 'number' || !Number.isFinite(v) || (o.type === 'int' && !Number.isInteger(v))) return false;
        return (
          (o.min === undefined || v >= o.min) &&
          (o.max === undefined || v <= o.max) &&
          (o.minExclusive === undefined || v > o.minExclusive) &&
          (o.maxExclusive === undefined || v < o.maxExclusive)
        );
      }
    }
  })();
  return ok ? undefined : `must be ${rangeText(o)}, got ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`;
}

/** Checks every option present in `values` (keyed by camelCase), naming the flag; before anything is read. */
export function checkTrainOptionValues(values: Record<string, unknown>): void {
  for (const o of TRAIN_OPTIONS) {
    const v = values[camelKey(o.flag)];
    if (v === undefined) {
      if (o.required === true) throw new TrainError('BadArgs', `--${o.flag} is required`);
      continue;
    }
    const p = optionProblem(o, v);
    if (p !== undefined) throw new TrainError('BadArgs', `--${o.flag} ${p}`);
  }
}
