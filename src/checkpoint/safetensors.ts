/**
 * safetensors, to the format's spec: u64 LE header length N, N bytes of UTF-8 JSON, then the
 * data buffer. The reader parses only the header and reads tensors (or row ranges) by
 * positioned reads, so a file of any size costs one tensor of memory.
 */
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { SafetensorsError } from '../util/errors.ts';
import { dtypeSize, isSupportedDtype, KNOWN_UNSUPPORTED_DTYPES, type DType } from '../util/dtype.ts';

/** Same cap as the reference implementation. */
export const MAX_HEADER_SIZE = 100_000_000;

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** File the tensor lives in. */
  file: string;
  /** Absolute byte offsets in the file (header included), end exclusive. */
  begin: number;
  end: number;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export interface ParsedHeader {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string> | undefined;
  /** 8 + N: where the data buffer starts. */
  dataStart: number;
}

/**
 * Validate a header exactly as the reference does. `fileSize` is the whole file's length.
 * Pure function of bytes, so it is fuzzed directly.
 */
export function parseHeader(headerBytes: Uint8Array, fileSize: number, file: string): ParsedHeader {
  const n = headerBytes.byteLength;
  const dataStart = 8 + n;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsError('InvalidHeader', file, 'header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError('InvalidHeaderDeserialization', file, `header is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new SafetensorsError('InvalidHeaderDeserialization', file, 'header is not a JSON object');
  }
  const duplicate = findDuplicateKey(text);
  if (duplicate !== undefined)
    throw new SafetensorsError('DuplicateTensor', file, 'tensor listed twice in the header', duplicate);
  let metadata: Record<string, string> | undefined;
  const entries: TensorInfo[] = [];
  for (const [name, v] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) {
        throw new SafetensorsError('InvalidHeaderDeserialization', file, '__metadata__ must be an object of strings');
      }
      for (const [k, mv] of Object.entries(v)) {
        if (typeof mv !== 'string')
          throw new SafetensorsError('InvalidHeaderDeserialization', file, `__metadata__.${k} must be a string`);
      }
      metadata = v as Record<string, string>;
      continue;
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      throw new SafetensorsError(
        'InvalidHeaderDeserialization',
        file,
        'entry must be an object {dtype, shape, data_offsets}',
        name,
      );
    }
    const o = v as Record<string, unknown>;
    const { dtype, shape, data_offsets: offs } = o;
    if (typeof dtype !== 'string')
      throw new SafetensorsError('InvalidHeaderDeserialization', file, 'dtype must be a string', name);
    if (!isSupportedDtype(dtype)) {
      const known = (KNOWN_UNSUPPORTED_DTYPES as readonly string[]).includes(dtype);
      throw new SafetensorsError(
        known ? 'UnsupportedDtype' : 'InvalidHeaderDeserialization',
        file,
        known ? `dtype ${dtype} is not supported by flm-grow` : `unknown dtype ${JSON.stringify(dtype)}`,
        name,
      );
    }
    if (!Array.isArray(shape) || shape.some((d) => typeof d !== 'number' || !Number.isInteger(d) || d < 0)) {
      throw new SafetensorsError(
        'InvalidHeaderDeserialization',
        file,
        `shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`,
        name,
      );
    }
    // JSON numbers past 2^53 lose precision when parsed: a dimension or offset that large cannot
    // be represented exactly, so it is an overflow, not a silently different shape.
    if ((shape as number[]).some((d) => !Number.isSafeInteger(d))) {
      throw new SafetensorsError('ValidationOverflow', file, `shape ${JSON.stringify(shape)} has a dimension beyond 2^53`, name);
    }
    if (Array.isArray(offs) && offs.some((d) => typeof d === 'number' && Number.isInteger(d) && !Number.isSafeInteger(d))) {
      throw new SafetensorsError('ValidationOverflow', file, `data_offsets ${JSON.stringify(offs)} beyond 2^53`, name);
    }
    if (!Array.isArray(offs) || offs.length !== 2 || offs.some((d) => typeof d !== 'number' || !Number.isInteger(d) || d < 0)) {
      throw new SafetensorsError(
        'InvalidHeaderDeserialization',
        file,
        `data_offsets must be [begin, end] non-negative integers, got ${JSON.stringify(offs)}`,
        name,
      );
    }
    let elems = 1;
    for (const d of shape as number[]) {
      elems *= d;
      if (!Number.isSafeInteger(elems))
        throw new SafetensorsError('ValidationOverflow', file, `shape ${JSON.stringify(shape)} overflows`, name);
    }
    const bytes = elems * dtypeSize(dtype);
    if (!Number.isSafeInteger(bytes) || !Number.isSafeInteger(offs[1] as number)) {
      throw new SafetensorsError('ValidationOverflow', file, 'size overflows', name);
    }
    const [b, e] = offs as number[];
    if (e < b) throw new SafetensorsError('InvalidOffset', file, `data_offsets end ${e} < begin ${b}`, name);
    if (e - b !== bytes) {
      throw new SafetensorsError(
        'TensorInvalidInfo',
        file,
        `data_offsets span ${e - b} bytes but shape ${JSON.stringify(shape)} × ${dtype} needs ${bytes}`,
        name,
      );
    }
    entries.push({ name, dtype, shape: shape as number[], file, begin: dataStart + b, end: dataStart + e });
  }
  // The buffer must be covered exactly: sorted by offset, each begins where the previous ended.
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = dataStart;
  for (const t of sorted) {
    if (t.begin !== pos) {
      throw new SafetensorsError(
        'InvalidOffset',
        file,
        t.begin < pos
          ? `overlaps the previous tensor (begins at ${t.begin - dataStart}, previous ends at ${pos - dataStart})`
          : `leaves a hole in the buffer (begins at ${t.begin - dataStart}, expected ${pos - dataStart})`,
        t.name,
      );
    }
    pos = t.end;
  }
  if (pos !== fileSize) {
    throw new SafetensorsError(
      'MetadataIncompleteBuffer',
      file,
      pos > fileSize
        ? `tensors need ${pos - dataStart} buffer bytes but the file has ${fileSize - dataStart}`
        : `${fileSize - pos} trailing bytes after the last tensor`,
    );
  }
  const tensors = new Map<string, TensorInfo>();
  for (const t of entries) tensors.set(t.name, t);
  return { tensors, metadata, dataStart };
}

/** JSON.parse keeps the last of duplicate keys silently; the format forbids duplicates. */
function findDuplicateKey(text: string): string | undefined {
  // Only top-level keys matter; walk the JSON at depth 1 collecting string keys.
  const seen = new Set<string>();
  let depth = 0;
  let i = 0;
  let expectKey = false;
  while (i < text.length) {
    const ch = text[i];
    if (ch === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
      i = j + 1;
      continue;
    }
    if (ch === '{' || ch === '[') {
      depth++;
      if (depth === 1 && ch === '{') expectKey = true;
    } else if (ch === '}' || ch === ']') depth--;
    else if (ch === ',' && depth === 1) expectKey = true;
    i++;
  }
  return undefined;
}

/** An open safetensors file: header parsed, data read on demand. Opened read-only. */
export class SafetensorsFile {
  readonly path: string;
  readonly tensors: Map<string, TensorInfo>;
  readonly metadata: Record<string, string> | undefined;
  readonly size: number;
  private fh: FileHandle;

  private constructor(path: string, fh: FileHandle, h: ParsedHeader, size: number) {
    this.path = path;
    this.fh = fh;
    this.tensors = h.tensors;
    this.metadata = h.metadata;
    this.size = size;
  }

  static async open(path: string): Promise<SafetensorsFile> {
    let fh: FileHandle;
    try {
      // O_NONBLOCK: opening a FIFO named like a shard returns at once instead of waiting for a writer
      fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
    } catch (e) {
      throw new SafetensorsError('HeaderTooSmall', path, `cannot open: ${(e as Error).message}`);
    }
    try {
      const st = await fh.stat();
      if (!st.isFile())
        throw new SafetensorsError(
          'HeaderTooSmall',
          path,
          `is ${st.isDirectory() ? 'a directory' : st.isFIFO() ? 'a FIFO (named pipe)' : 'not a regular file'}; a safetensors file must be a regular file`,
        );
      const size = st.size;
      if (size < 8)
        throw new SafetensorsError('HeaderTooSmall', path, `file is ${size} bytes, shorter than the 8-byte header length`);
      const lenBuf = Buffer.alloc(8);
      await readExactly(fh, lenBuf, 0, path);
      const n = lenBuf.readBigUInt64LE(0);
      if (n > BigInt(MAX_HEADER_SIZE))
        throw new SafetensorsError('HeaderTooLarge', path, `header length ${n} exceeds ${MAX_HEADER_SIZE}`);
      const hn = Number(n);
      if (8 + hn > size)
        throw new SafetensorsError('InvalidHeaderLength', path, `header length ${hn} runs past the end of the ${size}-byte file`);
      const hb = Buffer.alloc(hn);
      await readExactly(fh, hb, 8, path);
      const h = parseHeader(hb, size, path);
      return new SafetensorsFile(path, fh, h, size);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (t === undefined) throw new SafetensorsError('TensorNotFound', this.path, 'no such tensor', name);
    return t;
  }

  /**
   * Whole tensor's raw bytes (little-endian, C order). With `into` (at least the tensor's size)
   * the bytes land there and a view of it is returned: a reused buffer skips the page faults of
   * fresh memory, which otherwise dominate reading from the page cache.
   */
  async read(name: string, into?: Uint8Array): Promise<Uint8Array> {
    const t = this.info(name);
    return this.readRange(t, t.begin, t.end, into);
  }

  /** Rows [start, end) of the first axis (for a 1-D tensor, elements); `into` as for read. */
  async readRows(name: string, start: number, end: number, into?: Uint8Array): Promise<Uint8Array> {
    const t = this.info(name);
    const rows = t.shape.length === 0 ? 1 : t.shape[0];
    if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && start <= end && end <= rows)) {
      throw new SafetensorsError('InvalidOffset', this.path, `row range [${start}, ${end}) outside [0, ${rows})`, name);
    }
    const rowBytes = rows === 0 ? 0 : (t.end - t.begin) / rows;
    return this.readRange(t, t.begin + start * rowBytes, t.begin + end * rowBytes, into);
  }

  private async readRange(t: TensorInfo, from: number, to: number, into?: Uint8Array): Promise<Uint8Array> {
    const n = to - from;
    let buf: Uint8Array;
    if (into !== undefined) {
      if (into.byteLength < n)
        throw new SafetensorsError(
          'InvalidOffset',
          this.path,
          `target buffer of ${into.byteLength} bytes is smaller than the ${n} to read`,
          t.name,
        );
      buf = into.subarray(0, n);
    } else {
      // Every byte is overwritten by the read (or we throw), so skip zero-filling; a plain
      // Uint8Array (not a Buffer) keeps slice() copying.
      buf = new Uint8Array(Buffer.allocUnsafeSlow(n).buffer, 0, n);
    }
    await readExactly(this.fh, buf, from, this.path, t.name);
    return buf;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** Kept below 2 GiB: one read() call returns at most about that much on Linux. */
const MAX_READ = 1 << 30;

async function readExactly(fh: FileHandle, buf: Uint8Array, position: number, file: string, tensor?: string): Promise<void> {
  // One sequential read per tensor: splitting into concurrent pieces was measured slower
  // (bench/read.ts, page cache and cold), the pieces contend for page faults and the disk.
  let done = 0;
  while (done < buf.byteLength) {
    const len = Math.min(MAX_READ, buf.byteLength - done);
    const { bytesRead } = await fh.read(buf, done, len, position + done);
    if (bytesRead === 0)
      throw new SafetensorsError('MetadataIncompleteBuffer', file, `unexpected end of file at byte ${position + done}`, tensor);
    done += bytesRead;
  }
}
