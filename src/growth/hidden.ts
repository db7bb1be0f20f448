/**
 * Hidden size H -> H'. Old coordinates keep their index; new ones are appended.
 *
 * Masked mode: the embedding output and every write into the residual stream are multiplied by
 * the hidden mask, so the new coordinates of x stay exactly 0, and mask-aware RMSNorm averages
 * over the H old coordinates only; new input columns of q/k/v/gate/up/lm_head multiply zeros.
 * Whatever the new weights are, the old function is unchanged.
 *
 * Zero mode (no masks): new embed columns and the new rows of o_proj/down_proj are 0, so the new
 * coordinates stay 0. Plain RMSNorm over H' then divides by rms·sqrt(H/H') instead of rms, so
 * every gain is multiplied by sqrt(H/H') and eps by H/H':
 *   (sum x²/H' + eps·H/H') = (H/H')·(sum x²/H + eps)  =>  x/rms' · g·sqrt(H/H') = x/rms · g.
 * Exact when sqrt(H/H') is a power of two; otherwise it holds to the rounding of the gains in
 * the output dtype.
 */
import type { DType } from '../util/dtype.ts';
import { appendMap, type AxisMap } from './axis-map.ts';

export function hiddenMap(H: number, H2: number): AxisMap {
  return appendMap(H, H2);
}

export type NormExactness = 'exact' | 'f32-rounding' | 'rounded';

export interface ZeroModeNorm {
  /** Multiplier of every RMSNorm gain. */
  gainScale: number;
  /** Multiplier of rms_norm_eps. */
  epsScale: number;
  /** exact: power-of-two factor (or no growth); f32-rounding: ~6e-8 relative; rounded: to the 16-bit dtype. */
  exactness: NormExactness;
  note: string;
}

export function zeroModeNorm(H: number, H2: number, gainDtype: DType): ZeroModeNorm {
  const gainScale = Math.sqrt(H / H2);
  const epsScale = H / H2;
  const pow2 = Number.isInteger(Math.log2(gainScale));
  const exactness: NormExactness = pow2 ? 'exact' : gainDtype === 'F32' || gainDtype === 'F64' ? 'f32-rounding' : 'rounded';
  const note = H === H2 ? 'hidden size unchanged: norms untouched (exact)' : exactness === 'exact'
    ? `norm gains × ${gainScale} (a power of two): exact`
    : exactness === 'f32-rounding'
      ? `norm gains × sqrt(${H}/${H2}) = ${gainScale.toPrecision(8)} stored in f32: preserved to f32 rounding (~1e-7 relative)`
      : `norm gains × sqrt(${H}/${H2}) = ${gainScale.toPrecision(8)} rounded to ${gainDtype}: preserved only to that rounding (bf16 keeps 8 significant bits); use --dtype f32 for an exact zero-mode growth`;
  return { gainScale, epsScale, exactness, note };
}
