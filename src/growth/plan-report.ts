/**
 * What `flm-grow plan` prints: the target config, its size, the disk and memory `grow` needs,
 * and what happens to each tensor, all from the config alone (no weights read).
 */
import { parameterCount, type Dim } from '../spec/arch.ts';
import { configToJson, type ModelConfig } from '../spec/config.ts';
import { dtypeSize, type DType } from '../util/dtype.ts';
import { planShards } from '../checkpoint/checkpoint-writer.ts';
import { safetensorsFileSize } from '../checkpoint/safetensors-writer.ts';
import { describeMap } from './axis-map.ts';
import { buildLayerMap, pickLayers, type LayerMapEntry } from './depth.ts';
import { buildLayout, tensorOps, type GrowthLayout, type TensorOp } from './layout.ts';
import { planToJson, resolveTarget, type GrowthPlan, type ResolvedTarget } from './plan.ts';
import { PLACEMENTS } from './operators.ts';
import { DEFAULT_BLOCK_BYTES, readsInPlace } from './produce.ts';
import { poolBlocks } from './hash-worker.ts';
import { DIRECT_RING_BYTES } from '../checkpoint/direct-file.ts';
import { streamedForwardPeakBytes, torchPassPeakBytes } from '../model/stream-memory.ts';
import { describeCalibration } from './select-layers.ts';
import { countLabel } from '../util/format.ts';

export interface TensorPlanLine {
  name: string;
  shape: number[];
  source: string | undefined;
  rows: string;
  cols: string;
  copied: number;
  fresh: number;
  fill: string;
}

export interface PlanReport {
  plan: Record<string, unknown>;
  source: {
    parameters: number;
    hidden_size: number;
    intermediate_size: number;
    num_attention_heads: number;
    num_key_value_heads: number;
    num_hidden_layers: number;
    vocab_size: number;
  };
  targetConfig: Record<string, unknown>;
  parameters: number;
  parametersLabel: string;
  dtype: DType;
  outputBytes: number;
  shards: number;
  diskBytes: number;
  peakMemoryBytes: number;
  /** The parts of the peak: writing the tensors, and the calibration forward pass (distance placement). */
  peakMemory: {
    write: number;
    /** The calibration pass on tfjs (grow's default engine). */
    calibration: number | undefined;
    /** The same pass on the torch engine (grow --engine torch), Python process included. */
    calibrationTorch?: number;
    note: string | undefined;
  };
  /** Which source layer each output layer copies; null when the layers are chosen at grow time. */
  layerMap: LayerMapEntry[] | null;
  layerPositionsNote: string;
  /** Sizes that change without being named by the plan (e.g. KV heads following the heads). */
  notes: string[];
  mode: 'masked' | 'zero';
  zeroModeNote: string | undefined;
  /** init.new of the width units, and for clone, which dimensions are exact (plain model preserved) or masked. */
  widthInit: string;
  schedule: ResolvedTarget['schedule'];
  tensors: TensorPlanLine[];
}

/** RSS of the grow process before any tensor (node, tsx, the hashing worker), measured. */
const BASE_RSS = 120e6;
/** RSS of a process with tfjs and its wasm backend loaded (the calibration pass), measured. */
const TFJS_BASE_RSS = 250e6;

/** Peak memory of the calibration forward pass (distance-based placement) on `src`. */
export function estimateCalibrationMemory(src: ModelConfig, tokens: number, seq: number): number {
  return TFJS_BASE_RSS + streamedForwardPeakBytes(src, tokens, seq, { skipLogits: true });
}

/**
 * Peak memory of grow, calibrated on bench/grow.ts: the output blocks of BlockPipeline's pool
 * (poolBlocks: those being written and hashed, the one being built, a spare), source-row reads of about a block each where the rows are not read in place (the one
 * in use, the prefetched one, and a few not yet collected), f32 staging when the dtype changes,
 * and the open shard's O_DIRECT staging
 * ring. Independent of depth and model size once tensors exceed one block.
 */
export function estimatePeakMemory(
  ops: readonly TensorOp[],
  outDtype: DType,
  srcDtype: DType,
  blockBytes = DEFAULT_BLOCK_BYTES,
): number {
  let worst = 0;
  for (const op of ops) {
    const rowBytes = op.cols.length * dtypeSize(outDtype);
    const total = op.rows.length * rowBytes;
    const block = Math.min(total, Math.max(rowBytes, blockBytes));
    // source rows read into buffers (the one in use, the prefetched one, a few not yet collected),
    // unless they are read straight into the output blocks
    const srcBlock = readsInPlace(op, srcDtype, outDtype) ? 0 : (block * dtypeSize(srcDtype)) / dtypeSize(outDtype);
    const convert = srcDtype === outDtype ? 0 : (block / dtypeSize(outDtype)) * 4 * 2;
    worst = Math.max(worst, poolBlocks() * block + 6 * srcBlock + convert);
  }
  return worst + DIRECT_RING_BYTES + BASE_RSS;
}

export function planReport(
  src: ModelConfig,
  plan: GrowthPlan,
  opts: { dtype?: DType; maxShardSize?: number; positions?: number[] } = {},
): PlanReport {
  const srcDtype: DType = src.dtype ?? 'BF16';
  const dtype = opts.dtype ?? srcDtype;
  const resolved = resolveTarget(src, plan, dtype);
  const { target } = resolved;
  const k = target.numLayers - src.numLayers;
  const placement = PLACEMENTS[plan.placement.method];
  let layerMap: LayerMapEntry[];
  let note: string;
  // only distance placement runs the calibration pass; every other method's map is known now
  let distance = false;
  if (opts.positions !== undefined) {
    layerMap = buildLayerMap(src.numLayers, target.numLayers, opts.positions, 'layer selection');
    note = `given positions: ${opts.positions.join(', ')}`;
  } else if (k === 0) {
    layerMap = buildLayerMap(src.numLayers, target.numLayers, []);
    note = 'no layers inserted';
  } else if (placement.layerMap !== undefined) {
    layerMap = placement.layerMap(src.numLayers, target.numLayers, plan.placement);
    note = placement.describe(plan.placement, src.numLayers, target.numLayers);
  } else {
    // any k positions give the same shapes and bytes; which layers is decided at grow time
    layerMap = buildLayerMap(
      src.numLayers,
      target.numLayers,
      pickLayers(new Array<number>(src.numLayers).fill(0), k, 'smallest'),
    );
    distance = true;
    note = `${k} inserted layers, ${placement.describe(plan.placement, src.numLayers, target.numLayers)} over ${describeCalibration(plan.calibration)}; \`flm-grow select-layers\` shows the choice beforehand`;
  }
  const layout = buildLayout(src, target, plan, layerMap, resolved.zeroNorm?.gainScale ?? 1);
  const ops = tensorOps(layout);
  const decls = ops.map((o) => ({ name: o.name, dtype, shape: o.shape }));
  const shards = planShards(decls, opts.maxShardSize ?? 5e9);
  const outputBytes = decls.reduce((a, d) => a + d.shape.reduce((x, y) => x * y, 1) * dtypeSize(dtype), 0);
  const filesBytes = shards.reduce((a, s) => a + safetensorsFileSize(s.tensors, { format: 'pt' }), 0);
  const masksBytes =
    plan.mode === 'masked'
      ? 4 * (target.hiddenSize + target.vocabSize + target.numLayers * (target.numHeads + target.intermediateSize + 1)) +
        (plan.vocab.new === 'tokens' ? 4 * target.vocabSize : 0) + // vocab_tokens
        4096
      : 0;
  const tensors: TensorPlanLine[] = ops.map((op) => {
    const total = op.shape.reduce((a, b) => a * b, 1);
    let copied = 0;
    if (op.source !== undefined && !op.zeroAll) {
      let r = 0,
        c = 0;
      for (const s of op.rows) if (s >= 0) r++;
      for (const s of op.cols) if (s >= 0) c++;
      copied = r * c;
    }
    const rowNew = op.rows.some((x) => x < 0),
      rowOld = op.rows.some((x) => x >= 0);
    const colNew = op.cols.some((x) => x < 0),
      colOld = op.cols.some((x) => x >= 0);
    const present = [
      ...(rowNew && colOld ? [op.fillNewRow] : []),
      ...(rowOld && colNew ? [op.fillNewCol] : []),
      ...(rowNew && colNew ? [op.fillNewBoth] : []),
    ];
    const fills = op.zeroAll ? 'all zero' : present.length === 0 ? 'none' : [...new Set(present)].join('/');
    return {
      name: op.name,
      shape: op.shape,
      source: op.source,
      rows: op.shape.length === 1 ? '' : describeMap(op.rows),
      cols: describeMap(op.cols),
      copied,
      fresh: total - copied,
      fill: [
        fills,
        ...(op.split !== undefined ? ['columns split among clones'] : []),
        ...(op.scale !== 1 ? [`×${op.scale.toPrecision(6)}`] : []),
      ].join(', '),
    };
  });
  const params = parameterCount(target);
  const write = estimatePeakMemory(ops, dtype, srcDtype);
  const cal = distance ? estimateCalibrationMemory(src, plan.calibration.tokens, plan.calibration.seq) : undefined;
  const calNote =
    cal === undefined
      ? undefined
      : `the calibration pass (${plan.calibration.tokens} tokens in sequences of ${plan.calibration.seq}) sets it; lower it with --calibration-tokens, or run \`flm-grow select-layers\` once and grow with --placement explicit --positions`;
  const layerTensor = /^model\.layers\.(\d+)\./;
  return {
    plan: planToJson(plan),
    source: {
      parameters: parameterCount(src),
      hidden_size: src.hiddenSize,
      intermediate_size: src.intermediateSize,
      num_attention_heads: src.numHeads,
      num_key_value_heads: src.numKvHeads,
      num_hidden_layers: src.numLayers,
      vocab_size: src.vocabSize,
    },
    targetConfig: configToJson(target),
    parameters: params,
    parametersLabel: countLabel(params),
    dtype,
    outputBytes,
    shards: shards.length,
    diskBytes: filesBytes + masksBytes + 1e6,
    peakMemoryBytes: Math.max(write, cal ?? 0),
    peakMemory: {
      write,
      calibration: cal,
      // the same pass on the torch engine (grow --engine torch): passes.py's band, stream and activations
      ...(distance
        ? { calibrationTorch: torchPassPeakBytes(src, plan.calibration.tokens, plan.calibration.seq, { skipLogits: true }) }
        : {}),
      note: cal !== undefined && cal > write ? calNote : undefined,
    },
    layerMap: distance ? null : layerMap,
    layerPositionsNote: note,
    notes: resolved.notes,
    mode: plan.mode,
    zeroModeNote: resolved.zeroNorm?.note,
    widthInit: widthInitNote(layout),
    schedule: resolved.schedule,
    // with distance placement only layer 0's source is known before grow time
    tensors: distance
      ? tensors.map((x) => (layerTensor.test(x.name) && !x.name.startsWith('model.layers.0.') ? { ...x, source: undefined } : x))
      : tensors,
  };
}

const DIM_NAMES: Partial<Record<Dim, string>> = { H: 'hidden', F: 'ffn', Q: 'heads', KV: 'kv heads' };

/** "clone: hidden masked (ratio not whole), ffn exact, ..." for the plan output. */
function widthInitNote(g: GrowthLayout): string {
  if (g.newInit !== 'clone') return g.newInit;
  const parts = (Object.entries(g.clones) as [Dim, { exact: boolean }][]).map(
    ([d, c]) => `${DIM_NAMES[d] ?? d} ${c.exact ? 'exact (no mask)' : 'masked (hidden ratio not a whole number)'}`,
  );
  const noise = g.noise > 0 ? `, noise ${g.noise} × row std` : '';
  return `clone${parts.length > 0 ? `: ${parts.join(', ')}` : ' (no width grows)'}${noise}`;
}
