/**
 * Training metrics as JSON lines: one object per step, plus `{event: 'growth'}` lines so plots
 * can mark where the model grew. Appending line by line keeps the log useful after a crash.
 *
 * Steps follow the Hugging Face Trainer's `global_step`: a record's `step` is the number of
 * optimizer updates done when it was logged (1 after the first update), the step its
 * checkpoint-<step> folder and the console lines carry. The file's first line says so:
 * `{"event":"format","version":2,...}`. Files written before it (no such line, version 1)
 * logged the 0-based index of the update instead; they are read with step + 1, and rewritten
 * in version 2 when a run appends to them.
 */
import { closeSync, existsSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { cannotRead, readFailureCode, readTextFile } from '../util/files.ts';
import { TrainError } from '../util/errors.ts';

export interface StepMetrics {
  step: number;
  /** Tokens consumed so far (all stages). */
  tokens: number;
  loss: number;
  evalLoss?: number;
  lr: number;
  /** MSG mask values by name (e.g. "layer.3", "hidden") while growth masks are ramping. */
  masks?: Record<string, number>;
  gradNorm: number;
  tokensPerSec: number;
  stage?: number | string;
}

export interface GrowthEvent {
  event: 'growth';
  step: number;
  stage: number | string;
  /** Free-form description of the operator (e.g. "width 64→128"). */
  detail?: string;
}

export type MetricsRecord = StepMetrics | GrowthEvent;

/** The format this code writes (the header line of every metrics.jsonl). */
export const METRICS_FORMAT_VERSION = 2;
export const METRICS_HEADER = {
  event: 'format',
  version: METRICS_FORMAT_VERSION,
  steps: 'optimizer updates done (Hugging Face Trainer global_step); checkpoint-<step> holds the weights after them',
} as const;

export function isGrowthEvent(r: MetricsRecord): r is GrowthEvent {
  return (r as GrowthEvent).event === 'growth';
}

// JSON has no NaN/Infinity; a diverged loss is written as null and read back as NaN.
const NUMERIC_FIELDS = ['step', 'tokens', 'loss', 'evalLoss', 'lr', 'gradNorm', 'tokensPerSec'] as const;

export interface MetricsLogOptions {
  /**
   * Resuming from a checkpoint at this step: drop logged step records with step ≥ it (the resumed
   * run logs them again) and growth events after it. A growth event at exactly this step is kept,
   * and logging it again is a no-op, whether or not the checkpoint was taken after the growth.
   * Without it the file is appended to as is.
   */
  resumeAtStep?: number;
  /** Start a fresh file, discarding any existing one. */
  truncate?: boolean;
}

export class MetricsLog {
  readonly path: string;
  private fd: number | undefined;
  private readonly growthLogged = new Set<string>();

  constructor(path: string, opts: MetricsLogOptions = {}) {
    this.path = path;
    try {
      if (opts.truncate === true || !existsSync(path)) writeFileSync(path, serialize(METRICS_HEADER) + '\n');
      else {
        const { records, version } = readMetricsFile(path);
        let existing = records;
        const at = opts.resumeAtStep;
        // a checkpoint at step N holds N updates: the records up to N stay, the resumed run logs N+1 on
        if (at !== undefined) existing = existing.filter((r) => r.step <= at);
        const text = metricsText(path);
        // A torn last line (crash mid-write) would swallow the next record appended to it; an old
        // file (version 1) is rewritten in this format rather than mixing two step conventions.
        const torn = text.length > 0 && !text.endsWith('\n');
        if (at !== undefined || torn || version !== METRICS_FORMAT_VERSION)
          writeFileSync(path, [METRICS_HEADER, ...existing].map((r) => serialize(r) + '\n').join(''));
        for (const r of existing) if (isGrowthEvent(r)) this.growthLogged.add(growthKey(r.step, r.stage));
      }
      this.fd = openSync(path, 'a');
    } catch (e) {
      if (e instanceof TrainError) throw e;
      throw new TrainError('MetricsUnwritable', `${path}: cannot open metrics log: ${(e as Error).message}`);
    }
  }

  private write(r: MetricsRecord): void {
    if (this.fd === undefined) throw new TrainError('MetricsClosed', `${this.path}: metrics log is closed`);
    writeSync(this.fd, serialize(r) + '\n');
  }

  logStep(m: StepMetrics): void {
    this.write(m);
  }

  /** Logs a growth event once: repeating the same (step, stage), as a resumed run may, is a no-op. */
  logGrowth(step: number, stage: number | string, detail?: string): void {
    const key = growthKey(step, stage);
    if (this.growthLogged.has(key)) return;
    this.growthLogged.add(key);
    this.write(detail === undefined ? { event: 'growth', step, stage } : { event: 'growth', step, stage, detail });
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

function growthKey(step: number, stage: number | string): string {
  return `${step}:${String(stage)}`;
}

function serialize(r: object): string {
  return JSON.stringify(r, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v));
}

function validate(obj: unknown, where: string): MetricsRecord {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj))
    throw new TrainError('MetricsInvalid', `${where}: not a JSON object`);
  const r = obj as Record<string, unknown>;
  if (typeof r.step !== 'number') throw new TrainError('MetricsInvalid', `${where}: field "step" must be a number`);
  if (r.event === 'growth') return r as unknown as GrowthEvent;
  if (r.event !== undefined) throw new TrainError('MetricsInvalid', `${where}: unknown event ${JSON.stringify(r.event)}`);
  for (const k of NUMERIC_FIELDS) {
    if (r[k] === null) r[k] = NaN;
    else if (r[k] !== undefined && typeof r[k] !== 'number')
      throw new TrainError('MetricsInvalid', `${where}: field "${k}" must be a number`);
  }
  if (r.masks !== undefined) {
    if (typeof r.masks !== 'object' || r.masks === null)
      throw new TrainError('MetricsInvalid', `${where}: field "masks" must be an object`);
    const masks = r.masks as Record<string, unknown>;
    for (const [k, v] of Object.entries(masks)) if (v === null) masks[k] = NaN;
  }
  return r as unknown as StepMetrics;
}

/** The log's text: a regular file of at most MAX_TEXT_BYTES (a FIFO or /dev/zero is refused at once). */
function metricsText(path: string): string {
  try {
    return readTextFile(path, { what: 'metrics log' });
  } catch (e) {
    throw new TrainError(readFailureCode(e, 'MetricsUnreadable'), `${path}: ${cannotRead('metrics', e)}`);
  }
}

/**
 * All records in file order, steps in the current convention (see the top of this file). A torn
 * final line (crash mid-write) is skipped; a malformed line anywhere else is an error naming the
 * file and line.
 */
export function readMetrics(path: string): MetricsRecord[] {
  return readMetricsFile(path).records;
}

/** The records (steps converted to version 2) and the version the file was written in. */
export function readMetricsFile(path: string): { records: MetricsRecord[]; version: number } {
  const text = metricsText(path);
  const lines = text.split('\n');
  const out: MetricsRecord[] = [];
  let version: number | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '') continue;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      const isTornTail = i === lines.length - 1 && !text.endsWith('\n');
      if (isTornTail) continue;
      throw new TrainError('MetricsInvalid', `${path}:${i + 1}: invalid JSON: ${(e as Error).message}`);
    }
    const o = obj as Record<string, unknown> | null;
    if (typeof o === 'object' && o !== null && o.event === 'format') {
      if (out.length > 0 || version !== undefined)
        throw new TrainError('MetricsInvalid', `${path}:${i + 1}: a format line must be the file's first line`);
      if (o.version !== METRICS_FORMAT_VERSION)
        throw new TrainError(
          'MetricsInvalid',
          `${path}:${i + 1}: metrics format version ${JSON.stringify(o.version)}; this flm-grow reads versions 1 and ${METRICS_FORMAT_VERSION}`,
        );
      version = METRICS_FORMAT_VERSION;
      continue;
    }
    out.push(validate(obj, `${path}:${i + 1}`));
  }
  // version 1 (no format line): a step record's step was the 0-based index of its update; growth
  // events already counted updates done (the step the grown stage starts from)
  if (version === undefined) for (const r of out) if (!isGrowthEvent(r)) r.step += 1;
  return { records: out, version: version ?? 1 };
}

/** Split records into step metrics and growth events. */
export function partitionMetrics(records: readonly MetricsRecord[]): { steps: StepMetrics[]; growth: GrowthEvent[] } {
  const steps: StepMetrics[] = [];
  const growth: GrowthEvent[] = [];
  for (const r of records) {
    if (isGrowthEvent(r)) growth.push(r);
    else steps.push(r);
  }
  return { steps, growth };
}
