/**
 * One family table for both engines: src/spec/families.ts and python/flm_grow_torch/families.py load
 * python/flm_grow_torch/_data/families.json; this test checks that they read it alike, that no
 * family fact is written a second time as a literal, and that config.py parses configs as
 * src/spec/config.ts does. Needs only a Python 3 (families.py and config.py import no torch).
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { FAMILIES, ROPE_TYPES, familyByName } from '../../src/spec/families.ts';
import { maskedConfigJson, parseConfig } from '../../src/spec/config.ts';
import { ConfigError } from '../../src/util/errors.ts';
import { pythonCandidates, PYTHON_DIR } from '../../src/engines/torch-process.ts';

const ROOT = join(import.meta.dirname, '..', '..');

function walk(dir: string, ext: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name), ext) : e.name.endsWith(ext) ? [join(dir, e.name)] : [],
  );
}

const python = pythonCandidates().find((p) => spawnSync(p, ['-c', 'import json'], { timeout: 30_000 }).status === 0);
if (python === undefined) console.log('test/torch/families-table: SKIPPED: no python3 found');

function py(code: string, input: unknown): unknown {
  const r = spawnSync(python as string, ['-c', code], {
    input: JSON.stringify(input),
    encoding: 'utf8',
    env: { ...process.env, PYTHONPATH: PYTHON_DIR },
    timeout: 60_000,
  });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

/** The facts config parsing reads, from the TS table. */
function tsTable(): unknown {
  return {
    ropeTypes: [...ROPE_TYPES],
    families: FAMILIES.map((f) => ({
      name: f.name,
      modelTypes: [...f.modelTypes],
      architectures: [...f.architectures],
      qkvBias: f.qkvBias,
      qkNorm: f.qkNorm,
      slidingWindow: f.slidingWindow,
      mup: f.mup,
      headDimDefault: f.headDimDefault ?? null,
      refusedIfTrue: f.refusedIfTrue.map((r) => ({ key: r.key, why: r.why })),
    })),
  };
}

const tiny = (f: Parameters<typeof familyByName>[0], over: Record<string, unknown> = {}) => ({
  ...familyByName(f).tiny,
  ...over,
});

const GOOD: Record<string, unknown>[] = [
  ...FAMILIES.map((f) => ({ ...f.tiny })),
  tiny('llama', { rope_scaling: null, rope_parameters: { rope_type: 'linear', factor: 2, rope_theta: 20000 } }),
  tiny('llama', { rope_scaling: { type: 'dynamic', factor: 3 } }),
  tiny('qwen2', { rope_scaling: { rope_type: 'yarn', factor: 4, mscale: 2, mscale_all_dim: 1, beta_fast: 16, truncate: false } }),
  tiny('qwen3', { head_dim: null }), // Qwen3's config default head_dim 128
  tiny('mistral', { sliding_window: null, num_key_value_heads: null }),
  tiny('llama', { model_type: undefined, architectures: ['MistralForCausalLM'] }), // found by architecture
  // null is absent for every field (config_rules.json): hidden_act, partial_rotary_factor, yarn's truncate
  tiny('llama', {
    hidden_act: null,
    partial_rotary_factor: null,
    rope_parameters: { rope_type: 'yarn', factor: 2, truncate: null },
  }),
  // a masked grown folder's config.json (docs/hf-format.md) reads as its base family
  ...FAMILIES.map((f) => maskedConfigJson({ ...f.tiny })),
];

const BAD: Record<string, unknown>[] = [
  tiny('qwen2', { use_sliding_window: true, mlp_bias: true, rope_scaling: { rope_type: 'longrope', factor: 2 } }),
  tiny('llama', {
    attention_bias: true,
    hidden_act: 'gelu',
    rope_scaling: { rope_type: 'llama3', factor: 8 },
    num_key_value_heads: 3,
  }),
  tiny('qwen3', { layer_types: ['sliding_attention', 'full_attention'], partial_rotary_factor: 0.5, head_dim: 15 }),
  tiny('mistral', { model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], tie_word_embeddings: 'yes', sliding_window: -1 }),
  tiny('llama', { rope_parameters: { rope_type: 'yarn', factor: -1, rope_theta: 0 } }),
  tiny('llama', { partial_rotary_factor: true, rope_parameters: { rope_type: 'yarn', factor: 2, truncate: 'no' } }),
];

/** parseConfig's numbers under the names config.py's summary() uses, or the fields it refuses. */
function tsParse(raw: Record<string, unknown>): unknown {
  try {
    const c = parseConfig(JSON.parse(JSON.stringify(raw)));
    return {
      family: c.family,
      tieWordEmbeddings: c.tieWordEmbeddings,
      qkvBias: c.qkvBias,
      qkNorm: c.qkNorm,
      rope: c.rope,
      slidingWindow: c.slidingWindow ?? null,
      hiddenSize: c.hiddenSize,
      intermediateSize: c.intermediateSize,
      numLayers: c.numLayers,
      numHeads: c.numHeads,
      numKvHeads: c.numKvHeads,
      headDim: c.headDim,
      vocabSize: c.vocabSize,
      rmsNormEps: c.rmsNormEps,
      ropeTheta: c.ropeTheta,
      maxPositionEmbeddings: c.maxPositionEmbeddings,
      useMup: c.useMup,
      inputMult: c.inputMult,
      outputMult: c.outputMult,
      mupScaleFactor: c.mupScaleFactor,
    };
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    return { refused: [...e.fields].sort() };
  }
}

const PY_PARSE = `
import json, sys
from flm_grow_torch.config import ModelConfig, ConfigError
out = []
for raw in json.load(sys.stdin):
    try:
        out.append(ModelConfig(raw).summary())
    except ConfigError as e:
        out.append({"refused": sorted(e.fields)})
print(json.dumps(out))
`;

describe.skipIf(python === undefined)('torch engine family table = src/spec/families.ts', () => {
  it('families.py loads the same declaration as src/spec/families.ts (families.json)', () => {
    const got = py(
      'import json; from flm_grow_torch.families import FAMILIES, ROPE_TYPES; ' +
        'print(json.dumps({"ropeTypes": list(ROPE_TYPES), "families": [{k: f[k] for k in ("name", "modelTypes", "architectures", "qkvBias", "qkNorm", "slidingWindow", "mup", "headDimDefault", "refusedIfTrue")} for f in FAMILIES]}))',
      null,
    );
    expect(got).toEqual(tsTable());
  });

  it("the remote code's families without a transformers class are families.json's", () => {
    const conf = readFileSync(join(ROOT, 'python', 'flm_grow_torch', 'hf_remote', 'configuration_flm_grow.py'), 'utf8');
    const m = /^_TRANSFORMERS_TYPE = \{([^}]*)\}/m.exec(conf);
    expect(m, 'configuration_flm_grow.py: _TRANSFORMERS_TYPE').not.toBeNull();
    const keys = [...m![1].matchAll(/"([^"]+)":/g)].map((x) => x[1]).sort();
    expect(keys).toEqual(
      FAMILIES.filter((f) => f.transformersClass === null)
        .flatMap((f) => f.modelTypes)
        .sort(),
    );
  });

  it('a family fact is declared once: no architecture name or family model_type is written as a literal outside families.json', () => {
    // family names are keys (the FamilyName type); LlamaForCausalLM is also the torch engine's class name
    const keys = new Set<string>([...FAMILIES.map((f) => f.name), 'LlamaForCausalLM']);
    const names = FAMILIES.flatMap((f) => [...f.architectures, ...f.modelTypes]).filter((n) => !keys.has(n));
    // hf_remote/ is remote code copied into masked folders: it must run with only torch and
    // transformers, so it cannot read the package's data (its writers check it against families.json)
    const files = [...walk(join(ROOT, 'src'), '.ts'), ...walk(join(ROOT, 'python', 'flm_grow_torch'), '.py')].filter(
      (f) => !f.endsWith('.test.ts') && !f.includes(`${join('flm_grow_torch', 'hf_remote')}`),
    );
    const hits: string[] = [];
    for (const f of files) {
      const text = readFileSync(f, 'utf8');
      for (const n of names) if (text.includes(`'${n}'`) || text.includes(`"${n}"`)) hits.push(`${relative(ROOT, f)}: ${n}`);
    }
    expect(files.length).toBeGreaterThan(50);
    expect(hits).toEqual([]);
  });

  it('config.py parses configs of every family as src/spec/config.ts does, and refuses the same fields', () => {
    const want = [...GOOD, ...BAD].map(tsParse);
    // the cases mean what they say: the good ones parse, each bad one names several fields
    want.slice(0, GOOD.length).forEach((w) => expect(w).not.toHaveProperty('refused'));
    want.slice(GOOD.length).forEach((w) => expect((w as { refused: string[] }).refused.length).toBeGreaterThan(1));
    expect(py(PY_PARSE, [...GOOD, ...BAD])).toEqual(want);
  });

  it('hf_remote writes the masked config.json as src/spec/config.ts does', () => {
    const plain = FAMILIES.map((f) => ({ ...f.tiny }));
    const code = `import json, sys
from flm_grow_torch.hf_remote import masked_config_json
print(json.dumps([masked_config_json(c) for c in json.load(sys.stdin)]))`;
    // same keys, values and order (JSON text), so both engines' checkpoints carry the same config
    expect(JSON.stringify(py(code, plain))).toBe(JSON.stringify(plain.map((c) => maskedConfigJson(c))));
  });
});
