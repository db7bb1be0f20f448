"""data.py's readers against files written here: a Megatron-LM indexed dataset (.bin + .idx, the
layout of megatron/core/datasets/indexed_dataset.py's _IndexWriter) is read per its index; an
index that disagrees with its .bin is refused naming both; a nanoGPT .bin without .idx is uint16."""

import struct
from pathlib import Path

import pytest

from flm_grow_torch.data import DataError, TokenDataset


def write_megatron(prefix: Path, docs: list[list[int]], code: int, fmt: str) -> None:
    n = len(docs)
    lengths = [len(d) for d in docs]
    width = struct.calcsize(fmt)
    pointers = [sum(lengths[:i]) * width for i in range(n)]
    idx = b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, code, n, n + 1)
    idx += struct.pack(f"<{n}i", *lengths) + struct.pack(f"<{n}q", *pointers) + struct.pack(f"<{n + 1}q", *range(n + 1))
    prefix.with_suffix(".idx").write_bytes(idx)
    prefix.with_suffix(".bin").write_bytes(b"".join(struct.pack(f"<{len(d)}{fmt}", *d) for d in docs))


DOCS = [[(i * 37 + t * 11) % 70000 for t in range(10 + i)] for i in range(12)]


def test_int32_megatron_read_per_index(tmp_path: Path) -> None:
    write_megatron(tmp_path / "c", DOCS, 4, "i")
    ds = TokenDataset(str(tmp_path / "c.bin"), eval_fraction=0)
    assert list(ds.tokens) == [t for d in DOCS for t in d]
    ds.close()


def test_disagreeing_index_refused(tmp_path: Path) -> None:
    write_megatron(tmp_path / "c", DOCS, 4, "i")
    (tmp_path / "c.bin").write_bytes(b"\x00" * (sum(len(d) for d in DOCS) * 2))  # the index says int32
    with pytest.raises(DataError, match=r"c\.bin: its Megatron index .*c\.idx disagrees: .*int32 tokens"):
        TokenDataset(str(tmp_path / "c.bin"))


def test_nanogpt_bin_without_index_is_uint16(tmp_path: Path) -> None:
    ids = [t % 65536 for d in DOCS for t in d]
    (tmp_path / "n.bin").write_bytes(struct.pack(f"<{len(ids)}H", *ids))
    ds = TokenDataset(str(tmp_path / "n.bin"), eval_fraction=0)
    assert list(ds.tokens) == ids
    ds.close()
