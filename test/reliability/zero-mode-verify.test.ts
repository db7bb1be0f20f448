/**
 * Issue 15, "verify and zero mode in bf16": a zero-mode growth of a bf16 checkpoint rounds the
 * rescaled norm gains (the manifest says exactness "rounded"); verify reads the manifest and
 * uses a tolerance derived from that rounding, stated in its output, instead of failing at 1e-5.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { makeTempDir } from '../support/model.ts';
import { initBackend } from '../../src/engines/tfjs-backend.ts';
import { growCheckpoint } from '../../src/growth/grow.ts';
import { parsePlan } from '../../src/growth/plan.ts';
import { formatReport, verifyGrowth } from '../../src/growth/verify.ts';
import { readManifest } from '../../src/checkpoint/manifest.ts';

const FIX = join(import.meta.dirname, '../../fixtures/hf/llama-tiny-bf16');
const tmp = makeTempDir('flm-grow-zero-verify-');
afterAll(() => tmp.cleanup());
beforeAll(async () => {
  await initBackend('wasm');
});

describe('verify of a rounded zero-mode growth', () => {
  it('passes with the tolerance the rounding allows, says so, and an explicit --tolerance still wins', async () => {
    const out = join(tmp.dir, 'z1');
    await growCheckpoint(
      FIX,
      out,
      parsePlan({ targets: { hidden_size: 96, num_attention_heads: 6 }, mode: 'zero', placement: { method: 'explicit' } }),
      { quiet: true },
    );
    expect(
      ((readManifest(out) as { plan?: unknown } | undefined)?.plan as { zeroModeNorm: { exactness: string } }).zeroModeNorm
        .exactness,
    ).toBe('rounded');
    const r = await verifyGrowth(FIX, out, { backend: 'wasm' });
    // 4 layers: 9 norms × bf16 unit roundoff 2^-8
    expect(r.tolerance).toBe(9 * 2 ** -8);
    expect(r.passed).toBe(true);
    expect(r.relativeLogitDiff).toBeGreaterThan(1e-5); // the rounding is real: the old default failed here
    expect(r.relativeLogitDiff).toBeLessThan(r.tolerance);
    expect(formatReport(r)).toMatch(/rounded to BF16 .*9 norms × unit roundoff 3\.906e-3/);
    await expect(verifyGrowth(FIX, out, { backend: 'wasm', tolerance: 1e-5 })).rejects.toMatchObject({ code: 'VerifyFailed' });
  });

  it('masked and exact growths keep the default tolerance', async () => {
    const out = join(tmp.dir, 'm1');
    await growCheckpoint(
      FIX,
      out,
      parsePlan({ targets: { hidden_size: 96, num_attention_heads: 6 }, placement: { method: 'explicit' } }),
      { quiet: true },
    );
    const r = await verifyGrowth(FIX, out, { backend: 'wasm' });
    expect(r.tolerance).toBe(1e-5);
    expect(r.toleranceSource).toBe('default');
  });
});
