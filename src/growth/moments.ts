/**
 * Optimizer state across growth (MSG): Adam moments of the old entries are carried into the old
 * slices of the grown tensor; new entries (and inserted layers) start at 0. Uses the same
 * layout as the weights, so moments land exactly where their weights went. Clones (init.new
 * clone) that are exact are ordinary units and carry the moments of the entries they copy (a
 * split column's gradient is its original's: same activation); masked clones are new units and
 * start at 0 like random ones.
 */
import { buildLayout, tensorOps, type GrowthLayout, type TensorOp } from './layout.ts';
import { parsePlan } from './plan.ts';
import type { ModelConfig } from '../spec/config.ts';
import type { Manifest } from '../checkpoint/manifest.ts';
import { FlmGrowError, TrainError } from '../util/errors.ts';
import { dimSize, expectedTensors, shapeOf, SPEC_BY_ROLE, type Dim } from '../spec/arch.ts';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readConfigFile } from '../spec/config.ts';
import { readManifest } from '../checkpoint/manifest.ts';
import { OPTIMIZER_FILE, readOptimizerState, writeOptimizerState, type MomentArrays } from '../checkpoint/optimizer-state.ts';

export function opFor(layout: GrowthLayout, outName: string): TensorOp {
  const op = tensorOps(layout).find((o) => o.name === outName);
  if (op === undefined)
    throw new FlmGrowError('TensorNotFound', `growMomentTensor: "${outName}" is not a tensor of the grown model`);
  return op;
}

/** The source tensor whose moments feed `outName`, or undefined (an inserted layer: all 0). */
export function momentSource(layout: GrowthLayout, outName: string): string | undefined {
  const op = opFor(layout, outName);
  const entry = op.layer === undefined ? undefined : layout.layerMap[op.layer];
  return entry?.inserted === true ? undefined : op.source;
}

/**
 * Grow one moment tensor (float32, source layout) into the output layout: old slices copied,
 * everything new 0. `values` undefined gives all zeros.
 */
export function growMomentTensor(layout: GrowthLayout, outName: string, values: Float32Array | undefined): Float32Array {
  const op = opFor(layout, outName);
  const out = new Float32Array(op.rows.length * op.cols.length);
  if (values === undefined || momentSource(layout, outName) === undefined) return out;
  const srcShape = shapeOf(layout.source, op.role);
  const n = srcShape.reduce((a, b) => a * b, 1);
  if (values.length !== n)
    throw new FlmGrowError(
      'ShapeMismatch',
      `growMomentTensor: "${outName}" source moments have ${values.length} entries, [${srcShape.join(', ')}] needs ${n}`,
    );
  const srcRowLen = srcShape.length === 1 ? n : srcShape[1];
  const dims = SPEC_BY_ROLE[op.role].dims;
  const [rowDim, colDim] = dims.length === 1 ? [undefined, dims[0]] : dims;
  const fresh = (d: Dim | undefined) =>
    d !== undefined && layout.clones[d]?.exact === false ? dimSize(layout.source, d) : Infinity;
  const [rowFresh, colFresh] = [fresh(rowDim), fresh(colDim)];
  for (let i = 0; i < op.rows.length; i++) {
    const s = op.rows[i];
    if (s < 0 || i >= rowFresh) continue;
    for (let j = 0; j < op.cols.length; j++) {
      const c = op.cols[j];
      if (c >= 0 && j < colFresh) out[i * op.cols.length + j] = values[s * srcRowLen + c];
    }
  }
  return out;
}

/**
 * The layout of a finished growth, rebuilt from its manifest (for the trainer: moments of the
 * source's optimizer state into the grown model).
 */
export function layoutFromManifest(source: ModelConfig, target: ModelConfig, m: Manifest): GrowthLayout {
  if (m.kind !== 'grow' || m.plan === undefined || m.layerMap === undefined) {
    throw new FlmGrowError('BadManifest', 'layoutFromManifest: not the manifest of a grow (no plan or layerMap)');
  }
  const { resolvedTargets: _t, std: _s, zeroModeNorm: _z, clones: _c, ...planJson } = m.plan as Record<string, unknown>;
  const plan = parsePlan(planJson, 'manifest plan');
  return buildLayout(source, target, plan, m.layerMap);
}

/**
 * Expand an optimizer state through a growth layout: every moment lands where its weight went;
 * new rows/columns and inserted layers start at 0 (MSG's treatment of Adam moments).
 */
export async function growOptimizerFile(
  srcPath: string,
  srcCfg: ModelConfig,
  dstCfg: ModelConfig,
  layout: GrowthLayout,
  outPath: string,
): Promise<void> {
  const srcShapes = new Map(expectedTensors(srcCfg).map((t) => [t.name, t.shape] as const));
  const src = await readOptimizerState(srcPath, srcShapes);
  const dstShapes = new Map(expectedTensors(dstCfg).map((t) => [t.name, t.shape] as const));
  const moments = new Map<string, MomentArrays>();
  for (const name of dstShapes.keys()) {
    const from = momentSource(layout, name);
    const mo = from === undefined ? undefined : src.moments.get(from);
    moments.set(name, {
      expAvg: growMomentTensor(layout, name, mo?.expAvg),
      expAvgSq: growMomentTensor(layout, name, mo?.expAvgSq),
    });
  }
  await writeOptimizerState(outPath, dstShapes, { meta: src.meta, moments });
}

/**
 * For a grown folder made without its optimizer state: rebuild the layout from the grown
 * manifest and write grown/optimizer.safetensors. (growCheckpoint already does this itself,
 * inside its atomic output, whenever the source has optimizer state.) Returns false when the
 * source has none.
 */
export async function growOptimizerState(sourceDir: string, grownDir: string): Promise<boolean> {
  const srcPath = join(sourceDir, OPTIMIZER_FILE);
  if (!existsSync(srcPath)) return false;
  const manifest = readManifest(grownDir);
  if (manifest === undefined)
    throw new TrainError('OptimizerState', `${grownDir}: no flm-grow-manifest.json; cannot tell how it was grown`);
  const srcCfg = readConfigFile(join(sourceDir, 'config.json'));
  const dstCfg = readConfigFile(join(grownDir, 'config.json'));
  await growOptimizerFile(srcPath, srcCfg, dstCfg, layoutFromManifest(srcCfg, dstCfg, manifest), join(grownDir, OPTIMIZER_FILE));
  return true;
}
