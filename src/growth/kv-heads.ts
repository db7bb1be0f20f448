/**
 * KV heads nkv -> nkv' (whole blocks of head_dim rows of k_proj/v_proj). Old KV heads keep their
 * index, new ones are appended; heads.ts places the query heads so each old query head still
 * reads its old KV head. A new KV head is read only by new query heads, whose output is masked
 * (masked mode) or has zero o_proj columns (zero mode), so it adds exactly 0.
 */
import { PlanError } from '../errors.ts';
import { appendMap, expandBlocks, type AxisMap } from './axis-map.ts';

export function kvHeadMap(nkv: number, nkv2: number): AxisMap {
  return appendMap(nkv, nkv2);
}

export function kvRowMap(nkv: number, nkv2: number, headDim: number): AxisMap {
  return expandBlocks(kvHeadMap(nkv, nkv2), headDim);
}

/** Whether old query heads can keep their KV head (group size may grow, never shrink). */
export function checkGroups(nh: number, nkv: number, nh2: number, nkv2: number, where = 'plan'): void {
  if (nh2 % nkv2 !== 0) {
    throw new PlanError('targets.num_key_value_heads', `${nkv2} does not divide num_attention_heads ${nh2}`, where);
  }
  const g = nh / nkv;
  const g2 = nh2 / nkv2;
  if (g2 < g) {
    throw new PlanError('targets.num_key_value_heads',
      `group size would shrink from ${g} to ${g2} query heads per KV head (${nh}/${nkv} -> ${nh2}/${nkv2}): the ${g} query heads sharing an old KV head would no longer fit in one group`, where);
  }
}
