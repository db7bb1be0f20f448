import { describe, expect, it } from 'vitest';
import { bf16BitsToF32, bytesToFloat32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, float32ToBytes } from './dtype.ts';

// Reference definitions written differently from dtype.ts.
function refBf16(h: number): number {
  const dv = new DataView(new ArrayBuffer(4));
  dv.setUint16(0, h, false);
  dv.setUint16(2, 0, false);
  return dv.getFloat32(0, false);
}
function refF16(h: number): number {
  const sign = (h >> 15) & 1 ? -1 : 1;
  const exp = (h >> 10) & 31;
  const frac = h & 1023;
  if (exp === 31) return frac === 0 ? sign * Infinity : NaN;
  if (exp === 0) return sign * Math.pow(2, -14) * (frac / 1024);
  return sign * Math.pow(2, exp - 15) * (1 + frac / 1024);
}
const same = (a: number, b: number) => Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));
const f32 = (x: number) => Math.fround(x);

describe('16-bit -> f32, all 65536 patterns', () => {
  it('bf16 matches the DataView definition, scalar and bulk', () => {
    const bytes = new Uint8Array(65536 * 2);
    const dv = new DataView(bytes.buffer);
    for (let h = 0; h < 65536; h++) dv.setUint16(2 * h, h, true);
    const bulk = bytesToFloat32(bytes, 'BF16');
    for (let h = 0; h < 65536; h++) {
      const r = refBf16(h);
      if (!same(bf16BitsToF32(h), r) || !same(bulk[h], r))
        throw new Error(`bf16 0x${h.toString(16)}: ${bf16BitsToF32(h)} / ${bulk[h]} vs ${r}`);
    }
  });
  it('f16 matches the Math.pow definition, scalar and bulk', () => {
    const bytes = new Uint8Array(65536 * 2);
    const dv = new DataView(bytes.buffer);
    for (let h = 0; h < 65536; h++) dv.setUint16(2 * h, h, true);
    const bulk = bytesToFloat32(bytes, 'F16');
    for (let h = 0; h < 65536; h++) {
      const r = refF16(h);
      if (!same(f16BitsToF32(h), r) || !same(bulk[h], r))
        throw new Error(`f16 0x${h.toString(16)}: ${f16BitsToF32(h)} / ${bulk[h]} vs ${r}`);
    }
  });
  it('16-bit -> f32 -> 16-bit is the identity for every non-NaN pattern', () => {
    for (let h = 0; h < 65536; h++) {
      if (!Number.isNaN(refBf16(h))) expect(f32ToBf16Bits(refBf16(h))).toBe(h);
      if (!Number.isNaN(refF16(h))) expect(f32ToF16Bits(refF16(h))).toBe(h);
    }
  });
});

/**
 * Brute force: the nearest representable value over every finite pattern of the format, ties to
 * the even pattern; one more value past the largest finite (2^128 / 65536, encoded as inf) makes
 * overflow fall out of the same rule.
 */
function bruteForce(table: (h: number) => number, infBits: number, beyondMax: number): (x: number) => number {
  const vals: number[] = [];
  const bits: number[] = [];
  for (let h = 0; h < 0x8000; h++) {
    const v = table(h);
    if (Number.isFinite(v)) {
      vals.push(v);
      bits.push(h);
    }
  }
  vals.push(beyondMax);
  bits.push(infBits);
  return (x: number) => {
    const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
    const a = Math.abs(x);
    if (a === Infinity) return sign | infBits;
    let best = 0;
    let bestD = Infinity;
    for (let k = 0; k < vals.length; k++) {
      const d = Math.abs(vals[k] - a);
      if (d < bestD || (d === bestD && (bits[k] & 1) === 0)) {
        best = k;
        bestD = d;
      }
    }
    return sign | bits[best];
  };
}

describe('f32 -> 16-bit rounding vs brute force', () => {
  const nearestBf16 = bruteForce(refBf16, 0x7f80, 2 ** 128);
  const nearestF16 = bruteForce(refF16, 0x7c00, 65536);
  // Random f32s: uniform bit patterns plus values in and just around each format's range.
  const samples: number[] = [];
  let s = 12345;
  const rnd = () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s / 2 ** 32;
  };
  const u32 = new Uint32Array(1);
  const asF = new Float32Array(u32.buffer);
  for (let i = 0; i < 150; i++) {
    u32[0] = (rnd() * 2 ** 32) >>> 0;
    if (!Number.isNaN(asF[0])) samples.push(asF[0]);
  }
  for (let i = 0; i < 150; i++) samples.push(f32((rnd() - 0.5) * 2 * 70000));
  for (let i = 0; i < 100; i++) samples.push(f32((rnd() - 0.5) * 2 ** -12));
  for (let i = 0; i < 60; i++) samples.push(f32((rnd() - 0.5) * 2 ** -22));
  // Exact midpoints (ties) and neighbours of both formats, largest finite, overflow edge, smallest subnormals.
  const edges = [
    0,
    -0,
    1,
    -1,
    65504,
    65519.99,
    65520,
    65536,
    -65520,
    2 ** -24,
    2 ** -25,
    f32(2 ** -25 * 1.0001),
    3 * 2 ** -26,
    2 ** -26,
    6.1035156e-5,
    6.097555e-5,
    3.4028235e38,
    -3.4028235e38,
    f32(3.3961776e38),
    f32(3.3895314e38),
    1e-45,
    -1e-45,
    1.1754944e-38,
  ];
  for (let h = 0x3c00; h < 0x3c00 + 20; h++) edges.push((refF16(h) + refF16(h + 1)) / 2, (refBf16(h) + refBf16(h + 1)) / 2);
  for (let h = 1; h < 12; h++) edges.push((refF16(h) + refF16(h + 1)) / 2);
  samples.push(...edges.map(f32));

  it('bf16: round to nearest even, overflow to inf', () => {
    for (const x of samples) {
      const got = f32ToBf16Bits(x);
      const want = nearestBf16(x);
      if (got !== want) throw new Error(`bf16(${x}) = 0x${got.toString(16)}, brute force 0x${want.toString(16)}`);
    }
    const bulk = new Uint16Array(float32ToBytes(Float32Array.from(samples), 'BF16').buffer);
    samples.forEach((x, k) => expect(bulk[k]).toBe(nearestBf16(x)));
  });
  it('f16: round to nearest even, subnormals, overflow to inf', () => {
    for (const x of samples) {
      const got = f32ToF16Bits(x);
      const want = nearestF16(x);
      if (got !== want) throw new Error(`f16(${x}) = 0x${got.toString(16)}, brute force 0x${want.toString(16)}`);
    }
    const bulk = new Uint16Array(float32ToBytes(Float32Array.from(samples), 'F16').buffer);
    samples.forEach((x, k) => expect(bulk[k]).toBe(nearestF16(x)));
  });
  it('NaN stays NaN (sign kept), infinities stay infinite', () => {
    for (const pattern of [0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fffffff]) {
      u32[0] = pattern;
      const x = asF[0];
      const b = f32ToBf16Bits(x);
      expect(Number.isNaN(refBf16(b))).toBe(true);
      expect(b >> 15).toBe(pattern >>> 31);
      const h = f32ToF16Bits(x);
      expect(Number.isNaN(refF16(h))).toBe(true);
      expect(h >> 15).toBe(pattern >>> 31);
    }
    expect(f32ToBf16Bits(Infinity)).toBe(0x7f80);
    expect(f32ToBf16Bits(-Infinity)).toBe(0xff80);
    expect(f32ToF16Bits(Infinity)).toBe(0x7c00);
    expect(f32ToF16Bits(-Infinity)).toBe(0xfc00);
  });
});

describe('integer dtypes convert by value', () => {
  it('I64, I32, I8, U8, BOOL, F64', () => {
    const dv = (n: number) => {
      const b = new Uint8Array(n);
      return { b, v: new DataView(b.buffer) };
    };
    const i64 = dv(16);
    i64.v.setBigInt64(0, -5n, true);
    i64.v.setBigInt64(8, 1234567n, true);
    expect([...bytesToFloat32(i64.b, 'I64')]).toEqual([-5, 1234567]);
    const i32 = dv(8);
    i32.v.setInt32(0, -7, true);
    i32.v.setInt32(4, 1 << 20, true);
    expect([...bytesToFloat32(i32.b, 'I32')]).toEqual([-7, 1 << 20]);
    expect([...bytesToFloat32(Uint8Array.of(0xff, 1), 'I8')]).toEqual([-1, 1]);
    expect([...bytesToFloat32(Uint8Array.of(0xff, 1), 'U8')]).toEqual([255, 1]);
    expect([...float32ToBytes(Float32Array.of(0, 2, -1), 'BOOL')]).toEqual([0, 1, 1]);
    const f64 = dv(8);
    f64.v.setFloat64(0, 0.1, true);
    expect(bytesToFloat32(f64.b, 'F64')[0]).toBe(f32(0.1));
  });
});
