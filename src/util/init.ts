/**
 * The one random-weight initialiser: grow's new entries, synth's checkpoints and the pipeline's
 * random init all draw from it, written directly in the output dtype.
 *
 * Reproducible and order-free: the random stream of a tensor row depends only on (plan seed,
 * tensor name, row index), so the same seed gives the same bytes whatever the tensor order,
 * the block size, or which part of a split grow writes it.
 *
 * Fast: a normal value is one lookup in a 65536-entry table of the output dtype's bit patterns
 * of std·Φ⁻¹((k + ½)/65536) (a quantised normal, tails cut at ±4.3σ: fine for an init), indexed
 * by 16 random bits; one 32-bit draw gives two values. No float conversion per element.
 */
import { float32ToBytes, type DType } from './dtype.ts';
import { hashSeed, mix32 } from './random.ts';

/** What an initialised run of entries holds (growth/layout.ts's Fill). */
type Fill = 'random' | 'zero' | 'one';

/** Tele-FLM's init std (model card): random weights' std when neither plan nor config sets one. */
export const DEFAULT_INIT_STD = 4e-3;

/** The default std of random weights: the config's initializer_range when positive, else DEFAULT_INIT_STD. */
export function defaultInitStd(initializerRange: unknown): number {
  return typeof initializerRange === 'number' && initializerRange > 0 ? initializerRange : DEFAULT_INIT_STD;
}

/** Acklam's rational approximation of the inverse normal CDF (relative error < 1.2e-9). */
export function inverseNormalCdf(p: number): number {
  const a = [
    -3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239,
  ];
  const b = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
  const c = [
    -7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783,
  ];
  const d = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
  const lo = 0.02425;
  if (p < lo) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (
      (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
      ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    );
  }
  if (p > 1 - lo) return -inverseNormalCdf(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return (
    ((((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q) /
    (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
  );
}

/** Element bit patterns of the output dtype (Uint16Array for 16-bit floats, Uint32Array for f32). */
export type Bits = Uint16Array | Uint32Array;

const tables = new Map<string, Bits>();

export function normalTable(std: number, dtype: DType): Bits {
  const key = `${dtype}:${std}`;
  let t = tables.get(key);
  if (t === undefined) {
    const v = new Float32Array(65536);
    for (let k = 0; k < 65536; k++) v[k] = std * inverseNormalCdf((k + 0.5) / 65536);
    const bytes = float32ToBytes(v, dtype);
    t = dtype === 'F32' ? new Uint32Array(bytes.buffer) : new Uint16Array(bytes.buffer);
    tables.set(key, t);
  }
  return t;
}

/** Bit pattern of a constant in a dtype. */
export function constBits(x: number, dtype: DType): number {
  const b = float32ToBytes(Float32Array.of(x), dtype);
  return dtype === 'F32' ? new Uint32Array(b.buffer)[0] : new Uint16Array(b.buffer)[0];
}

/** FNV-1a of the name folded into the plan seed: the seed of one tensor. */
export function tensorSeed(seed: number, name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return hashSeed(seed, h >>> 0);
}

/** A row's random stream: mulberry32 state from (tensor seed, row). */
export function rowState(tseed: number, row: number): number {
  return mix32(tseed ^ mix32(row));
}

/**
 * Fill view[start .. start+len) with `fill`. For random fills the row stream `stream` is advanced
 * (returned) so consecutive new runs of one row continue the same stream.
 */
export function fillRun(view: Bits, start: number, len: number, fill: Fill, table: Bits, one: number, stream: number): number {
  if (fill === 'zero') {
    view.fill(0, start, start + len);
    return stream;
  }
  if (fill === 'one') {
    view.fill(one, start, start + len);
    return stream;
  }
  let a = stream;
  const end = start + len;
  let i = start;
  while (i < end) {
    // mulberry32, inlined: two 16-bit indices per draw
    a = (a + 0x6d2b79f5) | 0;
    let x = Math.imul(a ^ (a >>> 15), a | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    x = (x ^ (x >>> 14)) >>> 0;
    view[i++] = table[x & 0xffff];
    if (i < end) view[i++] = table[x >>> 16];
  }
  return a;
}

/**
 * One tensor's random normal values as a stream (the row-0 stream of `tensorSeed(seed, name)`):
 * each fill() continues where the last stopped.
 */
export class NormalStream {
  private stream: number;
  private readonly table: Bits;

  constructor(seed: number, name: string, std: number, dtype: DType) {
    this.stream = rowState(tensorSeed(seed, name), 0);
    this.table = normalTable(std, dtype);
  }

  /** Fill `out` (whole elements of the dtype) with the next values. */
  fill(out: Uint8Array): void {
    const view =
      this.table instanceof Uint16Array
        ? new Uint16Array(out.buffer, out.byteOffset, out.byteLength >>> 1)
        : new Uint32Array(out.buffer, out.byteOffset, out.byteLength >>> 2);
    this.stream = fillRun(view, 0, view.length, 'random', this.table, 0, this.stream);
  }
}

/** `n` standard normal values (the quantised table above) from row `row` of a tensor seed's streams. */
export function normalFloats(tseed: number, row: number, n: number): Float32Array {
  const out = new Float32Array(n);
  fillRun(new Uint32Array(out.buffer), 0, n, 'random', normalTable(1, 'F32'), 0, rowState(tseed, row));
  return out;
}
