/**
 * Progress bars for long work (cli-progress), silent when stderr is not a terminal or --quiet,
 * so logs and CI output stay clean. All bars live in one MultiBar, and every log line goes through
 * `logLine`, which prints through the MultiBar (above the bars) while one is drawn: lines and bars
 * never collide.
 */
import cliProgress from 'cli-progress';
import { noProgress as noop, type Progress, type ProgressFactory } from '../util/progress.ts';
import { bytesLabel } from '../util/format.ts';

export type { Progress };
export { bytesLabel };

let multi: cliProgress.MultiBar | undefined;
let live = 0;

function bars(): cliProgress.MultiBar {
  multi ??= new cliProgress.MultiBar(
    {
      stream: process.stderr,
      format: '{label} [{bar}] {percentage}% | {shown}{extra} | ETA {eta_formatted}',
      hideCursor: true,
      clearOnComplete: false,
      // redraw on every update: the last part of a run never looks frozen
      forceRedraw: true,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  return multi;
}

/** One log line on stderr, printed above the bars while any is drawn. */
export function logLine(msg: string): void {
  if (multi !== undefined && live > 0) multi.log(msg.endsWith('\n') ? msg : msg + '\n');
  else process.stderr.write(msg.endsWith('\n') ? msg : msg + '\n');
}

export function barsEnabled(quiet: boolean | undefined): boolean {
  return quiet !== true && process.stderr.isTTY === true && process.env.CI === undefined;
}

/**
 * A bar over `total` units; `unit: 'bytes'` formats values as sizes. `payload` fields given to
 * update() are shown after the count when `show` names them (e.g. the train bar's loss and lr).
 */
export function progressBar(
  label: string,
  total: number,
  opts: { unit?: 'bytes' | 'items'; quiet?: boolean; show?: (payload: Record<string, unknown>) => string } = {},
): Progress {
  if (!barsEnabled(opts.quiet)) return noop;
  const bytes = opts.unit === 'bytes';
  const shown = (v: number) => (bytes ? `${bytesLabel(v)} / ${bytesLabel(total)}` : `${v}/${total}`);
  const extra = (p: Record<string, unknown> | undefined) =>
    p === undefined || opts.show === undefined ? '' : ` | ${opts.show(p)}`;
  const bar = bars().create(total, 0, { label, shown: shown(0), extra: '' });
  live++;
  let cur = 0;
  let last: Record<string, unknown> | undefined;
  let stopped = false;
  return {
    update: (done, payload) => {
      cur = done;
      if (payload !== undefined) last = { ...last, ...payload };
      bar.update(done, { label, shown: shown(done), extra: extra(last) });
    },
    increment: (by = 1) => {
      cur += by;
      bar.update(cur, { label, shown: shown(cur), extra: extra(last) });
    },
    stop: () => {
      if (stopped) return;
      stopped = true;
      bar.stop();
      live--;
      if (live === 0 && multi !== undefined) {
        multi.stop();
        multi = undefined;
      }
    },
  };
}

/** Terminal bars for the library's progress reports (nothing when `quiet`). */
export function progressBars(
  quiet: boolean,
  show?: (label: string) => ((payload: Record<string, unknown>) => string) | undefined,
): ProgressFactory {
  return (label, total, opts) => progressBar(label, total, { unit: opts?.unit, quiet, show: show?.(label) });
}
