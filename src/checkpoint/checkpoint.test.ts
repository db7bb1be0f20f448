import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync, readdirSync, rmSync, unlinkSync, writeFileSync, cpSync, mkdirSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Checkpoint, INDEX_FILE } from './checkpoint.ts';
import { CheckpointWriter, parseSize, planShards, shardName } from './checkpoint-writer.ts';
import { writeSafetensors } from './safetensors-writer.ts';
import { writeAtomically, TMP_PREFIX } from './atomic.ts';
import { SUPPORTED_DTYPES, dtypeSize, type DType } from '../util/dtype.ts';
import { CheckpointError, FlmGrowError } from '../util/errors.ts';
import { configToJson, makeConfig } from '../spec/config.ts';
import { parseRaw, randomBytes, tempDir } from '../../test/checkpoint/raw.ts';

const tmp = tempDir('ck');
afterAll(() => tmp.cleanup());
const CONFIG = JSON.stringify(
  configToJson(makeConfig({ hiddenSize: 8, intermediateSize: 16, numLayers: 1, numHeads: 2, vocabSize: 10 })),
);

const tensorsOf = (dtypes: readonly DType[]) =>
  dtypes.map((dtype, k) => {
    const shape = [k + 1, 7];
    let data = randomBytes(shape[0] * shape[1] * dtypeSize(dtype), 100 + k);
    if (dtype === 'BOOL') data = data.map((v) => v & 1);
    return { name: `w.${k}.${dtype}`, dtype, shape, data };
  });

async function writeCk(dest: string, tensors: ReturnType<typeof tensorsOf>, maxShardSize: number): Promise<void> {
  const w = await CheckpointWriter.create(dest, tensors, { maxShardSize });
  for (const t of tensors) {
    // stream in uneven chunks
    for (let i = 0; i < t.data.byteLength; i += 5) await w.write(t.name, t.data.subarray(i, Math.min(i + 5, t.data.byteLength)));
  }
  await w.writeSideFile('config.json', CONFIG);
  await w.commit();
}

const leftovers = (dir: string) => readdirSync(dir).filter((f) => f.startsWith(TMP_PREFIX));

describe('CheckpointWriter round trip', () => {
  const tensors = tensorsOf([...SUPPORTED_DTYPES, ...SUPPORTED_DTYPES]);
  it('single file: model.safetensors, bit-exact, no index', async () => {
    const dest = join(tmp.dir, 'single');
    await writeCk(dest, tensors, 1e9);
    expect(readdirSync(dest).sort()).toEqual(['config.json', 'model.safetensors']);
    const ck = await Checkpoint.open(dest, { checkConfig: false });
    for (const t of tensors) {
      expect(ck.info(t.name).dtype).toBe(t.dtype);
      expect(Buffer.from(await ck.read(t.name)).equals(Buffer.from(t.data))).toBe(true);
    }
    expect(ck.totalBytes).toBe(tensors.reduce((a, t) => a + t.data.byteLength, 0));
    await ck.close();
  });
  it('sharded: model-0000k-of-0000n names, index total_size and weight_map, bit-exact', async () => {
    const dest = join(tmp.dir, 'sharded');
    const maxShard = 200;
    await writeCk(dest, tensors, maxShard);
    const files = readdirSync(dest)
      .filter((f) => f.endsWith('.safetensors'))
      .sort();
    const n = files.length;
    expect(n).toBeGreaterThan(3);
    files.forEach((f, k) =>
      expect(f).toBe(`model-${String(k + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`),
    );
    const index = JSON.parse(readFileSync(join(dest, INDEX_FILE), 'utf8')) as {
      metadata: { total_size: number };
      weight_map: Record<string, string>;
    };
    expect(index.metadata.total_size).toBe(tensors.reduce((a, t) => a + t.data.byteLength, 0));
    // the index agrees with what each shard holds (independent parser), and each shard respects the limit
    const seen = new Map<string, string>();
    for (const f of files) {
      const raw = parseRaw(readFileSync(join(dest, f)));
      let bytes = 0;
      for (const [name, t] of raw.tensors) {
        seen.set(name, f);
        bytes += t.bytes.byteLength;
        const src = tensors.find((x) => x.name === name);
        expect(Buffer.from(t.bytes).equals(Buffer.from(src?.data ?? []))).toBe(true);
      }
      expect(bytes <= maxShard || raw.tensors.size === 1).toBe(true);
    }
    expect(Object.fromEntries(seen)).toEqual(index.weight_map);
    const ck = await Checkpoint.open(dest, { checkConfig: false });
    for (const t of tensors) expect(Buffer.from(await ck.read(t.name)).equals(Buffer.from(t.data))).toBe(true);
    await ck.close();
  });
  it('parseSize, planShards, shardName', () => {
    expect(parseSize('5GB')).toBe(5e9);
    expect(parseSize('500MB')).toBe(5e8);
    expect(parseSize('1GiB')).toBe(2 ** 30);
    expect(() => parseSize('lots')).toThrow(FlmGrowError);
    expect(shardName(0, 12)).toBe('model-00001-of-00012.safetensors');
    const plan = planShards(
      [
        { name: 'a', dtype: 'U8', shape: [10] },
        { name: 'b', dtype: 'U8', shape: [30] },
        { name: 'c', dtype: 'U8', shape: [5] },
      ],
      20,
    );
    expect(plan.map((p) => p.tensors.map((t) => t.name))).toEqual([['a'], ['b'], ['c']]);
  });
});

describe('index validation', () => {
  const base = join(tmp.dir, 'idx-base');
  const tensors = tensorsOf(['F32', 'BF16', 'F32', 'I64']);
  let n = 0;
  async function variant(
    edit: (dir: string, index: { metadata: { total_size: number }; weight_map: Record<string, string> }) => void,
  ): Promise<string> {
    if (!existsSync(base)) await writeCk(base, tensors, 100);
    const dir = join(tmp.dir, `idx-${n++}`);
    cpSync(base, dir, { recursive: true });
    const index = JSON.parse(readFileSync(join(dir, INDEX_FILE), 'utf8'));
    edit(dir, index);
    writeFileSync(join(dir, INDEX_FILE), JSON.stringify(index));
    return dir;
  }
  async function expectCode(dir: string, code: string, mention: string, checkConfig = false): Promise<void> {
    const e = await Checkpoint.open(dir, { checkConfig }).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(CheckpointError);
    expect((e as CheckpointError).code).toBe(code);
    expect((e as Error).message).toContain(mention);
  }
  for (const bad of [
    '../model-00001-of-00004.safetensors',
    'sub/model.safetensors',
    'http://example.com/x.safetensors',
    '/etc/passwd',
    '..',
  ]) {
    it(`shard name ${JSON.stringify(bad)} is refused`, async () => {
      const dir = await variant((_, ix) => {
        ix.weight_map[tensors[0].name] = bad;
      });
      await expectCode(dir, 'UnsafeShardName', bad);
    });
  }
  it('tensor listed but missing', async () => {
    const dir = await variant((_, ix) => {
      ix.weight_map['ghost.weight'] = ix.weight_map[tensors[0].name];
    });
    await expectCode(dir, 'TensorNotFound', 'ghost.weight');
  });
  it('tensor in a shard but unlisted', async () => {
    const dir = await variant((_, ix) => {
      delete ix.weight_map[tensors[1].name];
    });
    await expectCode(dir, 'UnlistedTensor', tensors[1].name);
  });
  it('same tensor in two shards', async () => {
    const extra = 'model-extra.safetensors';
    const dir = await variant((d, ix) => {
      ix.weight_map['z.other'] = extra;
      ix.metadata.total_size += 4 + tensors[0].data.byteLength;
    });
    await writeSafetensors(join(dir, extra), [
      { name: tensors[0].name, dtype: tensors[0].dtype, shape: tensors[0].shape, data: tensors[0].data },
      { name: 'z.other', dtype: 'F32', shape: [1], data: new Uint8Array(4) },
    ]);
    await expectCode(dir, 'DuplicateTensor', tensors[0].name);
  });
  it('total_size mismatch', async () => {
    const dir = await variant((_, ix) => {
      ix.metadata.total_size += 1;
    });
    await expectCode(dir, 'TotalSizeMismatch', 'total_size');
  });
  it('missing shard file', async () => {
    const dir = await variant((d, ix) => unlinkSync(join(d, ix.weight_map[tensors[2].name])));
    await expectCode(dir, 'MissingShard', 'does not exist');
  });
  it('config mismatch is refused by default, allowed with checkConfig:false', async () => {
    const dir = await variant(() => undefined);
    await expectCode(dir, 'ConfigMismatch', 'model.embed_tokens.weight', true);
    await (await Checkpoint.open(dir, { checkConfig: false })).close();
  });
  it('not a checkpoint', async () => {
    const dir = join(tmp.dir, 'empty');
    mkdirSync(dir);
    await expectCode(dir, 'NotACheckpoint', dir);
    writeFileSync(join(dir, 'config.json'), CONFIG);
    await expectCode(dir, 'NotACheckpoint', 'model.safetensors');
  });
});

describe('atomic output', () => {
  const decls = [
    { name: 'a', dtype: 'F32' as const, shape: [4] },
    { name: 'b', dtype: 'F32' as const, shape: [4] },
  ];
  it('aborted midway: no destination, no temporary folder', async () => {
    const root = join(tmp.dir, 'abort');
    mkdirSync(root);
    const dest = join(root, 'out');
    const w = await CheckpointWriter.create(dest, decls, { maxShardSize: 16 });
    await w.writeTensor('a', new Uint8Array(16));
    await w.abort();
    expect(existsSync(dest)).toBe(false);
    expect(readdirSync(root)).toEqual([]);
  });
  it('commit with tensors missing fails and cleans up', async () => {
    const root = join(tmp.dir, 'short');
    mkdirSync(root);
    const dest = join(root, 'out');
    const w = await CheckpointWriter.create(dest, decls);
    await w.writeTensor('a', new Uint8Array(16));
    await expect(w.commit()).rejects.toBeInstanceOf(FlmGrowError);
    expect(readdirSync(root)).toEqual([]);
  });
  it('a producer that throws leaves nothing', async () => {
    const root = join(tmp.dir, 'throws');
    mkdirSync(root);
    const dest = join(root, 'out');
    await expect(
      writeAtomically(dest, {}, async (d) => {
        writeFileSync(d.path('config.json'), '{}');
        throw new Error('producer failed');
      }),
    ).rejects.toThrow('producer failed');
    expect(readdirSync(root)).toEqual([]);
  });
  it('existing destination refused without overwrite, replaced with it; source never the destination', async () => {
    const dest = join(tmp.dir, 'exists');
    mkdirSync(dest);
    writeFileSync(join(dest, 'keep'), 'x');
    await expect(CheckpointWriter.create(dest, decls)).rejects.toMatchObject({ code: 'DestinationExists' });
    expect(existsSync(join(dest, 'keep'))).toBe(true);
    // a folder flm-grow did not write (no manifest) is replaced only with force
    await expect(CheckpointWriter.create(dest, decls, { overwrite: true })).rejects.toMatchObject({ code: 'DestinationNotOurs' });
    const w = await CheckpointWriter.create(dest, decls, { overwrite: true, force: true });
    await w.writeTensor('a', new Uint8Array(16));
    await w.writeTensor('b', new Uint8Array(16));
    await w.commit();
    expect(readdirSync(dest)).toEqual(['model.safetensors']);
    await expect(CheckpointWriter.create(dest, decls, { overwrite: true, force: true, sources: [dest] })).rejects.toMatchObject({
      code: 'DestinationIsSource',
    });
    expect(leftovers(tmp.dir)).toEqual([]);
  });
  it('a writer SIGKILLed mid-write leaves no checkpoint-looking folder at the destination', async () => {
    const root = join(tmp.dir, 'kill');
    mkdirSync(root);
    const dest = join(root, 'out');
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(import.meta.dirname, '../../test/checkpoint/slow-writer.mts'), dest],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise<void>((res, rej) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('started')) {
          child.kill('SIGKILL');
          res();
        }
      });
      child.on('exit', () => rej(new Error(`child exited before it was killed: ${out}`)));
    });
    await new Promise((r) => child.on('exit', r));
    expect(existsSync(dest)).toBe(false);
    // what remains is only the hidden temporary folder, which has no index and is not the destination
    const rest = readdirSync(root);
    expect(rest.length).toBe(1);
    expect(rest[0].startsWith(TMP_PREFIX)).toBe(true);
    expect(existsSync(join(root, rest[0], INDEX_FILE))).toBe(false);
    rmSync(join(root, rest[0]), { recursive: true });
  }, 20_000);
});
