/**
 * `grow`: stream a source checkpoint into a grown one, tensor by tensor and block by block
 * (memory ~ one output block, not the model), atomically (temporary folder, renamed at the end),
 * with config.json, tokenizer files, masks.safetensors (masked mode) and flm-grow-manifest.json
 * (sha256 of every output file, computed while writing so the data is never read back).
 */
import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Checkpoint, CONFIG_FILE, INDEX_FILE } from '../checkpoint/checkpoint.ts';
import { CheckpointWriter, indexJson, type CheckpointWriterOptions } from '../checkpoint/checkpoint-writer.ts';
import { encodeHeader, tensorByteSize, type TensorDecl } from '../checkpoint/safetensors-writer.ts';
import { dtypeSize, type DType } from '../util/dtype.ts';
import { tensorName } from '../arch.ts';
import { configToJson, type ModelConfig } from '../config.ts';
import { CheckpointError, PlanError } from '../errors.ts';
import { MANIFEST_FILE, MANIFEST_FORMAT, SIDE_FILE_PATTERN, sha256Bytes, sha256File, sourceIdentity, TOOL_VERSION, type Manifest } from '../manifest.ts';
import { groupsBelowOne, loadMasksIfAny, MASKS_FILE, writeMasks } from '../masks.ts';
import { startProgress, type ProgressFactory } from '../util/progress.ts';
import type { BackendName } from '../backend.ts';
import { buildLayerMap, pickLayers, type LayerMapEntry } from './depth.ts';
import { buildLayout, initialMasks, tensorOps, type GrowthLayout, type TensorOp } from './layout.ts';
import { planToJson, resolveTarget, type GrowthPlan, type ResolvedTarget } from './plan.ts';
import { produceTensor, DEFAULT_BLOCK_BYTES } from './produce.ts';
import { BlockPool, ParallelHasher } from './hash-worker.ts';
import { SourceReader } from './source-reader.ts';
import { growOptimizerFile } from './moments.ts';
import { OPTIMIZER_FILE } from '../checkpoint/optimizer-state.ts';

export interface LayerSelection {
  metric: 'cosine' | 'l2';
  order: 'smallest' | 'largest';
  /** distances[l]: layer l's input -> output distance on the calibration tokens. */
  distances: number[];
  picks: number[];
  calibrationTokens: number;
}

export interface GrowOptions {
  /** Output dtype (default: the source's). */
  dtype?: DType;
  maxShardSize?: number;
  overwrite?: boolean;
  quiet?: boolean;
  /** Where progress goes (commands/ passes terminal bars); none by default. */
  progress?: ProgressFactory;
  blockBytes?: number;
  /** Extra writer options (e.g. for split grows; the writer's wants() decides what is produced). */
  writerOptions?: Partial<CheckpointWriterOptions>;
  /** Called with bytes written so far / total (besides `progress`). */
  onProgress?: (done: number, total: number) => void;
  /** Precomputed layer selection (skips the calibration forward pass). */
  selection?: LayerSelection;
  /** tfjs backend for the calibration forward pass (distance-based placement only). */
  backend?: BackendName;
}

export interface GrowResult {
  dest: string;
  target: ModelConfig;
  layerMap: LayerMapEntry[];
  selection: LayerSelection | undefined;
  resolved: ResolvedTarget;
  outputBytes: number;
  files: Record<string, string>;
}

/** Source tensor dtype for the output (the embedding's; checkpoints are single-dtype in practice). */
export function sourceDtype(ck: Checkpoint): DType {
  return ck.info(tensorName('embed')).dtype;
}

/** Positions of inserted layers: explicit from the plan, or chosen by distance on the source. */
export async function resolvePositions(ck: Checkpoint, plan: GrowthPlan, L2: number, given?: LayerSelection, backend?: BackendName): Promise<{ positions: number[]; selection: LayerSelection | undefined }> {
  const k = L2 - ck.config.numLayers;
  if (k <= 0) return { positions: [], selection: undefined };
  if (plan.placement.method === 'explicit') {
    if (plan.placement.positions === undefined) throw new PlanError('placement.positions', `method "explicit" needs ${k} positions (source layers after which to insert)`);
    return { positions: plan.placement.positions, selection: undefined };
  }
  let selection = given;
  if (selection === undefined) {
    const { selectLayers, calibrationIds } = await import('./select-layers.ts');
    if (backend !== undefined) await (await import('../backend.ts')).initBackend(backend);
    const ids = await calibrationIds(ck, plan.calibration);
    const r = await selectLayers(ck, ids, { metric: plan.placement.metric, order: plan.placement.order, count: k });
    selection = { metric: plan.placement.metric, order: plan.placement.order, distances: r.distances, picks: r.picks, calibrationTokens: ids.flat().length };
  } else {
    selection = { ...selection, picks: pickLayers(selection.distances, k, plan.placement.order) };
  }
  return { positions: selection.picks, selection };
}

export function tensorDecls(ops: readonly TensorOp[], dtypeOf: (op: TensorOp) => DType): TensorDecl[] {
  return ops.map((op) => ({ name: op.name, dtype: dtypeOf(op), shape: op.shape }));
}

export async function growCheckpoint(source: string, dest: string, plan: GrowthPlan, opts: GrowOptions = {}): Promise<GrowResult> {
  if (resolve(source) === resolve(dest)) throw new CheckpointError('DestinationIsSource', `${dest}: destination is the source checkpoint; refusing to write over it`);
  if (existsSync(dest) && opts.overwrite !== true) throw new CheckpointError('DestinationExists', `${dest}: already exists (pass --overwrite to replace it)`);
  const ck = await Checkpoint.open(source);
  try {
    const outDtype = opts.dtype ?? sourceDtype(ck);
    const resolved = resolveTarget(ck.config, plan, outDtype, 'plan');
    const sourceMasks = await loadMasksIfAny(source, ck.config);
    if (sourceMasks !== undefined && plan.mode === 'zero' && groupsBelowOne(sourceMasks).length > 0) {
      throw new PlanError('mode', `${source} still has masks below 1 (${groupsBelowOne(sourceMasks).map((x) => x.group).join(', ')}); zero mode cannot carry them: grow in masked mode, or train and bake first`);
    }
    const { target } = resolved;
    const { positions, selection } = await resolvePositions(ck, plan, target.numLayers, opts.selection, opts.backend);
    const layerMap = buildLayerMap(ck.config.numLayers, target.numLayers, positions, plan.placement.method === 'explicit' ? 'placement.positions' : 'layer selection');
    const layout = buildLayout(ck.config, target, plan, layerMap, resolved.zeroNorm?.gainScale ?? 1);
    const ops = tensorOps(layout);
    const decls = tensorDecls(ops, () => outDtype);
    const writer = await CheckpointWriter.create(dest, decls, {
      maxShardSize: opts.maxShardSize, overwrite: opts.overwrite, sources: [source], ...opts.writerOptions,
    });
    try {
      const files = await writeTensors(ck, writer, ops, layout, outDtype, opts);
      await writeSideFiles(ck, writer, target, files);
      if (plan.mode === 'masked') {
        await writeMasks(writer.path(MASKS_FILE), initialMasks(layout, sourceMasks));
        files[MASKS_FILE] = await sha256File(writer.path(MASKS_FILE));
      }
      // MSG carries Adam moments across growth (old slices copied, new entries 0). A split
      // grow's parts leave it to the single-machine path: moments are not sharded.
      const srcOptimizer = join(source, OPTIMIZER_FILE);
      if (existsSync(srcOptimizer) && (opts.writerOptions as { part?: unknown } | undefined)?.part === undefined) {
        await growOptimizerFile(srcOptimizer, ck.config, target, layout, writer.path(OPTIMIZER_FILE));
        files[OPTIMIZER_FILE] = await sha256File(writer.path(OPTIMIZER_FILE));
      }
      if (writer.shards.length > 1 || opts.writerOptions?.alwaysIndex === true) {
        files[INDEX_FILE] = sha256Bytes(JSON.stringify(indexJson(writer.shards), null, 2) + '\n');
      }
      const manifest = await growManifest(ck, source, plan, layout, resolved, selection, files);
      await writer.writeSideFile(MANIFEST_FILE, JSON.stringify(manifest, null, 2) + '\n');
      await writer.commit();
      const outputBytes = decls.reduce((a, d) => a + tensorByteSize(d), 0);
      return { dest, target, layerMap, selection, resolved, outputBytes, files };
    } catch (e) {
      await writer.abort();
      throw e;
    }
  } finally {
    await ck.close();
  }
}

async function writeTensors(ck: Checkpoint, writer: CheckpointWriter, ops: readonly TensorOp[], layout: GrowthLayout, outDtype: DType, opts: GrowOptions): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  const wanted = ops.filter((op) => writer.wants(op.name));
  const total = wanted.reduce((a, op) => a + op.shape.reduce((x, y) => x * y, 1) * dtypeSize(outDtype), 0);
  const bar = startProgress(opts.progress, opts.quiet, 'grow', total, 'bytes');
  const shardOf = new Map<string, number>();
  writer.shards.forEach((s, k) => s.tensors.forEach((t) => shardOf.set(t.name, k)));
  const hasher = new ParallelHasher();
  const reader = new SourceReader(ck);
  const blockBytes = opts.blockBytes ?? DEFAULT_BLOCK_BYTES;
  // Up to WRITES_IN_FLIGHT blocks being written while the next is built and another hashed: the
  // writer reserves each block's file offset at call time, so writes may overlap.
  const pool = new BlockPool(blockBytes, WRITES_IN_FLIGHT + 2);
  const digests: Promise<void>[] = [];
  let hashShard = -1;
  const finish = () => {
    if (hashShard < 0) return;
    const file = writer.shards[hashShard].file;
    digests.push(hasher.end(file).then((hex) => { files[file] = hex; }));
  };
  const inflight: Promise<void>[] = [];
  let done = 0;
  try {
    for (const op of wanted) {
      const k = shardOf.get(op.name) as number;
      if (k !== hashShard) {
        finish();
        // Same bytes SafetensorsWriter writes: u64 header length, header ({format: pt}), data.
        const header = encodeHeader(writer.shards[k].tensors, { format: 'pt' });
        const len = Buffer.alloc(8);
        len.writeBigUInt64LE(BigInt(header.byteLength));
        hashShard = k;
        hasher.start(writer.shards[k].file);
        hasher.update(writer.shards[k].file, len);
        hasher.update(writer.shards[k].file, header);
      }
      const file = writer.shards[k].file;
      const src = op.source === undefined ? undefined : reader.rows(op.source);
      await produceTensor(op, src, outDtype, layout.seed, async (block) => {
        const hashed = hasher.update(file, block);
        while (inflight.length >= WRITES_IN_FLIGHT) await inflight.shift();
        const written = writer.write(op.name, block);
        const tracked = written.then(() => {
          done += block.byteLength;
          bar.update(done);
          opts.onProgress?.(done, total);
        });
        tracked.catch(() => undefined); // awaited when the queue is full or below
        inflight.push(tracked);
        // back to the pool once both are done, even on failure (errors surface through inflight / end())
        void Promise.allSettled([hashed, written]).then(() => pool.release(block));
      }, blockBytes, (n) => pool.acquire(n));
    }
    await Promise.all(inflight);
    finish();
    await Promise.all(digests);
  } finally {
    bar.stop();
    await hasher.close();
    await reader.close();
  }
  return files;
}

/**
 * Blocks being written at once. The writer copies chunks below its coalescing threshold and has
 * larger ones on disk when write() resolves, so a block returns to the pool once its write and
 * its hash are done.
 */
const WRITES_IN_FLIGHT = 2;

async function writeSideFiles(ck: Checkpoint, writer: CheckpointWriter, target: ModelConfig, files: Record<string, string>): Promise<void> {
  const cfg = JSON.stringify(configToJson(target), null, 2) + '\n';
  await writer.writeSideFile(CONFIG_FILE, cfg);
  files[CONFIG_FILE] = sha256Bytes(cfg);
  for (const f of readdirSync(ck.dir)) {
    if (!SIDE_FILE_PATTERN.test(f)) continue;
    await writer.copySideFile(join(ck.dir, f), f);
    files[f] = await sha256File(writer.path(f));
  }
}

async function growManifest(ck: Checkpoint, source: string, plan: GrowthPlan, layout: GrowthLayout, resolved: ResolvedTarget,
  selection: LayerSelection | undefined, files: Record<string, string>): Promise<Manifest> {
  return {
    format: MANIFEST_FORMAT,
    kind: 'grow',
    created: new Date().toISOString(),
    tool: { name: 'flm-grow', version: TOOL_VERSION },
    source: await sourceIdentity(ck, source),
    mode: plan.mode,
    plan: {
      ...planToJson(plan),
      resolvedTargets: {
        hidden_size: layout.target.hiddenSize, intermediate_size: layout.target.intermediateSize,
        num_attention_heads: layout.target.numHeads, num_key_value_heads: layout.target.numKvHeads,
        num_hidden_layers: layout.target.numLayers, vocab_size: layout.target.vocabSize, head_dim: layout.target.headDim,
      },
      std: layout.std,
      ...(resolved.zeroNorm !== undefined ? { zeroModeNorm: resolved.zeroNorm } : {}),
    },
    ...(plan.mode === 'masked' ? { masks: { file: MASKS_FILE, schedule: resolved.schedule } } : {}),
    layerMap: layout.layerMap,
    ...(selection !== undefined ? { layerSelection: selection } : {}),
    extra: { queryHeadMap: Array.from(layout.headMap) },
    files: { ...files },
  };
}

export { DEFAULT_BLOCK_BYTES };
