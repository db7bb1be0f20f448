/**
 * Text corpora as Hugging Face datasets keep them: JSON lines with a "text" field (`.jsonl`).
 * The corpus is tokenized with the checkpoint's own tokenizer, one line at a time (never the
 * whole corpus in memory), an end-of-sequence id after each document (the config's
 * eos_token_id, as HF causal-LM data collation does), into a uint32 token file in the cache
 * ($XDG_CACHE_HOME/flm-grow/tokens, default ~/.cache/flm-grow/tokens). The cache key is the
 * corpus (path, size, mtime) and the tokenizer, so a second run reuses it. Both engines then read
 * that token file: the same tokens, the same batches.
 *
 * Parquet is refused with the one-line conversion: no maintained npm Parquet reader is a
 * dependency of flm-grow.
 */
import {
  closeSync,
  createReadStream,
  existsSync,
  mkdirSync,
  openSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { dirname, extname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { TrainError } from '../util/errors.ts';
import type { Tokenizer } from '../checkpoint/tokenizer.ts';
import { sha256Bytes, sha256File } from '../util/hash.ts';

export const CORPUS_EXTS = ['.jsonl', '.parquet'] as const;

export function isTextCorpus(path: string): boolean {
  return (CORPUS_EXTS as readonly string[]).includes(extname(path).toLowerCase());
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

/**
 * The token file of a JSONL corpus for `checkpoint`'s tokenizer (made now, or the cached one).
 * `tokenizerFile`: the checkpoint's tokenizer.json (its hash is part of the cache key), or
 * undefined for the byte-level tokenizer.
 */
export async function corpusTokens(
  corpus: string,
  tokenizer: Tokenizer,
  opts: { tokenizerFile?: string; eos?: number; log?: (line: string) => void } = {},
): Promise<CorpusTokens> {
  if (extname(corpus).toLowerCase() === '.parquet')
    throw new TrainError(
      'DataFormat',
      `${corpus}: Parquet is not read by flm-grow; convert it to JSON lines first, e.g. ` +
        `python -c "import pandas as pd; pd.read_parquet('${corpus}').to_json('${corpus.replace(/\.parquet$/i, '.jsonl')}', orient='records', lines=True)"`,
    );
  let st;
  try {
    st = statSync(corpus);
  } catch (e) {
    throw new TrainError('DataUnreadable', `${corpus}: cannot read training data: ${(e as Error).message}`);
  }
  if (!st.isFile()) throw new TrainError('NotARegularFile', `${corpus}: training data is not a regular file`);
  const tokSha = opts.tokenizerFile !== undefined ? await sha256File(opts.tokenizerFile) : 'bytes';
  const key = sha256Bytes(JSON.stringify([realpathSync(corpus), st.size, st.mtimeMs, tokSha, opts.eos ?? null])).slice(0, 32);
  const path = join(tokenCacheDir(), `${key}.u32`);
  const meta = `${path}.json`;
  if (existsSync(path) && existsSync(meta)) return { path, cached: true, ...(await readMeta(meta)) };
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w');
  const chunk = new Uint32Array(1 << 20);
  let fill = 0,
    tokens = 0,
    documents = 0,
    lineNo = 0;
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
    const lines = createInterface({ input: createReadStream(corpus, { encoding: 'utf8' }), crlfDelay: Infinity });
    for await (const line of lines) {
      lineNo++;
      if (line.trim() === '') continue;
      let obj: unknown;
      try {
        obj = JSON.parse(line);
      } catch (e) {
        throw new TrainError('DataInvalid', `${corpus}:${lineNo}: invalid JSON: ${(e as Error).message}`);
      }
      const text = (obj as { text?: unknown } | null)?.text;
      if (typeof text !== 'string')
        throw new TrainError(
          'DataInvalid',
          `${corpus}:${lineNo}: no "text" string field (a JSONL corpus is one {"text": ...} object per line)`,
        );
      for (const id of tokenizer.encode(text)) push(id);
      if (opts.eos !== undefined) push(opts.eos);
      documents++;
      if (documents % 100_000 === 0) opts.log?.(`train: ${corpus}: ${documents} documents, ${tokens} tokens`);
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
    throw new TrainError('DataEmpty', `${corpus}: holds no text`);
  }
  renameSync(tmp, path);
  const { writeFile } = await import('node:fs/promises');
  await writeFile(meta, JSON.stringify({ corpus: realpathSync(corpus), documents, tokens }) + '\n');
  opts.log?.(`train: ${corpus}: ${documents} documents tokenized into ${tokens} tokens (${path})`);
  return { path, cached: false, documents, tokens };
}

async function readMeta(meta: string): Promise<{ documents: number; tokens: number }> {
  const { readFile } = await import('node:fs/promises');
  const m = JSON.parse(await readFile(meta, 'utf8')) as { documents: number; tokens: number };
  return { documents: m.documents, tokens: m.tokens };
}
