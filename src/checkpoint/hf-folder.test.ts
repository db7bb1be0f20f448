/**
 * The folder format of docs/hf-format.md on the TypeScript side: a masked config.json reads as its
 * base family and writes back plain (both config readers, the Python one in
 * test/torch/families-table.test.ts); grow, train (both engines) and bake write the masked form
 * while masks are below 1, with modeling files taken from the package, and the plain form
 * otherwise, each with a model card. Loading the folders in transformers is
 * python/tests/test_hf_masked.py.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { configToJson, maskedConfigJson, parseConfig, plainConfigJson, readConfigFile } from '../spec/config.ts';
import { ConfigError } from '../util/errors.ts';
import { FAMILY_NAMES, familyByName, MASKED_MODEL_TYPE } from '../spec/families.ts';
import { REMOTE_FILES, REMOTE_SOURCES } from './hf-folder.ts';
import { initBackend } from '../engines/tfjs-backend.ts';
import { growCheckpoint } from '../growth/grow.ts';
import { bakeCheckpoint } from '../growth/bake.ts';
import { assembleParts } from '../growth/split.ts';
import { parsePlan } from '../growth/plan.ts';
import { writeRandomInit } from '../train/random-init.ts';
import { trainWithEngine } from '../train/engine.ts';
import { findTorchPython } from '../engines/torch-process.ts';
import { makeTempDir } from '../../test/support/model.ts';

const CORPUS = join(import.meta.dirname, '../../fixtures/corpus/fortunes.txt');
const readJson = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
const withoutRaw = (c: ReturnType<typeof parseConfig>) => ({ ...c, raw: undefined });

describe('masked config.json', () => {
  it.each(FAMILY_NAMES)('%s: reads as its base family and writes back the plain config', (f) => {
    const plain = configToJson(parseConfig({ ...familyByName(f).tiny }));
    const masked = maskedConfigJson(plain);
    expect(masked).toMatchObject({
      model_type: MASKED_MODEL_TYPE,
      architectures: ['FlmGrowMaskedForCausalLM'],
      auto_map: { AutoModelForCausalLM: 'modeling_flm_grow.FlmGrowMaskedForCausalLM' },
      flm_grow: { base_model_type: plain.model_type, base_architectures: plain.architectures },
    });
    const c = parseConfig(masked);
    expect(c.family).toBe(f);
    expect(withoutRaw(c)).toEqual(withoutRaw(parseConfig(plain)));
    expect(configToJson(c)).toEqual(plain);
    expect(plainConfigJson(masked)).toEqual(plain);
  });

  it("keeps a source's own auto_map (Tele-FLM's remote code) and refuses a masked config without its base type", () => {
    const plain = { ...familyByName('tele-flm').tiny, auto_map: { AutoModelForCausalLM: 'modeling_teleflm.X' } };
    expect(plainConfigJson(maskedConfigJson(plain))).toEqual(plain);
    const bad = { ...maskedConfigJson(plain), flm_grow: {} };
    expect(() => parseConfig(bad, 'x/config.json')).toThrow(ConfigError);
    expect(() => parseConfig(bad, 'x/config.json')).toThrow(/x\/config.json: field "flm_grow.base_model_type"/);
  });
});

describe('grow, train and bake folders', () => {
  const tmp = makeTempDir('flm-grow-hf-folder-');
  afterAll(() => tmp.cleanup());
  const src = join(tmp.dir, 'src');
  const plan = parsePlan({
    targets: { hidden_size: 96, intermediate_size: 192, num_hidden_layers: 3 },
    placement: { method: 'uniform' },
    seed: 1,
    anneal_steps: 4,
  });
  beforeAll(async () => {
    await initBackend('wasm');
    await writeRandomInit(src, parseConfig({ ...familyByName('qwen3').tiny }), { seed: 3 });
    // a decoy: the modeling files of a masked folder come from the package, never from the source
    writeFileSync(join(src, 'modeling_flm_grow.py'), 'raise SystemExit("copied from the source")\n');
  });

  function expectMasked(dir: string, kind: string) {
    const cfg = readJson(join(dir, 'config.json'));
    expect(cfg).toMatchObject({ model_type: MASKED_MODEL_TYPE, flm_grow: { base_model_type: 'qwen3' } });
    expect(readConfigFile(join(dir, 'config.json')).family).toBe('qwen3');
    for (const f of REMOTE_FILES) {
      const want = readFileSync(REMOTE_SOURCES[f], 'utf8').replace(/^BASE_MODEL_TYPE = .*$/m, 'BASE_MODEL_TYPE = "qwen3"');
      expect(readFileSync(join(dir, f), 'utf8'), `${dir}/${f}`).toBe(want);
    }
    const card = readFileSync(join(dir, 'README.md'), 'utf8');
    expect(card).toContain(`# ${kind} Qwen3 checkpoint`);
    expect(card).toContain('Still masked');
    expect(card).toContain('trust_remote_code=True');
  }

  function expectPlain(dir: string, kind: string) {
    const cfg = readJson(join(dir, 'config.json'));
    expect(cfg.model_type).toBe('qwen3');
    expect(cfg.architectures).toEqual(['Qwen3ForCausalLM']);
    expect(cfg).not.toHaveProperty('auto_map');
    expect(cfg).not.toHaveProperty('flm_grow');
    expect(readdirSync(dir).filter((f) => f.endsWith('.py'))).toEqual([]);
    const card = readFileSync(join(dir, 'README.md'), 'utf8');
    expect(card).toContain(`# ${kind} Qwen3 checkpoint`);
    expect(card).toContain('Plain:');
    expect(card).toContain(`from_pretrained(${JSON.stringify(dir)})`);
  }

  it('masked grow -> grow while annealing -> train (each engine) -> bake: masked form until baked', async () => {
    const g1 = join(tmp.dir, 'g1');
    await growCheckpoint(src, g1, plan, { quiet: true });
    expectMasked(g1, 'Grown');
    expect(readFileSync(join(g1, 'README.md'), 'utf8')).toMatch(/\| hidden_size \| 64 \| 96 \|/);
    // a folder still annealing grows again (read as qwen3), and stays masked
    const g2 = join(tmp.dir, 'g2');
    await growCheckpoint(g1, g2, parsePlan({ targets: { intermediate_size: 256 }, seed: 2, anneal_steps: 4 }), { quiet: true });
    expectMasked(g2, 'Grown');
    const engines = findTorchPython() !== undefined ? (['tfjs', 'torch'] as const) : (['tfjs'] as const);
    for (const engine of engines) {
      const opts = {
        quiet: true,
        log: () => undefined,
        data: CORPUS,
        batchSize: 2,
        seqLen: 8,
        lr: 1e-3,
        backend: 'wasm' as const,
      };
      const mid = await trainWithEngine({ ...opts, checkpoint: g2, out: join(tmp.dir, `t-${engine}`), steps: 2 }, { engine });
      expectMasked(mid.checkpoint, 'Trained');
      const end = await trainWithEngine({ ...opts, checkpoint: g2, out: join(tmp.dir, `t4-${engine}`), steps: 4 }, { engine });
      expectPlain(end.checkpoint, 'Trained');
    }
    const baked = join(tmp.dir, 'baked');
    await bakeCheckpoint(g2, baked, { quiet: true, force: true });
    expectPlain(baked, 'Baked');
    expect(readFileSync(join(baked, 'README.md'), 'utf8')).toContain('DROPPED');
  }, 120_000);

  it('assemble of a split masked grow: the masked form, from the parts', async () => {
    const parts = [1, 2].map((i) => join(tmp.dir, `part-${i}`));
    for (const [i, d] of parts.entries())
      await growCheckpoint(src, d, plan, {
        quiet: true,
        maxShardSize: 100_000,
        writerOptions: { part: { index: i + 1, count: 2 } },
      });
    const whole = join(tmp.dir, 'assembled');
    await assembleParts(whole, parts, { quiet: true });
    expectMasked(whole, 'Grown');
  });

  it('zero mode writes the plain config and a card', async () => {
    const z = join(tmp.dir, 'zero');
    await growCheckpoint(src, z, { ...plan, mode: 'zero' }, { quiet: true });
    const cfg = readJson(join(z, 'config.json'));
    expect(cfg.model_type).toBe('qwen3');
    expect(existsSync(join(z, 'modeling_flm_grow.py'))).toBe(false);
    expect(readFileSync(join(z, 'README.md'), 'utf8')).toContain('zero mode');
  });
});
