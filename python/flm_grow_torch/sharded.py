"""Sharded checkpoints (--sharded-save): at scale no rank holds the whole model, so each rank
writes its own parts of the weights and AdamW moments with torch.distributed.checkpoint (DCP)
into <checkpoint>/sharded/ (DCP's .distcp files and .metadata). Everything small stays whole
beside it: config.json, masks.safetensors, tokenizer files, optimizer.json (step, tokens, AdamW
hyperparameters) and the manifest, written last, which hashes every file, the shards included.

DCP reshards on load: a run saved under FSDP x TP on 4 processes resumes on 1 process and the
other way round (every rank asks for exactly the parts its layout holds).

`python -m flm_grow_torch.sharded export SRC DEST` turns a sharded checkpoint into flm-grow's HF
layout (model.safetensors, optimizer.safetensors, masks, config, manifest) that `flm-grow bake`,
`grow`, `forward` and `train` read. It streams: one tensor is read from the shards and written at
a time, so it never holds more than the largest tensor.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from concurrent.futures import Future

import torch

# DCP says so each time it runs in one process (a 1-process run, the export): that is the intent here
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")

SHARDED_DIR = "sharded"
OPTIMIZER_META = "optimizer.json"


def is_sharded(d: str) -> bool:
    return os.path.exists(os.path.join(d, SHARDED_DIR, ".metadata"))


def state_dict(params: dict[str, torch.Tensor], adam) -> dict[str, torch.Tensor]:
    """The tensors a sharded checkpoint holds, by the names of the HF layout's two files (weights
    under their own names, moments as exp_avg.<name> / exp_avg_sq.<name>). Detached views of the
    live tensors: DCP's load copies into them in place."""
    out = {n: p.detach() for n, p in params.items()}
    for n in params:
        out[f"exp_avg.{n}"] = adam.exp_avg[n]
        out[f"exp_avg_sq.{n}"] = adam.exp_avg_sq[n]
    return out


def save(path: str, state: dict[str, torch.Tensor]) -> None:
    """Every rank writes its shards (a collective); replicated tensors are written once."""
    from . import dcp_safe

    dcp_safe.save(path, state)


def async_save(path: str, state: dict[str, torch.Tensor], group=None) -> Future:  # noqa: ANN001
    """save, in the background (--async-save): the state is copied before this returns, so training
    may go on changing the live tensors; the future resolves once every rank's shards are written."""
    from . import dcp_safe

    return dcp_safe.async_save(path, state, group)


def load(path: str, state: dict[str, torch.Tensor]) -> None:
    """Fill `state` (laid out as this run's layout wants) from a sharded save of any layout."""
    from . import dcp_safe

    dcp_safe.load(path, state)


def write_optimizer_meta(d: str, meta: dict) -> None:
    with open(os.path.join(d, OPTIMIZER_META), "w") as f:
        f.write(json.dumps(meta, indent=2) + "\n")


def read_optimizer_meta(d: str) -> dict:
    p = os.path.join(d, OPTIMIZER_META)
    try:
        with open(p) as f:
            m = json.load(f)
        return {k: m[k] for k in ("step", "tokens", "beta1", "beta2", "eps", "weight_decay")}
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{p}: not a readable optimizer.json ({e})") from None


class _Deferred:
    """A tensor of a sharded checkpoint that is read only when its bytes are written: save_file
    takes the header from shape and dtype, then calls detach() once per tensor, in order."""

    def __init__(self, path: str, name: str, shape: torch.Size, dtype: torch.dtype) -> None:
        self.path, self.name, self.shape, self.dtype = path, name, shape, dtype

    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def element_size(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    def detach(self) -> torch.Tensor:
        from . import dcp_safe

        t = torch.empty(self.shape, dtype=self.dtype)
        dcp_safe.load(self.path, {self.name: t}, no_dist=True)
        return t


def export(src: str, dst: str) -> None:
    """The HF-layout folder of a sharded checkpoint (see the module docstring)."""
    from . import dcp_safe
    from .checkpointing import read_manifest, write_manifest_last
    from .optim import OPTIMIZER_FILE, OPTIMIZER_FORMAT, js_num, js_value
    from .safetensors_io import save_file

    if not is_sharded(src):
        raise ValueError(f"{src}: not a sharded checkpoint (no {SHARDED_DIR}/.metadata)")
    if os.path.exists(dst):
        raise ValueError(f"{dst}: already exists")
    shards = os.path.join(src, SHARDED_DIR)
    md = dcp_safe.read_metadata(shards).state_dict_metadata
    names = [n for n in md if not n.startswith("exp_avg")]  # the weights, in saved order
    f32 = torch.float32
    tmp = f"{dst}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_file(
        os.path.join(tmp, "model.safetensors"),
        {n: _Deferred(shards, n, md[n].size, f32) for n in names},
        {"format": "pt"},
    )
    meta = read_optimizer_meta(src)
    moments = {}
    for n in names:
        for key in ("exp_avg", "exp_avg_sq"):
            moments[f"{key}.{n}"] = _Deferred(shards, f"{key}.{n}", md[f"{key}.{n}"].size, f32)
    save_file(
        os.path.join(tmp, OPTIMIZER_FILE),
        moments,
        {"format": OPTIMIZER_FORMAT, **{k: js_num(v) for k, v in meta.items()}},
    )
    for f in os.listdir(src):
        if f not in (SHARDED_DIR, OPTIMIZER_META, "flm-grow-manifest.json") and not f.startswith("."):
            shutil.copy2(os.path.join(src, f), os.path.join(tmp, f))
    m = read_manifest(src) or {}
    m.pop("files", None)
    m.setdefault("extra", {})["sharded"] = False
    m["extra"]["exportedFrom"] = os.path.abspath(src)
    os.replace(tmp, dst)
    write_manifest_last(dst, js_value(m))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m flm_grow_torch.sharded", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="a sharded checkpoint to flm-grow's HF layout (streaming)")
    e.add_argument("src")
    e.add_argument("dst")
    a = p.parse_args(argv)
    try:
        export(a.src, a.dst)
    except (ValueError, OSError) as err:
        sys.exit(f"sharded export: {err}")
    print(f"exported {a.src} -> {a.dst}")


if __name__ == "__main__":
    main()
