/**
 * Distance-based layer selection (Tele-FLM 64 -> 80 -> 140 layers, SPEC §2): run calibration
 * tokens through the source model one layer at a time and measure how much each layer moves the
 * residual stream (distance.ts). Layers that change it least are the natural ones to duplicate
 * (`smallest`); `largest` is the alternative.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { readFailure, readRegularFile, readTextFile } from '../util/files.ts';
import { MAX_TOKENS } from '../util/limits.ts';
import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import { CheckpointFolder } from '../checkpoint/checkpoint-folder.ts';
import { PlanError } from '../util/errors.ts';
import { mulberry32, uniformInt } from '../util/random.ts';
import { layerDistance, type DistanceMetric } from './distance.ts';
import { pickLayers } from './depth.ts';
import type { CalibrationPlan } from './plan.ts';
import type { ProgressFactory } from '../util/progress.ts';
import { tokenDtypeForPath, tokenWidth } from '../util/token-files.ts';
import type { TorchPassOptions } from '../model/torch-passes.ts';

export interface SelectOptions {
  metric: DistanceMetric;
  order: 'smallest' | 'largest';
  /** How many insertions to pick (default: none, distances only). */
  count?: number;
  /** Residual-stream provider (default: the model's layer-streamed forward, loaded lazily). */
  stream?: ResidualStreamFn;
  /** Progress of the calibration pass (weight bytes streamed). */
  progress?: ProgressFactory;
  /**
   * torch: the distances come from the torch engine's layer-streamed pass (model/torch-passes.ts)
   * on the same ids, instead of the tfjs residual stream (`stream` is then unused).
   */
  engine?: 'tfjs' | 'torch';
  /** torch engine: device, dtype, band size. */
  torch?: TorchPassOptions;
}

export interface SelectResult {
  distances: number[];
  /** Layer indices sorted by preference (best first). */
  ranking: number[];
  picks: number[];
}

/** Calls visit(l, x_l, x_{l+1}) ([tokens, H] each, x_L before the final norm) for every layer l. */
export type ResidualStreamFn = (
  ck: Checkpoint,
  batch: number[][],
  visit: (l: number, xIn: Float32Array, xOut: Float32Array) => void,
  progress?: ProgressFactory,
) => Promise<void>;

/** What the calibration tokens are, for the output: random ids are not text. */
export function describeCalibration(cal: CalibrationPlan): string {
  if (cal.file !== undefined) return `calibration tokens from ${cal.file}`;
  if (cal.text !== undefined) return 'calibration text (calibration.text)';
  return `${cal.tokens} random token ids (seed ${cal.seed}), not text: give a text or token file with --calibration-file (calibration.file) for a selection on real data`;
}

/** Calibration token ids, split into sequences of `seq`. */
export async function calibrationIds(ck: Checkpoint, cal: CalibrationPlan): Promise<number[][]> {
  const V = ck.config.vocabSize;
  let ids: number[];
  const tokenDtype = cal.file === undefined ? undefined : tokenDtypeForPath(cal.file);
  if (cal.file !== undefined && tokenDtype !== undefined) {
    const w = tokenWidth(tokenDtype);
    const buf = readTokenFilePrefix(cal.file, w * Math.min(cal.tokens, MAX_TOKENS + 1));
    const n = Math.floor(buf.byteLength / w);
    ids = Array.from({ length: n }, (_, k) => (w === 2 ? buf.readUInt16LE(2 * k) : buf.readUInt32LE(4 * k)));
    const bad = ids.findIndex((v) => v >= V);
    if (bad >= 0) throw new PlanError('calibration.file', `${cal.file}: token ${bad} = ${ids[bad]} is not an id in [0, ${V})`);
  } else if (cal.file !== undefined && !isIdList(readCalibrationFile(cal.file))) {
    // any other file is text, tokenised like calibration.text
    ids = await tokenizeCalibration(ck, readCalibrationFile(cal.file), 'calibration.file');
    ids = ids.slice(0, cal.tokens);
  } else if (cal.file !== undefined) {
    const t = readCalibrationFile(cal.file).trim();
    let raw: unknown;
    try {
      raw = t.startsWith('[') ? JSON.parse(t) : t.split(/\s+/).map(Number);
    } catch (e) {
      throw new PlanError('calibration.file', `${cal.file}: invalid JSON: ${(e as Error).message}`);
    }
    if (!Array.isArray(raw))
      throw new PlanError('calibration.file', `${cal.file}: expected a JSON array or whitespace-separated token ids`);
    ids = (raw as unknown[]).flat(2).map((v, k) => {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= V)
        throw new PlanError('calibration.file', `${cal.file}: token ${k} = ${JSON.stringify(v)} is not an id in [0, ${V})`);
      return v;
    });
  } else if (cal.text !== undefined) {
    ids = await tokenizeCalibration(ck, cal.text, 'calibration.text');
  } else {
    const next = mulberry32(cal.seed);
    ids = Array.from({ length: cal.tokens }, () => uniformInt(next, V));
  }
  if (ids.length === 0) throw new PlanError('calibration', 'no calibration tokens');
  if (ids.length > MAX_TOKENS)
    throw new PlanError('calibration', `${ids.length} calibration tokens, more than the limit of ${MAX_TOKENS}`);
  const seqs: number[][] = [];
  for (let i = 0; i < ids.length; i += cal.seq) seqs.push(ids.slice(i, i + cal.seq));
  // equal lengths for one batch: drop a short tail unless it is all there is
  const full = seqs.filter((s) => s.length === cal.seq || seqs.length === 1);
  return full.length > 0 ? full : [seqs[0]];
}

function readCalibrationFile(file: string): string {
  try {
    return readTextFile(file, { what: 'calibration file' });
  } catch (e) {
    throw new PlanError('calibration.file', `cannot read ${file}: ${readFailure(e)}`);
  }
}

/** The first `maxBytes` of a raw token file (a regular file; training token files can be far larger than calibration needs). */
function readTokenFilePrefix(file: string, maxBytes: number): Buffer {
  try {
    readRegularFile(file, { maxBytes: Number.MAX_SAFE_INTEGER, what: 'calibration file', probeOnly: true });
    const fd = openSync(file, 'r');
    try {
      const buf = Buffer.alloc(maxBytes);
      let off = 0;
      while (off < maxBytes) {
        const n = readSync(fd, buf, off, maxBytes - off, off);
        if (n === 0) break;
        off += n;
      }
      return buf.subarray(0, off);
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    throw new PlanError('calibration.file', `cannot read ${file}: ${readFailure(e)}`);
  }
}

/** A JSON array, or whitespace-separated integers: token ids rather than text. */
function isIdList(text: string): boolean {
  const t = text.trim();
  return t.startsWith('[') || /^\d+(\s+\d+)*$/.test(t);
}

async function tokenizeCalibration(ck: Checkpoint, text: string, field: string): Promise<number[]> {
  const V = ck.config.vocabSize;
  const ids = (await CheckpointFolder.of(ck).tokenizer()).encode(text);
  const bad = ids.findIndex((v) => v >= V);
  if (bad >= 0)
    throw new PlanError(field, `the tokenizer gives id ${ids[bad]} (token ${bad}), outside the model's vocabulary [0, ${V})`);
  return ids;
}

export async function selectLayers(ck: Checkpoint, batch: number[][], opts: SelectOptions): Promise<SelectResult> {
  const L = ck.config.numLayers;
  const distances = new Array<number>(L).fill(NaN);
  if (opts.engine === 'torch') {
    // loaded lazily as the tfjs stream is; non-finite distances come back as null (JSON)
    const { torchDistances } = await import('../model/torch-passes.ts');
    const d = await torchDistances(ck.dir, batch, opts.metric, { ...opts.torch, progress: opts.progress });
    for (let l = 0; l < L; l++) distances[l] = d[l] ?? NaN;
  } else {
    const visit = (l: number, xIn: Float32Array, xOut: Float32Array) => {
      distances[l] = layerDistance(xIn, xOut, ck.config.hiddenSize, opts.metric);
    };
    // loaded lazily: growing with explicit positions never needs tfjs
    const stream = opts.stream ?? (await import('./residual-stream.ts')).residualStream;
    await stream(ck, batch, visit, opts.progress);
  }
  // a NaN distance sorts arbitrarily: picking layers by it would be silent nonsense
  const bad = distances.findIndex((d) => !Number.isFinite(d));
  if (bad >= 0) {
    throw new PlanError(
      'placement',
      `${ck.dir}: layer ${bad}'s ${opts.metric} distance is ${distances[bad]} (non-finite activations in or out of the layer); cannot rank layers by it`,
    );
  }
  const ranking = pickLayers(distances, L, opts.order);
  const picks = opts.count === undefined ? [] : pickLayers(distances, opts.count, opts.order);
  return { distances, ranking, picks };
}
