/**
 * safetensors dtypes and fast conversions between their raw little-endian bytes and float32.
 * Growth copies slices as raw bytes (bit-exact); only compute converts to float32.
 */
import { SafetensorsError } from './errors.ts';

export const SUPPORTED_DTYPES = ['BF16', 'F16', 'F32', 'F64', 'I64', 'I32', 'U8', 'I8', 'BOOL'] as const;
export type DType = (typeof SUPPORTED_DTYPES)[number];

/** Dtypes the format defines that we recognise but cannot convert. */
export const KNOWN_UNSUPPORTED_DTYPES = [
  'F8_E4M3',
  'F8_E5M2',
  'F8_E8M0',
  'F4',
  'F6_E2M3',
  'F6_E3M2',
  'I16',
  'U16',
  'U32',
  'U64',
  'C64',
] as const;

const SIZES: Record<DType, number> = { BF16: 2, F16: 2, F32: 4, F64: 8, I64: 8, I32: 4, U8: 1, I8: 1, BOOL: 1 };

export function isSupportedDtype(d: string): d is DType {
  return (SUPPORTED_DTYPES as readonly string[]).includes(d);
}

export function dtypeSize(d: DType): number {
  return SIZES[d];
}

export function isFloatDtype(d: DType): boolean {
  return d === 'BF16' || d === 'F16' || d === 'F32' || d === 'F64';
}

/** CLI spelling (bf16, float16, ...) to a safetensors dtype. */
export function parseDtypeName(s: string): DType {
  const m: Record<string, DType> = {
    bf16: 'BF16',
    bfloat16: 'BF16',
    f16: 'F16',
    fp16: 'F16',
    float16: 'F16',
    f32: 'F32',
    fp32: 'F32',
    float32: 'F32',
  };
  const d = m[s.toLowerCase()];
  if (d === undefined)
    throw new SafetensorsError('UnsupportedDtype', '<argument>', `unknown dtype "${s}" (use bf16, f16 or f32)`);
  return d;
}

/** HF config "torch_dtype"/"dtype" spelling. */
export function dtypeToTorchName(d: DType): string {
  return d === 'BF16' ? 'bfloat16' : d === 'F16' ? 'float16' : d === 'F32' ? 'float32' : d.toLowerCase();
}

// ---- 16-bit float conversions ------------------------------------------------------------

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** bf16 bits -> float32 value (exact). */
export function bf16BitsToF32(h: number): number {
  u32buf[0] = (h & 0xffff) << 16;
  return f32buf[0];
}

/** float32 value -> bf16 bits, round to nearest even; NaN stays NaN (quiet). */
export function f32ToBf16Bits(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** f16 bits -> float32 value (exact; subnormals, inf, NaN). */
export function f16BitsToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m === 0 ? s * Infinity : NaN;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** float32 value -> f16 bits, round to nearest even, overflow to inf, subnormals kept. */
export function f32ToF16Bits(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let man = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (man !== 0 ? 0x200 | (man >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal: rounds to zero
    man |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = man & ((1 << shift) - 1);
    let r = man >>> shift;
    if (rest > half || (rest === half && (r & 1) === 1)) r += 1;
    return sign | r;
  }
  let r = (e << 10) | (man >>> 13);
  const rest = man & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (r & 1) === 1)) r += 1; // may carry into exponent: correct (to inf too)
  return sign | r;
}

let f16Table: Float32Array | undefined;
function f16ToF32Table(): Float32Array {
  if (f16Table === undefined) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = f16BitsToF32(i);
  }
  return f16Table;
}

function u16View(bytes: Uint8Array): Uint16Array {
  if (bytes.byteOffset % 2 === 0) return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  return new Uint16Array(bytes.slice().buffer);
}

function typedView<T>(
  bytes: Uint8Array,
  ctor: { new (b: ArrayBufferLike, o: number, l: number): T; BYTES_PER_ELEMENT: number },
): T {
  const n = bytes.byteLength / ctor.BYTES_PER_ELEMENT;
  if (bytes.byteOffset % ctor.BYTES_PER_ELEMENT === 0) return new ctor(bytes.buffer, bytes.byteOffset, n);
  return new ctor(bytes.slice().buffer, 0, n);
}

/** Raw little-endian tensor bytes -> float32 values (a fresh array; integer dtypes converted by value). */
export function bytesToFloat32(bytes: Uint8Array, dtype: DType): Float32Array {
  switch (dtype) {
    case 'F32':
      return typedView(bytes, Float32Array).slice();
    case 'BF16': {
      const src = u16View(bytes);
      const out = new Float32Array(src.length);
      const outU = new Uint32Array(out.buffer);
      for (let i = 0; i < src.length; i++) outU[i] = src[i] << 16;
      return out;
    }
    case 'F16': {
      const src = u16View(bytes);
      const t = f16ToF32Table();
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = t[src[i]];
      return out;
    }
    case 'F64':
      return Float32Array.from(typedView(bytes, Float64Array));
    case 'I64': {
      const v = typedView(bytes, BigInt64Array);
      const out = new Float32Array(v.length);
      for (let i = 0; i < v.length; i++) out[i] = Number(v[i]);
      return out;
    }
    case 'I32':
      return Float32Array.from(typedView(bytes, Int32Array));
    case 'I8':
      return Float32Array.from(typedView(bytes, Int8Array));
    case 'U8':
    case 'BOOL':
      return Float32Array.from(bytes);
  }
}

/** float32 values -> raw little-endian bytes of `dtype` (rounded to nearest even for 16-bit floats). */
export function float32ToBytes(values: Float32Array, dtype: DType): Uint8Array {
  switch (dtype) {
    case 'F32':
      return new Uint8Array(values.slice().buffer);
    case 'BF16': {
      const out = new Uint16Array(values.length);
      const src = new Uint32Array(values.buffer, values.byteOffset, values.length);
      for (let i = 0; i < values.length; i++) {
        const u = src[i];
        out[i] = (u & 0x7fffffff) > 0x7f800000 ? ((u >>> 16) | 0x40) & 0xffff : ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
      }
      return new Uint8Array(out.buffer);
    }
    case 'F16': {
      const out = new Uint16Array(values.length);
      for (let i = 0; i < values.length; i++) out[i] = f32ToF16Bits(values[i]);
      return new Uint8Array(out.buffer);
    }
    case 'F64':
      return new Uint8Array(Float64Array.from(values).buffer);
    case 'I64': {
      const out = new BigInt64Array(values.length);
      for (let i = 0; i < values.length; i++) out[i] = BigInt(Math.round(values[i]));
      return new Uint8Array(out.buffer);
    }
    case 'I32':
      return new Uint8Array(Int32Array.from(values, Math.round).buffer);
    case 'I8':
      return new Uint8Array(Int8Array.from(values, Math.round).buffer);
    case 'U8':
      return Uint8Array.from(values, Math.round);
    case 'BOOL':
      return Uint8Array.from(values, (v) => (v !== 0 ? 1 : 0));
  }
}

/** Round float32 values to what `dtype` can represent (used to mimic a stored precision). */
export function roundToDtype(values: Float32Array, dtype: DType): Float32Array {
  if (dtype === 'F32') return values;
  return bytesToFloat32(float32ToBytes(values, dtype), dtype);
}
