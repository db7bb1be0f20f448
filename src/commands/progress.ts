/**
 * Progress bars for long work (cli-progress), silent when stderr is not a terminal or --quiet,
 * so logs and CI output stay clean.
 */
import cliProgress from 'cli-progress';
import { noProgress as noop, type Progress, type ProgressFactory } from '../util/progress.ts';

export type { Progress };

export function bytesLabel(n: number): string {
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${u[i]}`;
}

/** A bar over `total` units; `unit: 'bytes'` formats values as sizes. */
export function progressBar(label: string, total: number, opts: { unit?: 'bytes' | 'items'; quiet?: boolean } = {}): Progress {
  if (opts.quiet === true || !process.stderr.isTTY || process.env.CI !== undefined) return noop;
  const bytes = opts.unit === 'bytes';
  const bar = new cliProgress.SingleBar({
    stream: process.stderr,
    format: `${label} [{bar}] {percentage}% | {shown} | ETA {eta_formatted}`,
    hideCursor: true,
    clearOnComplete: false,
  }, cliProgress.Presets.shades_classic);
  const shown = (v: number) => (bytes ? `${bytesLabel(v)} / ${bytesLabel(total)}` : `${v}/${total}`);
  bar.start(total, 0, { shown: shown(0) });
  let cur = 0;
  return {
    update: (done, payload) => { cur = done; bar.update(done, { shown: shown(done), ...payload }); },
    increment: (by = 1) => { cur += by; bar.update(cur, { shown: shown(cur) }); },
    stop: () => bar.stop(),
  };
}

/** Terminal bars for the library's progress reports (nothing when `quiet`). */
export function progressBars(quiet: boolean): ProgressFactory {
  return (label, total, opts) => progressBar(label, total, { unit: opts?.unit, quiet });
}
