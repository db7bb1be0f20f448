"""safetensors_io.save_file_streamed / save_checkpoint_streamed (the one-tensor-at-a-time writer of
distributed saves) against the safetensors package itself: the files it writes load with
safetensors' own reader to the same tensors and metadata, each tensor is asked for once and in
order, and the shard split and index are save_checkpoint_tensors's."""

import json
import os
from collections.abc import Mapping

import pytest
import torch
from safetensors.torch import load_file, save_file

from flm_grow_torch.safetensors_io import save_checkpoint_streamed, save_file_streamed


def save_checkpoint_tensors(
    ckpt_dir: str, tensors: Mapping[str, torch.Tensor], max_shard_bytes: int = 5_000_000_000
) -> list[str]:
    """The reference: HF layout written with the safetensors package's save_file, all tensors held (one
    model.safetensors, or model-0000k-of-0000n shards + index when larger)."""
    shards, cur, cur_bytes = [], {}, 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        if cur and cur_bytes + n > max_shard_bytes:
            shards.append(cur)
            cur, cur_bytes = {}, 0
        cur[name] = t
        cur_bytes += n
    shards.append(cur)
    if len(shards) == 1:
        save_file(shards[0], os.path.join(ckpt_dir, "model.safetensors"), {"format": "pt"})
        return ["model.safetensors"]
    names, weight_map, total = [], {}, 0
    for k, s in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(s, os.path.join(ckpt_dir, fname), {"format": "pt"})
        names.append(fname)
        for name, t in s.items():
            weight_map[name] = fname
            total += t.numel() * t.element_size()
    with open(os.path.join(ckpt_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return names + ["model.safetensors.index.json"]


def tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "b.weight": torch.randn(5, 3, generator=g),
        "a.half": torch.randn(7, generator=g).to(torch.bfloat16),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0, 4),
        "ids": torch.arange(6, dtype=torch.int32).reshape(2, 3),
    }


def test_streamed_file_reads_back_with_safetensors(tmp_path):
    t = tensors()
    asked = []

    def of(name):
        asked.append(name)
        return t[name]

    p = str(tmp_path / "s.safetensors")
    save_file_streamed(p, [(n, x.dtype, tuple(x.shape)) for n, x in t.items()], of, {"format": "pt", "step": 3})
    assert asked == list(t)  # once each, in order
    back = load_file(p)
    assert set(back) == set(t)
    for n, x in t.items():
        assert back[n].dtype == x.dtype and torch.equal(back[n], x), n
    from safetensors import safe_open

    with safe_open(p, "pt") as f:
        assert f.metadata() == {"format": "pt", "step": "3"}
    with open(p, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
    assert n % 8 == 0  # the reference writer's padding
    # same data bytes as safetensors' own writer (its tensor order may differ: compare per tensor)
    ref = str(tmp_path / "ref.safetensors")
    save_file(t, ref)
    assert all(torch.equal(load_file(ref)[k], back[k]) for k in t)


def test_wrong_shape_is_refused_and_nothing_is_left(tmp_path):
    p = str(tmp_path / "s.safetensors")
    with pytest.raises(ValueError, match=r"tensor w has shape \[2, 2\], its header says \[3\]"):
        save_file_streamed(p, [("w", torch.float32, (3,))], lambda n: torch.zeros(2, 2))
    assert os.listdir(tmp_path) == []


def test_checkpoint_shards_match_save_checkpoint_tensors(tmp_path):
    g = torch.Generator().manual_seed(1)
    t = {f"w{i}": torch.randn(10, 10, generator=g) for i in range(5)}  # 400 B each
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    save_checkpoint_tensors(str(a), t, max_shard_bytes=900)
    save_checkpoint_streamed(str(b), [(n, tuple(x.shape)) for n, x in t.items()], t.__getitem__, max_shard_bytes=900)
    assert sorted(os.listdir(a)) == sorted(os.listdir(b))
    ia = json.loads((a / "model.safetensors.index.json").read_text())
    ib = json.loads((b / "model.safetensors.index.json").read_text())
    assert ia == ib
    for f in set(ia["weight_map"].values()):
        x, y = load_file(str(a / f)), load_file(str(b / f))
        assert set(x) == set(y) and all(torch.equal(x[k], y[k]) for k in x)
