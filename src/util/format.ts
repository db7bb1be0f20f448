/**
 * The one way commands print numbers: counts as "444.1 K" / "1.2 M" / "3.45 B" (as plan reports
 * do), sizes as "444.1 KB" (decimal units), and "1 layer" / "2 layers".
 */

/** A count: 950, 444.1 K, 12.3 M, 1.02 B. */
export function countLabel(n: number): string {
  const f = (v: number, d: number) => v.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
  if (n >= 1e9) return `${f(n / 1e9, 2)} B`;
  if (n >= 1e6) return `${f(n / 1e6, 1)} M`;
  if (n >= 1e3) return `${f(n / 1e3, 1)} K`;
  return String(n);
}

/** A size in decimal units: 512 B, 444.1 KB, 5.0 GB. */
export function bytesLabel(n: number): string {
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${u[i]}`;
}

/** "1 layer", "2 layers", "0 mismatches" (`many` when the plural is not word + "s"). */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** Seconds as "12.3 s". */
export function secondsLabel(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** A command's result on stdout: JSON with --json, else the text lines. */
export function emit(json: unknown, result: unknown, text: string | (() => string)): void {
  process.stdout.write(json === true ? JSON.stringify(result, null, 2) + '\n' : `${typeof text === 'string' ? text : text()}\n`);
}
