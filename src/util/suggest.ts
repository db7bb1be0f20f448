/**
 * "Did you mean": the closest known names to a misspelt one, shared by the command line
 * (commands/options.ts) and the JSON files (pipelines). Light: imports nothing.
 */

/** Levenshtein distance. */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const t = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = t;
    }
  }
  return d[b.length];
}

/** The candidates nearest to `word` (all at the smallest distance, within about a third of its length). */
export function closest(word: string, candidates: readonly string[]): string[] {
  const exact = candidates.filter((c) => c === word);
  if (exact.length > 0) return exact;
  const scored = candidates
    .map((c) => ({ c, d: editDistance(word, c) }))
    .filter((x) => x.d <= Math.max(2, Math.floor(word.length / 3)));
  scored.sort((p, q) => p.d - q.d);
  return scored.filter((x) => x.d === scored[0]?.d).map((x) => x.c);
}

/**
 * Hugging Face TrainingArguments / config names and the pipeline keys that mean the same, for
 * keys too far from ours for an edit distance to find (`learning_rate` is not close to `lr`).
 */
export const HF_KEY_ALIASES: Readonly<Record<string, string>> = {
  learning_rate: 'lr',
  min_learning_rate: 'min_lr',
  max_steps: 'steps',
  num_train_steps: 'steps',
  per_device_train_batch_size: 'batch_size',
  train_batch_size: 'batch_size',
  max_seq_length: 'seq_len',
  block_size: 'seq_len',
  max_grad_norm: 'clip_grad',
  lr_scheduler_type: 'schedule',
  save_steps: 'save_every',
  eval_steps: 'eval_every',
  warmup: 'warmup_steps',
  torch_dtype: 'dtype',
  growth_plan: 'plan',
};

/** "; did you mean "lr"?" for an unknown JSON key (HF names first), or "" when nothing is close. */
export function didYouMeanKey(key: string, allowed: readonly string[]): string {
  const alias = HF_KEY_ALIASES[key];
  const s = alias !== undefined && allowed.includes(alias) ? [alias] : closest(key, allowed);
  return s.length > 0 ? `; did you mean ${s.map((x) => `"${x}"`).join(' or ')}?` : '';
}
