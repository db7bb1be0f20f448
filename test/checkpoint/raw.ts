/**
 * Test helpers that build and parse safetensors bytes by hand (DataView + JSON), so the tests
 * do not trust the reader/writer they check.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function tempDir(tag: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `flm-${tag}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** u64 LE length + header bytes + data; `length` overrides the declared header length. */
export function rawFile(header: string | Uint8Array, data: Uint8Array = new Uint8Array(0), length?: bigint): Uint8Array {
  const h = typeof header === 'string' ? new TextEncoder().encode(header) : header;
  const out = new Uint8Array(8 + h.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, length ?? BigInt(h.byteLength), true);
  out.set(h, 8);
  out.set(data, 8 + h.byteLength);
  return out;
}

export interface RawTensor {
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

/** Independent minimal reader: no validation beyond what it needs to slice. */
export function parseRaw(file: Uint8Array): { tensors: Map<string, RawTensor>; metadata: unknown; headerLength: number } {
  const dv = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + n))) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const tensors = new Map<string, RawTensor>();
  let metadata: unknown;
  for (const [k, v] of Object.entries(header)) {
    if (k === '__metadata__') {
      metadata = v;
      continue;
    }
    tensors.set(k, {
      dtype: v.dtype,
      shape: v.shape,
      bytes: file.subarray(8 + n + v.data_offsets[0], 8 + n + v.data_offsets[1]),
    });
  }
  return { tensors, metadata, headerLength: n };
}

/** Deterministic pseudo-random bytes (xorshift32). */
export function randomBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = s & 0xff;
  }
  return out;
}
