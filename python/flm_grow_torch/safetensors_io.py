"""safetensors reading and writing without the safetensors package (SPEC §5).

Reading memory-maps the file, so a checkpoint's tensors are only paged in when used. Writing
pads the JSON header with spaces to a multiple of 8 bytes, as the reference writer (and
flm-grow's TypeScript writer) does.
"""

import json
import mmap
import os
import struct

import torch

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

MAX_HEADER = 100_000_000


class SafetensorsFile:
    """One .safetensors file, memory-mapped; `get(name)` returns a tensor (a copy, writable)."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise ValueError(f"{path}: HeaderTooSmall")
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else b""
        (n,) = struct.unpack("<Q", self._mm[:8])
        if n > MAX_HEADER:
            raise ValueError(f"{path}: HeaderTooLarge ({n} bytes)")
        if 8 + n > size:
            raise ValueError(f"{path}: InvalidHeaderLength")
        header = json.loads(bytes(self._mm[8 : 8 + n]).decode("utf-8"))
        self.metadata = header.pop("__metadata__", None)
        self.tensors = header
        self._base = 8 + n
        for name, info in header.items():
            if info["dtype"] not in DTYPES:
                raise ValueError(f"{path}: tensor {name}: unsupported dtype {info['dtype']}")
            b, e = info["data_offsets"]
            numel = 1
            for d in info["shape"]:
                numel *= d
            if e - b != numel * DTYPES[info["dtype"]][1] or self._base + e > size:
                raise ValueError(f"{path}: tensor {name}: TensorInvalidInfo / InvalidOffset")

    def keys(self):
        return list(self.tensors.keys())

    def get(self, name):
        info = self.tensors[name]
        dtype, _ = DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        raw = bytearray(self._mm[self._base + b : self._base + e])  # copy: the mapping is read-only
        if len(raw) == 0:
            return torch.empty(info["shape"], dtype=dtype)
        return torch.frombuffer(raw, dtype=dtype).reshape(info["shape"])

    def close(self):
        if isinstance(self._mm, mmap.mmap):
            self._mm.close()


def load_file(path):
    f = SafetensorsFile(path)
    try:
        return {k: f.get(k) for k in f.keys()}, f.metadata
    finally:
        f.close()


WRITE_CHUNK = 64 << 20  # bytes copied out of a tensor per write


def write_tensor(f, t, buf):
    """A tensor's little-endian C-order bytes (x86/ARM hosts are little-endian) to file `f`, through
    the reusable bytearray `buf`: at most WRITE_CHUNK bytes beyond the tensor itself."""
    t = t.detach().contiguous().cpu().reshape(-1)
    if t.numel() == 0:
        return
    u8 = t.view(torch.uint8)
    staging = torch.frombuffer(buf, dtype=torch.uint8)
    for at in range(0, u8.numel(), len(buf)):
        n = min(len(buf), u8.numel() - at)
        staging[:n].copy_(u8[at : at + n])
        f.write(memoryview(buf)[:n])


def save_file(path, tensors, metadata=None):
    """Write `tensors` (ordered dict name -> tensor) to `path` via a temporary file. The header comes
    from shapes and dtypes alone and each tensor is streamed in chunks: a save costs no second copy
    of the tensors (it did: 8 bytes per parameter more for the AdamW moments, the peak of a training
    run's memory)."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    off = 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        header[name] = {"dtype": NAME_OF[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + n]}
        off += n
    js = json.dumps(header, separators=(",", ":")).encode("utf-8")
    js += b" " * ((8 - len(js) % 8) % 8)
    tmp = f"{path}.tmp-{os.getpid()}"
    largest = max((t.numel() * t.element_size() for t in tensors.values()), default=0)
    buf = bytearray(max(1, min(WRITE_CHUNK, largest)))
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(js)))
        f.write(js)
        for t in tensors.values():
            write_tensor(f, t, buf)
    os.replace(tmp, path)


def load_checkpoint_tensors(ckpt_dir):
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


def save_checkpoint_tensors(ckpt_dir, tensors, max_shard_bytes=5_000_000_000):
    """HF layout: one model.safetensors, or model-0000k-of-0000n shards + index when larger."""
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
        save_file(os.path.join(ckpt_dir, "model.safetensors"), shards[0], {"format": "pt"})
        return ["model.safetensors"]
    names, weight_map, total = [], {}, 0
    for k, s in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(os.path.join(ckpt_dir, fname), s, {"format": "pt"})
        names.append(fname)
        for name, t in s.items():
            weight_map[name] = fname
            total += t.numel() * t.element_size()
    with open(os.path.join(ckpt_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return names + ["model.safetensors.index.json"]
