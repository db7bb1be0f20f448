import { afterAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { cpSync, readFileSync, truncateSync, writeFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from '../../test/checkpoint/raw.ts';
import { parseConfig } from '../spec/config.ts';
import { onesMasks, writeMasks, masksPath } from '../checkpoint/masks.ts';
import { MANIFEST_FILE, MANIFEST_FORMAT } from '../checkpoint/manifest.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const FIX = join(ROOT, 'fixtures', 'hf', 'llama-tiny-bf16');
const tmp = tempDir('inspect');
afterAll(() => tmp.cleanup());

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await promisify(execFile)(process.execPath, [join(ROOT, 'bin', 'flm-grow.js'), 'inspect', ...args], { cwd: ROOT });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

// Independent count: HF Llama parameter shapes from config.json, written out here.
function expectedFromConfig(dir: string): { params: number; tensors: number } {
  const c = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  const H = c.hidden_size,
    F = c.intermediate_size,
    V = c.vocab_size,
    L = c.num_hidden_layers;
  const hd = c.head_dim ?? H / c.num_attention_heads;
  const Q = c.num_attention_heads * hd,
    KV = (c.num_key_value_heads ?? c.num_attention_heads) * hd;
  return { params: 2 * V * H + H + L * (2 * H + Q * H + 2 * KV * H + H * Q + 3 * F * H), tensors: 3 + 9 * L };
}

describe('flm-grow inspect', { timeout: 30_000 }, () => {
  const exp = expectedFromConfig(FIX);
  const shardBytes = ['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors'];

  it('--json: parameters, bytes, config, tensors, shards of the bf16 fixture', async () => {
    const r = await cli(FIX, '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.parameters).toBe(exp.params);
    expect(j.bytes).toBe(exp.params * 2);
    expect(j.tensors.length).toBe(exp.tensors);
    expect(j.config).toEqual(JSON.parse(readFileSync(join(FIX, 'config.json'), 'utf8')));
    expect(j.dtypes).toEqual({ BF16: { tensors: exp.tensors, parameters: exp.params, bytes: exp.params * 2 } });
    const index = JSON.parse(readFileSync(join(FIX, 'model.safetensors.index.json'), 'utf8'));
    for (const t of j.tensors) {
      expect(t.file).toBe(index.weight_map[t.name]);
      expect(t.dtype).toBe('BF16');
    }
    expect(j.shards.map((s: { file: string }) => s.file).sort()).toEqual(shardBytes);
    // shard bytes + headers = file sizes
    for (const s of j.shards as { file: string; bytes: number }[]) {
      const size = statSync(join(FIX, s.file)).size;
      const hdr = Number(readFileSync(join(FIX, s.file)).readBigUInt64LE(0));
      expect(s.bytes).toBe(size - 8 - hdr);
    }
    expect(j.mismatches).toEqual([]);
    expect(j.masks).toBeNull();
    expect(j.manifest).toBeNull();
  });

  it('text output names the essentials', async () => {
    const r = await cli(FIX);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(String(exp.params));
    expect(r.stdout).toContain('BF16');
    for (const s of shardBytes) expect(r.stdout).toContain(s);
    expect(r.stdout).toContain('tensors match config.json');
  });

  it('a config that does not match the tensors: listed, exit non-zero, tensor named', async () => {
    const dir = join(tmp.dir, 'mismatch');
    cpSync(FIX, dir, { recursive: true });
    const c = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    c.intermediate_size += 1;
    writeFileSync(join(dir, 'config.json'), JSON.stringify(c));
    const r = await cli(dir, '--json');
    expect(r.code).not.toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.mismatches.length).toBe(3 * c.num_hidden_layers);
    expect(r.stderr).toContain('model.layers.0.mlp.gate_proj.weight');
    const t = await cli(dir);
    expect(t.code).not.toBe(0);
    expect(t.stdout).toContain('mlp.down_proj.weight');
  });

  it('a truncated shard: exit non-zero, the file named', async () => {
    const dir = join(tmp.dir, 'truncated');
    cpSync(FIX, dir, { recursive: true });
    const p = join(dir, shardBytes[1]);
    truncateSync(p, statSync(p).size - 3);
    const r = await cli(dir);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(shardBytes[1]);
    expect(r.stderr).toContain('MetadataIncompleteBuffer');
  });

  it('masks and manifest are reported', async () => {
    const dir = join(tmp.dir, 'grown');
    cpSync(FIX, dir, { recursive: true });
    const cfg = parseConfig(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')));
    const m = onesMasks(cfg);
    m.layers[1].heads[2] = 0;
    m.layers[0].ffn.fill(0.25, 0, 5);
    await writeMasks(masksPath(dir), m);
    writeFileSync(
      join(dir, MANIFEST_FILE),
      JSON.stringify({
        format: MANIFEST_FORMAT,
        kind: 'grow',
        created: '2026-01-01T00:00:00Z',
        tool: { name: 'flm-grow', version: '0' },
        mode: 'masked',
        files: { 'config.json': 'x' },
      }),
    );
    const r = await cli(dir, '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.masks.groupsBelowOne).toEqual([
      { group: 'heads', minValue: 0, count: 1 },
      { group: 'ffn', minValue: 0.25, count: 5 },
    ]);
    expect(j.manifest).toMatchObject({ kind: 'grow', mode: 'masked', files: 1 });
    const t = await cli(dir);
    expect(t.stdout).toContain('masks');
    expect(t.stdout).toContain('manifest');
  });
});
