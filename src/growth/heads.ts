/**
 * Attention heads nh -> nh' (whole blocks of head_dim rows of q_proj, columns of o_proj).
 *
 * Query head j reads KV head floor(j / g), g = nh/nkv. If the group size stays (g' = g), old
 * heads keep their index and new ones are appended (with the new KV heads). If it grows
 * (g' > g), the g old heads of group k go to the first g slots of new group k and the new heads
 * fill the rest: a permutation of q_proj rows and o_proj columns together (itself
 * function-preserving: o_proj·concat(heads) is a sum over heads), after which each old head
 * still reads KV head k. New heads contribute 0: their output is multiplied by the head mask
 * (masked mode) or by zero o_proj columns (zero mode).
 */
import { expandBlocks, NEW, type AxisMap } from './axis-map.ts';
import { checkGroups } from './kv-heads.ts';

export function queryHeadMap(nh: number, nkv: number, nh2: number, nkv2: number): AxisMap {
  checkGroups(nh, nkv, nh2, nkv2);
  const g = nh / nkv;
  const g2 = nh2 / nkv2;
  const m = new Int32Array(nh2).fill(NEW);
  for (let j = 0; j < nh; j++) {
    const k = Math.floor(j / g);
    m[k * g2 + (j % g)] = j;
  }
  return m;
}

export function queryRowMap(nh: number, nkv: number, nh2: number, nkv2: number, headDim: number): AxisMap {
  return expandBlocks(queryHeadMap(nh, nkv, nh2, nkv2), headDim);
}
