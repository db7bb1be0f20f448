/**
 * `grow`: stream a source checkpoint into a grown one, tensor by tensor and block by block
 * (memory ~ one output block, not the model), atomically (temporary folder, renamed at the end),
 * with config.json, tokenizer files, masks.safetensors (masked mode) and flm-grow-manifest.json
 * (sha256 of every output file, computed by the writer from the bytes it writes, on a second
 * thread, so the data is never read back).
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import { CheckpointFolder } from '../checkpoint/checkpoint-folder.ts';
import { CheckpointWriter, type CheckpointWriterOptions } from '../checkpoint/checkpoint-writer.ts';
import { tensorByteSize, type TensorDecl } from '../checkpoint/safetensors-writer.ts';
import { dtypeSize, type DType } from '../util/dtype.ts';
import { tensorName } from '../spec/arch.ts';
import type { ModelConfig } from '../spec/config.ts';
import { PlanError } from '../util/errors.ts';
import { checkDestination } from '../checkpoint/atomic.ts';
import {
  MANIFEST_FILE,
  MANIFEST_FORMAT,
  readManifest,
  SIDE_FILE_PATTERN,
  sourceIdentity,
  TOOL_VERSION,
  type Manifest,
} from '../checkpoint/manifest.ts';
import { carrySchedule, sourceAnnealing, type CarriedAnnealing } from './carry.ts';
import { groupsBelowOne, MASKS_FILE, writeMasks } from '../checkpoint/masks.ts';
import { writeModelFiles } from '../checkpoint/hf-folder.ts';
import { startProgress, type ProgressFactory } from '../util/progress.ts';
import type { BackendName } from '../engines/tfjs-backend.ts';
import { buildLayerMap, pickLayers, type LayerMapEntry } from './depth.ts';
import { buildLayout, initialMasks, tensorOps, type GrowthLayout, type TensorOp } from './layout.ts';
import { planToJson, resolveTarget, type GrowthPlan, type ResolvedTarget } from './plan.ts';
import { produceTensor, DEFAULT_BLOCK_BYTES } from './produce.ts';
import { PLACEMENTS } from './operators.ts';
import { BlockPipeline, createHashedWriter } from './hash-worker.ts';
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
  /** With overwrite: replace the destination even if flm-grow did not write it. */
  forceOverwrite?: boolean;
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
  /** Engine of the calibration pass: tfjs (default) or torch (model/torch-passes.ts). */
  engine?: 'tfjs' | 'torch';
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

/**
 * The layer map of the growth: from the plan alone for a deterministic placement (operators.ts
 * PLACEMENTS; no calibration pass), or chosen by distance on the source's activations.
 */
export async function resolveLayerMap(
  ck: Checkpoint,
  plan: GrowthPlan,
  L2: number,
  given?: LayerSelection,
  backend?: BackendName,
  progress?: ProgressFactory,
  engine?: 'tfjs' | 'torch',
): Promise<{ layerMap: LayerMapEntry[]; selection: LayerSelection | undefined }> {
  const L = ck.config.numLayers;
  const k = L2 - L;
  const placement = PLACEMENTS[plan.placement.method];
  if (k <= 0) return { layerMap: buildLayerMap(L, L2, []), selection: undefined };
  if (placement.layerMap !== undefined) return { layerMap: placement.layerMap(L, L2, plan.placement), selection: undefined };
  let selection = given;
  if (selection === undefined) {
    const { selectLayers, calibrationIds } = await import('./select-layers.ts');
    if (backend !== undefined && engine !== 'torch') await (await import('../engines/tfjs-backend.ts')).initBackend(backend);
    const ids = await calibrationIds(ck, plan.calibration);
    const r = await selectLayers(ck, ids, {
      metric: plan.placement.metric,
      order: plan.placement.order,
      count: k,
      progress,
      engine,
    });
    selection = {
      metric: plan.placement.metric,
      order: plan.placement.order,
      distances: r.distances,
      picks: r.picks,
      calibrationTokens: ids.flat().length,
    };
  } else {
    selection = { ...selection, picks: pickLayers(selection.distances, k, plan.placement.order) };
  }
  return { layerMap: buildLayerMap(L, L2, selection.picks, 'layer selection'), selection };
}

export function tensorDecls(ops: readonly TensorOp[], dtypeOf: (op: TensorOp) => DType): TensorDecl[] {
  return ops.map((op) => ({ name: op.name, dtype: dtypeOf(op), shape: op.shape }));
}

export async function growCheckpoint(
  source: string,
  dest: string,
  plan: GrowthPlan,
  opts: GrowOptions = {},
): Promise<GrowResult> {
  // before any work (the calibration pass can take minutes); AtomicDir.create checks again
  checkDestination(dest, { overwrite: opts.overwrite, force: opts.forceOverwrite, sources: [source] });
  const ck = await CheckpointFolder.open(source);
  try {
    const outDtype = opts.dtype ?? sourceDtype(ck);
    const resolved = resolveTarget(ck.config, plan, outDtype, 'plan');
    const sourceMasks = await ck.masks();
    if (sourceMasks !== undefined && plan.mode === 'zero' && groupsBelowOne(sourceMasks).length > 0) {
      throw new PlanError(
        'mode',
        `${source} still has masks below 1 (${groupsBelowOne(sourceMasks)
          .map((x) => x.group)
          .join(', ')}); zero mode cannot carry them: grow in masked mode, or train and bake first`,
      );
    }
    // a source still annealing: its masks are carried (initialMasks) and so is the rest of its schedule
    const carry =
      plan.mode === 'masked' && sourceMasks !== undefined
        ? carrySchedule(
            resolved.schedule,
            sourceAnnealing(readManifest(source)),
            groupsBelowOne(sourceMasks).map((g) => g.group),
            plan.annealSteps,
          )
        : undefined;
    if (carry !== undefined) resolved.schedule = carry.schedule;
    const { target } = resolved;
    const { layerMap, selection } = await resolveLayerMap(
      ck,
      plan,
      target.numLayers,
      opts.selection,
      opts.backend,
      opts.quiet === true ? undefined : opts.progress,
      opts.engine,
    );
    const layout = buildLayout(ck.config, target, plan, layerMap, resolved.zeroNorm?.gainScale ?? 1);
    const ops = tensorOps(layout);
    const decls = tensorDecls(ops, () => outDtype);
    // shards are hashed on a second thread as the writer writes them (blocks are shared memory)
    const { writer, hasher } = await createHashedWriter(dest, decls, {
      maxShardSize: opts.maxShardSize,
      overwrite: opts.overwrite,
      force: opts.forceOverwrite,
      sources: [source],
      ...opts.writerOptions,
    });
    try {
      await writeTensors(ck, writer, ops, layout, outDtype, opts);
      const masks = plan.mode === 'masked' ? initialMasks(layout, sourceMasks) : undefined;
      // config.json (masked form while masks are below 1), modeling files, model card
      await writeModelFiles(writer, target, masks, {
        kind: 'grow',
        source: await sourceIdentity(ck, source),
        sourceConfig: ck.config,
        mode: plan.mode,
        plan: planToJson(plan),
        schedule: masks !== undefined ? resolved.schedule : undefined,
      });
      await writeSideFiles(ck, writer);
      if (masks !== undefined) {
        await writeMasks(writer.path(MASKS_FILE), masks);
        await writer.recordFile(MASKS_FILE);
      }
      // MSG carries Adam moments across growth (old slices copied, new entries 0). A split
      // grow's parts leave it to the single-machine path: moments are not sharded.
      const srcOptimizer = ck.optimizerPath;
      if (srcOptimizer !== undefined && (opts.writerOptions as { part?: unknown } | undefined)?.part === undefined) {
        await growOptimizerFile(srcOptimizer, ck.config, target, layout, writer.path(OPTIMIZER_FILE));
        await writer.recordFile(OPTIMIZER_FILE);
      }
      const files = await writer.finish();
      const manifest = await growManifest(ck, source, plan, layout, resolved, selection, files, carry?.carried);
      await writer.writeSideFile(MANIFEST_FILE, JSON.stringify(manifest, null, 2) + '\n');
      await writer.commit();
      const outputBytes = decls.reduce((a, d) => a + tensorByteSize(d), 0);
      return { dest, target, layerMap, selection, resolved, outputBytes, files };
    } catch (e) {
      await writer.abort();
      throw e;
    } finally {
      await hasher.close();
    }
  } finally {
    await ck.close();
  }
}

async function writeTensors(
  ck: Checkpoint,
  writer: CheckpointWriter,
  ops: readonly TensorOp[],
  layout: GrowthLayout,
  outDtype: DType,
  opts: GrowOptions,
): Promise<void> {
  const wanted = ops.filter((op) => writer.wants(op.name));
  const total = wanted.reduce((a, op) => a + op.shape.reduce((x, y) => x * y, 1) * dtypeSize(outDtype), 0);
  const bar = startProgress(opts.progress, opts.quiet, 'grow', total, 'bytes');
  const reader = new SourceReader(ck);
  const blockBytes = opts.blockBytes ?? DEFAULT_BLOCK_BYTES;
  let done = 0;
  const pipe = new BlockPipeline(writer, blockBytes, {
    onWritten: (n) => {
      done += n;
      bar.update(done);
      opts.onProgress?.(done, total);
    },
  });
  try {
    for (const op of wanted) {
      const src = op.source === undefined ? undefined : reader.rows(op.source);
      await produceTensor(
        op,
        src,
        outDtype,
        layout.seed,
        (block) => pipe.emit(op.name, block),
        blockBytes,
        (n) => pipe.acquire(n),
      );
    }
    await pipe.drain();
  } finally {
    bar.stop();
    await reader.close();
  }
}

async function writeSideFiles(ck: Checkpoint, writer: CheckpointWriter): Promise<void> {
  for (const f of readdirSync(ck.dir)) {
    if (SIDE_FILE_PATTERN.test(f)) await writer.copySideFile(join(ck.dir, f), f);
  }
}

async function growManifest(
  ck: Checkpoint,
  source: string,
  plan: GrowthPlan,
  layout: GrowthLayout,
  resolved: ResolvedTarget,
  selection: LayerSelection | undefined,
  files: Record<string, string>,
  carried?: CarriedAnnealing,
): Promise<Manifest> {
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
        hidden_size: layout.target.hiddenSize,
        intermediate_size: layout.target.intermediateSize,
        num_attention_heads: layout.target.numHeads,
        num_key_value_heads: layout.target.numKvHeads,
        num_hidden_layers: layout.target.numLayers,
        vocab_size: layout.target.vocabSize,
        head_dim: layout.target.headDim,
      },
      std: layout.std,
      ...(resolved.zeroNorm !== undefined ? { zeroModeNorm: resolved.zeroNorm } : {}),
      ...(layout.newInit === 'clone' ? { clones: cloneSummary(layout) } : {}),
    },
    ...(plan.mode === 'masked'
      ? { masks: { file: MASKS_FILE, schedule: resolved.schedule, ...(carried !== undefined ? { carried } : {}) } }
      : {}),
    layerMap: layout.layerMap,
    ...(selection !== undefined ? { layerSelection: selection } : {}),
    extra: { queryHeadMap: Array.from(layout.headMap) },
    files: { ...files },
  };
}

/** The manifest's record of a clone growth: which dimensions were cloned exactly (split, unmasked) and which masked. */
function cloneSummary(g: GrowthLayout): { exact: string[]; masked: string[] } {
  const dims = Object.entries(g.clones);
  return { exact: dims.filter(([, c]) => c.exact).map(([d]) => d), masked: dims.filter(([, c]) => !c.exact).map(([d]) => d) };
}

export { DEFAULT_BLOCK_BYTES };
