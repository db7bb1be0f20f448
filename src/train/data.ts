/**
 * Training data: a text file run through a tokenizer, or a pre-tokenized nanoGPT-style token file
 * (raw little-endian uint16 `.bin`/`.u16`, uint32 `.u32`). The tail is held out for evaluation.
 * Batches are a pure function of (seed, split, step), so resuming replays the same batches.
 */
import { isUtf8 } from 'node:buffer';
import { TrainError } from '../errors.ts';
import { cannotRead, MAX_DATA_BYTES, MAX_TEXT_BYTES, readFailureCode, readRegularFile } from '../util/files.ts';
import { BYTE_TOKENIZER_NAME, byteTokenizer, type Tokenizer } from '../tokenizer.ts';
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
    const dtype = opts.tokenDtype ?? tokenDtypeForPath(path);
    const tokens =
      dtype !== undefined ? decodeTokenBytes(bytes, dtype, path) : tokenizeText(bytes, opts.tokenizer ?? byteTokenizer(), path);
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
