/**
 * Executes one TensorOp (layout.ts) block by block: reads the source rows a block of output rows
 * needs, copies old entries as raw bytes (bit-exact; converted only if the output dtype differs),
 * fills new ones (init.ts), and hands each finished block to `emit`. Memory: one output block
 * plus the matching source rows, whatever the tensor size.
 */
import { bytesToFloat32, dtypeSize, float32ToBytes, type DType } from '../util/dtype.ts';
import { FlmGrowError } from '../errors.ts';
import { runsOf, type Run } from './axis-map.ts';
import { constBits, fillRun, normalTable, rowState, tensorSeed, type Bits } from '../util/init.ts';
import type { TensorOp } from './layout.ts';
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
  // Source rows of each block: row maps are monotone, so one contiguous read covers a block.
  const blocks: { r0: number; r1: number; sFirst: number; sLast: number }[] = [];
  for (let r0 = 0; r0 < nRows; r0 += rowsPerBlock) {
    const r1 = Math.min(nRows, r0 + rowsPerBlock);
    let sFirst = -1;
    let sLast = -1;
    if (src !== undefined && op.source !== undefined && !op.zeroAll) {
      for (let i = r0; i < r1; i++) {
        const s = op.rows[i];
        if (s >= 0) {
          if (sFirst < 0) sFirst = s;
          sLast = s;
        }
      }
    }
    blocks.push({ r0, r1, sFirst, sLast });
  }
  const read = (k: number): Promise<Uint8Array> | undefined => {
    const b = blocks[k];
    if (b === undefined || b.sFirst < 0 || src === undefined) return undefined;
    const p = src.readRows(b.sFirst, b.sLast + 1, k % 2); // ping-pong: block k+1 is read while k is built
    p.catch(() => undefined); // awaited below; avoids an unhandled rejection meanwhile
    return p;
  };
  let nextRead = read(0);
  for (let k = 0; k < blocks.length; k++) {
    const { r0, r1, sFirst, sLast } = blocks[k];
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
    // Old entries are copied as bytes by Buffer.copy (a memmove): view.set(srcView.subarray(..))
    // allocated a typed array per row and run, which cost more than the copy itself on narrow rows.
    let srcBytes: Buffer | undefined;
    let srcRowElems = 0;
    if (pending !== undefined && src !== undefined) {
      let raw = await pending;
      if (src.dtype !== outDtype) raw = float32ToBytes(bytesToFloat32(raw, src.dtype), outDtype);
      srcBytes = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
      srcRowElems = raw.byteLength / es / (sLast + 1 - sFirst);
      if (srcRowElems < srcCols)
        throw new FlmGrowError('ShapeMismatch', `${op.source}: rows have ${srcRowElems} entries, the growth needs ${srcCols}`);
    }
    for (let i = r0; i < r1; i++) {
      const s = srcBytes === undefined ? -1 : op.rows[i];
      const base = (i - r0) * nCols;
      let st = 0;
      let seeded = false;
      for (const run of colRuns) {
        if (s >= 0 && run.src >= 0) {
          const from = ((s - sFirst) * srcRowElems + run.src) * es;
          (srcBytes as Buffer).copy(block, (base + run.out) * es, from, from + run.len * es);
          continue;
        }
        const fill = s < 0 ? (run.src < 0 ? op.fillNewBoth : op.fillNewRow) : op.fillNewCol;
        if (fill === 'random' && !seeded) {
          st = rowState(tseed, i);
          seeded = true;
        }
        st = fillRun(view, base + run.out, run.len, fill, table, one, st);
      }
    }
    if (op.scale !== 1) {
      const v = bytesToFloat32(block, outDtype);
      for (let e = 0; e < v.length; e++) v[e] *= op.scale;
      block.set(float32ToBytes(v, outDtype));
    }
    await emit(block);
  }
}
