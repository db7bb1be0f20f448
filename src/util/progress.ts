/**
 * How long-running library work reports progress without drawing anything itself: it asks an
 * injected `ProgressFactory` for a `Progress` and updates it. Only `commands/` draws bars
 * (commands/progress.ts); without a factory, progress goes nowhere.
 */

export interface Progress {
  update(done: number, payload?: Record<string, unknown>): void;
  increment(by?: number): void;
  stop(): void;
}

/** A progress sink over `total` units; `unit: 'bytes'` means values are byte counts. */
export type ProgressFactory = (label: string, total: number, opts?: { unit?: 'bytes' | 'items' }) => Progress;

export const noProgress: Progress = { update: () => undefined, increment: () => undefined, stop: () => undefined };

/** The factory's progress, or a silent one when there is no factory or `quiet` is set. */
export function startProgress(
  factory: ProgressFactory | undefined,
  quiet: boolean | undefined,
  label: string,
  total: number,
  unit: 'bytes' | 'items' = 'items',
): Progress {
  return factory === undefined || quiet === true ? noProgress : factory(label, total, { unit });
}
