/**
 * Pretraining data formats, both engines: a Megatron-LM indexed dataset (.bin + .idx written here
 * per megatron/core/datasets/indexed_dataset.py's _IndexWriter layout), read per its index; a .bin
 * whose .idx disagrees is refused; a nanoGPT .bin without .idx stays uint16; a weighted mix draws
 * rows by weight. The tfjs reader (src/train/data.ts) and the torch reader
 * (python/flm_grow_torch/data.py) must give the same batches, judged against the ids written.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findTorchPython, PYTHON_DIR } from '../../src/engines/torch-process.ts';
import { MixedDataset, openTrainingData, TokenDataset } from '../../src/train/data.ts';
import { corpusTokenFile } from '../../src/train/engine.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const F = join(ROOT, 'fixtures/hf/llama-tiny-f32');
const torch = findTorchPython();

/** `train` for 2 steps of 2 × 16 tokens on `engine`, its result as one JSON object (the runs both engines make alike). */
const twoStepTrain = (checkpoint: string, data: string, out: string, engine: string): string[] => [
  'train',
  checkpoint,
  '--data',
  data,
  '--out',
  out,
  '--steps',
  '2',
  '--batch-size',
  '2',
  '--seq-len',
  '16',
  '--engine',
  engine,
  '--json',
];

/** A Megatron index + data pair: documents of int32 (code 4) or uint16 (code 8) ids. */
function writeMegatron(prefix: string, docs: number[][], code: 4 | 8): void {
  const width = code === 4 ? 4 : 2;
  const n = docs.length;
  const idx = Buffer.alloc(34 + n * 4 + n * 8 + (n + 1) * 8);
  Buffer.from('MMIDIDX\x00\x00', 'latin1').copy(idx, 0);
  idx.writeBigUInt64LE(1n, 9); // version
  idx.writeUInt8(code, 17);
  idx.writeBigUInt64LE(BigInt(n), 18); // sequences (one per document here)
  idx.writeBigUInt64LE(BigInt(n + 1), 26); // document index entries: 0..n
  let ptr = 0;
  docs.forEach((d, i) => {
    idx.writeInt32LE(d.length, 34 + 4 * i);
    idx.writeBigInt64LE(BigInt(ptr), 34 + 4 * n + 8 * i);
    ptr += d.length * width;
  });
  for (let k = 0; k <= n; k++) idx.writeBigInt64LE(BigInt(k), 34 + 12 * n + 8 * k);
  const bin = Buffer.alloc(ptr);
  let o = 0;
  for (const d of docs)
    for (const t of d) {
      if (code === 4) bin.writeInt32LE(t, o);
      else bin.writeUInt16LE(t, o);
      o += width;
    }
  writeFileSync(`${prefix}.idx`, idx);
  writeFileSync(`${prefix}.bin`, bin);
}

/** Batches from the torch engine's reader (data.py), as nested arrays. */
function pythonBatches(spec: string, steps: number[], B: number, T: number, seed: number): number[][][] {
  const code = `
import json, sys
from flm_grow_torch.data import open_training_data
ds = open_training_data(sys.argv[1], eval_fraction=0.1, seq_len=${T})
print(json.dumps([ds.batch_at("train", s, ${B}, ${T}, ${seed})[0].tolist() for s in json.loads(sys.argv[2])]))`;
  const r = spawnSync(torch!.python, ['-c', code, spec, JSON.stringify(steps)], {
    encoding: 'utf8',
    env: { ...process.env, PYTHONPATH: PYTHON_DIR },
  });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as number[][][];
}

function tsBatches(spec: string, steps: number[], B: number, T: number, seed: number): number[][][] {
  const ds = openTrainingData(spec, { seqLen: T, evalFraction: 0.1 });
  return steps.map((s) => {
    const x = ds.batchAt('train', s, B, T, seed).inputs;
    return Array.from({ length: B }, (_, b) => Array.from(x.subarray(b * T, (b + 1) * T)));
  });
}

let d: string;
// documents of ids 0..299 (a model of vocabulary 320 can train on them)
const docs = Array.from({ length: 40 }, (_, i) => Array.from({ length: 20 + (i % 7) }, (_, t) => (i * 37 + t * 11) % 300));
beforeAll(() => {
  d = mkdtempSync(join(tmpdir(), 'flm-grow-data-'));
  writeMegatron(join(d, 'corpus32'), docs, 4);
  writeMegatron(
    join(d, 'lo'),
    docs.map((x) => x.map((t) => t % 100)),
    8,
  );
  writeMegatron(
    join(d, 'hi'),
    docs.map((x) => x.map((t) => 200 + (t % 100))),
    8,
  );
});
afterAll(() => rmSync(d, { recursive: true, force: true }));

describe('Megatron indexed datasets', () => {
  it('an int32 .bin is read per its .idx: the ids written, in document order', () => {
    expect(Array.from(TokenDataset.fromFile(join(d, 'corpus32.bin'), { evalFraction: 0 }).tokens)).toEqual(docs.flat());
    // without its index the same file is a nanoGPT uint16 file: twice as many (wrong) ids
    writeFileSync(join(d, 'plain.bin'), Buffer.from(new Uint16Array(docs.flat()).buffer));
    expect(Array.from(TokenDataset.fromFile(join(d, 'plain.bin'), { evalFraction: 0 }).tokens)).toEqual(docs.flat());
  });

  it.skipIf(torch === undefined)('both engines see the same batches (Megatron int32, and a 0.7/0.3 mix)', () => {
    const steps = [0, 1, 2, 7];
    const meg = join(d, 'corpus32.bin');
    expect(pythonBatches(meg, steps, 4, 16, 3)).toEqual(tsBatches(meg, steps, 4, 16, 3));
    const mix = `${join(d, 'lo.bin')}:0.7,${join(d, 'hi.bin')}:0.3`;
    expect(pythonBatches(mix, steps, 8, 8, 5)).toEqual(tsBatches(mix, steps, 8, 8, 5));
  });

  it('a mix draws rows by weight', () => {
    const ds = openTrainingData(`${join(d, 'lo.bin')}:0.7,${join(d, 'hi.bin')}:0.3`, { seqLen: 8 });
    expect(ds).toBeInstanceOf(MixedDataset);
    let hi = 0,
      rows = 0;
    for (let s = 0; s < 200; s++) {
      const x = ds.batchAt('train', s, 10, 8, 0).inputs;
      for (let b = 0; b < 10; b++, rows++) if (x[b * 8] >= 200) hi++;
    }
    // 2000 rows, binomial(0.3): 3 standard deviations is about 0.031
    expect(Math.abs(hi / rows - 0.3)).toBeLessThan(0.031);
  });

  it('refuses a .bin whose .idx disagrees, before either engine reads it (exit 2)', () => {
    writeMegatron(join(d, 'bad'), docs, 4);
    writeFileSync(join(d, 'bad.bin'), Buffer.alloc(docs.flat().length * 2)); // the index says int32
    for (const engine of ['tfjs', ...(torch !== undefined ? ['torch'] : [])]) {
      const r = spawnSync(
        process.execPath,
        [
          join(ROOT, 'bin/flm-grow.js'),
          'train',
          F,
          '--data',
          join(d, 'bad.bin'),
          '--out',
          join(d, `o-${engine}`),
          '--steps',
          '1',
          '--engine',
          engine,
        ],
        { encoding: 'utf8' },
      );
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/bad\.bin: its Megatron index .*bad\.idx disagrees: .*int32 tokens/);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
  });

  it.skipIf(torch === undefined)(
    'trains on a Megatron dataset, and on a mix, on both engines: the same losses and data hash',
    { timeout: 180_000 },
    () => {
      const run = (engine: string, data: string, tag: string) => {
        const r = spawnSync(
          process.execPath,
          [join(ROOT, 'bin/flm-grow.js'), ...twoStepTrain(F, data, join(d, `run-${tag}-${engine}`), engine)],
          { encoding: 'utf8' },
        );
        expect(r.status, r.stderr).toBe(0);
        const out = JSON.parse(r.stdout) as { losses: number[]; checkpoint: string };
        const m = JSON.parse(readFileSync(join(out.checkpoint, 'flm-grow-manifest.json'), 'utf8')) as {
          extra: { data: { sha256: string; tokens: number } };
        };
        return { losses: out.losses, data: m.extra.data };
      };
      for (const [tag, data] of [
        ['megatron', join(d, 'corpus32.bin')],
        ['mix', `${join(d, 'corpus32.bin')}:0.6,${join(d, 'lo.bin')}:0.4`],
      ]) {
        const a = run('tfjs', data, tag);
        const b = run('torch', data, tag);
        expect(a.losses).toHaveLength(2);
        for (let i = 0; i < 2; i++) expect(Math.abs(a.losses[i] - b.losses[i])).toBeLessThan(1e-4);
        // the manifest names the same data: a mix by the hash of its parts' hashes and weights
        expect(b.data).toEqual(a.data);
      }
    },
  );
});

describe('text corpora (JSONL) and mixes in pipelines', () => {
  const texts = Array.from(
    { length: 60 },
    (_, i) => `Document ${i}: ${'the quick brown fox jumps over the lazy dog. '.repeat(1 + (i % 3))}é`,
  );
  const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    spawnSync(process.execPath, [join(ROOT, 'bin/flm-grow.js'), ...args], { encoding: 'utf8', env: { ...process.env, ...env } });

  it(
    'a JSONL corpus is tokenized once (the checkpoint tokenizer, EOS after each document), cached, and trained on by both engines alike',
    { timeout: 120_000 },
    () => {
      const corpus = join(d, 'corpus.jsonl');
      writeFileSync(corpus, texts.map((text, i) => JSON.stringify({ id: i, text }) + '\n').join(''));
      const env = { XDG_CACHE_HOME: join(d, 'cache') };
      const run = (engine: string) => {
        const r = cli(twoStepTrain(F, corpus, join(d, `jl-${engine}`), engine), env);
        expect(r.status, r.stderr).toBe(0);
        return r;
      };
      const a = run('tfjs');
      expect(a.stderr).toMatch(/60 documents tokenized/);
      // the byte-level fixture: each document's UTF-8 bytes, then its config's eos_token_id (2)
      const cached = readdirSync(join(d, 'cache', 'flm-grow', 'tokens')).filter((f) => f.endsWith('.u32'));
      expect(cached).toHaveLength(1);
      const ids = new Uint32Array(readFileSync(join(d, 'cache', 'flm-grow', 'tokens', cached[0])).buffer.slice(0));
      expect(Array.from(ids)).toEqual(texts.flatMap((t) => [...Buffer.from(t, 'utf8'), 2]));
      if (torch === undefined) return;
      const b = run('torch');
      expect(b.stderr).toMatch(/the cached tokens/);
      const la = (JSON.parse(a.stdout) as { losses: number[] }).losses;
      const lb = (JSON.parse(b.stdout) as { losses: number[] }).losses;
      for (let i = 0; i < 2; i++) expect(Math.abs(la[i] - lb[i])).toBeLessThan(1e-4);
    },
  );

  it('a pipeline takes a data mix (parts relative to the pipeline file)', { timeout: 60_000 }, () => {
    const p = join(d, 'mix-pipe.json');
    writeFileSync(
      p,
      JSON.stringify({
        data: 'lo.bin:0.7,hi.bin:0.3',
        checkpoint: F,
        train: { batch_size: 2, seq_len: 8 },
        stages: [{ name: 't', train: { steps: 2 } }],
      }),
    );
    const r = cli(['run', p, '--out', join(d, 'mix-out'), '--json']);
    expect(r.status, r.stderr).toBe(0);
  });
});

/**
 * Parquet corpora as HF datasets publish them, written by pyarrow (several row groups, snappy and
 * zstd, a folder of train-0000k-of-00003 shards), for a copy of the fixture checkpoint with a real
 * byte-level BPE tokenizer.json (trained here with `tokenizers`). The reference: transformers'
 * AutoTokenizer from that checkpoint applied to the same texts, eos after each document.
 */
describe.skipIf(torch === undefined)('Parquet corpora', () => {
  let p: string;
  let ck: string;
  let ref: number[];
  const cli = (args: string[]) =>
    spawnSync(process.execPath, [join(ROOT, 'bin/flm-grow.js'), ...args], {
      encoding: 'utf8',
      env: { ...process.env, XDG_CACHE_HOME: join(p, 'cache') },
    });
  const ids = (file: string) => Array.from(new Uint32Array(readFileSync(file).buffer.slice(0)));

  beforeAll(() => {
    p = mkdtempSync(join(tmpdir(), 'flm-grow-parquet-'));
    ck = join(p, 'ck');
    const code = String.raw`
import json, shutil, sys
import pyarrow as pa, pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer
src, p = sys.argv[1], sys.argv[2]
ck = p + "/ck"
shutil.copytree(src, ck)
texts = [f"Document {i}: " + "the quick brown fox jumps over the lazy dog. " * (1 + i % 3) + ("é ünïcödé 🦊" if i % 5 == 0 else "") for i in range(45)]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
# ids 0..2 are the specials (</s> = 2 = config.json's eos_token_id), then 256 bytes and BPE merges up to the model's 320
tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
tok.save(ck + "/tokenizer.json")
json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "</s>", "bos_token": "<s>", "unk_token": "<unk>"}, open(ck + "/tokenizer_config.json", "w"))
hf = AutoTokenizer.from_pretrained(ck)
assert hf.eos_token_id == json.load(open(ck + "/config.json"))["eos_token_id"]
ref = [i for t in texts for i in hf(t, add_special_tokens=False)["input_ids"] + [hf.eos_token_id]]
json.dump(ref, open(p + "/ref.json", "w"))
table = pa.table({"id": list(range(len(texts))), "text": texts})
pq.write_table(table, p + "/one.parquet", compression="snappy", row_group_size=7)
import os; os.makedirs(p + "/shards")
for k in range(3):
    pq.write_table(table.slice(15 * k, 15), f"{p}/shards/train-{k:05d}-of-00003.parquet", compression="zstd", row_group_size=4)
pq.write_table(pa.table({"id": list(range(len(texts))), "content": texts}), p + "/content.parquet", compression="gzip", row_group_size=10)
with open(p + "/corpus.jsonl", "w") as f:
    for i, t in enumerate(texts):
        f.write(json.dumps({"id": i, "text": t}) + "\n")
with open(p + "/content.jsonl", "w") as f:
    for t in texts:
        f.write(json.dumps({"content": t}) + "\n")
pq.write_table(pa.table({"text": list(range(5))}), p + "/ints.parquet")
pq.write_table(pa.table({"text": pa.array([], pa.string())}), p + "/empty.parquet")
open(p + "/fake.parquet", "w").write("id,text\n0,not parquet\n")
`;
    const r = spawnSync(torch!.python, ['-c', code, F, p], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    ref = JSON.parse(readFileSync(join(p, 'ref.json'), 'utf8')) as number[];
    // a real BPE: merged ids (above the 3 specials and 256 bytes) occur, and the eos after each of the 45 documents
    expect(ref.filter((i) => i >= 259).length).toBeGreaterThan(100);
    expect(ref.filter((i) => i === 2)).toHaveLength(45);
  });
  afterAll(() => rmSync(p, { recursive: true, force: true }));

  it("tokenizes a file, a folder and a glob of shards, and JSONL, to the ids of transformers' tokenizer, eos after each document", async () => {
    const before = process.env.XDG_CACHE_HOME;
    process.env.XDG_CACHE_HOME = join(p, 'cache-in');
    try {
      // snappy, 7 row groups
      expect(ids(await corpusTokenFile(join(p, 'one.parquet'), ck))).toEqual(ref);
      // zstd, 3 shards of 4 row groups each, read in name order; the same shards by a glob: the same cache entry
      const folder = await corpusTokenFile(join(p, 'shards'), ck);
      expect(ids(folder)).toEqual(ref);
      expect(await corpusTokenFile(join(p, 'shards', 'train-*-of-00003.parquet'), ck)).toBe(folder);
      // the same texts as JSONL: the same token file, byte for byte
      const jsonl = await corpusTokenFile(join(p, 'corpus.jsonl'), ck);
      expect(readFileSync(jsonl).equals(readFileSync(folder))).toBe(true);
      // another text field (--text-field content): Parquet (gzip) and JSONL
      expect(ids(await corpusTokenFile(join(p, 'content.parquet'), ck, undefined, 'content'))).toEqual(ref);
      expect(ids(await corpusTokenFile(join(p, 'content.jsonl'), ck, undefined, 'content'))).toEqual(ref);
    } finally {
      if (before === undefined) delete process.env.XDG_CACHE_HOME;
      else process.env.XDG_CACHE_HOME = before;
    }
  });

  it('both engines train on a folder of Parquet shards alike (first losses within 1e-4)', { timeout: 180_000 }, () => {
    const run = (engine: string) => {
      const r = cli(twoStepTrain(ck, join(p, 'shards'), join(p, `run-${engine}`), engine));
      expect(r.status, r.stderr).toBe(0);
      return { losses: (JSON.parse(r.stdout) as { losses: number[] }).losses, stderr: r.stderr };
    };
    const a = run('tfjs');
    expect(a.stderr).toMatch(/45 documents in 3 shards tokenized/);
    const b = run('torch');
    expect(b.stderr).toMatch(/the cached tokens/);
    expect(a.losses).toHaveLength(2);
    for (let i = 0; i < 2; i++) expect(Math.abs(a.losses[i] - b.losses[i])).toBeLessThan(1e-4);
  });

  it('a pipeline trains on a Parquet corpus by its text_field (relative to the pipeline file)', { timeout: 60_000 }, () => {
    const pipe = join(p, 'pq-pipe.json');
    writeFileSync(
      pipe,
      JSON.stringify({
        data: 'content.parquet',
        checkpoint: ck,
        train: { batch_size: 2, seq_len: 16, text_field: 'content' },
        stages: [{ name: 't', train: { steps: 2 } }],
      }),
    );
    const r = cli(['run', pipe, '--out', join(p, 'pq-pipe-out'), '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/content\.parquet: 45 documents tokenized/);
    const stage = (JSON.parse(r.stdout) as { stages: { lossEnd?: number }[] }).stages[0];
    expect(Number.isFinite(stage.lossEnd)).toBe(true);
  });

  it('refuses a bad Parquet corpus in one line naming the file (exit 2)', () => {
    const cases: [string, string[], RegExp][] = [
      ['fake.parquet', [], /fake\.parquet: not a Parquet file, or a corrupt one/],
      ['one.parquet', ['--text-field', 'body'], /one\.parquet: no column "body" \(its columns: id, text\)/],
      ['ints.parquet', [], /ints\.parquet: column "text" is INT64, not a string column of text/],
      ['empty.parquet', [], /empty\.parquet: holds no text/],
      ['cache.arrow', [], /cache\.arrow: Arrow files .* convert each to Parquet, e\.g\. python -c "import datasets; /],
    ];
    writeFileSync(join(p, 'cache.arrow'), '');
    for (const [file, extra, want] of cases) {
      const r = cli(['train', ck, '--data', join(p, file), '--out', join(p, `bad-${file}`), '--steps', '1', ...extra]);
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toMatch(want);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
  });
});
