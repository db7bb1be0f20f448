import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TrainError } from '../util/errors.ts';
import { TokenDataset, checkVocab } from './data.ts';
import { tokenDtypeForPath } from '../util/token-files.ts';
import type { Tokenizer } from '../checkpoint/tokenizer.ts';

const dir = mkdtempSync(join(tmpdir(), 'flm-data-'));
function file(name: string, bytes: Uint8Array | string): string {
  const p = join(dir, name);
  writeFileSync(p, bytes);
  return p;
}

/** The TrainError thrown by fn, so tests can check code and message together. */
function trainErrorOf(fn: () => unknown): TrainError {
  try {
    fn();
  } catch (e) {
    if (e instanceof TrainError) return e;
    throw e;
  }
  throw new Error('expected a TrainError');
}

/** Distinct ids in a scrambled order, so a window's position in the stream is unambiguous. */
function scrambled(n: number): Uint32Array {
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 7919 + 13) % n; // 7919 is prime, coprime with n below
  return out;
}

function u32File(name: string, tokens: Uint32Array): string {
  const b = Buffer.alloc(tokens.length * 4);
  tokens.forEach((t, i) => b.writeUInt32LE(t, i * 4));
  return file(name, b);
}

describe('TokenDataset.fromFile: token files', () => {
  it('reads little-endian uint16 from .bin / .u16', () => {
    // 0x0000, 0x0102 = 258, 0xFFFF = 65535, 0x0100 = 1 ... written byte by byte (low byte first).
    const bytes = Uint8Array.from([0x00, 0x00, 0x02, 0x01, 0xff, 0xff, 0x01, 0x00]);
    for (const name of ['t.bin', 't.u16']) {
      const ds = TokenDataset.fromFile(file(name, bytes), { evalFraction: 0 });
      expect(Array.from(ds.train)).toEqual([0, 258, 65535, 1]);
      expect(ds.maxId).toBe(65535);
    }
  });

  it('reads little-endian uint32 from .u32 and by explicit dtype', () => {
    const bytes = Uint8Array.from([0x04, 0x03, 0x02, 0x01, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00]);
    const expected = [0x01020304, 5, 0x10000];
    expect(Array.from(TokenDataset.fromFile(file('t.u32', bytes), { evalFraction: 0 }).train)).toEqual(expected);
    // Same bytes with a neutral extension: the option decides, and uint16 reads them differently.
    const p = file('tokens.dat', bytes);
    expect(Array.from(TokenDataset.fromFile(p, { tokenDtype: 'uint32', evalFraction: 0 }).train)).toEqual(expected);
    expect(Array.from(TokenDataset.fromFile(p, { tokenDtype: 'uint16', evalFraction: 0 }).train)).toEqual([
      0x0304, 0x0102, 5, 0, 0, 1,
    ]);
  });

  it('maps extensions to dtypes', () => {
    expect(tokenDtypeForPath('a/b.BIN')).toBe('uint16');
    expect(tokenDtypeForPath('x.u32')).toBe('uint32');
    expect(tokenDtypeForPath('x.txt')).toBeUndefined();
  });

  it('rejects a token file whose length is not a whole number of tokens, naming it', () => {
    const p = file('odd.bin', Uint8Array.from([1, 2, 3]));
    const e = trainErrorOf(() => TokenDataset.fromFile(p));
    expect(e.code).toBe('DataMisaligned');
    expect(e.message).toContain(p);
  });
});

describe('TokenDataset.fromFile: text', () => {
  it('byte-tokenizes text by default and holds out the tail', () => {
    const text = '春眠不觉晓 spring';
    const ds = TokenDataset.fromFile(file('c.txt', text), { evalFraction: 0.25 });
    const bytes = Array.from(Buffer.from(text, 'utf8'));
    const nEval = Math.floor(bytes.length * 0.25);
    expect(Array.from(ds.train)).toEqual(bytes.slice(0, bytes.length - nEval));
    expect(Array.from(ds.eval)).toEqual(bytes.slice(bytes.length - nEval));
  });

  it('uses the given tokenizer', () => {
    const words: Tokenizer = {
      name: 'words',
      vocabSize: 100,
      encode: (t) => t.split(' ').map((w) => w.length),
      decode: () => '',
    };
    const ds = TokenDataset.fromFile(file('w.txt', 'a bb ccc dddd'), { tokenizer: words, evalFraction: 0 });
    expect(Array.from(ds.train)).toEqual([1, 2, 3, 4]);
  });

  it('rejects binary junk given as text, naming the file', () => {
    const p = file('junk.txt', Uint8Array.from([0xff, 0xfe, 0x00, 0xc3]));
    const e = trainErrorOf(() => TokenDataset.fromFile(p));
    expect(e.code).toBe('DataNotText');
    expect(e.message).toContain(p);
  });
});

describe('load errors name the file', () => {
  it('empty file', () => {
    const p = file('empty.txt', '');
    const e = trainErrorOf(() => TokenDataset.fromFile(p));
    expect(e.code).toBe('DataEmpty');
    expect(e.message).toContain(p);
  });

  it('unreadable file', () => {
    const p = join(dir, 'does-not-exist.bin');
    const e = trainErrorOf(() => TokenDataset.fromFile(p));
    expect(e.code).toBe('DataUnreadable');
    expect(e.message).toContain(p);
  });

  it('file shorter than one sequence', () => {
    const p = u32File('short.u32', Uint32Array.from([1, 2, 3, 4, 5, 6, 7, 8]));
    // 8 tokens: seqLen 7 needs 8 → fits; seqLen 8 needs 9 → too short.
    expect(() => TokenDataset.fromFile(p, { seqLen: 7, evalFraction: 0 })).not.toThrow();
    const e = trainErrorOf(() => TokenDataset.fromFile(p, { seqLen: 8, evalFraction: 0 }));
    expect(e.code).toBe('DataTooShort');
    expect(e.message).toContain(p);
    const ds = TokenDataset.fromFile(p, { evalFraction: 0 });
    const e2 = trainErrorOf(() => ds.batchAt('train', 0, 1, 8, 0));
    expect(e2.code).toBe('DataTooShort');
    expect(e2.message).toContain(p);
  });

  it('token ids outside the model vocabulary', () => {
    const p = u32File('vocab.u32', Uint32Array.from([3, 1, 300, 2, 255]));
    const ds = TokenDataset.fromFile(p, { evalFraction: 0 });
    expect(() => checkVocab(ds, 301)).not.toThrow();
    const e = trainErrorOf(() => checkVocab(ds, 256));
    expect(e.code).toBe('TokenOutOfVocab');
    expect(e.message).toContain(p);
    expect(e.message).toContain('token id 300 at position 2');
    expect(trainErrorOf(() => checkVocab(ds, 300, 'named.u32')).message).toContain('named.u32');
  });
});

describe('batchAt', () => {
  const n = 1000;
  const stream = scrambled(n);
  const p = u32File('stream.u32', stream);
  const ds = TokenDataset.fromFile(p, { evalFraction: 0.1 });
  const B = 4;
  const T = 16;

  it('is a pure function of (seed, split, step)', () => {
    const a = ds.batchAt('train', 7, B, T, 1234);
    // A fresh dataset object, as after a resume, gives the identical batch.
    const b = TokenDataset.fromFile(p, { evalFraction: 0.1 }).batchAt('train', 7, B, T, 1234);
    expect(b.inputs).toEqual(a.inputs);
    expect(b.targets).toEqual(a.targets);
    // Interleaving other calls does not disturb it.
    ds.batchAt('train', 8, B, T, 1234);
    ds.batchAt('eval', 7, B, T, 1234);
    expect(ds.batchAt('train', 7, B, T, 1234).inputs).toEqual(a.inputs);
    expect(ds.batchAt('train', 8, B, T, 1234).inputs).not.toEqual(a.inputs);
    expect(ds.batchAt('train', 7, B, T, 1235).inputs).not.toEqual(a.inputs);
  });

  it('returns [B, T] windows of the raw stream with targets shifted by one', () => {
    for (const step of [0, 1, 2, 50]) {
      const { inputs, targets } = ds.batchAt('train', step, B, T, 42);
      expect(inputs.length).toBe(B * T);
      expect(targets.length).toBe(B * T);
      for (let b = 0; b < B; b++) {
        const start = stream.indexOf(inputs[b * T]); // ids are distinct, so this is the window start
        expect(start).toBeGreaterThanOrEqual(0);
        for (let t = 0; t < T; t++) {
          expect(inputs[b * T + t]).toBe(stream[start + t]);
          expect(targets[b * T + t]).toBe(stream[start + t + 1]);
        }
      }
    }
  });

  it('keeps train and eval windows inside their split and reaches both ends', () => {
    const nTrain = n - Math.floor(n * 0.1);
    const pos = new Map<number, number>();
    stream.forEach((t, i) => pos.set(t, i));
    const trainStarts = new Set<number>();
    for (let step = 0; step < 2000; step++) {
      const { inputs, targets } = ds.batchAt('train', step, 2, T, 9);
      for (let b = 0; b < 2; b++) {
        trainStarts.add(pos.get(inputs[b * T])!);
        expect(pos.get(targets[b * T + T - 1])!).toBeLessThan(nTrain);
      }
      const ev = ds.batchAt('eval', step, 1, T, 9);
      expect(pos.get(ev.inputs[0])!).toBeGreaterThanOrEqual(nTrain);
    }
    expect(Math.min(...trainStarts)).toBe(0);
    expect(Math.max(...trainStarts)).toBe(nTrain - T - 1);
  });
});

describe('the fixture corpus', () => {
  it('loads as bytes, with both languages in the held-out tail', () => {
    const path = new URL('../../fixtures/corpus/fortunes.txt', import.meta.url).pathname;
    const ds = TokenDataset.fromFile(path, { seqLen: 256 });
    const raw = readFileSync(path);
    expect(ds.tokens.length).toBe(raw.length);
    expect(Buffer.from(ds.tokens).equals(raw)).toBe(true);
    expect(ds.maxId).toBeLessThan(256);
    const tail = Buffer.from(ds.eval).toString('utf8');
    expect(/[\u4e00-\u9fff]/.test(tail) && /[A-Za-z]{4}/.test(tail)).toBe(true);
  });
});
