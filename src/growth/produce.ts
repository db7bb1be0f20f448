/**
 * Executes one TensorOp (layout.ts) block by block: reads the source rows a block of output rows
 * needs, copies old entries as raw bytes (bit-exact; converted only if the output dtype differs),
 * fills new ones (init.ts), and hands each finished block to `emit`. Memory: one output block
 * plus the matching source rows, whatever the tensor size.
 */
import { bytesToFloat32, dtypeSize, float32ToBytes, type DType } from '../util/dtype.ts';
import { FlmGrowError } from '../util/errors.ts';
import { runsOf, type Run } from './axis-map.ts';
import { constBits, fillRun, normalFloats, normalTable, rowState, tensorSeed, type Bits } from '../util/init.ts';
import type { NoiseOp, TensorOp } from './layout.ts';
import { sharedBlock } from './hash-worker.ts';
import type { SourceRows } from './source-reader.ts';

export type { SourceRows };

export const DEFAULT_BLOCK_BYTES = 16 << 20;

/**
 * `allocBlock` makes each output block; every byte of it is written here, so it may hold stale
 * data (a reused pool buffer). The default is fresh shared memory, readable by a hashing thread.
 */
export async function produceTensor(
  op: TensorOp,
  src: SourceRows | undefined,
  outDtype: DType,
  seed: number,
  emit: (block: Uint8Array) => Promise<void>,
  blockBytes = DEFAULT_BLOCK_BYTES,
  allocBlock: (n: number) => Uint8Array | Promise<Uint8Array> = sharedBlock,
): Promise<void> {
  const es = dtypeSize(outDtype);
  if (es !== 2 && es !== 4) throw new FlmGrowError('UnsupportedDtype', `${op.name}: cannot grow into ${outDtype}`);
  const nRows = op.rows.length;
  const nCols = op.cols.length;
  const rowBytes = nCols * es;
  const colRuns: Run[] = runsOf(op.cols);
  const table = normalTable(op.std, outDtype);
  const one = constBits(1, outDtype);
  const tseed = tensorSeed(seed, op.name);
  const srcCols = src === undefined ? 0 : Math.max(0, ...Array.from(op.cols)) + 1;
  const rowsPerBlock = Math.max(1, Math.floor(blockBytes / Math.max(1, rowBytes)));
  // Source rows of each block, as spans of consecutive source rows: one span (one contiguous read)
  // for the maps that keep old rows in order; a clone map (init.new clone) points elsewhere and
  // starts a new span, read separately.
  // Old entries are read by the kernel straight into their places in the block where the bytes
  // need no conversion and each source row lands whole, once and in order (a vectored read per
  // span); otherwise the rows are read into a buffer (the next block's while this one is built)
  // and copied from there.
  const copied = colRuns.filter((r) => r.src >= 0);
  const scatterable =
    src?.readRowsInto !== undefined && src.dtype === outDtype && copiesWholeRowInOrder(copied, src.rowBytes / es);
  const blocks: { r0: number; r1: number; spans: Span[]; scatter: boolean }[] = [];
  for (let r0 = 0; r0 < nRows; r0 += rowsPerBlock) {
    const r1 = Math.min(nRows, r0 + rowsPerBlock);
    const spans = src !== undefined && op.source !== undefined && !op.zeroAll ? spansOf(op.rows, r0, r1) : [];
    // a span that repeats a source row (a clone map) cannot be one contiguous read
    const scatter = scatterable && spans.length > 0 && spans.every((sp) => sp.rows.length === sp.last + 1 - sp.first);
    blocks.push({ r0, r1, spans, scatter });
  }
  const read = (k: number): Promise<Uint8Array[]> | undefined => {
    const b = blocks[k];
    if (b === undefined || b.scatter || b.spans.length === 0 || src === undefined) return undefined;
    // ping-pong for the first span: block k+1 is read while k is built
    const p = Promise.all(b.spans.map((sp, n) => src.readRows(sp.first, sp.last + 1, n === 0 ? k % 2 : undefined)));
    p.catch(() => undefined); // awaited below; avoids an unhandled rejection meanwhile
    return p;
  };
  // fill "mean" (new vocabulary rows): the mean of every source row, one pass before the blocks
  const mean =
    op.fillNewRow === 'mean' && src !== undefined && op.source !== undefined
      ? await meanRowBits(op, src, outDtype, blockBytes)
      : undefined;
  let nextRead = read(0);
  for (let k = 0; k < blocks.length; k++) {
    const { r0, r1, spans, scatter } = blocks[k];
    const pending = nextRead;
    nextRead = read(k + 1); // prefetch the next block's rows while this one is built
    const block = await allocBlock((r1 - r0) * rowBytes);
    const view: Bits =
      es === 2
        ? new Uint16Array(block.buffer, block.byteOffset, block.byteLength / 2)
        : new Uint32Array(block.buffer, block.byteOffset, block.byteLength / 4);
    if (op.zeroAll) {
      block.fill(0);
      await emit(block);
      continue;
    }
    if (scatter && src?.readRowsInto !== undefined) {
      // the reads run on libuv's threads while this thread fills the new entries (other bytes)
      const readInto = src.readRowsInto;
      const reads = spans.map((sp) => readInto(sp.first, sp.last + 1, scatterParts(block, sp, r0, rowBytes, copied, es)));
      reads.forEach((p) => p.catch(() => undefined)); // awaited below
      for (let i = r0; i < r1; i++) fillNew(view, i, (i - r0) * nCols, op.rows[i] >= 0);
      await Promise.all(reads);
      await finish(block, r0, r1);
      continue;
    }
    // Old entries are copied as bytes by Buffer.copy (a memmove): view.set(srcView.subarray(..))
    // allocated a typed array per row and run, which cost more than the copy itself on narrow rows.
    let srcBytes: Buffer | undefined;
    let srcRowElems = 0;
    /** Row of the block's source view holding output row i's source row. */
    const srcRow = new Int32Array(r1 - r0).fill(-1);
    if (pending !== undefined && src !== undefined) {
      const parts = await pending;
      let raw = parts.length === 1 ? parts[0] : Buffer.concat(parts);
      if (src.dtype !== outDtype) raw = float32ToBytes(bytesToFloat32(raw, src.dtype), outDtype);
      srcBytes = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
      const nSrcRows = spans.reduce((a, sp) => a + sp.last + 1 - sp.first, 0);
      srcRowElems = raw.byteLength / es / nSrcRows;
      if (srcRowElems < srcCols)
        throw new FlmGrowError('ShapeMismatch', `${op.source}: rows have ${srcRowElems} entries, the growth needs ${srcCols}`);
      let at = 0;
      for (const sp of spans) {
        for (const i of sp.rows) srcRow[i - r0] = at + op.rows[i] - sp.first;
        at += sp.last + 1 - sp.first;
      }
    }
    for (let i = r0; i < r1; i++) {
      const s = srcBytes === undefined ? -1 : op.rows[i];
      const base = (i - r0) * nCols;
      if (s >= 0)
        for (const run of copied) {
          const from = (srcRow[i - r0] * srcRowElems + run.src) * es;
          (srcBytes as Buffer).copy(block, (base + run.out) * es, from, from + run.len * es);
        }
      fillNew(view, i, base, s >= 0);
    }
    await finish(block, r0, r1);
  }

  /** The entries of output row i that are not copied: new columns of an old row, or the whole of a new row. */
  function fillNew(view: Bits, i: number, base: number, oldRow: boolean): void {
    let stream = 0;
    let seeded = false;
    for (const run of colRuns) {
      if (oldRow && run.src >= 0) continue;
      const fill = oldRow ? op.fillNewCol : run.src < 0 ? op.fillNewBoth : op.fillNewRow;
      if (fill === 'mean') {
        if (mean === undefined) throw new FlmGrowError('ShapeMismatch', `${op.name}: a mean row needs the source tensor`);
        view.set(mean.subarray(run.src, run.src + run.len), base + run.out);
        continue;
      }
      if (fill === 'random' && !seeded) {
        stream = rowState(tseed, i);
        seeded = true;
      }
      stream = fillRun(view, base + run.out, run.len, fill, table, one, stream);
    }
  }

  /** The clone split, noise and whole-tensor scale (in f32) once every entry is placed; then out. */
  async function finish(block: Uint8Array, r0: number, r1: number): Promise<void> {
    if (op.scale !== 1 || op.split !== undefined || op.noise !== undefined) {
      const v = bytesToFloat32(block, outDtype);
      for (let i = r0; i < r1; i++) adjustRow(v.subarray((i - r0) * nCols, (i - r0 + 1) * nCols), i, op, tseed);
      block.set(float32ToBytes(v, outDtype));
    }
    await emit(block);
  }
}

/**
 * Whether grow reads `op`'s old entries straight into the output blocks (no source-row buffers),
 * as produceTensor decides from the file's row length; here from the maps alone (a growth copies
 * every source column), for the peak-memory estimate (plan-report.ts).
 */
export function readsInPlace(op: TensorOp, srcDtype: DType, outDtype: DType): boolean {
  if (op.source === undefined || op.zeroAll || srcDtype !== outDtype) return false;
  const seen = new Set<number>();
  for (const r of op.rows) {
    if (r < 0) continue;
    if (seen.has(r)) return false; // a clone map repeats source rows: read into a buffer and copied
    seen.add(r);
  }
  const srcCols = Math.max(0, ...Array.from(op.cols)) + 1;
  return copiesWholeRowInOrder(
    runsOf(op.cols).filter((r) => r.src >= 0),
    srcCols,
  );
}

/**
 * True when the copied column runs take every entry of a source row of `srcRowElems` entries
 * exactly once and in order: then a run of consecutive source rows is one contiguous file range
 * that a vectored read can scatter into the output rows.
 */
function copiesWholeRowInOrder(copied: readonly Run[], srcRowElems: number): boolean {
  let next = 0;
  for (const r of [...copied].sort((a, b) => a.src - b.src)) {
    if (r.src !== next) return false;
    next += r.len;
  }
  return copied.length > 0 && next === srcRowElems;
}

/**
 * The block's destinations of a span's source rows, in file order: for each source row (a span
 * of a scatter block maps consecutive output rows to consecutive source rows, each once), its
 * copied runs sorted by source column.
 */
function scatterParts(
  block: Uint8Array,
  sp: Span,
  r0: number,
  rowBytes: number,
  copied: readonly Run[],
  es: number,
): Uint8Array[] {
  const bySrc = [...copied].sort((a, b) => a.src - b.src);
  const parts: Uint8Array[] = [];
  for (const i of sp.rows) {
    const base = (i - r0) * rowBytes;
    for (const r of bySrc) parts.push(block.subarray(base + r.out * es, base + (r.out + r.len) * es));
  }
  return parts;
}

interface Span {
  first: number;
  last: number;
  /** Output rows whose source rows lie in [first, last]. */
  rows: number[];
}

/**
 * Output rows r0..r1 grouped into spans of consecutive source rows (a row may repeat; new rows
 * belong to none). A jump starts a new span: a clone map's scattered sources are read row by
 * row, never as the whole range between them.
 */
function spansOf(rows: Int32Array, r0: number, r1: number): Span[] {
  const spans: Span[] = [];
  let cur: Span | undefined;
  for (let i = r0; i < r1; i++) {
    const s = rows[i];
    if (s < 0) continue;
    if (cur === undefined || (s !== cur.last && s !== cur.last + 1)) {
      cur = { first: s, last: s, rows: [] };
      spans.push(cur);
    }
    cur.last = s;
    cur.rows.push(i);
  }
  return spans;
}

/** Noise streams are their own (tensor name + "#noise"), so a clone without noise has the same bytes. */
const NOISE_SUFFIX = '#noise';

/**
 * One output row in f32 after its entries were placed: the row's std as copied (the noise scale),
 * then the clone split (1/copies per column), the noise (layout.ts NoiseOp), the whole-tensor scale.
 */
function adjustRow(v: Float32Array, i: number, op: TensorOp, tseed: number): void {
  const noise: NoiseOp | undefined = op.noise;
  const sigma = noise === undefined ? 0 : noise.rel * rowStd(v);
  if (op.split !== undefined) for (let j = 0; j < v.length; j++) v[j] *= op.split[j];
  if (noise !== undefined && sigma > 0) {
    const z = normalFloats(tensorSeed(tseed, NOISE_SUFFIX), i, v.length);
    const o = noise.origin;
    const freeRow = noise.freeRows !== undefined && noise.freeRows[i] === 1;
    for (let j = 0; j < v.length; j++) {
      if (o !== undefined && o[j] >= 0 && o[j] !== j) {
        const d = sigma * z[j];
        v[j] += d;
        v[o[j]] -= d;
      }
      if (freeRow || (noise.freeCols !== undefined && noise.freeCols[j] === 1)) v[j] += sigma * z[j];
    }
  }
  if (op.scale !== 1) for (let j = 0; j < v.length; j++) v[j] *= op.scale;
}

function rowStd(v: Float32Array): number {
  let m = 0;
  for (const x of v) m += x;
  m /= v.length;
  let q = 0;
  for (const x of v) q += (x - m) * (x - m);
  return Math.sqrt(q / v.length);
}

/**
 * The mean of all rows of op's source tensor (accumulated in f64, read in blocks), as the output
 * dtype's bits: what a new vocabulary row copies in its old columns (`vocab.new: "tokens"`).
 */
async function meanRowBits(op: TensorOp, src: SourceRows, outDtype: DType, blockBytes: number): Promise<Bits> {
  const nSrc = Math.max(...Array.from(op.rows)) + 1;
  const first = bytesToFloat32(await src.readRows(0, 1), src.dtype);
  const cols = first.length;
  const sum = Float64Array.from(first);
  const step = Math.max(1, Math.floor(blockBytes / (4 * cols)));
  for (let a = 1; a < nSrc; a += step) {
    const b = Math.min(nSrc, a + step);
    const rows = bytesToFloat32(await src.readRows(a, b), src.dtype);
    for (let r = 0; r < b - a; r++) for (let j = 0; j < cols; j++) sum[j] += rows[r * cols + j];
  }
  const m = Float32Array.from(sum, (x) => x / nSrc);
  const bytes = float32ToBytes(m, outDtype);
  return dtypeSize(outDtype) === 2
    ? new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2)
    : new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}
