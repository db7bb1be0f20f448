import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBackend } from '../engines/tfjs-backend.ts';
import { Checkpoint } from '../checkpoint/checkpoint.ts';
import { readManifest } from '../checkpoint/manifest.ts';
import { readMasks, onesMasks, applyMaskValues, MASKS_FILE } from '../checkpoint/masks.ts';
import { growCheckpoint } from '../growth/grow.ts';
import { parsePlan } from '../growth/plan.ts';
import { TokenDataset } from './data.ts';
import { readMetrics, partitionMetrics } from './metrics.ts';
import { AdamW } from './adamw.ts';
import { maskValuesAt, scheduleValue } from '../checkpoint/masks.ts';
import { readOptimizerState, OPTIMIZER_FILE } from '../checkpoint/optimizer-state.ts';
import { growOptimizerState } from '../growth/moments.ts';
import { initConfig, writeRandomInit } from './random-init.ts';
import { batchLoss, checkpointLoss, crossEntropy, modelStateFromArrays, readCheckpointArrays, train } from './trainer.ts';
import { disposeMaskTensors, trainingMaskTensors } from '../model/mask-tensors.ts';
import { TrainError } from '../util/errors.ts';
import { tinyByteConfig } from '../../test/support/model.ts';

let root: string;
const CORPUS = join(import.meta.dirname, '../../fixtures/corpus/fortunes.txt');
const quiet = { quiet: true, log: () => undefined, backend: 'wasm' as const };

/** Byte-vocab tiny model (fortunes.txt is byte-tokenized). */
const tinyCfg = () => tinyByteConfig();

const growPlan = (mode: 'masked' | 'zero', anneal = 4) =>
  parsePlan({
    targets: { hidden_size: 24, intermediate_size: 48, num_attention_heads: 3, num_key_value_heads: 3, num_hidden_layers: 3 },
    mode,
    placement: { method: 'explicit', positions: [0] },
    seed: 3,
    anneal_steps: anneal,
  });

beforeAll(async () => {
  await initBackend('wasm');
  root = mkdtempSync(join(tmpdir(), 'flm-train-test-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('mask schedule', () => {
  it('rises linearly from startStep over length, and cosine-shaped when asked', () => {
    const s = { group: 'hidden' as const, startStep: 10, length: 40, shape: 'linear' as const };
    expect([0, 10, 20, 30, 50, 99].map((k) => scheduleValue(s, k))).toEqual([0, 0, 0.25, 0.5, 1, 1]);
    const c = { ...s, shape: 'cosine' as const };
    expect(scheduleValue(c, 30)).toBeCloseTo(0.5, 12);
    expect(scheduleValue(c, 20)).toBeCloseTo((1 - Math.cos(Math.PI / 4)) / 2, 12);
    expect(maskValuesAt([s, { group: 'layers', startStep: 0, length: 4, shape: 'linear' }], 1)).toEqual({
      hidden: 0,
      layers: 0.25,
    });
  });
});

describe('AdamW', () => {
  it('matches a scalar reference (bias correction, decoupled decay on matrices only)', () => {
    const p0 = [0.5, -1.2, 2.0, 0.1];
    const w = tf.variable(tf.tensor2d(p0, [2, 2]), true, 'adamw-test-w');
    const g = tf.variable(tf.tensor1d([1, 1]), true, 'adamw-test-g');
    const opt = new AdamW(
      new Map<string, tf.Variable>([
        ['w', w],
        ['g', g],
      ]),
      { beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1 },
    );
    const grads = [
      [0.3, -0.2, 0.05, 1.0],
      [-0.7, 0.4, 0.2, 0.0],
    ];
    const lrs = [0.1, 0.05];
    const ref = p0.slice(),
      m = [0, 0, 0, 0],
      v = [0, 0, 0, 0];
    grads.forEach((gr, t) => {
      for (let i = 0; i < 4; i++) {
        m[i] = 0.9 * m[i] + 0.1 * gr[i];
        v[i] = 0.99 * v[i] + 0.01 * gr[i] * gr[i];
        const upd = m[i] / (1 - 0.9 ** (t + 1)) / (Math.sqrt(v[i] / (1 - 0.99 ** (t + 1))) + 1e-8);
        ref[i] = ref[i] - lrs[t] * upd - lrs[t] * 0.1 * ref[i];
      }
      opt.apply(
        new Map<string, tf.Tensor>([
          ['w', tf.tensor2d(gr, [2, 2])],
          ['g', tf.tensor1d([0.5, 0.5])],
        ]),
        lrs[t],
      );
    });
    const got = Array.from(w.dataSync());
    got.forEach((x, i) => expect(x).toBeCloseTo(ref[i], 5));
    // 1-D gain: no decay, so two steps of sign-like Adam updates of equal gradients
    expect(g.dataSync()[0]).toBeCloseTo(1 - 0.1 - 0.05, 5);
    expect(opt.step).toBe(2);
    opt.dispose();
    tf.dispose([w, g]);
  });
});

describe('loss and gradients', () => {
  it('cross-entropy equals a direct log-softmax, ignoring masked vocab ids', () => {
    const V = 5;
    const logits = [
      [0.1, 2.0, -1.0, 0.5, 3.0],
      [1.0, 1.0, 1.0, -2.0, 0.0],
    ];
    const bias = [0, 0, 0, 0, -1e30]; // id 4 is padding
    const targets = [1, 3];
    let ref = 0;
    logits.forEach((row, n) => {
      const r = row.map((x, v) => x + bias[v]);
      const mx = Math.max(...r);
      const lse = mx + Math.log(r.reduce((a, x) => a + Math.exp(x - mx), 0));
      ref += lse - r[targets[n]];
    });
    ref /= 2;
    const l = crossEntropy(
      tf.add(tf.tensor3d(logits.flat(), [1, 2, V]), tf.tensor1d(bias)) as tf.Tensor3D,
      tf.tensor2d(targets, [1, 2], 'int32'),
    );
    expect(l.dataSync()[0]).toBeCloseTo(ref, 5);
  });

  it('autodiff gradients of the masked model match central finite differences', async () => {
    const cfg = initConfig({
      hidden_size: 8,
      intermediate_size: 12,
      num_hidden_layers: 2,
      num_attention_heads: 2,
      num_key_value_heads: 1,
      head_dim: 4,
      vocab_size: 11,
    });
    const dir = join(root, 'fd');
    await writeRandomInit(dir, cfg, { seed: 5, std: 0.3 });
    const ck = await Checkpoint.open(dir);
    const s = modelStateFromArrays(cfg, await readCheckpointArrays(ck));
    await ck.close();
    // half-annealed masks: new hidden units, one head, FFN units and one layer at 0.5; one padding id
    const m = onesMasks(cfg);
    m.hidden[7] = 0;
    m.hidden[6] = 0;
    m.layers[1].heads[1] = 0;
    m.layers[0].ffn.fill(0, 9);
    m.layers[1].residual = 0;
    m.vocab[10] = 0;
    const mt = trainingMaskTensors(applyMaskValues(m, { hidden: 0.5, heads: 0.5, ffn: 0.5, layers: 0.5 }));
    const B = 2,
      T = 5;
    const batch = {
      inputs: Int32Array.from([1, 2, 3, 4, 5, 9, 8, 7, 6, 0]),
      targets: Int32Array.from([2, 3, 4, 5, 6, 8, 7, 6, 0, 1]),
    };
    const vars = [...s.vars.values()];
    const { grads } = tf.variableGrads(() => batchLoss(s, batch, B, T, mt), vars);
    const lossAt = () => batchLoss(s, batch, B, T, mt).dataSync()[0];
    let checked = 0;
    for (const name of [
      'model.embed_tokens.weight',
      'model.layers.0.self_attn.q_proj.weight',
      'model.layers.1.mlp.down_proj.weight',
      'model.layers.0.input_layernorm.weight',
      'lm_head.weight',
    ]) {
      const v = s.vars.get(name) as tf.Variable;
      const g = grads[v.name].dataSync();
      // the three largest-gradient entries of each tensor: well above f32 finite-difference noise
      const idx = Array.from(g.keys())
        .sort((a, b) => Math.abs(g[b]) - Math.abs(g[a]))
        .slice(0, 3);
      const base = v.dataSync().slice();
      for (const i of idx) {
        const h = 1e-2;
        const plus = base.slice();
        plus[i] += h;
        v.assign(tf.tensor(plus, v.shape));
        const lp = lossAt();
        const minus = base.slice();
        minus[i] -= h;
        v.assign(tf.tensor(minus, v.shape));
        const lm = lossAt();
        v.assign(tf.tensor(base, v.shape));
        const fd = (lp - lm) / (2 * h);
        expect(Math.abs(fd - g[i]), `${name}[${i}] fd ${fd} autodiff ${g[i]}`).toBeLessThan(2e-3 + 0.03 * Math.abs(g[i]));
        checked++;
      }
    }
    expect(checked).toBe(15);
    disposeMaskTensors(mt);
    s.dispose();
  });
});

describe('training', () => {
  it('reduces the loss on a learnable synthetic sequence', async () => {
    const cfg = initConfig({
      hidden_size: 16,
      intermediate_size: 32,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      num_key_value_heads: 2,
      head_dim: 8,
      vocab_size: 16,
    });
    const dir = join(root, 'learn-init');
    await writeRandomInit(dir, cfg, { seed: 1 });
    const data = join(root, 'cycle.u16');
    const toks = new Uint16Array(4000);
    for (let i = 0; i < toks.length; i++) toks[i] = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8][i % 12];
    writeFileSync(data, toks);
    const r = await train({
      ...quiet,
      checkpoint: dir,
      data,
      out: join(root, 'learn'),
      steps: 40,
      batchSize: 4,
      seqLen: 24,
      lr: 1e-2,
      warmupSteps: 2,
    });
    const head = r.losses.slice(0, 3).reduce((a, b) => a + b) / 3;
    const tail = r.losses.slice(-3).reduce((a, b) => a + b) / 3;
    expect(head).toBeGreaterThan(2);
    expect(tail).toBeLessThan(0.5 * head);
  });

  it('resuming from a saved step reproduces the loss sequence of an uninterrupted run exactly', async () => {
    const dir = join(root, 'resume-init');
    await writeRandomInit(dir, tinyCfg(), { seed: 2 });
    const common = {
      ...quiet,
      checkpoint: dir,
      data: CORPUS,
      steps: 6,
      batchSize: 2,
      seqLen: 16,
      lr: 3e-3,
      warmupSteps: 2,
      saveEvery: 2,
      evalEvery: 0,
    };
    const full = await train({ ...common, out: join(root, 'resume-a') });
    const cut = await train({ ...common, out: join(root, 'resume-b'), shouldStop: (n) => n >= 3 });
    expect(cut.interrupted).toBe(true);
    expect(cut.checkpoint).toMatch(/checkpoint-000002$/);
    const rest = await train({ ...common, out: join(root, 'resume-b'), resume: true });
    expect(rest.startStep).toBe(2);
    expect(rest.losses).toEqual(full.losses.slice(2));
    const steps = partitionMetrics(readMetrics(join(root, 'resume-b', 'metrics.jsonl'))).steps;
    expect(steps.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(steps.map((m) => m.loss)).toEqual(full.losses);
  });

  it('stops on a non-finite loss with a TrainError naming the last good checkpoint', async () => {
    const dir = join(root, 'nan-init');
    await writeRandomInit(dir, tinyCfg(), { seed: 2 });
    // poison one weight: copy the model with an overflowing value in the final norm
    const ck = await Checkpoint.open(dir);
    const arrays = await readCheckpointArrays(ck);
    await ck.close();
    // finite but overflowing (a NaN weight is refused where it is read, before any step)
    (arrays.get('model.norm.weight') as Float32Array)[0] = 3e38;
    const { saveCheckpoint } = await import('./checkpointing.ts');
    const bad = join(root, 'nan-ck');
    const cfg = tinyCfg();
    const state = modelStateFromArrays(cfg, arrays);
    const moments = new Map(
      [...arrays].map(([n, a]) => [n, { expAvg: new Float32Array(a.length), expAvgSq: new Float32Array(a.length) }]),
    );
    state.dispose();
    await saveCheckpoint({
      dir: bad,
      cfg,
      weights: arrays,
      masks: undefined,
      optimizer: { meta: { step: 0, tokens: 0, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0 }, moments },
      manifest: { format: 'flm-grow/1', kind: 'synth', created: '', tool: { name: 'flm-grow', version: '0' } },
    });
    const p = train({ ...quiet, checkpoint: bad, data: CORPUS, out: join(root, 'nan-out'), steps: 2, batchSize: 2, seqLen: 8 });
    await expect(p).rejects.toThrow(TrainError);
    await expect(p).rejects.toThrow(/step 0: loss is NaN.*Last good checkpoint/);
  });
});

describe('growth and training', () => {
  for (const mode of ['masked', 'zero'] as const) {
    it(`loss right after growth equals the loss before on the same batch (${mode} mode)`, async () => {
      const src = join(root, `pres-src-${mode}`);
      await writeRandomInit(src, tinyCfg(), { seed: 4, std: 0.1 });
      const dst = join(root, `pres-dst-${mode}`);
      await growCheckpoint(src, dst, growPlan(mode), { quiet: true });
      const ds = TokenDataset.fromFile(CORPUS, { seqLen: 32 });
      const batch = ds.batchAt('eval', 0, 4, 32, 0);
      const before = await checkpointLoss(src, batch, 4, 32);
      const after = await checkpointLoss(dst, batch, 4, 32);
      expect(Math.abs(after - before) / before).toBeLessThanOrEqual(1e-5);
      expect(before).toBeGreaterThan(1);
    });
  }

  it('carries optimizer state across growth (old slices unchanged, new entries 0) and anneals masks on schedule', async () => {
    const init = join(root, 'opt-init');
    const cfg = tinyCfg();
    await writeRandomInit(init, cfg, { seed: 6 });
    const t1 = await train({
      ...quiet,
      checkpoint: init,
      data: CORPUS,
      out: join(root, 'opt-train'),
      steps: 3,
      batchSize: 2,
      seqLen: 16,
    });
    const grown = join(root, 'opt-grown');
    await growCheckpoint(t1.checkpoint, grown, growPlan('masked', 4), { quiet: true });
    // grow itself carries the optimizer state, inside its atomic output, hashed in the manifest
    expect(readManifest(grown)?.files[OPTIMIZER_FILE]).toMatch(/^[0-9a-f]{64}$/);
    const regrown = join(root, 'opt-regrown');
    await growCheckpoint(t1.checkpoint, regrown, growPlan('masked', 4), { quiet: true });
    rmSync(join(regrown, OPTIMIZER_FILE));
    expect(await growOptimizerState(t1.checkpoint, regrown)).toBe(true);
    expect(readFileSync(join(regrown, OPTIMIZER_FILE))).toEqual(readFileSync(join(grown, OPTIMIZER_FILE)));
    const a = await readOptimizerState(join(t1.checkpoint, OPTIMIZER_FILE));
    const b = await readOptimizerState(join(grown, OPTIMIZER_FILE));
    expect(b.meta.step).toBe(3);
    const H = cfg.hiddenSize,
      H2 = 24;
    for (const key of ['expAvg', 'expAvgSq'] as const) {
      const se = (a.moments.get('model.embed_tokens.weight') as Record<typeof key, Float32Array>)[key];
      const ge = (b.moments.get('model.embed_tokens.weight') as Record<typeof key, Float32Array>)[key];
      for (let v = 0; v < cfg.vocabSize; v++) {
        for (let i = 0; i < H2; i++) expect(ge[v * H2 + i]).toBe(i < H ? se[v * H + i] : 0);
      }
      expect(se.some((x) => x !== 0)).toBe(true);
      // the inserted layer (after source layer 0) starts with zero moments; source layer 1 moved to grown layer 2
      const layerMap = readManifest(grown)?.layerMap ?? [];
      const ins = layerMap.findIndex((e) => e.inserted);
      expect(
        (b.moments.get(`model.layers.${ins}.mlp.up_proj.weight`) as Record<typeof key, Float32Array>)[key].every((x) => x === 0),
      ).toBe(true);
      const su = (a.moments.get('model.layers.1.post_attention_layernorm.weight') as Record<typeof key, Float32Array>)[key];
      const gu = (
        b.moments.get(
          `model.layers.${layerMap.findIndex((e) => e.source === 1 && !e.inserted)}.post_attention_layernorm.weight`,
        ) as Record<typeof key, Float32Array>
      )[key];
      expect(Array.from(gu.subarray(0, H))).toEqual(Array.from(su));
      expect(gu.subarray(H).every((x) => x === 0)).toBe(true);
    }
    // train 2 of the 4 annealing steps: the saved masks hold c = 2/4 on every new unit
    const t2 = await train({
      ...quiet,
      checkpoint: grown,
      data: CORPUS,
      out: join(root, 'opt-train2'),
      steps: 2,
      batchSize: 2,
      seqLen: 16,
    });
    expect(t2.startStep).toBe(3);
    expect(t2.masksAllOne).toBe(false);
    const gck = await Checkpoint.open(t2.checkpoint);
    const gcfg = gck.config;
    await gck.close();
    const m = await readMasks(join(t2.checkpoint, MASKS_FILE), gcfg);
    expect(Array.from(m.hidden.subarray(H))).toEqual(new Array(H2 - H).fill(0.5));
    expect(Array.from(m.hidden.subarray(0, H))).toEqual(new Array(H).fill(1));
    expect(m.layers.map((l) => l.residual).sort()).toEqual([0.5, 1, 1]);
    const metrics = partitionMetrics(readMetrics(join(root, 'opt-train2', 'metrics.jsonl')));
    expect(metrics.growth.map((g) => g.step)).toEqual([3]);
    expect(metrics.steps.map((s) => s.masks?.hidden)).toEqual([0, 0.25]);
    // rewind (default): the schedule restarts at the growth step, so step 3 gets the peak lr (no warmup)
    expect(metrics.steps[0].lr).toBeCloseTo(1e-3, 12);
    // continue: one cosine from global step 0 over --total-steps 10
    const tc = await train({
      ...quiet,
      checkpoint: grown,
      data: CORPUS,
      out: join(root, 'opt-continue'),
      steps: 1,
      batchSize: 2,
      seqLen: 16,
      lrAfterGrowth: 'continue',
      totalSteps: 10,
    });
    expect(tc.startStep).toBe(3);
    const lrC = partitionMetrics(readMetrics(join(root, 'opt-continue', 'metrics.jsonl'))).steps[0].lr;
    expect(lrC).toBeCloseTo(1e-4 + 0.5 * (1e-3 - 1e-4) * (1 + Math.cos((Math.PI * 3) / 10)), 12);
    // two more steps finish annealing
    const t3 = await train({
      ...quiet,
      checkpoint: t2.checkpoint,
      data: CORPUS,
      out: join(root, 'opt-train3'),
      steps: 2,
      batchSize: 2,
      seqLen: 16,
    });
    expect(t3.masksAllOne).toBe(true);
    expect(t3.step).toBe(7);
  });
});
