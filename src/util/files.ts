/**
 * Reading the small files flm-grow parses (config.json, index, manifest, plans, pipelines,
 * calibration ids, verify reports): one place that opens only regular files and caps their size.
 * A FIFO named like a config, or a symlink to /dev/zero, would otherwise block or fill memory
 * forever; an absurdly large JSON file would take the heap with it. Tensor data never goes
 * through here (safetensors files are read by positioned reads).
 */
import { constants as bufferConstants } from 'node:buffer';
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { FlmGrowError } from './errors.ts';

/** JSON inputs (config, index, manifest, plan, pipeline, tokenizer, reports). The largest real
 *  ones are index.json files (~100 KB) and tokenizer.json (~10 MB); 256 MiB is far beyond both. */
export const MAX_JSON_BYTES = 256 * 1024 * 1024;
/** Text inputs held in memory whole as one string (calibration token files, metrics logs, text
 *  to tokenize): at most 1 GiB and never beyond V8's longest string, which a UTF-8 file of this
 *  many bytes cannot exceed (one UTF-16 unit per byte at most); beyond it decoding would throw. */
export const MAX_TEXT_BYTES = Math.min(1024 * 1024 * 1024, bufferConstants.MAX_STRING_LENGTH);
/** Binary inputs held in memory whole (token files the trainer samples windows from): the
 *  largest Buffer. */
export const MAX_DATA_BYTES = bufferConstants.MAX_LENGTH;
/** One read() call's bytes: node refuses a single read above 2 GiB. */
const READ_CHUNK = 1 << 30;

export class FileReadError extends FlmGrowError {
  readonly path: string;
  /** The message without the path, for callers whose own error already names the file. */
  readonly reason: string;
  constructor(code: string, path: string, reason: string) {
    super(code, `${path}: ${reason}`);
    this.path = path;
    this.reason = reason;
  }
}

/** The reason of a read failure without the path (callers' errors name the file themselves). */
export function readFailure(e: unknown): string {
  return e instanceof FileReadError ? e.reason : (e as Error).message;
}

/**
 * "cannot read <what>: <why>", the prefix given once: a failed open already says "cannot read
 * training data: no such file", which the caller's own prefix must not repeat.
 */
export function cannotRead(what: string, e: unknown): string {
  const r = readFailure(e);
  return r.startsWith('cannot read ') ? r : `cannot read ${what}: ${r}`;
}

/**
 * A caller's error code for a failed read: the file's kind or size when that was the problem
 * (NotARegularFile, FileTooLarge), else the caller's own code for "could not read it".
 */
export function readFailureCode(e: unknown, fallback: string): string {
  return e instanceof FileReadError && (e.code === 'NotARegularFile' || e.code === 'FileTooLarge') ? e.code : fallback;
}

/**
 * The bytes of a regular file of at most `maxBytes`. Opened with O_NONBLOCK so that opening a
 * FIFO returns at once (instead of waiting for a writer), then fstat'ed: anything but a regular
 * file (FIFO, device, directory, socket) is refused before a single byte is read. `probeOnly`:
 * check without reading (for files a later step streams).
 */
export function readRegularFile(path: string, opts: { maxBytes: number; what?: string; probeOnly?: boolean }): Buffer {
  const what = opts.what ?? 'file';
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    throw new FileReadError(code, path, `cannot read ${what}: ${code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) {
      const kind = stats.isDirectory()
        ? 'a directory'
        : stats.isFIFO()
          ? 'a FIFO (named pipe)'
          : stats.isCharacterDevice() || stats.isBlockDevice()
            ? 'a device'
            : stats.isSocket()
              ? 'a socket'
              : 'not a regular file';
      throw new FileReadError('NotARegularFile', path, `${what} is ${kind}; only regular files are read`);
    }
    if (stats.size > opts.maxBytes) {
      throw new FileReadError(
        'FileTooLarge',
        path,
        `${what} is ${stats.size} bytes, more than the limit of ${opts.maxBytes} bytes`,
      );
    }
    if (opts.probeOnly === true) return Buffer.alloc(0); // only "is it a readable regular file"
    const buf = Buffer.alloc(stats.size);
    let off = 0;
    while (off < stats.size) {
      const n = readSync(fd, buf, off, Math.min(READ_CHUNK, stats.size - off), off);
      if (n === 0) break;
      off += n;
    }
    return off === stats.size ? buf : buf.subarray(0, off);
  } finally {
    closeSync(fd);
  }
}

export function readTextFile(path: string, opts: { maxBytes?: number; what?: string } = {}): string {
  return readRegularFile(path, { maxBytes: opts.maxBytes ?? MAX_TEXT_BYTES, what: opts.what }).toString('utf8');
}

/**
 * Parsed JSON of a regular file. Errors (unreadable, not a regular file, too large, invalid
 * JSON) are FileReadErrors naming the path; callers that want their own error class rewrap.
 */
export function readJsonFile(path: string, opts: { maxBytes?: number; what?: string } = {}): unknown {
  const text = readRegularFile(path, { maxBytes: opts.maxBytes ?? MAX_JSON_BYTES, what: opts.what }).toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new FileReadError('InvalidJson', path, `invalid JSON: ${(e as Error).message}`);
  }
}
