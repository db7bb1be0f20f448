"""Training data and batches, bit-for-bit as src/train/data.ts + src/train/rng.ts: the same
windows for the same (seed, split, step), so both engines see identical batches.

Data is memory-mapped: a token file is never read whole into Python objects.
"""

import mmap
import os

import torch

from .options import default

M32 = 0xFFFFFFFF


def _imul(a, b):
    # Math.imul: the low 32 bits of the product
    return (a * b) & M32


def mix32(x):
    x = (x + 0x9E3779B9) & M32
    x = _imul(x ^ (x >> 16), 0x85EBCA6B)
    x = _imul(x ^ (x >> 13), 0xC2B2AE35)
    return (x ^ (x >> 16)) & M32


def hash_seed(*parts):
    h = 0x2545F491
    for p in parts:
        # JS: p >>> 0 (low 32 bits) and floor(p / 2^32) + const (folded the same way)
        h = mix32(h ^ mix32(p & M32) ^ mix32(((p // 0x100000000) + 0x632BE5AB) & M32))
    return h


def mulberry32(seed):
    state = [seed & M32]

    def nxt():
        a = (state[0] + 0x6D2B79F5) & M32
        state[0] = a
        t = _imul(a ^ (a >> 15), a | 1)
        t = (t ^ ((t + _imul(t ^ (t >> 7), t | 61)) & M32)) & M32
        return (t ^ (t >> 14)) & M32

    return nxt


def uniform_int(nxt, n):
    """Uniform in [0, n) by rejection sampling (no modulo bias), as rng.ts uniformInt."""
    limit = 0x100000000 - (0x100000000 % n)
    while True:
        r = nxt()
        if r < limit:
            return r % n


_DTYPE_BY_EXT = {".bin": "H", ".u16": "H", ".u32": "I"}


class TokenDataset:
    """Tokens of a byte-level text file or a uint16/uint32 token file; the tail is the eval split."""

    def __init__(self, path, eval_fraction=None, seq_len=None):
        self.source = path
        eval_fraction = default("eval-fraction") if eval_fraction is None else eval_fraction
        if not (0 <= eval_fraction < 1):
            raise ValueError(f"{path}: evalFraction must be in [0, 1), got {eval_fraction}")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise ValueError(f"{path}: training data file is empty")
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        ext = os.path.splitext(path)[1].lower()
        fmt = _DTYPE_BY_EXT.get(ext)
        if fmt is None:
            # text: the byte tokenizer's tokens are the UTF-8 bytes themselves
            try:
                memoryview(self._mm).tobytes().decode("utf-8") if size < (1 << 31) else None
            except UnicodeDecodeError:
                raise ValueError(
                    f"{path}: is not valid UTF-8 text; for pre-tokenized data use a .bin/.u16/.u32 extension"
                ) from None
            self.tokens = memoryview(self._mm)
            self.tokenizer = "bytes"
        else:
            width = 2 if fmt == "H" else 4
            if size % width:
                raise ValueError(f"{path}: {size} bytes is not a multiple of {width}")
            # little-endian files; memoryview.cast is native order, which is little-endian on x86/ARM
            self.tokens = memoryview(self._mm).cast(fmt)
            self.tokenizer = None
        n = len(self.tokens)
        n_eval = int(n * eval_fraction)  # Math.floor of the same double product
        self.train = self.tokens[: n - n_eval]
        self.eval = self.tokens[n - n_eval :]
        self.max_id = max(self._max(self.train), self._max(self.eval))
        if seq_len is not None:
            self.check_length(seq_len)

    @staticmethod
    def _max(view):
        if len(view) == 0:
            return 0
        # chunked via torch so a large file is scanned in C, not in a Python loop
        best, step = 0, 1 << 24
        for s in range(0, len(view), step):
            chunk = view[s : s + step]
            t = (
                torch.tensor(chunk.tolist(), dtype=torch.int64)
                if chunk.format != "B"
                else torch.frombuffer(bytearray(chunk), dtype=torch.uint8)
            )
            best = max(best, int(t.max()))
        return best

    def split(self, name):
        return self.train if name == "train" else self.eval

    def check_length(self, seq_len):
        for s in ("train", "eval"):
            n = len(self.split(s))
            if s == "eval" and n == 0:
                continue
            if n < seq_len + 1:
                raise ValueError(
                    f"{self.source}: {s} split has {n} tokens, fewer than one sequence needs (seqLen {seq_len} + 1)"
                )

    def batch_at(self, split, step, batch_size, seq_len, seed):
        """(inputs, targets) int64 [batch_size, seq_len]: windows chosen by (seed, split, step) only."""
        data = self.split(split)
        if len(data) == 0:
            raise ValueError(f"{self.source}: {split} split is empty")
        self.check_length(seq_len)
        starts = len(data) - seq_len
        nxt = mulberry32(hash_seed(seed, 1 if split == "train" else 2, step))
        rows = []
        for _ in range(batch_size):
            s = uniform_int(nxt, starts)
            rows.append(list(data[s : s + seq_len + 1]))
        w = torch.tensor(rows, dtype=torch.int64)
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()

    def close(self):
        self.train = self.eval = self.tokens = None
        self._mm.close()
