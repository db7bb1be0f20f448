/**
 * Shared set-up of the torch-engine run tests (restarts, async saves, export): a tiny grown GQA
 * checkpoint mid-annealing, `flm-grow train --engine torch` with a deadline, and the per-step
 * metrics of a run folder.
 */
import { join } from 'node:path';
import { initBackend } from '../../src/engines/tfjs-backend.ts';
import { growCheckpoint } from '../../src/growth/grow.ts';
import { parsePlan } from '../../src/growth/plan.ts';
import { partitionMetrics, readMetrics, type StepMetrics } from '../../src/train/metrics.ts';
import { initConfig, writeRandomInit } from '../../src/train/random-init.ts';
import { spawnBounded, type Bounded } from './spawn-bounded.ts';

export const CORPUS = join(import.meta.dirname, '../../fixtures/corpus/fortunes.txt');
export const BIN = join(import.meta.dirname, '../../bin/flm-grow.js');

/**
 * <root>/grown: hidden 16 -> 24, heads 4 -> 8 (KV 2 -> 4), FFN 32 -> 48, 2 -> 3 layers, untied,
 * masks annealed over 30 steps (every group strictly between 0 and 1 from step 1 to 29).
 */
export async function grownGqa(root: string): Promise<string> {
  await initBackend('wasm');
  const src = join(root, 'src');
  await writeRandomInit(
    src,
    initConfig({
      hidden_size: 16,
      intermediate_size: 32,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 8,
      vocab_size: 256,
      max_position_embeddings: 64,
    }),
    { seed: 4, std: 0.1 },
  );
  const grown = join(root, 'grown');
  await growCheckpoint(
    src,
    grown,
    parsePlan({
      targets: { hidden_size: 24, intermediate_size: 48, num_attention_heads: 8, num_key_value_heads: 4, num_hidden_layers: 3 },
      mode: 'masked',
      placement: { method: 'explicit', positions: [0] },
      seed: 3,
      anneal_steps: 30,
    }),
    { quiet: true },
  );
  return grown;
}

/** `node bin/flm-grow.js ...args` with one torch thread per process, failing after `timeoutMs`. */
export function flmGrowBounded(args: string[], timeoutMs: number, env: NodeJS.ProcessEnv = {}): Promise<Bounded> {
  return spawnBounded(process.execPath, [BIN, ...args], {
    env: { ...process.env, OMP_NUM_THREADS: '1', ...env },
    timeoutMs,
    label: `flm-grow ${args.join(' ')}`,
  });
}

export const stepsOf = (out: string): StepMetrics[] => partitionMetrics(readMetrics(join(out, 'metrics.jsonl'))).steps;
