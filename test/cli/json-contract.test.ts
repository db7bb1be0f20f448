/**
 * The --json contract (docs/cli.md): every command's stdout is exactly one JSON object, whatever
 * it logs (progress, the torch engine's step lines) goes to stderr. Each command runs once with
 * --json as a user runs it (bin/flm-grow.js), both engines where the command takes --engine, and
 * its whole stdout must JSON.parse to an object.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { COMMAND_NAMES } from '../../src/commands/index.ts';
import { findTorchPython } from '../../src/engines/torch-process.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const F = join(ROOT, 'fixtures/hf/llama-tiny-f32');
const CORPUS = join(ROOT, 'fixtures/corpus/fortunes.txt');
const torch = findTorchPython() !== undefined;

function flmGrow(args: string[]) {
  return spawnSync(process.execPath, [join(ROOT, 'bin/flm-grow.js'), ...args], { encoding: 'utf8', cwd: ROOT });
}

let d: string;
const ran = new Set<string>();

/** Run `cmd ... --json`: exit 0 and a stdout that is one JSON object and nothing else. */
function json(args: string[]): Record<string, unknown> {
  const r = flmGrow([...args, '--json']);
  expect(r.status, `${args.join(' ')}\n${r.stderr}`).toBe(0);
  let v: unknown;
  expect(() => (v = JSON.parse(r.stdout)), `stdout of ${args.join(' ')} is not one JSON value:\n${r.stdout}`).not.toThrow();
  expect(typeof v === 'object' && v !== null && !Array.isArray(v), r.stdout).toBe(true);
  ran.add(args[0]);
  return v as Record<string, unknown>;
}

beforeAll(() => {
  d = mkdtempSync(join(tmpdir(), 'flm-grow-json-'));
});
afterAll(() => rmSync(d, { recursive: true, force: true }));

describe('--json: stdout is exactly one JSON object', () => {
  it('every command', { timeout: 240_000 }, () => {
    json(['inspect', F]);
    json(['plan', F, '--hidden-size', '80']);
    json(['grow', F, '--out', join(d, 'g'), '--hidden-size', '80', '--anneal-steps', '2']);
    json(['verify', F, join(d, 'g'), '--calibration-tokens', '32', '--calibration-seq', '16']);
    json(['forward', F, '--ids', '1,2,3']);
    json(['select-layers', F, '--calibration-tokens', '32', '--calibration-seq', '16']);
    const t = json(['train', join(d, 'g'), '--data', CORPUS, '--out', join(d, 'run'), '--steps', '3', '--engine', 'tfjs']);
    json(['bake', t.checkpoint as string, '--out', join(d, 'baked')]);
    json(['plot', join(d, 'run', 'metrics.jsonl'), '--out', join(d, 'loss.svg')]);
    json(['synth', '--out', join(d, 'synth'), '--like', 'llama', '--num-hidden-layers', '1']);
    json(['grow', F, '--out', join(d, 'p1'), '--hidden-size', '80', '--part', '1/2']);
    json(['grow', F, '--out', join(d, 'p2'), '--hidden-size', '80', '--part', '2/2']);
    json(['assemble', '--out', join(d, 'asm'), join(d, 'p1'), join(d, 'p2')]);
    const pipeline = join(d, 'pipe.json');
    writeFileSync(
      pipeline,
      JSON.stringify({
        data: CORPUS,
        checkpoint: F,
        train: { batch_size: 2, seq_len: 16 },
        stages: [{ name: 'train', train: { steps: 2 } }],
      }),
    );
    json(['run', pipeline, '--out', join(d, 'pipe-out')]);
    if (torch) {
      // export reads a sharded checkpoint, which only the torch engine writes
      const s = json([
        'train',
        join(d, 'g'),
        '--data',
        CORPUS,
        '--out',
        join(d, 'shr'),
        '--steps',
        '2',
        '--engine',
        'torch',
        '--sharded-save',
      ]);
      json(['export', s.checkpoint as string, '--out', join(d, 'exported')]);
    }
    // without torch, export cannot run (it needs the torch engine): every other command did
    expect([...ran].sort()).toEqual([...COMMAND_NAMES].filter((c) => torch || c !== 'export').sort());
  });

  it.skipIf(!torch)('the torch engine: train and forward (its log lines go to stderr)', { timeout: 120_000 }, () => {
    const r = flmGrow(['train', F, '--data', CORPUS, '--out', join(d, 'trun'), '--steps', '10', '--engine', 'torch', '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(() => JSON.parse(r.stdout), r.stdout).not.toThrow();
    expect(r.stderr).toMatch(/^step 10\/10: loss/m); // the engine's log line, now on stderr
    json(['forward', F, '--engine', 'torch', '--input', join(F, 'reference.safetensors'), '--out', join(d, 'fwd.safetensors')]);
  });
});
