import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TrainError } from '../util/errors.ts';
import { byteTokenizer, loadTokenizer } from './tokenizer.ts';

const CORPUS = new URL('../../fixtures/corpus/fortunes.txt', import.meta.url);

describe('byteTokenizer', () => {
  const tok = byteTokenizer();

  it('encodes to UTF-8 bytes, Chinese included', () => {
    expect(tok.vocabSize).toBe(256);
    // UTF-8 of U+4E2D 中 is E4 B8 AD, of U+6587 文 is E6 96 87.
    expect(tok.encode('a中文')).toEqual([0x61, 0xe4, 0xb8, 0xad, 0xe6, 0x96, 0x87]);
    expect(tok.decode([0x61, 0xe4, 0xb8, 0xad, 0xe6, 0x96, 0x87])).toBe('a中文');
  });

  it('round-trips the mixed English/Chinese corpus losslessly', () => {
    const text = readFileSync(CORPUS, 'utf8');
    const ids = tok.encode(text);
    expect(ids.length).toBe(Buffer.byteLength(text, 'utf8'));
    expect(Buffer.from(ids).equals(Buffer.from(text, 'utf8'))).toBe(true);
    expect(tok.decode(ids)).toBe(text);
    expect(/[\u4e00-\u9fff]/.test(text) && /[A-Za-z]/.test(text)).toBe(true);
  });

  it('decodes a cut-off multi-byte character to U+FFFD and rejects non-byte ids', () => {
    expect(tok.decode([0x61, 0xe4, 0xb8])).toBe('a\ufffd');
    expect(() => tok.decode([1, 256])).toThrow(TrainError);
    expect(() => tok.decode([1, 256])).toThrow(/256 at position 1/);
  });
});

describe('loadTokenizer', () => {
  it('falls back to bytes when the checkpoint has no tokenizer.json', () => {
    const dir = mkdtempSync(join(tmpdir(), 'flm-tok-'));
    expect(loadTokenizer(dir).name).toBe('bytes');
  });

  it('loads tokenizer.json with @huggingface/tokenizers', () => {
    const dir = mkdtempSync(join(tmpdir(), 'flm-tok-'));
    writeFileSync(
      join(dir, 'tokenizer.json'),
      JSON.stringify({
        version: '1.0',
        truncation: null,
        padding: null,
        normalizer: null,
        post_processor: null,
        decoder: null,
        added_tokens: [
          { id: 0, content: '[UNK]', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
        ],
        pre_tokenizer: { type: 'Whitespace' },
        model: { type: 'WordLevel', vocab: { '[UNK]': 0, hello: 1, world: 2, '!': 3, 你好: 9 }, unk_token: '[UNK]' },
      }),
    );
    const tok = loadTokenizer(dir);
    expect(tok.name).toBe(join(dir, 'tokenizer.json'));
    expect(tok.vocabSize).toBe(10); // largest id 9, plus one
    expect(tok.encode('hello 你好 world!')).toEqual([1, 9, 2, 3]);
    expect(tok.decode([1, 2])).toBe('hello world');
  });

  it('names the file when tokenizer.json is not JSON', () => {
    const dir = mkdtempSync(join(tmpdir(), 'flm-tok-'));
    writeFileSync(join(dir, 'tokenizer.json'), '{not json');
    expect(() => loadTokenizer(dir)).toThrow(TrainError);
    expect(() => loadTokenizer(dir)).toThrow(join(dir, 'tokenizer.json'));
  });
});
