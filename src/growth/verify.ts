/**
 * Function preservation, measured: run the source and the grown checkpoint (each layer-streamed,
 * masks applied where present) on the same tokens and compare logits over the source's vocab
 * and the residual stream on the source's hidden coordinates, at every source layer boundary.
 * New units are appended along the hidden and vocab axes (growth's layout), so "old
 * coordinates" are the first H and V of the grown model.
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend, type BackendName } from '../engines/tfjs-backend.ts';
import { CheckpointFolder } from '../checkpoint/checkpoint-folder.ts';
import { FlmGrowError, ModelInputError } from '../util/errors.ts';
import { streamedForward } from '../model/streaming.ts';
import type { TorchPassOptions } from '../model/torch-passes.ts';
import { randomIds, readInputIds } from '../model/input-ids.ts';
import { boundaryMap } from './boundary.ts';
import { countProblem, MAX_SEQ_LEN, MAX_TOKENS } from '../util/limits.ts';
import { tensorName } from '../spec/arch.ts';
import type { Manifest } from '../checkpoint/manifest.ts';
import type { ModelConfig } from '../spec/config.ts';

export const DEFAULT_TOLERANCE = 1e-5;

export interface VerifyOptions {
  /** Random tokens in all (rounded up to whole sequences of `seq`). */
  tokens?: number;
  seq?: number;
  seed?: number;
  /** A safetensors file with input_ids [B, T] instead of random ids. */
  input?: string;
  /** Explicit ids (used before `input` and random ids). */
  ids?: number[][];
  /**
   * Max logit difference relative to the source's max |logit|. Default DEFAULT_TOLERANCE, or
   * for a zero-mode growth whose manifest records rounded norm gains, roundingTolerance().
   */
  tolerance?: number;
  backend?: BackendName;
  /** Progress over both passes: done and total count layer steps of source + grown. */
  onProgress?: (done: number, total: number, which: 'source' | 'grown') => void;
  /** Throw VerifyFailedError above tolerance (default true). */
  throwOnFail?: boolean;
  /**
   * torch: both forward passes on the torch engine (model/torch-passes.ts, layer-streamed, every
   * core or the GPU); the comparison below is the same code either way.
   */
  engine?: 'tfjs' | 'torch';
  /** torch engine: device, dtype, band size, and its progress bars (weight bytes per pass). */
  torch?: TorchPassOptions;
}

export interface HiddenDiff {
  /** Source boundary n (HF hidden_states index: 0 = embeddings, L = after the final norm). */
  source: number;
  grown: number;
  maxAbs: number;
  /** maxAbs / max |source hidden| at this boundary. */
  relative: number;
  /** Max |value| on the grown model's new coordinates (0 for a masked model right after growth). */
  maxAbsNewCoords: number;
  /**
   * The grown state was multiplied by this before the comparison (absent: 1). An exact hidden
   * clone with tied embeddings divides the final norm's gains by k = H'/H, so the final normed
   * state is n/k by construction (growth/operators.ts, hidden): compared as k·(n/k).
   */
  grownScaledBy?: number;
}

export interface VerifyReport {
  source: string;
  grown: string;
  backend: string;
  batch: number;
  seqLen: number;
  inputs: 'random' | 'file' | 'given';
  seed?: number;
  sourceMasked: boolean;
  grownMasked: boolean;
  /** Vocab ids compared (the source's). */
  vocab: number;
  /** Hidden coordinates compared (the source's). */
  hiddenSize: number;
  maxAbsLogitDiff: number;
  maxAbsSourceLogit: number;
  relativeLogitDiff: number;
  hidden: HiddenDiff[];
  /** Grown layers skipped as inserted (from the manifest's layerMap). */
  insertedLayers: number[];
  tolerance: number;
  /** Where the tolerance comes from (the option, the default, or the manifest's rounded zero-mode gains). */
  toleranceSource: string;
  passed: boolean;
}

/** Unit roundoff 2^-p of a p-bit significand (round to nearest). */
const UNIT_ROUNDOFF: Record<string, number> = { BF16: 2 ** -8, F16: 2 ** -11, F32: 2 ** -24, F64: 2 ** -53 };

/**
 * k = H'/H when the manifest records an exact hidden clone into a tied-embedding model (its final
 * norm's gains were divided by k, so the last hidden state is the old one over k); else 1.
 */
function tiedCloneFinalScale(m: Manifest | undefined, cs: ModelConfig, cg: ModelConfig): number {
  if (m?.kind !== 'grow') return 1;
  const exact = (m.plan as { clones?: { exact?: unknown[] } } | undefined)?.clones?.exact ?? [];
  return cg.tieWordEmbeddings && exact.includes('H') ? cg.hiddenSize / cs.hiddenSize : 1;
}

/**
 * Zero mode in a 16-bit dtype stores every norm gain g·sqrt(H/H') rounded: each of the 2L+1
 * RMSNorms on the source's path (two per layer and the final one) multiplies its output
 * coordinates by (1 + ε), |ε| ≤ u (the dtype's unit roundoff). To first order the relative
 * logit error is at most the sum, (2L+1)·u. Undefined when the manifest records no rounding.
 */
export function roundingTolerance(
  m: Manifest | undefined,
  sourceLayers: number,
  dtype: string,
): { tolerance: number; why: string } | undefined {
  if (m?.kind !== 'grow') return undefined;
  const u = UNIT_ROUNDOFF[dtype] ?? UNIT_ROUNDOFF.BF16;
  const clones = (m.plan as { clones?: { exact?: unknown[] } } | undefined)?.clones;
  if ((clones?.exact?.length ?? 0) > 0 && u > UNIT_ROUNDOFF.F32) {
    // init.new clone splits out-weights w/c (c copies): rounded unless c is a power of two, and so
    // is the noise; each of the up to 7 split matrices of a layer (q/k/v/gate/up, o, down) and the
    // LM head (or the tied final norm) adds at most u to the relative error of its output
    const splits = 7 * sourceLayers + 1;
    return {
      tolerance: splits * u,
      why: `manifest: clone growth in ${dtype} (split weights rounded): ${splits} split matrices × unit roundoff ${u.toExponential(3)} = ${(splits * u).toExponential(3)}`,
    };
  }
  const zn = (m.plan as { zeroModeNorm?: { exactness?: string } } | undefined)?.zeroModeNorm;
  if (m.mode !== 'zero' || zn?.exactness !== 'rounded') return undefined;
  const norms = 2 * sourceLayers + 1;
  return {
    tolerance: norms * u,
    why: `manifest: zero mode with norm gains rounded to ${dtype} (exactness "rounded"): ${norms} norms × unit roundoff ${u.toExponential(3)} = ${(norms * u).toExponential(3)}`,
  };
}

export class VerifyFailedError extends FlmGrowError {
  readonly report: VerifyReport;
  constructor(report: VerifyReport) {
    super(
      'VerifyFailed',
      `${report.grown}: logits differ from ${report.source} by ${report.maxAbsLogitDiff.toExponential(3)} ` +
        `(relative ${report.relativeLogitDiff.toExponential(3)} of max |logit| ${report.maxAbsSourceLogit.toPrecision(4)}), above the tolerance ${report.tolerance}`,
    );
    this.report = report;
  }
}

/** What the comparison reads of a pass (streamedForward's and torchForward's results alike). */
interface PassResult {
  logits: Float32Array;
  hidden?: Float32Array[];
  batch: number;
  seqLen: number;
  masked: boolean;
}

function logitDiff(a: PassResult, Vs: number, b: PassResult, Vg: number): { maxAbs: number; scale: number } {
  const N = a.batch * a.seqLen;
  let maxAbs = 0,
    scale = 0;
  for (let n = 0; n < N; n++) {
    for (let v = 0; v < Vs; v++) {
      const x = a.logits[n * Vs + v],
        y = b.logits[n * Vg + v];
      if (x === y) {
        if (Number.isFinite(x)) scale = Math.max(scale, Math.abs(x));
        continue;
      } // covers -inf == -inf (masked ids)
      // an id the source masks out (padding: -inf) has no logit to preserve; a baked model gives it a finite one
      if (x === -Infinity) continue;
      const d = Math.abs(x - y);
      maxAbs = Math.max(maxAbs, Number.isNaN(d) ? Infinity : d);
      if (Number.isFinite(x)) scale = Math.max(scale, Math.abs(x));
    }
  }
  return { maxAbs, scale };
}

function hiddenDiff(a: Float32Array, Hs: number, b: Float32Array, Hg: number): { maxAbs: number; scale: number; newMax: number } {
  const N = a.length / Hs;
  let maxAbs = 0,
    scale = 0,
    newMax = 0;
  for (let n = 0; n < N; n++) {
    for (let i = 0; i < Hs; i++) {
      const x = a[n * Hs + i];
      maxAbs = Math.max(maxAbs, Math.abs(x - b[n * Hg + i]));
      scale = Math.max(scale, Math.abs(x));
    }
    for (let i = Hs; i < Hg; i++) newMax = Math.max(newMax, Math.abs(b[n * Hg + i]));
  }
  return { maxAbs, scale, newMax };
}

export async function verifyGrowth(sourceDir: string, grownDir: string, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const torch = opts.engine === 'torch';
  const backend = torch
    ? 'torch'
    : opts.backend !== undefined || tf.engine().backendName == null
      ? await initBackend(opts.backend ?? 'auto')
      : tf.getBackend();
  let tolerance = opts.tolerance ?? DEFAULT_TOLERANCE;
  let toleranceSource = opts.tolerance !== undefined ? 'given' : 'default';
  if (!(tolerance >= 0)) throw new ModelInputError(`--tolerance must be >= 0, got ${tolerance}`);
  const src = await CheckpointFolder.open(sourceDir);
  let grown: CheckpointFolder | undefined;
  try {
    grown = await CheckpointFolder.open(grownDir);
    const cs = src.config,
      cg = grown.config;
    if (cg.hiddenSize < cs.hiddenSize || cg.vocabSize < cs.vocabSize || cg.numLayers < cs.numLayers) {
      throw new FlmGrowError(
        'NotGrown',
        `${grownDir} (H ${cg.hiddenSize}, V ${cg.vocabSize}, L ${cg.numLayers}) is smaller than ${sourceDir} (H ${cs.hiddenSize}, V ${cs.vocabSize}, L ${cs.numLayers})`,
      );
    }
    const manifest = grown.manifest;
    const rounding =
      opts.tolerance === undefined
        ? roundingTolerance(manifest, cs.numLayers, grown.info(tensorName('final_norm')).dtype)
        : undefined;
    if (rounding !== undefined) ({ tolerance, why: toleranceSource } = rounding);
    const srcMasks = await src.masks();
    const grownMasks = await grown.masks();
    const seq = opts.seq ?? 32;
    const seed = opts.seed ?? 0;
    let ids: number[][];
    let inputs: VerifyReport['inputs'];
    if (opts.ids !== undefined) {
      ids = opts.ids;
      inputs = 'given';
    } else if (opts.input !== undefined) {
      ids = await readInputIds(opts.input);
      inputs = 'file';
    } else {
      const tokens = opts.tokens ?? 128;
      const bad = countProblem(seq, MAX_SEQ_LEN, '--seq') ?? countProblem(tokens, MAX_TOKENS, '--tokens');
      if (bad !== undefined) throw new ModelInputError(`${bad.field} ${bad.message}`);
      // real (unmasked) ids of the source only: padding ids have -inf logits and no meaning
      const allowed = srcMasks === undefined ? undefined : [...srcMasks.vocab.keys()].filter((v) => srcMasks.vocab[v] !== 0);
      ids = randomIds(Math.ceil(tokens / seq), seq, cs.vocabSize, seed, allowed);
      inputs = 'random';
    }
    for (const row of ids)
      for (const v of row) {
        if (v >= cs.vocabSize) throw new ModelInputError(`input id ${v} is outside the source vocabulary [0, ${cs.vocabSize})`);
      }
    const total = cs.numLayers + 1 + cg.numLayers + 1;
    let s: PassResult, g: PassResult;
    if (torch) {
      // masks: the torch pass reads each folder's masks.safetensors itself, as CheckpointFolder.masks() does here
      // both passes in one Python process (torch is imported once)
      const { torchForwardMany } = await import('../model/torch-passes.ts');
      const t = { ...opts.torch, collectHidden: true };
      [s, g] = await torchForwardMany([sourceDir, grownDir], ids, [
        { ...t, masks: srcMasks !== undefined, progressLabel: 'verify: source (torch)' },
        { ...t, masks: grownMasks !== undefined, progressLabel: 'verify: grown (torch)' },
      ]);
      opts.onProgress?.(total, total, 'grown');
    } else {
      s = await streamedForward(src, ids, {
        masks: srcMasks ?? null,
        collectHidden: true,
        onLayer: (d) => opts.onProgress?.(d + 1, total, 'source'),
      });
      g = await streamedForward(grown, ids, {
        masks: grownMasks ?? null,
        collectHidden: true,
        onLayer: (d) => opts.onProgress?.(cs.numLayers + 1 + d + 1, total, 'grown'),
      });
    }
    const layerMap = manifest?.layerMap;
    const bmap = boundaryMap(cs.numLayers, cg.numLayers, layerMap);
    const finalScale = tiedCloneFinalScale(manifest, cs, cg);
    const hidden: HiddenDiff[] = [];
    bmap.forEach((k, n) => {
      if (k < 0) return;
      const scaled = n === cs.numLayers && finalScale !== 1;
      const gh = (g.hidden as Float32Array[])[k];
      const d = hiddenDiff(
        (s.hidden as Float32Array[])[n],
        cs.hiddenSize,
        scaled ? gh.map((x) => x * finalScale) : gh,
        cg.hiddenSize,
      );
      hidden.push({
        source: n,
        grown: k,
        maxAbs: d.maxAbs,
        relative: d.scale > 0 ? d.maxAbs / d.scale : d.maxAbs,
        maxAbsNewCoords: d.newMax,
        ...(scaled ? { grownScaledBy: finalScale } : {}),
      });
    });
    const { maxAbs, scale } = logitDiff(s, cs.vocabSize, g, cg.vocabSize);
    const relative = scale > 0 ? maxAbs / scale : maxAbs;
    const report: VerifyReport = {
      source: sourceDir,
      grown: grownDir,
      backend,
      batch: s.batch,
      seqLen: s.seqLen,
      inputs,
      ...(inputs === 'random' ? { seed } : {}),
      sourceMasked: s.masked,
      grownMasked: g.masked,
      vocab: cs.vocabSize,
      hiddenSize: cs.hiddenSize,
      maxAbsLogitDiff: maxAbs,
      maxAbsSourceLogit: scale,
      relativeLogitDiff: relative,
      hidden,
      insertedLayers: (layerMap ?? []).flatMap((e, i) => (e.inserted ? [i] : [])),
      tolerance,
      toleranceSource,
      passed: relative <= tolerance,
    };
    if (!report.passed && opts.throwOnFail !== false) throw new VerifyFailedError(report);
    return report;
  } finally {
    await src.close();
    await grown?.close();
  }
}

/** Human-readable lines of a report. */
export function formatReport(r: VerifyReport): string {
  const lines = [
    `source: ${r.source}${r.sourceMasked ? ' (masked)' : ''}`,
    `grown:  ${r.grown}${r.grownMasked ? ' (masked)' : ''}`,
    `inputs: ${r.batch} × ${r.seqLen} tokens (${r.inputs}${r.seed !== undefined ? `, seed ${r.seed}` : ''}), backend ${r.backend}`,
    `logits over the source's ${r.vocab} ids: max |Δ| ${r.maxAbsLogitDiff.toExponential(3)}, max |logit| ${r.maxAbsSourceLogit.toPrecision(4)}, relative ${r.relativeLogitDiff.toExponential(3)} (tolerance ${r.tolerance}${r.toleranceSource === 'default' || r.toleranceSource === 'given' ? '' : `; ${r.toleranceSource}`})`,
    `hidden states on the source's ${r.hiddenSize} coordinates${r.insertedLayers.length > 0 ? ` (inserted layers skipped: ${r.insertedLayers.join(', ')})` : ''}:`,
    ...r.hidden.map(
      (h) =>
        `  hidden_states.${h.source} ↔ ${h.grown}${h.grownScaledBy !== undefined ? ` × ${h.grownScaledBy}` : ''}: max |Δ| ${h.maxAbs.toExponential(3)} (relative ${h.relative.toExponential(3)})` +
        (h.maxAbsNewCoords > 0 ? `, new coordinates max |x| ${h.maxAbsNewCoords.toExponential(3)}` : ''),
    ),
    r.passed ? 'PASS: the grown model computes the source function' : 'FAIL: above tolerance',
  ];
  return lines.join('\n');
}
