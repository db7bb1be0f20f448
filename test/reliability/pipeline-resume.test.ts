/**
 * Issue 16, "Resume that always resumes", at pipeline level: `flm-grow run` SIGKILLed inside a
 * train stage (a real kill of the CLI process, no test hook) and run again completes, with the
 * same per-step losses as an uninterrupted run and nothing left behind.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { makeTempDir, TINY_BYTE_CONFIG } from '../support/model.ts';
import { initBackend } from '../../src/engines/tfjs-backend.ts';
import { runPipeline } from '../../src/pipeline.ts';
import { readManifest, type TrainManifest } from '../../src/checkpoint/manifest.ts';
import { partitionMetrics, readMetrics } from '../../src/train/metrics.ts';
import { TMP_PREFIX } from '../../src/checkpoint/atomic.ts';

const ROOT = join(import.meta.dirname, '../..');
const CORPUS = join(ROOT, 'fixtures/corpus/fortunes.txt');
const STEPS = 8;
const tmp = makeTempDir('flm-grow-pipeline-resume-');
afterAll(() => tmp.cleanup());

beforeAll(async () => {
  await initBackend('wasm');
});

/** init + one train stage saving every 2 steps (byte vocabulary: fortunes.txt is byte-tokenized). */
function writePipeline(): string {
  const file = join(tmp.dir, 'pipe.json');
  writeFileSync(
    file,
    JSON.stringify({
      data: CORPUS,
      seed: 0,
      backend: 'wasm',
      train: { batch_size: 2, seq_len: 16, lr: 0.003, warmup_steps: 1, save_every: 2, eval_every: 0 },
      stages: [
        {
          name: 'init',
          init: {
            config: { ...TINY_BYTE_CONFIG, max_position_embeddings: 32 },
          },
        },
        { name: 'train', train: { steps: STEPS } },
      ],
    }),
  );
  return file;
}

/** All entries under `dir` whose name starts with `prefix`. */
function leftovers(dir: string, prefix: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) =>
    f.split('/').some((part) => part.startsWith(prefix)),
  );
}

describe('flm-grow run killed inside a train stage', () => {
  it('the rerun resumes, completes, and its losses equal an uninterrupted run', async () => {
    const file = writePipeline();
    const ref = await runPipeline(file, { out: join(tmp.dir, 'ref'), quiet: true, log: () => undefined });
    const out = join(tmp.dir, 'run');
    const trainDir = join(out, '02-train');
    // the real CLI, SIGKILLed once checkpoint-000002 is in place (saves 4, 6, 8 still to come)
    const child = spawn(process.execPath, [join(ROOT, 'bin/flm-grow.js'), 'run', file, '--out', out, '--quiet'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const exited = new Promise<NodeJS.Signals | null>((res) => child.on('exit', (_code, signal) => res(signal)));
    const poll = setInterval(() => {
      if (existsSync(join(trainDir, 'checkpoint-000002', 'flm-grow-manifest.json'))) child.kill('SIGKILL');
    }, 2);
    const signal = await exited;
    clearInterval(poll);
    expect(signal, stderr).toBe('SIGKILL');
    expect(existsSync(join(trainDir, `checkpoint-${String(STEPS).padStart(6, '0')}`))).toBe(false);

    const log: string[] = [];
    const r = await runPipeline(file, { out, quiet: true, log: (l) => log.push(l) });
    expect(r.stages.map((s) => s.skipped)).toEqual([true, false]);
    expect(log.some((l) => /resuming from .*checkpoint-0000\d\d/.test(l))).toBe(true);
    expect((readManifest(r.finalCheckpoint) as TrainManifest | undefined)?.extra.step).toBe(STEPS);
    const a = partitionMetrics(readMetrics(join(tmp.dir, 'ref', '02-train', 'metrics.jsonl'))).steps;
    const b = partitionMetrics(readMetrics(join(trainDir, 'metrics.jsonl'))).steps;
    expect(b.map((m) => m.step)).toEqual(a.map((m) => m.step));
    expect(b.map((m) => m.loss)).toEqual(a.map((m) => m.loss));
    expect(r.stages[1].lossEnd).toBe(ref.stages[1].lossEnd);
    expect(leftovers(out, TMP_PREFIX)).toEqual([]);
  });
});
