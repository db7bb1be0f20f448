/** inspect's report: everything it prints, read from headers, config, masks and manifest. */
import { existsSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { expectedTensors } from '../spec/arch.ts';
import { readConfigFile } from '../spec/config.ts';
import { dtypeSize, parseDtypeName, type DType } from '../util/dtype.ts';
import { CheckpointFolder } from '../checkpoint/checkpoint-folder.ts';
import { numel } from '../checkpoint/safetensors.ts';
import { checkTensorsAgainstConfig, formatMismatch, type TensorMismatch } from '../spec/arch.ts';
import type { ModelConfig } from '../spec/config.ts';
import { FlmGrowError } from '../util/errors.ts';
import { groupsBelowOne, MASKS_FILE, type MaskSet } from '../checkpoint/masks.ts';
import { MANIFEST_FILE, type GrowManifest, type Manifest } from '../checkpoint/manifest.ts';
import { bytesLabel, countLabel, plural } from '../util/format.ts';

export interface InspectReport {
  checkpoint: string;
  /** A bare config.json was inspected: tensors and sizes are what the config implies, none were read. */
  configOnly?: true;
  parameters: number;
  bytes: number;
  largestTensorBytes: number;
  config: Record<string, unknown>;
  summary: {
    modelType: string;
    hiddenSize: number;
    intermediateSize: number;
    numLayers: number;
    numHeads: number;
    numKvHeads: number;
    headDim: number;
    vocabSize: number;
    ropeTheta: number;
    useMup: boolean;
    dtype: string | undefined;
  };
  dtypes: Record<string, { tensors: number; parameters: number; bytes: number }>;
  shards: { file: string; tensors: number; bytes: number }[];
  tensors: { name: string; dtype: string; shape: number[]; file: string; bytes: number }[];
  mismatches: (TensorMismatch & { message: string })[];
  masks:
    | { file: string; groupsBelowOne: { group: string; minValue: number; count: number }[] }
    | { file: string; error: string }
    | null;
  manifest:
    | (Pick<Manifest, 'kind' | 'created' | 'source' | 'masks' | 'layerMap'> & {
        mode?: GrowManifest['mode'];
        file: string;
        files: number;
      })
    | null;
}

function summary(c: ModelConfig): InspectReport['summary'] {
  return {
    modelType: c.modelType,
    hiddenSize: c.hiddenSize,
    intermediateSize: c.intermediateSize,
    numLayers: c.numLayers,
    numHeads: c.numHeads,
    numKvHeads: c.numKvHeads,
    headDim: c.headDim,
    vocabSize: c.vocabSize,
    ropeTheta: c.ropeTheta,
    useMup: c.useMup,
    dtype: c.dtype,
  };
}

/**
 * A bare config.json (as `plan` takes): the tensors, parameters and bytes the config implies,
 * at its dtype (F32 when it names none); no shards, masks or manifest.
 */
export function inspectConfig(path: string): InspectReport {
  const cfg = readConfigFile(path);
  const dtype: DType = cfg.dtype !== undefined ? parseDtypeName(cfg.dtype) : 'F32';
  const tensors = expectedTensors(cfg).map((t) => ({
    name: t.name,
    dtype: dtype as string,
    shape: [...t.shape],
    file: '',
    bytes: numel(t.shape) * dtypeSize(dtype),
  }));
  const parameters = tensors.reduce((a, t) => a + numel(t.shape), 0);
  const bytes = tensors.reduce((a, t) => a + t.bytes, 0);
  return {
    checkpoint: path,
    configOnly: true,
    parameters,
    bytes,
    largestTensorBytes: Math.max(0, ...tensors.map((t) => t.bytes)),
    config: cfg.raw,
    summary: summary(cfg),
    dtypes: { [dtype]: { tensors: tensors.length, parameters, bytes } },
    shards: [],
    tensors,
    mismatches: [],
    masks: null,
    manifest: null,
  };
}

/** Everything inspect reports, from headers, config, masks and manifest (no tensor data is read). */
export async function inspectCheckpoint(dir: string): Promise<InspectReport> {
  if (existsSync(dir) && statSync(dir).isFile()) return inspectConfig(dir);
  // The config check is ours to report in full, not to throw on the first problem.
  const ck = await CheckpointFolder.open(dir, { checkConfig: false });
  try {
    const tensors = [...ck.tensors.values()].map((t) => ({
      name: t.name,
      dtype: t.dtype as string,
      shape: [...t.shape],
      file: basename(t.file),
      bytes: t.end - t.begin,
    }));
    const dtypes: InspectReport['dtypes'] = {};
    const shardMap = new Map<string, { file: string; tensors: number; bytes: number }>();
    for (const t of ck.tensors.values()) {
      const d = (dtypes[t.dtype] ??= { tensors: 0, parameters: 0, bytes: 0 });
      d.tensors++;
      d.parameters += numel(t.shape);
      d.bytes += t.end - t.begin;
    }
    for (const s of ck.shards) shardMap.set(basename(s), { file: basename(s), tensors: 0, bytes: 0 });
    for (const t of tensors) {
      const s = shardMap.get(t.file);
      if (s !== undefined) {
        s.tensors++;
        s.bytes += t.bytes;
      }
    }
    const mismatches = checkTensorsAgainstConfig(ck.config, ck.tensors).map((m) => ({ ...m, message: formatMismatch(m) }));
    let masks: InspectReport['masks'] = null;
    if (ck.hasMasks) {
      try {
        masks = { file: MASKS_FILE, groupsBelowOne: groupsBelowOne((await ck.masks()) as MaskSet) };
      } catch (e) {
        if (!(e instanceof FlmGrowError)) throw e;
        masks = { file: MASKS_FILE, error: e.message };
      }
    }
    const m = ck.manifest;
    const manifest: InspectReport['manifest'] =
      m === undefined
        ? null
        : {
            file: MANIFEST_FILE,
            kind: m.kind,
            created: m.created,
            mode: m.kind === 'grow' ? m.mode : undefined,
            source: m.source,
            masks: m.masks,
            layerMap: m.layerMap,
            files: Object.keys(m.files ?? {}).length,
          };
    return {
      checkpoint: dir,
      parameters: ck.parameterCount,
      bytes: ck.totalBytes,
      largestTensorBytes: ck.largestTensorBytes,
      config: ck.config.raw,
      summary: summary(ck.config),
      dtypes,
      shards: [...shardMap.values()],
      tensors,
      mismatches,
      masks,
      manifest,
    };
  } finally {
    await ck.close();
  }
}

const human = bytesLabel;
const count = countLabel;

/** What one mask entry of each group is, so counts read "16 hidden channels", "1 layer". */
const MASK_UNITS: Record<string, [string, string]> = {
  hidden: ['hidden channel', 'hidden channels'],
  heads: ['attention head', 'attention heads'],
  ffn: ['FFN channel', 'FFN channels'],
  layers: ['layer', 'layers'],
};

function maskGroupLabel(g: { group: string; minValue: number; count: number }): string {
  const [one, many] = MASK_UNITS[g.group] ?? ['entry', 'entries'];
  return `${g.group}: ${plural(g.count, one, many)} below 1 (lowest ${g.minValue})`;
}

export function formatReport(r: InspectReport): string {
  const s = r.summary;
  const lines: string[] = [];
  lines.push(`checkpoint  ${r.checkpoint}`);
  lines.push(
    `model       ${s.modelType}: ${plural(s.numLayers, 'layer')}, hidden ${s.hiddenSize}, ffn ${s.intermediateSize}, ` +
      `heads ${s.numHeads} (kv ${s.numKvHeads}) × ${s.headDim}, vocab ${s.vocabSize}, rope θ ${s.ropeTheta}` +
      `${s.useMup ? ', µP' : ''}${s.dtype !== undefined ? `, config dtype ${s.dtype}` : ''}`,
  );
  lines.push(`parameters  ${r.parameters} (${count(r.parameters)})`);
  lines.push(`bytes       ${r.bytes} (${human(r.bytes)}), largest tensor ${human(r.largestTensorBytes)}`);
  lines.push(
    `dtypes      ${Object.entries(r.dtypes)
      .map(([d, v]) => `${d}: ${plural(v.tensors, 'tensor')}, ${count(v.parameters)} parameters`)
      .join('; ')}`,
  );
  if (r.configOnly === true)
    lines.push('shards      none: a config.json alone (tensors, parameters and bytes are what it implies at its dtype)');
  else lines.push(`shards      ${r.shards.length}`);
  for (const sh of r.shards) lines.push(`  ${sh.file}  ${plural(sh.tensors, 'tensor')}  ${human(sh.bytes)}`);
  if (r.masks !== null) {
    if ('error' in r.masks) lines.push(`masks       ${r.masks.file}: INVALID: ${r.masks.error}`);
    else if (r.masks.groupsBelowOne.length === 0) lines.push(`masks       ${r.masks.file}: all 1 (fully annealed)`);
    else lines.push(`masks       ${r.masks.file}: ${r.masks.groupsBelowOne.map(maskGroupLabel).join('; ')}`);
  }
  if (r.manifest !== null) {
    const m = r.manifest;
    lines.push(
      `manifest    ${m.file}: ${m.kind}${m.mode !== undefined ? ` (${m.mode})` : ''}, created ${m.created}` +
        `${m.source !== undefined ? `, from ${m.source.path}` : ''}, ${plural(m.files, 'file')} hashed` +
        `${m.masks !== undefined ? `, ${plural(m.masks.schedule.length, 'mask schedule')}` : ''}`,
    );
  }
  if (r.configOnly === true) lines.push(`tensors     ${r.tensors.length} (from the config)`);
  else if (r.mismatches.length === 0) lines.push('config      tensors match config.json');
  else {
    lines.push(`config      ${plural(r.mismatches.length, 'mismatch', 'mismatches')} between config.json and tensors:`);
    for (const m of r.mismatches) lines.push(`  ${m.message}`);
  }
  return lines.join('\n') + '\n';
}
