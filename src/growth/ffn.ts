/**
 * FFN size F -> F'. Old units keep their index; new ones are appended (rows of gate/up, columns
 * of down). A unit contributes down[:, f] · silu(gate_f·h)·up_f·h to the residual stream.
 * Masked mode: the ffn mask multiplies the new units' activations by 0. Zero mode: their
 * down_proj columns are 0. Either way the new units add exactly 0, whatever gate/up hold.
 */
import { appendMap, type AxisMap } from './axis-map.ts';

export function ffnMap(F: number, F2: number): AxisMap {
  return appendMap(F, F2);
}
