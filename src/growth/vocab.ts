/**
 * Vocabulary padding V -> V': new rows of embed_tokens and lm_head are appended. Old token ids
 * read the same embedding rows; the old logits are the same rows of lm_head. Masked mode: the
 * vocab mask (0 on padding) sets the new logits to -inf, so even the softmax over old ids is
 * unchanged. Zero mode has no mask: the old logits are unchanged, the padding ids get logits of
 * their own (they are never targets).
 */
import { appendMap, type AxisMap } from './axis-map.ts';

export function vocabMap(V: number, V2: number): AxisMap {
  return appendMap(V, V2);
}
