/**
 * The tfjs forward pass against transformers, for every family and feature flm-grow supports.
 *
 * fixtures/hf/<case>/ holds a tiny checkpoint written by transformers' own `save_pretrained` and
 * `reference.safetensors` with transformers' float32 logits and every hidden state for fixed ids
 * (fixtures/hf/make_family_fixtures.py, transformers 5.25). streamedForward — what
 * `flm-grow forward` runs — must reproduce all of them to ≤ 1e-4 relative (max|a−b| / max|b|).
 * Each case then switches off, in a copy of its files, the very feature it is there for, and the
 * same comparison must fail, so a feature the model ignored could not pass. The same cases and
 * switches judge the torch engine in python/tests/test_families_vs_transformers.py.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBackend } from '../../src/engines/tfjs-backend.ts';
import { CheckpointFolder } from '../../src/checkpoint/checkpoint-folder.ts';
import { readAll, type Tensors } from '../support/safetensors-compare.ts';
import { writeSafetensors } from '../../src/checkpoint/safetensors-writer.ts';
import { streamedForward } from '../../src/model/streaming.ts';
import { naiveForward } from '../reference/naive-llama.ts';

const FIX = join(import.meta.dirname, '../../fixtures/hf');
const CLI = join(import.meta.dirname, '../../bin/flm-grow.js');
const REL_TOL = 1e-4;

type Json = Record<string, unknown>;
/** Switches one feature off in a copy of the files: config.json and the tensors, edited in place. */
type SwitchOff = (cfg: Json, tensors: Tensors) => void;

const DEFAULT_ROPE = { rope_type: 'default', rope_theta: 10000.0 };
const setConfig =
  (change: Json): SwitchOff =>
  (cfg) =>
    Object.assign(cfg, change);

/** Layer 0's two KV heads exchanged: right only if query head j reads KV head ⌊j/2⌋. */
const swapKvHeads: SwitchOff = (cfg, tensors) => {
  const hd = cfg.head_dim as number;
  const H = cfg.hidden_size as number;
  for (const p of ['k_proj', 'v_proj']) {
    const w = tensors.get(`model.layers.0.self_attn.${p}.weight`);
    if (w === undefined) throw new Error(`no ${p}`);
    const head0 = w.data.slice(0, hd * H);
    w.data.copyWithin(0, hd * H, 2 * hd * H);
    w.data.set(head0, hd * H);
  }
};

const fillMatching =
  (test: (name: string) => boolean, value: number): SwitchOff =>
  (_cfg, tensors) => {
    for (const [n, t] of tensors) if (test(n)) t.data.fill(value);
  };

/** case → (the feature switched off to show the test can fail, how it is switched off). */
const CASES: Record<string, [string, SwitchOff]> = {
  'llama-default': ['the GQA head mapping (KV heads 0, 1 swapped)', swapKvHeads],
  'llama-linear': ['linear RoPE scaling', setConfig({ rope_parameters: DEFAULT_ROPE })],
  'llama-dynamic': ['dynamic NTK RoPE beyond max_position_embeddings', setConfig({ rope_parameters: DEFAULT_ROPE })],
  'llama3-tied': ['llama3 RoPE (all three bands)', setConfig({ rope_parameters: DEFAULT_ROPE })],
  'llama-yarn': ["yarn's attention factor", (cfg) => Object.assign(cfg.rope_parameters as Json, { attention_factor: 1.0 })],
  'mistral-window': ['the sliding window (6 < 24 tokens)', setConfig({ sliding_window: null })],
  'qwen2-tied': ['the q/k/v biases', fillMatching((n) => n.endsWith('.bias'), 0)],
  'qwen3-tied': ['the q/k norm gains', fillMatching((n) => /[qk]_norm\.weight$/.test(n), 1)],
  'qwen3-untied': ['the q/k norm gains', fillMatching((n) => /[qk]_norm\.weight$/.test(n), 1)],
  'teleflm-mup': ['µP (use_mup false)', setConfig({ use_mup: false })],
};

/** max |a−b| / max |b| */
function relDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let d = 0,
    m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / m;
}

function idsOf(ref: Tensors): number[][] {
  const t = ref.get('input_ids');
  if (t === undefined) throw new Error('reference has no input_ids');
  const [B, T] = t.shape;
  return Array.from({ length: B }, (_, b) => Array.from(t.data.subarray(b * T, (b + 1) * T)));
}

/** (logits, worst hidden state) relative differences of `logits` / `hidden` against the reference. */
function diffs(ref: Tensors, logits: Float32Array, hidden: Float32Array[]): { logits: number; hidden: number } {
  const get = (n: string) => ref.get(n)?.data ?? new Float32Array();
  const L = [...ref.keys()].filter((n) => n.startsWith('hidden_states.')).length - 1;
  expect(hidden.length).toBe(L + 1);
  return {
    logits: relDiff(logits, get('logits')),
    hidden: Math.max(...hidden.map((h, n) => relDiff(h, get(`hidden_states.${n}`)))),
  };
}

async function tfjsForward(dir: string, ids: number[][]): Promise<{ logits: Float32Array; hidden: Float32Array[] }> {
  const ck = await CheckpointFolder.open(dir);
  try {
    const r = await streamedForward(ck, ids, { masks: null, collectHidden: true });
    return { logits: r.logits, hidden: r.hidden ?? [] };
  } finally {
    await ck.close();
  }
}

async function switchedOff(from: string, into: string, change: SwitchOff): Promise<string> {
  cpSync(from, into, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(into, 'config.json'), 'utf8')) as Json;
  const tensors = await readAll(join(into, 'model.safetensors'));
  change(cfg, tensors);
  writeFileSync(join(into, 'config.json'), JSON.stringify(cfg, null, 2));
  rmSync(join(into, 'model.safetensors')); // the writer never replaces a file
  await writeSafetensors(
    join(into, 'model.safetensors'),
    [...tensors].map(([name, t]) => ({
      name,
      dtype: 'F32' as const,
      shape: t.shape,
      data: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
    })),
  );
  return into;
}

let root: string;
beforeAll(async () => {
  await initBackend('wasm');
  root = mkdtempSync(join(tmpdir(), 'flm-hf-families-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('tfjs forward vs transformers, every family (fixtures/hf)', () => {
  it('covers every transformers-written family fixture', () => {
    const made = readdirSync(FIX).filter((d) => !d.endsWith('.py') && !d.startsWith('llama-tiny-'));
    expect(made.sort()).toEqual(Object.keys(CASES).sort());
  });

  for (const [name, [feature, switchOff]] of Object.entries(CASES)) {
    it(`${name}: logits and every hidden state within ${REL_TOL} relative; fails with ${feature} switched off`, async () => {
      const dir = join(FIX, name);
      const ref = await readAll(join(dir, 'reference.safetensors'));
      const ids = idsOf(ref);
      const got = await tfjsForward(dir, ids);
      const d = diffs(ref, got.logits, got.hidden);
      const off = await tfjsForward(await switchedOff(dir, join(root, name), switchOff), ids);
      const dOff = diffs(ref, off.logits, off.hidden);
      console.log(
        `[tfjs vs transformers] ${name}: logits ${d.logits.toExponential(2)}, worst hidden ${d.hidden.toExponential(2)} | ${feature} switched off: logits ${dOff.logits.toExponential(2)}`,
      );
      expect(d.logits).toBeLessThanOrEqual(REL_TOL);
      expect(d.hidden).toBeLessThanOrEqual(REL_TOL);
      expect(dOff.logits).toBeGreaterThan(100 * REL_TOL);
    });
  }

  it('the float64 naive reference (the judge of test/model-vs-naive.test.ts) matches every case too', async () => {
    for (const name of Object.keys(CASES)) {
      const dir = join(FIX, name);
      const ref = await readAll(join(dir, 'reference.safetensors'));
      const ck = await CheckpointFolder.open(dir);
      const w = new Map<string, Float32Array>();
      try {
        for (const n of ck.tensors.keys()) w.set(n, await ck.readFloat32(n));
      } finally {
        await ck.close();
      }
      const { hiddenSize: H, numLayers: L } = ck.config;
      const rows = idsOf(ref).map((seq) => naiveForward(ck.config, { get: (n) => w.get(n) as Float32Array }, seq));
      // rows of per-position vectors, flattened to [B,T,·] row-major like the reference
      const flat = (m: ArrayLike<number>[][]) => Float32Array.from(m.flatMap((seq) => seq.flatMap((v) => Array.from(v))));
      const logits = flat(rows.map((r) => r.logits));
      const hidden = Array.from({ length: L + 1 }, (_, n) => flat(rows.map((r) => r.hidden[n])));
      expect(hidden[0].length).toBe(rows.length * rows[0].logits.length * H);
      const d = diffs(ref, logits, hidden);
      console.log(
        `[naive vs transformers] ${name}: logits ${d.logits.toExponential(2)}, worst hidden ${d.hidden.toExponential(2)}`,
      );
      expect(d.logits, name).toBeLessThanOrEqual(REL_TOL);
      expect(d.hidden, name).toBeLessThanOrEqual(REL_TOL);
    }
  });

  it('the CLI reads transformers-written configs of every family: inspect, and forward --out equal to the reference', async () => {
    for (const name of Object.keys(CASES)) {
      const r = spawnSync(process.execPath, [CLI, 'inspect', join(FIX, name), '--json'], { encoding: 'utf8' });
      expect(r.status, `${name}: ${r.stderr}`).toBe(0);
    }
    // one full CLI run per family (Tele-FLM's µP, Qwen3's q/k norms, Qwen2's biases, Mistral's window)
    for (const name of ['teleflm-mup', 'qwen3-tied', 'qwen2-tied', 'mistral-window']) {
      const dir = join(FIX, name);
      const out = join(root, `${name}-cli.safetensors`);
      const r = spawnSync(
        process.execPath,
        [CLI, 'forward', dir, '--input', join(dir, 'reference.safetensors'), '--out', out, '--quiet'],
        { encoding: 'utf8' },
      );
      expect(r.status, `${name}: ${r.stderr}`).toBe(0);
      const got = await readAll(out);
      const L = [...got.keys()].filter((n) => n.startsWith('hidden_states.')).length - 1;
      const hidden = Array.from({ length: L + 1 }, (_, n) => got.get(`hidden_states.${n}`)?.data as Float32Array);
      const d = diffs(await readAll(join(dir, 'reference.safetensors')), got.get('logits')?.data as Float32Array, hidden);
      expect(d.logits, name).toBeLessThanOrEqual(REL_TOL);
      expect(d.hidden, name).toBeLessThanOrEqual(REL_TOL);
    }
  });
});
