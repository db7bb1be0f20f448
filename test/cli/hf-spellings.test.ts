/**
 * The spellings Hugging Face users type: HF dtype names, a bare config.json for inspect, a Hub id
 * (read from the local HF cache when there, else a message that shows the download command), and
 * pipeline grow stages that take the same target keys as plans and the CLI, with "did you mean"
 * for HF TrainingArguments names. Judged by the safetensors headers transformers wrote (the
 * fixture) and by what the CLI reads back from the files it wrote.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..', '..');
const F = join(ROOT, 'fixtures/hf/llama-tiny-f32');
const CORPUS = join(ROOT, 'fixtures/corpus/fortunes.txt');

function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [join(ROOT, 'bin/flm-grow.js'), ...args], {
    encoding: 'utf8',
    cwd: ROOT,
    env: { ...process.env, ...env },
  });
}
function inspect(path: string, env: NodeJS.ProcessEnv = {}) {
  const r = cli(['inspect', path, '--json'], env);
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as {
    parameters: number;
    bytes: number;
    dtypes: Record<string, unknown>;
    summary: { hiddenSize: number };
  };
}

let d: string;
beforeAll(() => {
  d = mkdtempSync(join(tmpdir(), 'flm-grow-hf-'));
});
afterAll(() => rmSync(d, { recursive: true, force: true }));

describe('HF spellings', () => {
  it('--dtype bfloat16 / float16 / float32 write what bf16 / f16 / f32 write', { timeout: 60_000 }, () => {
    for (const [hf, ours, st] of [
      ['bfloat16', 'bf16', 'BF16'],
      ['float16', 'f16', 'F16'],
    ]) {
      const r = cli(['grow', F, '--out', join(d, hf), '--hidden-size', '80', '--dtype', hf, '--json']);
      expect(r.status, r.stderr).toBe(0);
      expect(Object.keys(inspect(join(d, hf)).dtypes)).toEqual([st]);
      expect(cli(['plan', F, '--hidden-size', '80', '--dtype', hf, '--json']).stdout).toBe(
        cli(['plan', F, '--hidden-size', '80', '--dtype', ours, '--json']).stdout,
      );
    }
    expect(
      cli(['synth', '--out', join(d, 's32'), '--like', 'llama', '--num-hidden-layers', '1', '--dtype', 'float32']).status,
    ).toBe(0);
    expect(Object.keys(inspect(join(d, 's32')).dtypes)).toEqual(['F32']);
  });

  it('inspect takes a bare config.json: the sizes the checkpoint written by transformers has', () => {
    const folder = inspect(F);
    const config = inspect(join(F, 'config.json'));
    expect(config.parameters).toBe(folder.parameters);
    expect(config.bytes).toBe(folder.bytes);
  });

  it('a Hub id: read from the local HF cache (refs/main -> snapshot), else the download command', () => {
    const miss = cli(['inspect', 'acme/tiny-llama'], { HF_HOME: join(d, 'empty-home'), HF_HUB_CACHE: '' });
    expect(miss.status).toBe(2);
    expect(miss.stderr).toContain('huggingface-cli download acme/tiny-llama --local-dir tiny-llama');
    expect(miss.stderr.trim().split('\n')).toHaveLength(1);
    const missing = cli(['inspect', join(d, 'no-such-folder')]);
    expect([missing.status, /no such folder/.test(missing.stderr)]).toEqual([2, true]);
    // huggingface_hub's layout: models--org--name/{refs/main, snapshots/<revision>/}
    const repo = join(d, 'home', 'hub', 'models--acme--tiny-llama');
    mkdirSync(join(repo, 'refs'), { recursive: true });
    writeFileSync(join(repo, 'refs', 'main'), '0123abcd');
    mkdirSync(join(repo, 'snapshots'), { recursive: true });
    cpSync(F, join(repo, 'snapshots', '0123abcd'), { recursive: true });
    const hit = inspect('acme/tiny-llama', { HF_HOME: join(d, 'home'), HF_HUB_CACHE: '' });
    expect(hit.parameters).toBe(inspect(F).parameters);
  });

  it(
    'pipelines: a grow stage takes target keys and HF dtype names; HF TrainingArguments names get "did you mean"',
    { timeout: 120_000 },
    () => {
      const pipe = (stages: unknown[], train: Record<string, unknown> = {}) => {
        const p = join(d, `pipe-${Math.random().toString(36).slice(2)}.json`);
        writeFileSync(
          p,
          JSON.stringify({ data: CORPUS, checkpoint: F, train: { batch_size: 2, seq_len: 16, ...train }, stages }),
        );
        return p;
      };
      const bad = cli(['run', pipe([{ name: 't', train: { steps: 1 } }], { learning_rate: 0.001 })]);
      expect(bad.status).toBe(2);
      expect(bad.stderr).toMatch(/learning_rate.*unknown; did you mean "lr"\?/);
      const none = cli(['run', pipe([{ name: 'g', grow: { anneal_steps: 2 } }])]);
      expect([none.status, /needs "plan".*or a target/.test(none.stderr)]).toEqual([2, true]);
      const out = join(d, 'pipe-out');
      const ok = cli([
        'run',
        pipe([{ name: 'g', grow: { hidden_size: 80, num_hidden_layers: 5, dtype: 'bfloat16', anneal_steps: 2 } }]),
        '--out',
        out,
        '--json',
      ]);
      expect(ok.status, ok.stderr).toBe(0);
      const g = inspect((JSON.parse(ok.stdout) as { finalCheckpoint: string }).finalCheckpoint);
      expect(g.summary.hiddenSize).toBe(80);
      expect(Object.keys(g.dtypes)).toEqual(['BF16']);
    },
  );
});
