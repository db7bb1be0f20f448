/**
 * End to end through the CLI: the HF fixture grown in two stages with the tiny analogues of
 * Tele-FLM 52B -> 102B -> 1T, each stage checked against its source (masked forward, naive
 * reference), plus plan output, bake's refusal and user errors (exit code 2, no destination).
 */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { compareGrown, randomIds, tempDir } from '../../test/support/growth.ts';

const ROOT = join(import.meta.dirname, '../..');
const FIX = join(ROOT, 'fixtures/hf/llama-tiny-f32');
const PLANS = join(ROOT, 'growth-plans');

function cli(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/flm-grow.js'), ...args], { encoding: 'utf8', cwd: ROOT });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

let tmp: { dir: string; cleanup: () => void };
beforeAll(() => {
  tmp = tempDir('flm-grow-cli-');
});
afterAll(() => tmp.cleanup());

describe('flm-grow plan / grow / bake (CLI)', () => {
  it('plan prints the target and per-tensor operations; --json is machine-readable', () => {
    const r = cli('plan', FIX, '--plan', join(PLANS, 'tiny-stage1-to-stage2.json'), '--json');
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out) as { parameters: number; targetConfig: Record<string, number>; tensors: unknown[] };
    expect(j.targetConfig.hidden_size).toBe(80);
    expect(j.tensors.length).toBe(2 + 5 * 9 + 1);
    const t = cli('plan', join(FIX, 'config.json'), '--plan', join(PLANS, 'tiny-stage1-to-stage2.json'), '--mode', 'zero');
    expect(t.code, t.err).toBe(0);
    expect(t.out).toMatch(/parameters: \d/);
    expect(t.out).toMatch(/zero — norm gains × sqrt\(64\/80\)/);
  });

  it('init.new clone through the flags: plan shows it, grow writes it, verify passes, bake needs no --force', () => {
    const flags = ['--hidden-size', '128', '--intermediate-size', '200', '--num-attention-heads', '8', '--init', 'clone'];
    const p = cli('plan', FIX, ...flags, '--init-noise', '0.1', '--json');
    expect(p.code, p.err).toBe(0);
    const j = JSON.parse(p.out) as { plan: { init: unknown }; widthInit: string; schedule: unknown[] };
    expect(j.plan.init).toMatchObject({ new: 'clone', noise: 0.1 });
    expect(j.widthInit).toMatch(/^clone: hidden exact.*ffn exact.*heads exact.*noise 0\.1/);
    expect(j.schedule).toEqual([]);
    const zero = cli('plan', FIX, ...flags, '--mode', 'zero');
    expect(zero.code).toBe(2);
    expect(zero.err).toMatch(/init\.new/);
    const out = join(tmp.dir, 'cloned');
    const g = cli('grow', FIX, out, ...flags, '--init-noise', '0.1', '--quiet');
    expect(g.code, g.err).toBe(0);
    const v = cli('verify', FIX, out);
    expect(v.code, v.out + v.err).toBe(0);
    const b = cli('bake', out, join(tmp.dir, 'cloned-baked'));
    expect(b.code, b.err).toBe(0);
  });

  it('two stages (52B->102B->1T analogue), each function-preserving; bake refuses while masks < 1', async () => {
    const s2 = join(tmp.dir, 'stage2'),
      s3 = join(tmp.dir, 'stage3');
    // stage 1 -> 2 as shipped: inserted layers chosen by distance through the model's forward pass
    const a = cli('grow', FIX, s2, '--plan', join(PLANS, 'tiny-stage1-to-stage2.json'), '--quiet');
    expect(a.code, a.err).toBe(0);
    expect(a.out, a.out).toMatch(/grew .*\(masked mode\)/);
    expect(a.out).toMatch(/layer distances \(cosine\): 0:/);
    const b = cli('grow', s2, s3, '--plan', join(PLANS, 'tiny-stage2-to-stage3.json'), '--positions', '0,2,2,4', '--quiet');
    expect(b.code, b.err).toBe(0);
    const ids = randomIds(12, 320, 5);
    for (const [src, out] of [
      [FIX, s2],
      [s2, s3],
      [FIX, s3],
    ]) {
      const d = await compareGrown(src, out, 'masked', ids);
      expect(d.dLogits, `${src} -> ${out}`).toBeLessThanOrEqual(1e-5 * d.scale);
      expect(d.newNonZero).toBe(0);
    }
    for (const [src, out] of [
      [FIX, s2],
      [s2, s3],
    ]) {
      const v = cli('verify', src, out);
      expect(v.code, v.out + v.err).toBe(0);
    }
    const bake = cli('bake', s3, join(tmp.dir, 'baked'));
    expect(bake.code).toBe(2);
    expect(bake.err).toMatch(/masks still below 1: hidden .*heads .*ffn .*layers/);
    expect(existsSync(join(tmp.dir, 'baked'))).toBe(false);
  });

  it('select-layers prints one distance per layer and the picks', () => {
    const r = cli('select-layers', FIX, '--tokens', '32', '--seq', '16', '--count', '2', '--json');
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out) as { distances: number[]; picks: number[]; ranking: number[]; tokens: number };
    expect(j.distances.length).toBe(4);
    expect(j.tokens).toBe(32);
    expect(j.picks).toEqual(j.ranking.slice(0, 2));
    for (let k = 1; k < 4; k++) expect(j.distances[j.ranking[k]]).toBeGreaterThanOrEqual(j.distances[j.ranking[k - 1]]);
    const t = cli('select-layers', FIX, '--tokens', '32', '--seq', '16', '--metric', 'l2');
    expect(t.out).toMatch(/l2 distance .* over 32 tokens[\s\S]*picks \(1, smallest first\)/);
  });

  it('user errors exit 2 with the field named and create nothing', () => {
    const dest = join(tmp.dir, 'bad');
    const r1 = cli('grow', FIX, dest, '--hidden-size', '32', '--quiet');
    expect(r1.code).toBe(2);
    expect(r1.err).toMatch(/field "targets.hidden_size".*cannot shrink/);
    const r2 = cli('grow', FIX, dest, '--plan', join(tmp.dir, 'missing.json'));
    expect(r2.code).toBe(2);
    expect(r2.err).toMatch(/missing.json: cannot read/);
    const r3 = cli('grow', FIX, dest, '--num-hidden-layers', '6', '--placement', 'explicit');
    expect(r3.code).toBe(2);
    expect(r3.err).toMatch(/placement.positions/);
    expect(existsSync(dest)).toBe(false);
    expect(readdirSync(tmp.dir).filter((f) => f.startsWith('.flm-grow-tmp'))).toEqual([]);
  });
});
