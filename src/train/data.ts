/**
 * Training data: a text file run through a tokenizer, a pre-tokenized nanoGPT-style token file
 * (raw little-endian uint16 `.bin`/`.u16`, uint32 `.u32`), or a Megatron-LM indexed dataset (a
 * `.bin` with its `.idx` beside it: the index says the dtype and the documents). The tail is held
 * out for evaluation. Batches are a pure function of (seed, split, step), so resuming replays the
 * same batches. A weighted mix of such files (`a.bin:0.7,b.bin:0.3`) draws each row's source by
 * weight from the same random stream. python/flm_grow_torch/data.py reads all of these the same.
 */
import { isUtf8 } from 'node:buffer';
import { existsSync, statSync } from 'node:fs';
import { TrainError } from '../util/errors.ts';
import { cannotRead, MAX_DATA_BYTES, MAX_TEXT_BYTES, readFailureCode, readRegularFile } from '../util/files.ts';
import { BYTE_TOKENIZER_NAME, byteTokenizer, type Tokenizer } from '../checkpoint/tokenizer.ts';
import { hashSeed, mulberry32, uniformInt } from '../util/random.ts';
import { tokenDtypeForPath, tokenWidth, type TokenDtype } from '../util/token-files.ts';
import { trainDefault } from './options.ts';

export type Split = 'train' | 'eval';

export interface TokenDatasetOptions {
  /** For text files; defaults to the byte tokenizer. */
  tokenizer?: Tokenizer;
  /** Force reading as a token file; otherwise chosen by extension (.bin/.u16 → uint16, .u32 → uint32). */
  tokenDtype?: TokenDtype;
  /** Fraction of tokens held out at the end for evaluation (default 0.1; 0 = no eval split). */
  evalFraction?: number;
  /** If given, fail at load time unless each non-empty split holds at least seqLen+1 tokens. */
  seqLen?: number;
}

export interface Batch {
  /** [batchSize, seqLen] row-major. */
  inputs: Int32Array;
  /** inputs shifted left by one token in the source stream. */
  targets: Int32Array;
}

function decodeTokenBytes(bytes: Uint8Array, dtype: TokenDtype, file: string): Uint32Array {
  const width = tokenWidth(dtype);
  if (bytes.length % width !== 0) {
    throw new TrainError(
      'DataMisaligned',
      `${file}: ${bytes.length} bytes is not a multiple of ${width} (${dtype} tokens); wrong --token-dtype?`,
    );
  }
  const n = bytes.length / width;
  const out = new Uint32Array(n);
  // DataView pins little-endian regardless of the host and tolerates unaligned Buffer offsets.
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (width === 2) for (let i = 0; i < n; i++) out[i] = view.getUint16(2 * i, true);
  else for (let i = 0; i < n; i++) out[i] = view.getUint32(4 * i, true);
  return out;
}

function tokenizeText(bytes: Uint8Array, tokenizer: Tokenizer, file: string): Uint32Array {
  if (!isUtf8(bytes))
    throw new TrainError(
      'DataNotText',
      `${file}: is not valid UTF-8 text; for pre-tokenized data use a .bin/.u16/.u32 extension or set the token dtype`,
    );
  // Bytes are already the tokens; skipping the string and encode() avoids a number[] of the whole corpus.
  if (tokenizer.name === BYTE_TOKENIZER_NAME) return Uint32Array.from(bytes);
  return Uint32Array.from(tokenizer.encode(new TextDecoder('utf-8').decode(bytes)));
}

/** Byte-level text and token files are used as bytes; other tokenizers need the text as one string. */
function dataLimit(path: string, opts: TokenDatasetOptions): number {
  const asBytes =
    (opts.tokenDtype ?? tokenDtypeForPath(path)) !== undefined ||
    (opts.tokenizer ?? byteTokenizer()).name === BYTE_TOKENIZER_NAME;
  return asBytes ? MAX_DATA_BYTES : MAX_TEXT_BYTES;
}

function dataReadError(path: string, e: unknown): TrainError {
  return new TrainError(readFailureCode(e, 'DataUnreadable'), `${path}: ${cannotRead('training data', e)}`);
}

/**
 * The training data is a regular file the trainer can hold (checked by a stat, before anything
 * is loaded): a FIFO would block the reader forever and /dev/zero never ends. Both engines call
 * it before reading the checkpoint, so a bad --data fails at once and leaves nothing behind.
 */
export function checkDataFile(path: string, opts: Pick<TokenDatasetOptions, 'tokenizer' | 'tokenDtype'> = {}): void {
  try {
    readRegularFile(path, { maxBytes: dataLimit(path, opts), what: 'training data', probeOnly: true });
  } catch (e) {
    throw dataReadError(path, e);
  }
  // a Megatron .bin is judged by its index here, before either engine reads it
  const idx = opts.tokenDtype === undefined ? megatronIndexFor(path) : undefined;
  if (idx !== undefined) readMegatronIndex(idx, path, statSync(path).size);
}

/**
 * Megatron-LM's indexed dataset index (megatron/core/datasets/indexed_dataset.py, _IndexWriter):
 * "MMIDIDX\0\0", version u64 (1), dtype code u8, sequence count u64, document count u64, then
 * sequence lengths int32[n], sequence byte offsets int64[n], document indices int64[documents]
 * (sequence index ranges; the first 0, the last n), all little-endian. Token dtypes by code; the
 * float and 64/8-bit signed codes are refused (no tokenizer writes them).
 */
export const MEGATRON_MAGIC = Buffer.from('MMIDIDX\x00\x00', 'latin1');
export const MEGATRON_DTYPES: Record<number, { name: string; width: number } | { refuse: string }> = {
  1: { name: 'uint8', width: 1 },
  2: { refuse: 'int8' },
  3: { name: 'int16', width: 2 },
  4: { name: 'int32', width: 4 },
  5: { refuse: 'int64 (convert to int32 or uint16)' },
  6: { refuse: 'float64' },
  7: { refuse: 'float32' },
  8: { name: 'uint16', width: 2 },
};

export interface MegatronIndex {
  dtype: string;
  width: number;
  sequences: number;
  documents: number;
  tokens: number;
}

/** The `.idx` beside a `.bin`, if there is one. */
export function megatronIndexFor(binPath: string): string | undefined {
  if (!/\.bin$/i.test(binPath)) return undefined;
  const idx = binPath.replace(/\.bin$/i, '.idx');
  return existsSync(idx) ? idx : undefined;
}

/** Read and check a Megatron index against its .bin's size; any disagreement is refused, naming both files. */
export function readMegatronIndex(idxPath: string, binPath: string, binBytes: number): MegatronIndex {
  const bad = (why: string) =>
    new TrainError('DataIndexMismatch', `${binPath}: its Megatron index ${idxPath} disagrees: ${why}; the .bin is not read`);
  let b: Buffer;
  try {
    b = readRegularFile(idxPath, { maxBytes: MAX_DATA_BYTES, what: 'Megatron index' });
  } catch (e) {
    throw new TrainError(readFailureCode(e, 'DataUnreadable'), `${idxPath}: ${cannotRead('Megatron index', e)}`);
  }
  if (b.length < 34 || !b.subarray(0, 9).equals(MEGATRON_MAGIC)) throw bad('not a Megatron index (no MMIDIDX header)');
  const version = b.readBigUInt64LE(9);
  if (version !== 1n) throw bad(`index version ${version}, this reader knows version 1`);
  const code = b.readUInt8(17);
  const dt = MEGATRON_DTYPES[code];
  if (dt === undefined) throw bad(`unknown dtype code ${code}`);
  if ('refuse' in dt) throw bad(`token dtype ${dt.refuse} is not a token id type flm-grow reads`);
  const n = Number(b.readBigUInt64LE(18));
  const docs = Number(b.readBigUInt64LE(26));
  const need = 34 + n * 4 + n * 8 + docs * 8;
  if (b.length < need) throw bad(`${b.length} bytes, fewer than its ${n} sequences and ${docs} document entries need (${need})`);
  let offset = 0;
  let tokens = 0;
  for (let i = 0; i < n; i++) {
    const len = b.readInt32LE(34 + 4 * i);
    const ptr = Number(b.readBigInt64LE(34 + 4 * n + 8 * i));
    if (len < 0) throw bad(`sequence ${i} has length ${len}`);
    if (ptr !== offset) throw bad(`sequence ${i} starts at byte ${ptr}, the lengths before it end at ${offset}`);
    offset += len * dt.width;
    tokens += len;
  }
  if (offset !== binBytes)
    throw bad(`its ${n} sequences hold ${tokens} ${dt.name} tokens (${offset} bytes), the .bin has ${binBytes} bytes`);
  const docAt = (k: number) => Number(b.readBigInt64LE(34 + 12 * n + 8 * k));
  if (docs > 0 && (docAt(0) !== 0 || docAt(docs - 1) !== n))
    throw bad(`its document index runs ${docAt(0)}..${docAt(docs - 1)}, not 0..${n}`);
  for (let k = 1; k < docs; k++) if (docAt(k) < docAt(k - 1)) throw bad(`document index ${k} goes back`);
  return { dtype: dt.name, width: dt.width, sequences: n, documents: Math.max(0, docs - 1), tokens };
}

function decodeMegatron(bytes: Uint8Array, ix: MegatronIndex, file: string): Uint32Array {
  const out = new Uint32Array(ix.tokens);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const get =
    ix.dtype === 'uint8'
      ? (i: number) => view.getUint8(i)
      : ix.dtype === 'uint16'
        ? (i: number) => view.getUint16(2 * i, true)
        : ix.dtype === 'int16'
          ? (i: number) => view.getInt16(2 * i, true)
          : (i: number) => view.getInt32(4 * i, true);
  for (let i = 0; i < ix.tokens; i++) {
    const v = get(i);
    if (v < 0) throw new TrainError('DataInvalid', `${file}: token ${i} is ${v}, a negative id (${ix.dtype} data)`);
    out[i] = v;
  }
  return out;
}

/** One source of a data mix: `path:weight`. */
export interface DataPart {
  path: string;
  weight: number;
}

/**
 * `a.bin:0.7,b.bin:0.3` -> its parts (weights normalised by their sum), or undefined for a plain
 * path (an existing file is never a mix, whatever its name).
 */
export function parseDataMix(spec: string): DataPart[] | undefined {
  if (existsSync(spec)) return undefined;
  const parts = spec.split(',').map((p) => /^(.+):([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$/.exec(p.trim()));
  if (parts.some((m) => m === null)) return undefined;
  const out = parts.map((m) => ({ path: (m as RegExpExecArray)[1], weight: Number((m as RegExpExecArray)[2]) }));
  const total = out.reduce((a, p) => a + p.weight, 0);
  if (!(total > 0) || out.some((p) => !(p.weight > 0)))
    throw new TrainError('DataMix', `--data ${spec}: every weight of a data mix must be > 0`);
  return out;
}

export class TokenDataset {
  readonly source: string;
  readonly tokens: Uint32Array;
  readonly train: Uint32Array;
  readonly eval: Uint32Array;
  readonly maxId: number;

  constructor(tokens: Uint32Array, opts: { evalFraction?: number; source?: string } = {}) {
    this.source = opts.source ?? '<memory>';
    const f = opts.evalFraction ?? trainDefault('eval-fraction');
    if (!(f >= 0 && f < 1)) throw new TrainError('DataSplit', `${this.source}: evalFraction must be in [0, 1), got ${f}`);
    if (tokens.length === 0) throw new TrainError('DataEmpty', `${this.source}: holds no tokens`);
    this.tokens = tokens;
    const nEval = Math.floor(tokens.length * f);
    this.train = tokens.subarray(0, tokens.length - nEval);
    this.eval = tokens.subarray(tokens.length - nEval);
    let max = 0;
    for (let i = 0; i < tokens.length; i++) if (tokens[i] > max) max = tokens[i];
    this.maxId = max;
  }

  static fromFile(path: string, opts: TokenDatasetOptions = {}): TokenDataset {
    let bytes: Buffer;
    try {
      // held whole: batches are random windows over all of it
      bytes = readRegularFile(path, { maxBytes: dataLimit(path, opts), what: 'training data' });
    } catch (e) {
      throw dataReadError(path, e);
    }
    if (bytes.length === 0) throw new TrainError('DataEmpty', `${path}: training data file is empty`);
    const idx = opts.tokenDtype === undefined ? megatronIndexFor(path) : undefined;
    const dtype = opts.tokenDtype ?? tokenDtypeForPath(path);
    const tokens =
      idx !== undefined
        ? decodeMegatron(bytes, readMegatronIndex(idx, path, bytes.length), path)
        : dtype !== undefined
          ? decodeTokenBytes(bytes, dtype, path)
          : tokenizeText(bytes, opts.tokenizer ?? byteTokenizer(), path);
    const ds = new TokenDataset(tokens, { evalFraction: opts.evalFraction, source: path });
    if (opts.seqLen !== undefined) ds.checkLength(opts.seqLen);
    return ds;
  }

  split(split: Split): Uint32Array {
    return split === 'train' ? this.train : this.eval;
  }

  /** Throws unless every non-empty split can fill one sequence (seqLen inputs + 1 target). */
  checkLength(seqLen: number): void {
    for (const s of ['train', 'eval'] as const) {
      const n = this.split(s).length;
      if (s === 'eval' && n === 0) continue;
      if (n < seqLen + 1) {
        throw new TrainError(
          'DataTooShort',
          `${this.source}: ${s} split has ${n} tokens, fewer than one sequence needs (seqLen ${seqLen} + 1 = ${seqLen + 1}); use more data, a shorter seqLen or a different evalFraction`,
        );
      }
    }
  }

  /**
   * A batch of `batchSize` random windows of seqLen+1 tokens from `split`, determined only by
   * (seed, split, step): no hidden state, so step k of a resumed run equals step k of a fresh one.
   */
  batchAt(split: Split, step: number, batchSize: number, seqLen: number, seed: number): Batch {
    if (!Number.isInteger(step) || step < 0)
      throw new TrainError('BatchArgs', `${this.source}: step must be a non-negative integer, got ${step}`);
    if (!Number.isInteger(batchSize) || batchSize <= 0)
      throw new TrainError('BatchArgs', `${this.source}: batchSize must be a positive integer, got ${batchSize}`);
    if (!Number.isInteger(seqLen) || seqLen <= 0)
      throw new TrainError('BatchArgs', `${this.source}: seqLen must be a positive integer, got ${seqLen}`);
    const data = this.split(split);
    if (data.length === 0) throw new TrainError('DataTooShort', `${this.source}: ${split} split is empty (evalFraction 0?)`);
    this.checkLength(seqLen);
    const starts = data.length - seqLen; // valid window starts: 0 .. length-seqLen-1
    const next = mulberry32(hashSeed(seed, split === 'train' ? 1 : 2, step));
    const inputs = new Int32Array(batchSize * seqLen);
    const targets = new Int32Array(batchSize * seqLen);
    for (let b = 0; b < batchSize; b++) {
      const start = uniformInt(next, starts);
      const row = b * seqLen;
      for (let t = 0; t < seqLen; t++) {
        inputs[row + t] = data[start + t];
        targets[row + t] = data[start + t + 1];
      }
    }
    return { inputs, targets };
  }
}

/**
 * A weighted mix of token datasets. Row b of a batch draws u = next() (uint32) from the batch's
 * stream (seed, split, step), takes the first source whose cumulative threshold
 * floor(2^32 * (w_1 + ... + w_i) / W) is above u, then a window of that source with the same
 * stream: one pure function of (seed, split, step), as data.py computes it.
 */
export class MixedDataset {
  readonly source: string;
  readonly parts: TokenDataset[];
  readonly weights: number[];
  private readonly thresholds: number[];

  constructor(parts: TokenDataset[], weights: number[], source: string) {
    this.source = source;
    this.parts = parts;
    this.weights = weights;
    const total = weights.reduce((a, w) => a + w, 0);
    let acc = 0;
    this.thresholds = weights.map((w, i) => {
      acc += w;
      return i === weights.length - 1 ? 0x1_0000_0000 : Math.floor((0x1_0000_0000 * acc) / total);
    });
  }

  /** The parts' tokens: ids checked per part, counted in the manifest. */
  get tokens(): { length: number } {
    return { length: this.parts.reduce((a, p) => a + p.tokens.length, 0) };
  }

  /** Held-out tokens over all parts (an eval runs when every part has an eval window). */
  get eval(): { length: number } {
    return { length: Math.min(...this.parts.map((p) => p.eval.length)) };
  }

  checkLength(seqLen: number): void {
    for (const p of this.parts) p.checkLength(seqLen);
  }

  batchAt(split: Split, step: number, batchSize: number, seqLen: number, seed: number): Batch {
    this.checkLength(seqLen);
    const next = mulberry32(hashSeed(seed, split === 'train' ? 1 : 2, step));
    const inputs = new Int32Array(batchSize * seqLen);
    const targets = new Int32Array(batchSize * seqLen);
    for (let b = 0; b < batchSize; b++) {
      const u = next();
      const k = this.thresholds.findIndex((t) => u < t);
      const data = this.parts[k].split(split);
      if (data.length <= seqLen)
        throw new TrainError(
          'DataTooShort',
          `${this.parts[k].source}: ${split} split has ${data.length} tokens, too few for seqLen ${seqLen}`,
        );
      const start = uniformInt(next, data.length - seqLen);
      const row = b * seqLen;
      for (let t = 0; t < seqLen; t++) {
        inputs[row + t] = data[start + t];
        targets[row + t] = data[start + t + 1];
      }
    }
    return { inputs, targets };
  }
}

export type TrainingData = TokenDataset | MixedDataset;

/** --data as given: one file, or a weighted mix of token files (`a.bin:0.7,b.bin:0.3`). */
export function openTrainingData(spec: string, opts: TokenDatasetOptions = {}): TrainingData {
  const mix = parseDataMix(spec);
  if (mix === undefined) return TokenDataset.fromFile(spec, opts);
  for (const p of mix)
    if (tokenDtypeForPath(p.path) === undefined)
      throw new TrainError(
        'DataMix',
        `--data ${spec}: ${p.path}: a data mix takes token files (.bin, Megatron .bin + .idx, .u16, .u32); tokenize text first`,
      );
  return new MixedDataset(
    mix.map((p) => TokenDataset.fromFile(p.path, opts)),
    mix.map((p) => p.weight),
    spec,
  );
}

/** The files behind --data (one, or each part of a mix). */
export function dataFiles(spec: string): string[] {
  return parseDataMix(spec)?.map((p) => p.path) ?? [spec];
}

/** Throws if any token id in the data is outside the model's vocabulary [0, vocabSize). */
export function checkVocab(ds: TokenDataset, vocabSize: number, file: string = ds.source, tokenizer?: string): void {
  if (ds.maxId < vocabSize) return;
  const at = ds.tokens.findIndex((t) => t >= vocabSize);
  const fix =
    `to train on these ids the model needs more rows, as learnable tokens: flm-grow grow <checkpoint> <dest> --vocab-size ${ds.maxId + 1} --vocab-new tokens ` +
    '(plan: "vocab": {"new": "tokens"}; the default, padding, masks the new ids for good and train refuses them)';
  throw new TrainError(
    'TokenOutOfVocab',
    tokenizer !== undefined
      ? `${file}: the checkpoint's own tokenizer (${tokenizer}) gives token id ${ds.tokens[at]} at position ${at} (max id ${ds.maxId}), outside the model's vocabulary of ${vocabSize}: the tokenizer knows more ids than the model has rows; ${fix}`
      : `${file}: token id ${ds.tokens[at]} at position ${at} (max id ${ds.maxId}) is outside the model's vocabulary of ${vocabSize}; if it was tokenized with a different tokenizer, re-tokenize it; ${fix}`,
  );
}

/**
 * Ids whose vocab mask is 0 for good (padding: logit -inf, never annealed) cannot be targets:
 * their loss would be ~1e30. New tokens (`vocabTokens` 1) start at 0 too but anneal, so they pass.
 */
export function checkMaskedIds(
  ds: TokenDataset,
  vocabMask: ArrayLike<number>,
  file: string = ds.source,
  vocabTokens?: ArrayLike<number>,
): void {
  const at = ds.tokens.findIndex((t) => t < vocabMask.length && vocabMask[t] === 0 && vocabTokens?.[t] !== 1);
  if (at < 0) return;
  throw new TrainError(
    'PaddingTokenInData',
    `${file}: token id ${ds.tokens[at]} at position ${at} is a padding id of the checkpoint (its vocab mask is 0 for good: the model can never predict it). ` +
      'Train on data tokenized for the source vocabulary (re-tokenize it), or grow the source with learnable new ids instead: --vocab-new tokens (plan: "vocab": {"new": "tokens"})',
  );
}
