/**
 * What `flm-grow plan` prints: the target config, its size, the disk and memory `grow` needs,
 * and what happens to each tensor, all from the config alone (no weights read).
 */
import { parameterCount } from '../arch.ts';
import { configToJson, type ModelConfig } from '../config.ts';
import { dtypeSize, type DType } from '../util/dtype.ts';
import { planShards } from '../checkpoint/checkpoint-writer.ts';
import { safetensorsFileSize } from '../checkpoint/safetensors-writer.ts';
import { describeMap } from './axis-map.ts';
import { buildLayerMap, pickLayers, type LayerMapEntry } from './depth.ts';
import { buildLayout, tensorOps, type TensorOp } from './layout.ts';
import { planToJson, resolveTarget, type GrowthPlan, type ResolvedTarget } from './plan.ts';
import { DEFAULT_BLOCK_BYTES } from './produce.ts';

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
  source: { parameters: number; hidden_size: number; intermediate_size: number; num_attention_heads: number; num_key_value_heads: number; num_hidden_layers: number; vocab_size: number };
  targetConfig: Record<string, unknown>;
  parameters: number;
  parametersLabel: string;
  dtype: DType;
  outputBytes: number;
  shards: number;
  diskBytes: number;
  peakMemoryBytes: number;
  layerMap: LayerMapEntry[];
  layerPositionsNote: string;
  mode: 'masked' | 'zero';
  zeroModeNote: string | undefined;
  schedule: ResolvedTarget['schedule'];
  tensors: TensorPlanLine[];
}

/** 1083735154688 -> "1,083.74 B"; 281e6 -> "281.2 M". */
export function formatParams(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 })} B`;
  if (n >= 1e6) return `${(n / 1e6).toLocaleString('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 })} M`;
  if (n >= 1e3) return `${(n / 1e3).toLocaleString('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 })} K`;
  return String(n);
}

/** RSS of the grow process before any tensor (node, tsx, the hashing worker), measured. */
const BASE_RSS = 120e6;

/**
 * Peak memory of grow, calibrated on bench/grow.ts: three output blocks (pool: built, written,
 * hashed), source-row reads of about a block each (the one in use, the prefetched one, and a few
 * not yet collected), f32 staging when the dtype changes. Independent of depth and model size
 * once tensors exceed one block.
 */
export function estimatePeakMemory(ops: readonly TensorOp[], outDtype: DType, srcDtype: DType, blockBytes = DEFAULT_BLOCK_BYTES): number {
  let worst = 0;
  for (const op of ops) {
    const rowBytes = op.cols.length * dtypeSize(outDtype);
    const total = op.rows.length * rowBytes;
    const block = Math.min(total, Math.max(rowBytes, blockBytes));
    const srcBlock = block * dtypeSize(srcDtype) / dtypeSize(outDtype);
    const convert = srcDtype === outDtype ? 0 : (block / dtypeSize(outDtype)) * 4 * 2;
    worst = Math.max(worst, 3 * block + 6 * srcBlock + convert);
  }
  return worst + BASE_RSS;
}

export function planReport(src: ModelConfig, plan: GrowthPlan, opts: { dtype?: DType; maxShardSize?: number; positions?: number[] } = {}): PlanReport {
  const srcDtype: DType = src.dtype ?? 'BF16';
  const dtype = opts.dtype ?? srcDtype;
  const resolved = resolveTarget(src, plan, dtype);
  const { target } = resolved;
  const k = target.numLayers - src.numLayers;
  let positions = opts.positions;
  let note = '';
  if (positions === undefined) {
    if (k === 0) { positions = []; note = 'no layers inserted'; }
    else if (plan.placement.method === 'explicit') {
      if (plan.placement.positions === undefined) positions = [];
      else positions = plan.placement.positions;
      note = `explicit positions: ${positions.join(', ')}`;
    } else {
      positions = pickLayers(new Array<number>(src.numLayers).fill(0), k, plan.placement.order);
      note = `${k} layers chosen at grow time by ${plan.placement.metric} distance (${plan.placement.order} first) on ${plan.calibration.tokens} calibration tokens; the layer map below is a placeholder`;
    }
  }
  const layerMap = buildLayerMap(src.numLayers, target.numLayers, positions, plan.placement.method === 'explicit' ? 'placement.positions' : 'layer selection');
  const layout = buildLayout(src, target, plan, layerMap, resolved.zeroNorm?.gainScale ?? 1);
  const ops = tensorOps(layout);
  const decls = ops.map((o) => ({ name: o.name, dtype, shape: o.shape }));
  const shards = planShards(decls, opts.maxShardSize ?? 5e9);
  const outputBytes = decls.reduce((a, d) => a + d.shape.reduce((x, y) => x * y, 1) * dtypeSize(dtype), 0);
  const filesBytes = shards.reduce((a, s) => a + safetensorsFileSize(s.tensors, { format: 'pt' }), 0);
  const masksBytes = plan.mode === 'masked' ? 4 * (target.hiddenSize + target.vocabSize + target.numLayers * (target.numHeads + target.intermediateSize + 1)) + 4096 : 0;
  const tensors: TensorPlanLine[] = ops.map((op) => {
    const total = op.shape.reduce((a, b) => a * b, 1);
    let copied = 0;
    if (op.source !== undefined && !op.zeroAll) {
      let r = 0, c = 0;
      for (const s of op.rows) if (s >= 0) r++;
      for (const s of op.cols) if (s >= 0) c++;
      copied = r * c;
    }
    const rowNew = op.rows.some((x) => x < 0), rowOld = op.rows.some((x) => x >= 0);
    const colNew = op.cols.some((x) => x < 0), colOld = op.cols.some((x) => x >= 0);
    const present = [
      ...(rowNew && colOld ? [op.fillNewRow] : []), ...(rowOld && colNew ? [op.fillNewCol] : []), ...(rowNew && colNew ? [op.fillNewBoth] : []),
    ];
    const fills = op.zeroAll ? 'all zero' : present.length === 0 ? 'none' : [...new Set(present)].join('/');
    return {
      name: op.name, shape: op.shape, source: op.source,
      rows: op.shape.length === 1 ? '' : describeMap(op.rows), cols: describeMap(op.cols),
      copied, fresh: total - copied, fill: op.scale !== 1 ? `${fills}, ×${op.scale.toPrecision(6)}` : fills,
    };
  });
  const params = parameterCount(target);
  return {
    plan: planToJson(plan),
    source: {
      parameters: parameterCount(src), hidden_size: src.hiddenSize, intermediate_size: src.intermediateSize, num_attention_heads: src.numHeads,
      num_key_value_heads: src.numKvHeads, num_hidden_layers: src.numLayers, vocab_size: src.vocabSize,
    },
    targetConfig: configToJson(target),
    parameters: params,
    parametersLabel: formatParams(params),
    dtype,
    outputBytes,
    shards: shards.length,
    diskBytes: filesBytes + masksBytes + 1e6,
    peakMemoryBytes: estimatePeakMemory(ops, dtype, srcDtype),
    layerMap,
    layerPositionsNote: note,
    mode: plan.mode,
    zeroModeNote: resolved.zeroNorm?.note,
    schedule: resolved.schedule,
    tensors,
  };
}
