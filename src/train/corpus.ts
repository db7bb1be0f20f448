/**
 * Text corpora as Hugging Face datasets publish them: JSON lines with a "text" field (`.jsonl`), and
 * Parquet (`.parquet`: one file, a folder of shards such as data/train-00000-of-00004.parquet, or a
 * glob of them; shards in name order). The text field (`--text-field`, default "text") of every
 * document is tokenized with the checkpoint's own tokenizer, one line or one Parquet row group at
 * a time (never the whole corpus in memory), an end-of-sequence id after each document (the
 * config's eos_token_id, as HF causal-LM data collation does), into a uint32 token file in the
 * cache ($XDG_CACHE_HOME/flm-grow/tokens, default ~/.cache/flm-grow/tokens). The cache key is each
 * shard (path, size, mtime), the tokenizer and the text field, so a second run reuses it. Both
 * engines then read that token file: the same tokens, the same batches.
 *
 * Parquet is read with hyparquet (MIT, no dependencies) and hyparquet-compressors (snappy, zstd,
 * gzip, brotli, lz4). Arrow files (datasets' save_to_disk / cache `.arrow`) are refused with the
 * one-line conversion to Parquet.
 */
import {
  closeSync,
  createReadStream,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, extname, join } from 'node:path';
import { createInterface } from 'node:readline';
import picomatch from 'picomatch';
import { TrainError } from '../util/errors.ts';
import type { Tokenizer } from '../checkpoint/tokenizer.ts';
import { sha256Bytes, sha256File } from '../util/hash.ts';
import { cannotRead, readFailureCode, readRegularFile } from '../util/files.ts';
import { trainOption } from './options.ts';

export const CORPUS_EXTS = ['.jsonl', '.parquet', '.arrow'] as const;

/** The text field read when none is named (declared: train_options.json `text-field`; HF datasets' column for raw text). */
export const DEFAULT_TEXT_FIELD = trainOption('text-field').default as string;

const GLOB_CHARS = /[*?[]/;

/** A corpus file by extension, a glob of shards (in its last path component) or a folder of shards. */
export function isTextCorpus(spec: string): boolean {
  if ((CORPUS_EXTS as readonly string[]).includes(extname(spec).toLowerCase())) return true;
  if (GLOB_CHARS.test(basename(spec)) && !existsSync(spec)) return true;
  return isDirectory(spec);
}

/** The name order of shards: train-00002-of-00010 before train-00010-of-00010, as `ls` sorts them. */
const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** HF dataset shard names: `<split>-00000-of-00004.parquet`. */
const SPLIT_SHARD = /^(.+?)-\d{5}-of-\d{5}\./;

/**
 * The files of a corpus spec: the file itself, a folder's shards (its .parquet or .jsonl files),
 * or a glob's matches, in name order. Each is a readable regular file; otherwise one line naming it
 * (exit 2). A folder holding several splits' shards (train-*, test-*) is refused: name one by a glob.
 */
export function corpusShards(spec: string): string[] {
  let files: string[];
  const dir = dirname(spec);
  if (GLOB_CHARS.test(basename(spec)) && !existsSync(spec)) {
    if (GLOB_CHARS.test(dir))
      throw new TrainError('DataUnreadable', `${spec}: a glob of corpus shards may have wildcards in its file name only`);
    // picomatch: `*`, `?` and `[...]` as the shell matches them (dot: a shard's name may start with one)
    const matches = picomatch(basename(spec), { dot: true });
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch (e) {
      throw new TrainError(
        readFailureCode(e, 'DataUnreadable'),
        `${spec}: cannot read the folder ${dir}: ${(e as Error).message}`,
      );
    }
    files = names
      .filter((n) => matches(n))
      .sort(byName)
      .map((n) => join(dir, n));
    if (files.length === 0) throw new TrainError('DataUnreadable', `${spec}: matches no file`);
  } else if (isDirectory(spec)) {
    const names = readdirSync(spec).filter((n) => (CORPUS_EXTS as readonly string[]).includes(extname(n).toLowerCase()));
    const exts = [...new Set(names.map((n) => extname(n).toLowerCase()))];
    if (exts.length === 0)
      throw new TrainError(
        'DataUnreadable',
        `${spec}: a folder of corpus shards holds no ${CORPUS_EXTS.join(', ')} files (an HF dataset repository keeps them under data/)`,
      );
    if (exts.length > 1)
      throw new TrainError(
        'DataUnreadable',
        `${spec}: holds ${exts.join(' and ')} files; name the shards to read with a glob, e.g. ${join(spec, `*${exts[0]}`)}`,
      );
    const splits = [...new Set(names.map((n) => SPLIT_SHARD.exec(n)?.[1]).filter((x) => x !== undefined))];
    if (splits.length > 1)
      throw new TrainError(
        'DataUnreadable',
        `${spec}: holds the shards of several splits (${splits.sort(byName).join(', ')}); name one with a glob, e.g. ${join(spec, `${splits.includes('train') ? 'train' : splits[0]}-*${exts[0]}`)}`,
      );
    files = names.sort(byName).map((n) => join(spec, n));
  } else files = [spec];
  for (const f of files) {
    if (!(CORPUS_EXTS as readonly string[]).includes(extname(f).toLowerCase()))
      throw new TrainError(
        'DataFormat',
        `${f}: a corpus shard must be ${CORPUS_EXTS.join(', ')} (not ${extname(f) || 'without an extension'})`,
      );
    try {
      readRegularFile(f, { maxBytes: Number.MAX_SAFE_INTEGER, what: 'training data', probeOnly: true });
    } catch (e) {
      throw new TrainError(readFailureCode(e, 'DataUnreadable'), `${f}: ${cannotRead('training data', e)}`);
    }
  }
  const arrow = files.find((f) => extname(f).toLowerCase() === '.arrow');
  if (arrow !== undefined)
    throw new TrainError(
      'DataFormat',
      `${arrow}: Arrow files (datasets' save_to_disk or cache) are not read by flm-grow; convert each to Parquet, e.g. ` +
        `python -c "import datasets; datasets.Dataset.from_file('${arrow}').to_parquet('${arrow.replace(/\.arrow$/i, '.parquet')}')"`,
    );
  return files;
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

export function tokenCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CACHE_HOME !== undefined && env.XDG_CACHE_HOME !== '' ? env.XDG_CACHE_HOME : join(homedir(), '.cache');
  return join(base, 'flm-grow', 'tokens');
}

export interface CorpusTokens {
  /** The uint32 token file both engines read. */
  path: string;
  cached: boolean;
  documents: number;
  tokens: number;
}

/** The documents of a JSONL file, one line at a time (blank lines skipped). */
async function* jsonlDocs(file: string, field: string): AsyncGenerator<string> {
  const lines = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
  let lineNo = 0;
  for await (const line of lines) {
    lineNo++;
    if (line.trim() === '') continue;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      throw new TrainError('DataInvalid', `${file}:${lineNo}: invalid JSON: ${(e as Error).message}`);
    }
    const text = (obj as Record<string, unknown> | null)?.[field];
    if (typeof text !== 'string')
      throw new TrainError(
        'DataInvalid',
        `${file}:${lineNo}: no "${field}" string field (a JSONL corpus is one {"${field}": ...} object per line${field === DEFAULT_TEXT_FIELD ? '; another field: --text-field' : ''})`,
      );
    yield text;
  }
}

/**
 * The documents of a Parquet file, one row group at a time: only that group's text column is
 * read and decompressed (hyparquet reads the byte ranges it needs), so memory stays one row group.
 */
async function* parquetDocs(file: string, field: string): AsyncGenerator<string> {
  const { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema } = await import('hyparquet');
  const { compressors } = await import('hyparquet-compressors');
  const corrupt = (e: unknown) =>
    new TrainError('DataInvalid', `${file}: not a Parquet file, or a corrupt one: ${(e as Error).message}`);
  const buf = await asyncBufferFromFile(file);
  let meta;
  try {
    meta = await parquetMetadataAsync(buf);
  } catch (e) {
    throw corrupt(e);
  }
  const top = parquetSchema(meta).children.map((c) => c.element); // the top-level columns
  const el = top.find((c) => c.name === field);
  if (el === undefined)
    throw new TrainError(
      'DataInvalid',
      `${file}: no column "${field}" (its columns: ${top.map((c) => c.name).join(', ')}); name the text column with --text-field`,
    );
  const isString =
    el.num_children === undefined &&
    el.type === 'BYTE_ARRAY' &&
    el.repetition_type !== 'REPEATED' &&
    (el.converted_type === 'UTF8' || el.logical_type?.type === 'STRING');
  if (!isString) {
    const kind =
      el.num_children !== undefined
        ? 'a nested (list or struct) column'
        : `${el.type ?? '?'}${el.converted_type !== undefined ? ` (${el.converted_type})` : el.logical_type !== undefined ? ` (${el.logical_type.type})` : ''}`;
    throw new TrainError('DataInvalid', `${file}: column "${field}" is ${kind}, not a string column of text`);
  }
  let row = 0;
  for (const g of meta.row_groups) {
    const n = Number(g.num_rows);
    let rows: Record<string, unknown>[];
    try {
      rows = await parquetReadObjects({
        file: buf,
        metadata: meta,
        columns: [field],
        rowStart: row,
        rowEnd: row + n,
        compressors: compressors as Parameters<typeof parquetReadObjects>[0]['compressors'],
      });
    } catch (e) {
      throw corrupt(e);
    }
    for (let i = 0; i < rows.length; i++) {
      const text = rows[i][field];
      if (typeof text !== 'string')
        throw new TrainError(
          'DataInvalid',
          `${file}: row ${row + i}: column "${field}" is ${text === null || text === undefined ? 'null' : typeof text}, not text`,
        );
      yield text;
    }
    row += n;
  }
}

/**
 * The token file of a text corpus (JSONL or Parquet: a file, a folder or glob of shards) for
 * `checkpoint`'s tokenizer (made now, or the cached one). `tokenizerFile`: the checkpoint's
 * tokenizer.json (its hash is part of the cache key), or undefined for the byte-level tokenizer.
 */
export async function corpusTokens(
  corpus: string,
  tokenizer: Tokenizer,
  opts: { tokenizerFile?: string; eos?: number; textField?: string; log?: (line: string) => void } = {},
): Promise<CorpusTokens> {
  const field = opts.textField ?? DEFAULT_TEXT_FIELD;
  if (field === '') throw new TrainError('BadArgs', '--text-field must name a field');
  const shards = corpusShards(corpus);
  const tokSha = opts.tokenizerFile !== undefined ? await sha256File(opts.tokenizerFile) : 'bytes';
  const key = sha256Bytes(
    JSON.stringify([
      ...shards.flatMap((f) => {
        const stats = statSync(f);
        return [realpathSync(f), stats.size, stats.mtimeMs];
      }),
      tokSha,
      opts.eos ?? null,
      // absent for the default field: the key of a JSONL corpus is what it was before --text-field
      ...(field !== DEFAULT_TEXT_FIELD ? [field] : []),
    ]),
  ).slice(0, 32);
  const path = join(tokenCacheDir(), `${key}.u32`);
  const meta = `${path}.json`;
  if (existsSync(path) && existsSync(meta)) return { path, cached: true, ...(await readMeta(meta)) };
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w');
  const chunk = new Uint32Array(1 << 20);
  let fill = 0,
    tokens = 0,
    documents = 0;
  const flush = () => {
    writeSync(fd, new Uint8Array(chunk.buffer, 0, fill * 4));
    fill = 0;
  };
  const push = (id: number) => {
    chunk[fill++] = id;
    tokens++;
    if (fill === chunk.length) flush();
  };
  try {
    for (const shard of shards) {
      const docs = extname(shard).toLowerCase() === '.parquet' ? parquetDocs(shard, field) : jsonlDocs(shard, field);
      for await (const text of docs) {
        for (const id of tokenizer.encode(text)) push(id);
        if (opts.eos !== undefined) push(opts.eos);
        documents++;
        if (documents % 100_000 === 0) opts.log?.(`train: ${corpus}: ${documents} documents, ${tokens} tokens`);
      }
    }
    flush();
    closeSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  if (tokens === 0) {
    rmSync(tmp, { force: true });
    throw new TrainError('DataEmpty', `${corpus}: holds no text${shards.length > 1 ? ` (${shards.length} shards)` : ''}`);
  }
  renameSync(tmp, path);
  const { writeFile } = await import('node:fs/promises');
  await writeFile(meta, JSON.stringify({ corpus: shards.map((f) => realpathSync(f)), documents, tokens }) + '\n');
  opts.log?.(
    `train: ${corpus}: ${documents} documents${shards.length > 1 ? ` in ${shards.length} shards` : ''} tokenized into ${tokens} tokens (${path})`,
  );
  return { path, cached: false, documents, tokens };
}

async function readMeta(meta: string): Promise<{ documents: number; tokens: number }> {
  const { readFile } = await import('node:fs/promises');
  const m = JSON.parse(await readFile(meta, 'utf8')) as { documents: number; tokens: number };
  return { documents: m.documents, tokens: m.tokens };
}
