"""Training data and batches, bit-for-bit as src/train/data.ts + src/util/random.ts: the same
windows for the same (seed, split, step), so both engines see identical batches.

Data is memory-mapped: a token file is never read whole into Python objects. A `.bin` with a
Megatron-LM `.idx` beside it is read per the index (dtype, sequences, documents); a weighted mix
`a.bin:0.7,b.bin:0.3` draws each row's source by weight from the batch's random stream.
"""

import math
import mmap
import os
import re
import struct

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
    """Uniform in [0, n) by rejection sampling (no modulo bias), as src/util/random.ts uniformInt."""
    limit = 0x100000000 - (0x100000000 % n)
    while True:
        r = nxt()
        if r < limit:
            return r % n


_DTYPE_BY_EXT = {".bin": "H", ".u16": "H", ".u32": "I"}

# megatron/core/datasets/indexed_dataset.py: _INDEX_HEADER, then version <Q, dtype code <B,
# sequence count <Q, document count <Q, lengths int32[n], byte offsets int64[n], document indices int64[d]
MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
# code -> (memoryview format, name); the codes flm-grow refuses name why (src/train/data.ts MEGATRON_DTYPES)
MEGATRON_DTYPES: dict[int, tuple[str, str] | str] = {
    1: ("B", "uint8"),
    2: "int8",
    3: ("h", "int16"),
    4: ("i", "int32"),
    5: "int64 (convert to int32 or uint16)",
    6: "float64",
    7: "float32",
    8: ("H", "uint16"),
}


class DataError(ValueError):
    """Bad training data, named by file (one line, no traceback: train.py prints it)."""


def megatron_index_for(path: str) -> str | None:
    """The .idx beside a .bin, if there is one."""
    if not path.lower().endswith(".bin"):
        return None
    idx = path[:-4] + ".idx"
    return idx if os.path.exists(idx) else None


def read_megatron_index(idx_path: str, bin_path: str, bin_bytes: int) -> tuple[str, str]:
    """Check a Megatron index against its .bin; (memoryview format, dtype name). As data.ts readMegatronIndex."""

    def bad(why: str) -> DataError:
        return DataError(f"{bin_path}: its Megatron index {idx_path} disagrees: {why}; the .bin is not read")

    with open(idx_path, "rb") as f:
        b = f.read()
    if len(b) < 34 or b[:9] != MEGATRON_MAGIC:
        raise bad("not a Megatron index (no MMIDIDX header)")
    (version,) = struct.unpack_from("<Q", b, 9)
    if version != 1:
        raise bad(f"index version {version}, this reader knows version 1")
    code = b[17]
    dt = MEGATRON_DTYPES.get(code)
    if dt is None:
        raise bad(f"unknown dtype code {code}")
    if isinstance(dt, str):
        raise bad(f"token dtype {dt} is not a token id type flm-grow reads")
    fmt, name = dt
    width = struct.calcsize(fmt)
    n, docs = struct.unpack_from("<QQ", b, 18)
    need = 34 + n * 4 + n * 8 + docs * 8
    if len(b) < need:
        raise bad(f"{len(b)} bytes, fewer than its {n} sequences and {docs} document entries need ({need})")
    lengths = memoryview(b)[34 : 34 + 4 * n].cast("i")
    pointers = memoryview(b)[34 + 4 * n : 34 + 12 * n].cast("q")
    offset = tokens = 0
    for i in range(n):
        if lengths[i] < 0:
            raise bad(f"sequence {i} has length {lengths[i]}")
        if pointers[i] != offset:
            raise bad(f"sequence {i} starts at byte {pointers[i]}, the lengths before it end at {offset}")
        offset += lengths[i] * width
        tokens += lengths[i]
    if offset != bin_bytes:
        raise bad(f"its {n} sequences hold {tokens} {name} tokens ({offset} bytes), the .bin has {bin_bytes} bytes")
    doc = memoryview(b)[34 + 12 * n : 34 + 12 * n + 8 * docs].cast("q")
    if docs > 0 and (doc[0] != 0 or doc[docs - 1] != n):
        raise bad(f"its document index runs {doc[0]}..{doc[docs - 1]}, not 0..{n}")
    for k in range(1, docs):
        if doc[k] < doc[k - 1]:
            raise bad(f"document index {k} goes back")
    return fmt, name


_MIX_PART = re.compile(r"^(.+):([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$")


def parse_data_mix(spec: str) -> list[tuple[str, float]] | None:
    """`a.bin:0.7,b.bin:0.3` -> [(path, weight)], or None for a plain path (as data.ts parseDataMix)."""
    if os.path.exists(spec):
        return None
    parts = [_MIX_PART.match(p.strip()) for p in spec.split(",")]
    if any(m is None for m in parts):
        return None
    out = [(m.group(1), float(m.group(2))) for m in parts if m is not None]
    if not sum(w for _, w in out) > 0 or any(not w > 0 for _, w in out):
        raise DataError(f"--data {spec}: every weight of a data mix must be > 0")
    return out


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
        idx = megatron_index_for(path)
        if idx is not None:
            fmt, _ = read_megatron_index(idx, path, size)
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
            width = struct.calcsize(fmt)
            if size % width:
                raise ValueError(f"{path}: {size} bytes is not a multiple of {width}")
            # little-endian files; memoryview.cast is native order, which is little-endian on x86/ARM
            self.tokens = memoryview(self._mm).cast(fmt)
            self.tokenizer = None
        if fmt in ("h", "i") and len(self.tokens) and self._min(self.tokens) < 0:
            raise DataError(f"{path}: holds a negative token id ({'int16' if fmt == 'h' else 'int32'} data)")
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

    @staticmethod
    def _min(view) -> int:
        best, step = 0, 1 << 24
        for s in range(0, len(view), step):
            best = min(best, int(torch.tensor(view[s : s + step].tolist(), dtype=torch.int64).min()))
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


class MixedDataset:
    """A weighted mix of token datasets, batch for batch as src/train/data.ts MixedDataset: row b
    draws u = next() from the batch's stream, takes the first source whose threshold
    floor(2^32 * cumulative weight / total) is above u, then a window of it from the same stream."""

    def __init__(self, spec: str, eval_fraction: float = 0.1, seq_len: int | None = None) -> None:
        mix = parse_data_mix(spec)
        if mix is None:
            raise DataError(f"{spec}: not a data mix")
        self.source = spec
        self.parts = [TokenDataset(p, eval_fraction=eval_fraction, seq_len=seq_len) for p, _ in mix]
        self.weights = [w for _, w in mix]
        total, acc, self.thresholds = sum(self.weights), 0.0, []
        for i, w in enumerate(self.weights):
            acc += w
            # the same double arithmetic as data.ts: Math.floor((2^32 * acc) / total)
            self.thresholds.append(
                0x100000000 if i == len(self.weights) - 1 else math.floor((0x100000000 * acc) / total)
            )
        self.max_id = max(p.max_id for p in self.parts)
        self.tokenizer = None

    def batch_at(self, split, step, batch_size, seq_len, seed):
        nxt = mulberry32(hash_seed(seed, 1 if split == "train" else 2, step))
        rows = []
        for _ in range(batch_size):
            u = nxt()
            k = next(i for i, t in enumerate(self.thresholds) if u < t)
            data = self.parts[k].split(split)
            if len(data) <= seq_len:
                raise DataError(
                    f"{self.parts[k].source}: {split} split has {len(data)} tokens, too few for seqLen {seq_len}"
                )
            s = uniform_int(nxt, len(data) - seq_len)
            rows.append(list(data[s : s + seq_len + 1]))
        w = torch.tensor(rows, dtype=torch.int64)
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()

    @property
    def tokens(self) -> range:
        """As many as the parts hold together (counted in the manifest, as data.ts's mix)."""
        return range(sum(len(p.tokens) for p in self.parts))

    @property
    def eval(self) -> range:
        """Held-out tokens: an eval runs when every part has an eval window (data.ts)."""
        return range(min(len(p.eval) for p in self.parts))

    def close(self) -> None:
        for p in self.parts:
            p.close()


def open_training_data(spec: str, eval_fraction: float = 0.1, seq_len: int | None = None):
    """--data as given: one file (TokenDataset) or a weighted mix of token files (MixedDataset)."""
    if parse_data_mix(spec) is not None:
        return MixedDataset(spec, eval_fraction=eval_fraction, seq_len=seq_len)
    return TokenDataset(spec, eval_fraction=eval_fraction, seq_len=seq_len)
