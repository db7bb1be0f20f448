import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_KINDS, parseManifest, readManifest, type Manifest } from './manifest.ts';
import { FlmGrowError } from '../util/errors.ts';
import { synthCheckpoint } from '../growth/synth.ts';
import { growCheckpoint } from '../growth/grow.ts';
import { bakeCheckpoint } from '../growth/bake.ts';
import { parsePlan } from '../growth/plan.ts';
import { train } from '../train/trainer.ts';
import { writeRandomInit } from '../train/random-init.ts';
import { CheckpointFolder } from './checkpoint-folder.ts';
import { tinyByteConfig } from '../../test/support/model.ts';

const root = mkdtempSync(join(tmpdir(), 'flm-manifest-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const CORPUS = join(import.meta.dirname, '../../fixtures/corpus/fortunes.txt');
const tinyCfg = () => tinyByteConfig();

const common = { format: MANIFEST_FORMAT, created: '2026-01-01T00:00:00Z', tool: { name: 'flm-grow', version: '0' }, files: {} };
const trainExtra = {
  step: 4,
  stageStart: 0,
  tokens: 64,
  targetStep: 4,
  lrSchedule: { lr: 1e-3, minLr: 1e-4, warmupSteps: 0, totalSteps: 4, schedule: 'cosine' },
};

describe('parseManifest', () => {
  it('refuses an unknown kind, naming the field and the kinds it knows', () => {
    expect(() => parseManifest({ ...common, kind: 'merge' }, 'm.json')).toThrow(FlmGrowError);
    expect(() => parseManifest({ ...common, kind: 'merge' }, 'm.json')).toThrow(
      /m\.json: field "kind" is "merge", not one of grow, bake, train, synth/,
    );
    expect(() => parseManifest({ ...common }, 'm.json')).toThrow(/field "kind" is undefined/);
  });

  it('refuses a missing or mistyped required field, naming it', () => {
    for (const k of ['step', 'stageStart', 'tokens', 'targetStep', 'lrSchedule']) {
      const extra: Record<string, unknown> = { ...trainExtra };
      delete extra[k];
      expect(() => parseManifest({ ...common, kind: 'train', extra }, 'm.json')).toThrow(
        new RegExp(`field "extra\\.${k}" is missing`),
      );
    }
    expect(() => parseManifest({ ...common, kind: 'train' }, 'm.json')).toThrow(/field "extra" is missing/);
    expect(() => parseManifest({ ...common, kind: 'train', extra: { ...trainExtra, step: 'four' } }, 'm.json')).toThrow(
      /field "extra\.step" must be a number/,
    );
    expect(() => parseManifest({ ...common, kind: 'grow' }, 'm.json')).toThrow(/field "mode" is missing/);
    expect(() => parseManifest({ ...common, kind: 'grow', mode: 'sideways' }, 'm.json')).toThrow(/field "mode" is "sideways"/);
    const { created: _c, ...noCreated } = common;
    expect(() => parseManifest({ ...noCreated, kind: 'synth' }, 'm.json')).toThrow(/field "created" is missing/);
    expect(() => parseManifest({ ...common, kind: 'synth', masks: { file: 'masks.safetensors' } }, 'm.json')).toThrow(
      /field "masks\.schedule" is missing/,
    );
    expect(() => parseManifest({ ...common, kind: 'bake', files: [] }, 'm.json')).toThrow(/field "files" must be an object/);
    expect(() => parseManifest({ ...common, format: 'other/1', kind: 'bake' }, 'm.json')).toThrow(/not a flm-grow\/1 manifest/);
  });

  it('reads the minimal manifest of each kind, typed by kind', () => {
    const m = parseManifest({ ...common, kind: 'train', extra: trainExtra }, 'm.json');
    expect(m.kind === 'train' ? m.extra.targetStep : undefined).toBe(4);
    expect(parseManifest({ ...common, kind: 'grow', mode: 'zero' }, 'm.json').kind).toBe('grow');
    expect(parseManifest({ ...common, kind: 'bake' }, 'm.json').kind).toBe('bake');
    expect(parseManifest({ ...common, kind: 'synth' }, 'm.json').kind).toBe('synth');
  });
});

describe('manifests written by synth, init, grow, bake and train read back (round trip)', () => {
  it('every kind', async () => {
    const written: Manifest[] = [];
    const reread = (dir: string): Manifest => {
      const raw = JSON.parse(readFileSync(join(dir, MANIFEST_FILE), 'utf8')) as Manifest;
      const m = readManifest(dir) as Manifest;
      expect(m).toEqual(raw);
      written.push(m);
      return m;
    };
    const synth = join(root, 'synth');
    await synthCheckpoint(synth, { config: tinyCfg(), dtype: 'F32', seed: 1, quiet: true });
    expect(reread(synth).kind).toBe('synth');
    const init = join(root, 'init');
    await writeRandomInit(init, tinyCfg(), { seed: 2 });
    expect(reread(init).kind).toBe('synth');

    const grown = join(root, 'grown');
    await growCheckpoint(
      init,
      grown,
      parsePlan({ targets: { hidden_size: 24, num_hidden_layers: 3 }, placement: { positions: [1] } }),
      { quiet: true },
    );
    const g = reread(grown);
    expect(g.kind === 'grow' ? [g.mode, g.layerMap?.length, g.masks?.file] : undefined).toEqual([
      'masked',
      3,
      'masks.safetensors',
    ]);

    const trained = await train({
      checkpoint: grown,
      data: CORPUS,
      out: join(root, 'run'),
      steps: 2,
      batchSize: 2,
      seqLen: 8,
      quiet: true,
      log: () => undefined,
      backend: 'wasm',
    });
    const t = reread(trained.checkpoint);
    expect(t.kind === 'train' ? [t.extra.step, t.extra.targetStep, t.extra.complete] : undefined).toEqual([2, 2, true]);

    const baked = join(root, 'baked');
    await bakeCheckpoint(trained.checkpoint, baked, { force: true, quiet: true });
    const b = reread(baked);
    expect(b.kind === 'bake' ? b.extra?.droppedMasks?.length : undefined).toBeGreaterThan(0);
    expect(new Set(written.map((m) => m.kind))).toEqual(new Set(MANIFEST_KINDS));

    // the checkpoint object carries the optional parts a folder has, and nothing else
    const folders = await Promise.all([synth, grown, trained.checkpoint, baked].map((d) => CheckpointFolder.open(d)));
    try {
      const [s, gr, tr, bk] = folders;
      expect(folders.map((f) => f.hasMasks)).toEqual([false, true, true, false]);
      expect(await s.masks()).toBeUndefined();
      expect((await gr.masks())?.layers.length).toBe(3);
      expect(await gr.masks()).toBe(await gr.masks()); // read once
      expect(folders.map((f) => f.manifest?.kind)).toEqual(['synth', 'grow', 'train', 'bake']);
      expect(folders.map((f) => f.optimizerPath !== undefined)).toEqual([false, false, true, false]);
      expect(await s.optimizer()).toBeUndefined();
      expect((await tr.optimizer(new Map()))?.meta.step).toBe(2);
      expect(folders.map((f) => f.hasTokenizer)).toEqual([false, false, false, false]);
      expect((await bk.tokenizer()).name).toBe('bytes');
      expect(CheckpointFolder.of(gr)).toBe(gr);
    } finally {
      await Promise.all(folders.map((f) => f.close()));
    }
  }, 120_000);

  it('a plain folder has no manifest; a bad one is reported when the manifest is asked for', async () => {
    const dir = join(root, 'synth');
    const ck = await CheckpointFolder.open(dir);
    try {
      writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify({ ...common, kind: 'merge' }));
      expect(() => ck.manifest).toThrow(/field "kind" is "merge"/);
      rmSync(join(dir, MANIFEST_FILE));
      expect(ck.manifest).toBeUndefined();
    } finally {
      await ck.close();
    }
  });
});
