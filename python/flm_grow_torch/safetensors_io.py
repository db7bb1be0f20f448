"""safetensors reading and writing (SPEC §5) through the `safetensors` package: thin wrappers that
keep the package's call sites (load_file / save_file returning and taking metadata, a file object
read one tensor at a time, HF sharded checkpoint folders) and turn the library's errors into one
line naming the file.

Reading memory-maps the file (safe_open), so a checkpoint's tensors are only paged in when used;
each tensor handed out is its own writable copy. Writing goes through safetensors.torch.save_file,
which streams every tensor from its own memory (no second copy of the tensors) into a temporary
file renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file as _st_save_file

# safetensors dtype name -> (torch dtype, bytes per element)
DTYPES = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}
NAME_OF = {t: n for n, (t, _) in DTYPES.items()}


def _bad(path: str, e: Exception) -> ValueError:
    return ValueError(f"{path}: not a readable safetensors file ({str(e).strip().splitlines()[0][:200]})")


class SafetensorsFile:
    """One .safetensors file, memory-mapped. `tensors[name]` = {"dtype", "shape", "nbytes"} from the
    header; `get(name)` returns the tensor (a copy, writable); `metadata` the header's
    __metadata__ (None when absent)."""

    def __init__(self, path: str, names: list[str] | None = None):
        """`names`: describe only these tensors (a reader of one tensor need not walk the header)."""
        self.path = path
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file")
        try:
            self._f = safe_open(path, framework="pt")
            self.metadata = self._f.metadata()
            self.tensors = {}
            keys = self._f.keys()
            have = set(keys)
            for name in keys if names is None else [n for n in names if n in have]:
                s = self._f.get_slice(name)
                dtype, shape = s.get_dtype(), list(s.get_shape())
                if dtype not in DTYPES:
                    raise ValueError(f"{path}: tensor {name}: unsupported dtype {dtype}")
                numel = 1
                for d in shape:
                    numel *= d
                self.tensors[name] = {"dtype": dtype, "shape": shape, "nbytes": numel * DTYPES[dtype][1]}
        except (SafetensorError, OSError, RuntimeError) as e:
            raise _bad(path, e) from None

    def keys(self) -> list[str]:
        return list(self.tensors.keys())

    def get(self, name: str) -> torch.Tensor:
        if name not in self.tensors:
            raise KeyError(f"{self.path}: no tensor {name}")
        try:
            # safe_open hands out a writable tensor of its own (writing never reaches the file)
            return self._f.get_tensor(name)
        except (SafetensorError, OSError, RuntimeError) as e:
            raise _bad(self.path, e) from None

    def get_part(self, name: str, offset: tuple[int, ...], shape: tuple[int, ...]) -> torch.Tensor:
        """The block of tensor `name` starting at `offset` with `shape` (one rank's shard): only
        that block is read from the file (safe_open's get_slice)."""
        if name not in self.tensors:
            raise KeyError(f"{self.path}: no tensor {name}")
        try:
            if len(shape) == 0:
                return self._f.get_tensor(name)
            if any(s == 0 for s in shape):
                return torch.empty(shape, dtype=DTYPES[self.tensors[name]["dtype"]][0])
            return self._f.get_slice(name)[tuple(slice(o, o + s) for o, s in zip(offset, shape, strict=True))]
        except (SafetensorError, OSError, RuntimeError) as e:
            raise _bad(self.path, e) from None

    def close(self) -> None:
        # safe_open has no close of its own: dropping it unmaps the file (and its touched pages)
        self._f = None


def load_file(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    """(every tensor by name, in file order; the header's metadata or None)."""
    f = SafetensorsFile(path)
    try:
        return {k: f.get(k) for k in f.keys()}, f.metadata
    finally:
        f.close()


def stored_bytes(paths: list[str]) -> int:
    """Bytes of tensor data in these files (from their headers)."""
    n = 0
    for p in paths:
        f = SafetensorsFile(p)
        n += sum(i["nbytes"] for i in f.tensors.values())
        f.close()
    return n


def save_file(path: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, object] | None = None) -> None:
    """Write `tensors` (name -> tensor; any device, any layout) and string metadata to `path` via a
    temporary file. Tensors that share memory are written as separate copies (safetensors refuses
    shared storage; each name gets its own bytes)."""
    out, seen = {}, set()
    for name, t in tensors.items():
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if not t.is_contiguous():
            t = t.contiguous()
        key = t.untyped_storage().data_ptr() if t.numel() > 0 else None
        if key is not None and key in seen:
            t = t.clone()
        elif key is not None:
            seen.add(key)
        out[name] = t
    md = None if metadata is None else {str(k): str(v) for k, v in metadata.items()}
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        _st_save_file(out, tmp, metadata=md)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint_tensors(ckpt_dir: str) -> dict[str, torch.Tensor]:
    """Every tensor of an HF checkpoint folder: model.safetensors or index + shards."""
    index = os.path.join(ckpt_dir, "model.safetensors.index.json")
    out = {}
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        for shard in sorted(set(weight_map.values())):
            tensors, _ = load_file(os.path.join(ckpt_dir, shard))
            out.update(tensors)
        missing = [n for n in weight_map if n not in out]
        if missing:
            raise ValueError(f"{ckpt_dir}: index names tensors missing from the shards: {missing[:3]}")
        return out
    single = os.path.join(ckpt_dir, "model.safetensors")
    if not os.path.exists(single):
        raise FileNotFoundError(f"{ckpt_dir}: neither model.safetensors nor model.safetensors.index.json")
    return load_file(single)[0]


def save_file_streamed(
    path: str,
    specs: list[tuple[str, torch.dtype, tuple[int, ...]]],
    tensor_of: Callable[[str], torch.Tensor],
    metadata: Mapping[str, object] | None = None,
) -> None:
    """Write a safetensors file one tensor at a time: the header from `specs` (name, dtype, shape;
    in this order in the file), then each tensor's bytes from `tensor_of(name)`, called once per
    name in order and dropped once written. safetensors' own writer (save_file) needs every tensor
    in memory at once; a distributed save gathers one sharded tensor at a time instead
    (train.Trainer.save), so that no rank ever holds the whole model or its AdamW moments. The
    layout is the reference writer's (SPEC §5: header padded with spaces to a multiple of 8, the
    buffer covered without holes); tensors are converted to their spec's dtype. Written to a
    temporary file renamed into place, as save_file."""
    header: dict[str, object] = {}
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    off = 0
    for name, dtype, shape in specs:
        n = DTYPES[NAME_OF[dtype]][1]
        for d in shape:
            n *= d
        header[name] = {"dtype": NAME_OF[dtype], "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
            for name, dtype, shape in specs:
                t = tensor_of(name).detach()
                if tuple(t.shape) != tuple(shape):
                    raise ValueError(f"{path}: tensor {name} has shape {list(t.shape)}, its header says {list(shape)}")
                t = t.to(device="cpu", dtype=dtype).contiguous()
                if t.numel() > 0:
                    # the tensor's own memory through the buffer protocol: no copy into bytes
                    f.write(t.reshape(-1).view(torch.uint8).numpy())
                del t
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint_streamed(
    ckpt_dir: str,
    specs: list[tuple[str, tuple[int, ...]]],
    tensor_of: Callable[[str], torch.Tensor],
    max_shard_bytes: int = 5_000_000_000,
) -> None:
    """HF's checkpoint layout (one model.safetensors, or 5 GB model-0000k-of-0000n shards + index) in f32, written
    one tensor at a time (save_file_streamed): `tensor_of` is called once per name, in the order
    of `specs`."""
    shards: list[list[tuple[str, torch.dtype, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in specs:
        n = 4
        for d in shape:
            n *= d
        if shards[-1] and size + n > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, torch.float32, tuple(shape)))
        size += n
    if len(shards) == 1:
        save_file_streamed(os.path.join(ckpt_dir, "model.safetensors"), shards[0], tensor_of, {"format": "pt"})
        return
    weight_map, total = {}, 0
    for k, s in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file_streamed(os.path.join(ckpt_dir, fname), s, tensor_of, {"format": "pt"})
        for name, _dtype, shape in s:
            weight_map[name] = fname
            n = 4
            for d in shape:
                n *= d
            total += n
    with open(os.path.join(ckpt_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
