/**
 * What makes a checkpoint folder a Hugging Face model (docs/hf-format.md). Every folder grow,
 * train and bake write goes through writeModelFiles:
 *
 * - masks below 1: the masked config.json (config.ts maskedConfigJson: model_type
 *   "flm_grow_masked", which plain transformers refuses, and auto_map) plus the remote code that
 *   loads it with `trust_remote_code=True`, taken from the package (python/flm_grow_torch/hf_remote/
 *   configuration_flm_grow.py and modeling_flm_grow.py, and python/flm_grow_torch/masks.py as
 *   flm_grow_masks.py), never from an input folder;
 * - otherwise the plain family config, no modeling files;
 * - always README.md, a model card filled from hf_remote/model_card.md (the torch trainer fills
 *   the same template, python/flm_grow_torch/hf_remote/__init__.py).
 */
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { configToJson, maskedConfigJson, type ModelConfig } from '../spec/config.ts';
import { MASKED_MODEL_TYPE } from '../spec/families.ts';
import type { SourceIdentity, TrainRecord } from './manifest.ts';
import type { MaskSchedule } from './masks.ts';
import type { MaskSet } from './masks.ts';
import { groupsBelowOne } from './masks.ts';
import { FlmGrowError } from '../util/errors.ts';

/** python/flm_grow_torch (src/ and dist/ sit at the same depth under the project root). */
const PACKAGE_DIR = join(import.meta.dirname, '..', '..', 'python', 'flm_grow_torch');
export const HF_REMOTE_DIR = join(PACKAGE_DIR, 'hf_remote');
export const CARD_FILE = 'README.md';
/** A masked folder's modeling files -> where each comes from in the package. */
export const REMOTE_SOURCES: Readonly<Record<string, string>> = {
  'configuration_flm_grow.py': join(HF_REMOTE_DIR, 'configuration_flm_grow.py'),
  'modeling_flm_grow.py': join(HF_REMOTE_DIR, 'modeling_flm_grow.py'),
  'flm_grow_masks.py': join(PACKAGE_DIR, 'masks.py'),
};
export const REMOTE_FILES: readonly string[] = Object.keys(REMOTE_SOURCES);
const BASE_LINE = /^BASE_MODEL_TYPE = "[^"]*"$/gm;

export type GroupBelow = ReturnType<typeof groupsBelowOne>[number];

function readPackageFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new FlmGrowError(
      'MissingPackageFile',
      `${path}: cannot read flm-grow's own file (${(e as Error).message}); reinstall flm-grow`,
    );
  }
}

/** The modeling files of a masked folder of base family `baseModelType` (hf_remote/__init__.py remote_files). */
export function remoteFiles(baseModelType: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, src] of Object.entries(REMOTE_SOURCES)) out[name] = readPackageFile(src);
  const conf = out['configuration_flm_grow.py'];
  if ((conf.match(BASE_LINE) ?? []).length !== 1)
    throw new FlmGrowError(
      'MissingPackageFile',
      `${REMOTE_SOURCES['configuration_flm_grow.py']}: no single BASE_MODEL_TYPE line`,
    );
  out['configuration_flm_grow.py'] = conf.replace(BASE_LINE, `BASE_MODEL_TYPE = ${JSON.stringify(baseModelType)}`);
  return out;
}

/** Whether a folder with these masks is written in the masked form (some mask below 1). */
export function isMasked(masks: MaskSet | undefined): boolean {
  return masks !== undefined && groupsBelowOne(masks).length > 0;
}

/** What the model card says; the rest comes from the config and the masks. */
export interface CardInfo {
  kind: 'grow' | 'train' | 'bake';
  /**
   * The folder as the card's loading code names it; default "path/to/folder" (a split grow's
   * parts must write the same card, whatever their folders are called).
   */
  folder?: string;
  /** What the command read. */
  source?: SourceIdentity;
  /** grow: the source's config (sizes before). */
  sourceConfig?: ModelConfig;
  mode?: 'masked' | 'zero';
  /** grow: planToJson of the resolved plan. */
  plan?: Record<string, unknown>;
  schedule?: readonly MaskSchedule[];
  train?: TrainRecord;
  /** bake: the checkpoint the grown one came from, and the masks dropped (--force). */
  grownFrom?: SourceIdentity | null;
  dropped?: readonly GroupBelow[];
  /** How it was verified, when a number is known; else the card says how to verify. */
  verification?: string;
}

const TITLE_FAMILY: Record<string, string> = {
  llama: 'Llama',
  'tele-flm': 'Tele-FLM',
  mistral: 'Mistral',
  qwen2: 'Qwen2',
  qwen3: 'Qwen3',
};

/** The card's loading snippet and the note under it (hf_remote/__init__.py load_code). */
export function loadCode(folder: string, masked: boolean, family: string): { code: string; note: string } {
  const path = JSON.stringify(folder);
  if (masked)
    return {
      code:
        'from transformers import AutoModelForCausalLM\n\n' +
        `model = AutoModelForCausalLM.from_pretrained(${path}, trust_remote_code=True)\n` +
        '# the masks: model.flm_grow_masks.set_step(n) sets them as the schedule has them n steps after growth',
      note:
        'Plain `AutoModelForCausalLM.from_pretrained(folder)` refuses this folder (its model_type ' +
        `\`${MASKED_MODEL_TYPE}\` is not a transformers model): its weights without the masks compute a different ` +
        "function. `trust_remote_code=True` runs this folder's modeling_flm_grow.py and flm_grow_masks.py (copied " +
        'from flm-grow; they need only torch and transformers). `flm-grow bake <folder> --out <plain>` writes the ' +
        'plain model once training has annealed every mask to 1.',
    };
  if (family === 'tele-flm')
    return {
      code: `from flm_grow_torch import load_model\n\nmodel = load_model(${path})`,
      note:
        "transformers has no Tele-FLM class of its own: load the folder with flm-grow's torch engine (above) or " +
        'with the published Tele-FLM modeling code (CofeAI/Tele-FLM, trust_remote_code=True).',
    };
  return {
    code: `from transformers import AutoModelForCausalLM\n\nmodel = AutoModelForCausalLM.from_pretrained(${path})`,
    note: 'A plain checkpoint of its family: no masks, no remote code.',
  };
}

/** hf_remote/__init__.py mask_state */
function maskState(masked: boolean, below: readonly GroupBelow[]): string {
  if (!masked) return 'Plain: every mask is 1 (or the folder has none); the weights are the model.';
  const groups = below
    .map((g) => `${g.group} (${g.count} unit${g.count === 1 ? '' : 's'}, min ${Number(g.minValue.toPrecision(6))})`)
    .join(', ');
  return `Still masked: masks below 1 in ${groups}. The masks (masks.safetensors) are part of the model.`;
}

const SIZES: [string, (c: ModelConfig) => number][] = [
  ['hidden_size', (c) => c.hiddenSize],
  ['intermediate_size', (c) => c.intermediateSize],
  ['num_hidden_layers', (c) => c.numLayers],
  ['num_attention_heads', (c) => c.numHeads],
  ['num_key_value_heads', (c) => c.numKvHeads],
  ['head_dim', (c) => c.headDim],
  ['vocab_size', (c) => c.vocabSize],
];

function scheduleLines(s: readonly MaskSchedule[] | undefined): string {
  if (s === undefined || s.length === 0) return '';
  return (
    '\n\nMask schedule (optimizer steps after growth):\n\n' +
    s.map((e) => `- ${e.group}: ${e.shape} from step ${e.startStep} over ${e.length} steps`).join('\n')
  );
}

function sourceText(s: SourceIdentity | undefined | null): string {
  if (s === undefined || s === null) return 'unknown';
  // the folder's name, not its path: parts of a split grow may see the source under other mounts
  return `\`${basename(s.path)}\` (${s.parameters.toLocaleString('en-US')} parameters, config.json sha256 ${s.configSha256.slice(0, 16)}…)`;
}

/** The model card of a folder holding `cfg` with these masks (README.md). */
export function modelCard(info: CardInfo, cfg: ModelConfig, masks: MaskSet | undefined): string {
  const below = masks === undefined ? [] : groupsBelowOne(masks);
  const masked = below.length > 0;
  const fam = TITLE_FAMILY[cfg.family] ?? cfg.family;
  const what = { grow: 'Grown', train: 'Trained', bake: 'Baked' }[info.kind];
  const title = `${what} ${fam} checkpoint: ${cfg.numLayers} layers, hidden ${cfg.hiddenSize} (${masked ? 'masked' : 'plain'})`;
  let summary: string;
  let source = `- read: ${sourceText(info.source)}`;
  let plan: string;
  if (info.kind === 'grow') {
    summary =
      `Written by \`flm-grow grow\` (Masked Structural Growth, ${info.mode ?? 'masked'} mode) from a ${fam} checkpoint. ` +
      (masked
        ? "The new units are masked: at the masks' current values the model computes the source's function; training anneals the masks to 1."
        : 'No mask is below 1: the plain model of these weights computes the source function.');
    const src = info.sourceConfig;
    const rows = SIZES.map(([k, f]) => `| ${k} | ${src !== undefined ? f(src) : '?'} | ${f(cfg)} |`).join('\n');
    const p = info.plan ?? {};
    plan =
      `| | source | grown |\n|---|---|---|\n${rows}\n\n` +
      `Mode \`${info.mode ?? 'masked'}\`; plan: \`${JSON.stringify({ targets: p.targets, init: p.init, vocab: p.vocab, placement: p.placement, seed: p.seed })}\`` +
      scheduleLines(info.schedule);
  } else if (info.kind === 'train') {
    const t = info.train;
    summary =
      `Written by \`flm-grow train\` at optimizer step ${t?.step ?? '?'}` +
      (t?.stageStep !== undefined ? ` (${t.stageStep} steps since growth)` : '') +
      '.';
    if (t?.data !== undefined)
      source += `\n- data: \`${t.data.path}\` (${t.data.tokens} tokens, sha256 ${t.data.sha256.slice(0, 16)}…)`;
    plan =
      'Training, not growth: the plan is in the grown checkpoint this run started from (its card and manifest).' +
      scheduleLines(info.schedule);
  } else {
    summary =
      'Written by `flm-grow bake`: the same tensors, byte for byte, as the grown checkpoint it read, without masks.safetensors.' +
      ((info.dropped ?? []).length > 0
        ? ` Masks still below 1 were DROPPED (--force): ${(info.dropped ?? []).map((g) => g.group).join(', ')}; this model is not the masked one.`
        : ' Every mask was 1: this is the masked model, written as a plain one.');
    source += `\n- grown from: ${sourceText(info.grownFrom)}`;
    plan = 'Bake does not grow: see the grown checkpoint (above) and its manifest.';
  }
  const verification =
    info.verification ??
    (info.kind === 'train'
      ? `Training losses at this save: last ${info.train?.lastLoss ?? 'n/a'}, eval ${info.train?.evalLoss ?? 'n/a'}.`
      : info.kind === 'bake'
        ? "The tensors are the grown checkpoint's (sha256 of every file in flm-grow-manifest.json)."
        : "Not run by this command. `flm-grow verify <source> <this folder>` compares its logits with the source's (docs/reliability.md); with transformers, compare the source's logits with this folder's loaded as above.");
  const { code, note } = loadCode(info.folder ?? 'path/to/folder', masked, cfg.family);
  return renderCard({
    tag: masked ? 'msg-masked' : 'plain',
    title,
    summary,
    source,
    plan,
    mask_state: maskState(masked, below),
    load_code: code,
    load_note: note,
    verification,
    version: '0.1.0',
    kind: info.kind,
  });
}

/** model_card.md with every {{name}} replaced (hf_remote/__init__.py render_card). */
export function renderCard(fields: Record<string, string>): string {
  const path = join(HF_REMOTE_DIR, 'model_card.md');
  const text = readPackageFile(path);
  const missing = [...new Set([...text.matchAll(/\{\{(\w+)\}\}/g)].map((m) => m[1]))].filter((k) => !(k in fields));
  if (missing.length > 0) throw new FlmGrowError('MissingPackageFile', `${path}: no value for ${missing.join(', ')}`);
  return text.replace(/\{\{(\w+)\}\}/g, (_m, k: string) => fields[k]);
}

/** Where writeModelFiles writes (a CheckpointWriter: each file hashed into the manifest). */
export interface SideFileSink {
  writeSideFile(rel: string, content: string): Promise<void>;
}

/**
 * config.json (masked when some mask is below 1, else plain), the remote code (masked only) and
 * README.md. Returns whether the folder was written masked.
 */
export async function writeModelFiles(
  w: SideFileSink,
  cfg: ModelConfig,
  masks: MaskSet | undefined,
  card: CardInfo,
): Promise<boolean> {
  const masked = isMasked(masks);
  const plain = configToJson(cfg);
  await w.writeSideFile('config.json', JSON.stringify(masked ? maskedConfigJson(plain) : plain, null, 2) + '\n');
  if (masked) for (const [name, text] of Object.entries(remoteFiles(String(plain.model_type)))) await w.writeSideFile(name, text);
  await w.writeSideFile(CARD_FILE, modelCard(card, cfg, masks));
  return masked;
}
