"""Sharded checkpoints (--sharded-save): at scale no rank holds the whole model, so each rank
writes its own parts of the weights and AdamW moments with torch.distributed.checkpoint (DCP)
into <checkpoint>/sharded/ (DCP's .distcp files and .metadata). Everything small stays whole
beside it: config.json, masks.safetensors, tokenizer files, optimizer.json (step, tokens, AdamW
hyperparameters) and the manifest, written last, which hashes every file, the shards included.

DCP reshards on load: a run saved under FSDP x TP on 4 processes resumes on 1 process and the
other way round (every rank asks for exactly the parts its layout holds).

`python -m flm_grow_torch.sharded export SRC DEST` turns a sharded checkpoint into flm-grow's HF
layout (model.safetensors, optimizer.safetensors, masks, config, manifest) that `flm-grow bake`,
`grow`, `forward` and `train` read (`flm-grow export` runs it). It streams: one tensor is read from
the shards and written at a time (safetensors_io.save_file_streamed), so it never holds more than
the largest tensor. An incomplete or altered checkpoint (its manifest does not vouch for every
shard) is refused.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import warnings
from concurrent.futures import Future

import torch

from .checkpointing import RULES

# DCP says so each time it runs in one process (a 1-process run, the export): that is the intent here
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")

SHARDED_DIR = RULES[
    "shardedDir"
]  # the folder of the shards inside a checkpoint (manifest.json: both languages read it)
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


class ExportError(ValueError):
    """A sharded checkpoint that cannot be exported (bad input): one line naming the file or tensor."""


PROGRESS_PREFIX = "FLM_GROW_PROGRESS "
RESULT_PREFIX = "FLM_GROW_RESULT "


def _read_tensor(shards: str, name: str, shape: list[int]) -> torch.Tensor:
    """One whole tensor of a sharded save (DCP assembles it from every rank's parts)."""
    from . import dcp_safe

    t = torch.empty(shape, dtype=torch.float32)
    try:
        dcp_safe.load(shards, {name: t}, no_dist=True)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # DCP's CheckpointException is a BaseException holding each rank's traceback
        said = [x for x in str(e).strip().splitlines() if x.strip()]
        raise ExportError(
            f"{shards}: tensor {name}: cannot be read ({said[-1].strip()[:200] if said else type(e).__name__})"
        ) from None
    return t


def export(src: str, dst: str, into: bool = False, progress=None) -> dict:  # noqa: ANN001
    """The HF-layout folder of a sharded checkpoint (see the module docstring). `into`: `dst` is an
    existing empty folder that the caller renames into place (flm-grow export's temporary folder);
    otherwise `dst` must not exist and is written through a temporary folder beside it.
    `progress(done_bytes, total_bytes, tensor)` after each tensor. Returns what was written."""
    from . import dcp_safe
    from .checkpointing import MANIFEST_FILE, checkpoint_damage, read_manifest, write_manifest_last
    from .optim import OPTIMIZER_FILE, OPTIMIZER_FORMAT, js_num, js_value
    from .safetensors_io import save_checkpoint_streamed, save_file_streamed

    if not os.path.isdir(src):
        raise ExportError(f"{src}: no such checkpoint folder")
    if not is_sharded(src):
        raise ExportError(
            f"{src}: not a sharded checkpoint (no {SHARDED_DIR}/.metadata); it is exported already, or was saved without --sharded-save"
        )
    # an incomplete (interrupted, or --async-save still writing) or altered checkpoint is refused:
    # the manifest, written last, vouches for every shard
    why = checkpoint_damage(src)
    if why is not None:
        raise ExportError(f"{src}: not a complete checkpoint: {why}")
    if into:
        if not os.path.isdir(dst) or os.listdir(dst):
            raise ExportError(f"{dst}: expected an empty folder to export into")
    elif os.path.exists(dst):
        raise ExportError(f"{dst}: already exists")
    shards = os.path.join(src, SHARDED_DIR)
    md = dcp_safe.read_metadata(shards).state_dict_metadata
    names = [n for n in md if not n.startswith("exp_avg")]  # the weights, in saved order
    for n in names:
        for key in ("exp_avg", "exp_avg_sq"):
            if f"{key}.{n}" not in md:
                raise ExportError(f"{shards}/.metadata: no {key}.{n} (the AdamW moment of {n})")
    meta = read_optimizer_meta(src)
    shape = {n: list(md[n].size) for n in md}
    total = sum(4 * math.prod(s) for s in shape.values())
    done = 0

    def produce(name: str) -> torch.Tensor:
        nonlocal done
        t = _read_tensor(shards, name, shape[name])
        done += t.numel() * 4
        if progress is not None:
            progress(done, total, name)
        return t

    out = dst if into else f"{dst}.tmp-{os.getpid()}"
    if not into:
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
    try:
        # model.safetensors, or 5 GB shards and their index, as a one-process save writes them
        save_checkpoint_streamed(out, [(n, tuple(shape[n])) for n in names], produce)
        save_file_streamed(
            os.path.join(out, OPTIMIZER_FILE),
            [(f"{k}.{n}", torch.float32, tuple(shape[f"{k}.{n}"])) for n in names for k in ("exp_avg", "exp_avg_sq")],
            produce,
            {"format": OPTIMIZER_FORMAT, **{k: js_num(v) for k, v in meta.items()}},
        )
        for f in os.listdir(src):
            if f not in (SHARDED_DIR, OPTIMIZER_META, MANIFEST_FILE) and not f.startswith("."):
                shutil.copy2(os.path.join(src, f), os.path.join(out, f))
        m = read_manifest(src) or {}
        m.pop("files", None)
        m.setdefault("extra", {})["sharded"] = False
        m["extra"]["exportedFrom"] = os.path.abspath(src)
        if not into:
            os.replace(out, dst)
            out = dst
        write_manifest_last(out, js_value(m))
    except BaseException:
        if not into:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return {"source": src, "dest": dst, "tensors": len(md), "bytes": total, "step": meta["step"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m flm_grow_torch.sharded", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="a sharded checkpoint to flm-grow's HF layout (streaming)")
    e.add_argument("src")
    e.add_argument("dst")
    e.add_argument(
        "--into", action="store_true", help="DST is an existing empty folder (the caller renames it into place)"
    )
    e.add_argument(
        "--progress", action="store_true", help=f"a {PROGRESS_PREFIX.strip()} JSON line on stdout after each tensor"
    )
    a = p.parse_args(argv)

    def progress(done: int, total: int, name: str) -> None:
        print(PROGRESS_PREFIX + json.dumps({"done": done, "total": total, "tensor": name}), flush=True)

    try:
        r = export(a.src, a.dst, into=a.into, progress=progress if a.progress else None)
    except ValueError as err:  # ExportError, a refused DCP index (dcp_safe.UnsafeMetadata), a bad optimizer.json
        print(f"export: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    except OSError as err:  # a missing or unreadable file, a full disk: named by the OS error
        where = err.filename or a.dst
        print(f"export: {where}: {err.strerror or err}", file=sys.stderr, flush=True)
        sys.exit(2)
    print(f"exported {a.src} -> {a.dst}", flush=True)
    print(RESULT_PREFIX + json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
