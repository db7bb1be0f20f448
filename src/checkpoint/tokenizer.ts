/**
 * Tokenizers for training data and sampling: a byte-level UTF-8 fallback that needs no files, or
 * the checkpoint's own `tokenizer.json` through the pure-JS @huggingface/tokenizers.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { TrainError } from '../util/errors.ts';
import { cannotRead, readJsonFile } from '../util/files.ts';
import { TOKENIZER_FILE } from './checkpoint.ts';

/**
 * The part of @huggingface/tokenizers used here. Its .d.ts files use extensionless relative
 * imports that do not resolve under NodeNext, so the import itself is typed `any`.
 */
interface HfTokenizerApi {
  encode(text: string, opts: { add_special_tokens: boolean }): { ids: number[]; tokens: string[] };
  decode(ids: number[], opts: { skip_special_tokens: boolean }): string;
  get_vocab(withAddedTokens: boolean): Map<string, number>;
}

export interface Tokenizer {
  vocabSize: number;
  encode(text: string): number[];
  decode(ids: number[]): string;
  name: string;
}

export const BYTE_TOKENIZER_NAME = 'bytes';

const utf8Encoder = new TextEncoder();
// Not fatal: sampled byte sequences are often cut mid-character, which should print U+FFFD, not throw.
const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

/** Byte-level UTF-8: every byte is a token (ids 0..255), so any text round-trips losslessly. */
export function byteTokenizer(): Tokenizer {
  return {
    name: BYTE_TOKENIZER_NAME,
    vocabSize: 256,
    encode: (text) => Array.from(utf8Encoder.encode(text)),
    decode: (ids) => {
      const bytes = new Uint8Array(ids.length);
      for (let i = 0; i < ids.length; i++) {
        const id = ids[i];
        if (!Number.isInteger(id) || id < 0 || id > 255) {
          throw new TrainError('TokenOutOfVocab', `byte tokenizer: token id ${id} at position ${i} is not a byte (0..255)`);
        }
        bytes[i] = id;
      }
      return utf8Decoder.decode(bytes);
    },
  };
}

function readJson(file: string): object {
  let parsed: unknown;
  try {
    parsed = readJsonFile(file, { what: 'tokenizer' });
  } catch (e) {
    throw new TrainError('TokenizerInvalid', `${file}: ${cannotRead('tokenizer', e)}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new TrainError('TokenizerInvalid', `${file}: is not a JSON object`);
  }
  return parsed;
}

/**
 * The checkpoint's tokenizer.json (+ tokenizer_config.json if present) when it has one, else the
 * byte tokenizer. Special tokens (BOS/EOS) are not added: training text is one continuous stream.
 */
export function loadTokenizer(checkpointDir: string): Tokenizer {
  const file = join(checkpointDir, TOKENIZER_FILE);
  if (!existsSync(file)) return byteTokenizer();
  const json = readJson(file);
  const configFile = join(checkpointDir, 'tokenizer_config.json');
  const config = existsSync(configFile) ? readJson(configFile) : {};
  let tok: HfTokenizerApi;
  try {
    tok = new HfTokenizer(json, config) as HfTokenizerApi;
  } catch (e) {
    throw new TrainError('TokenizerInvalid', `${file}: unsupported tokenizer: ${(e as Error).message}`);
  }
  let maxId = -1;
  for (const id of tok.get_vocab(true).values()) maxId = Math.max(maxId, id);
  if (maxId < 0) throw new TrainError('TokenizerInvalid', `${file}: empty vocabulary`);
  return {
    name: file,
    // Ids need not be dense; the embedding table must cover the largest one.
    vocabSize: maxId + 1,
    encode: (text) => {
      const enc = tok.encode(text, { add_special_tokens: false });
      // tokenizers.js yields undefined for some unknown tokens; a silent 0 would corrupt the data.
      const bad = enc.ids.findIndex((id) => !Number.isInteger(id));
      if (bad >= 0)
        throw new TrainError(
          'TokenizerInvalid',
          `${file}: cannot encode token ${JSON.stringify(enc.tokens[bad])} (no id and no usable unk_token)`,
        );
      return enc.ids;
    },
    decode: (ids) => tok.decode(ids, { skip_special_tokens: false }),
  };
}
