"""torch.distributed.checkpoint (DCP) without unpickling code: the one module that imports it.

DCP's FileSystemReader reads `<dir>/.metadata` with a plain `pickle.load` (torch 2.13,
torch/distributed/checkpoint/filesystem.py), so a tampered sharded checkpoint on a shared
filesystem would run code on load. SafeFileSystemReader reads it with an unpickler that builds
only DCP's own metadata classes and the few torch and builtin values they hold (sizes, dtypes,
layouts); anything else (os.system, a reduce to an arbitrary callable) is refused, naming the file.
The shard files themselves are read by DCP with torch.load(weights_only=True).
"""

from __future__ import annotations

import io
import os
import pickle
import time
from concurrent.futures import Future

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultSavePlanner, FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

# modules whose classes the metadata is made of (dataclasses and enums of DCP)
_DCP_MODULES = ("torch.distributed.checkpoint.",)
_BUILTINS = {("builtins", n) for n in ("set", "frozenset", "slice", "complex", "bytearray")} | {
    ("collections", "OrderedDict"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),  # a layout by its name (torch.strided, ...)
    ("pathlib", "PosixPath"),  # the checkpoint id DCP records
    ("pathlib", "WindowsPath"),
}


class UnsafeMetadata(ValueError):
    pass


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, f, path: str) -> None:
        super().__init__(f)
        self.path = path

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if module.startswith(_DCP_MODULES) or (module, name) in _BUILTINS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(
            getattr(torch, name, None), (torch.dtype, torch.layout, torch.memory_format)
        ):
            return getattr(torch, name)
        raise UnsafeMetadata(
            f"{self.path}: refers to {module}.{name}, which a distributed-checkpoint index never holds; "
            "refusing to load it (it could run code)"
        )


class SafeFileSystemReader(FileSystemReader):
    """FileSystemReader whose metadata is read by the restricted unpickler above."""

    def read_metadata(self, *args, **kwargs) -> Metadata:  # noqa: ANN002, ANN003
        path = os.path.join(str(self.path), ".metadata")
        with open(path, "rb") as f:
            data = f.read()
        try:
            md = _MetadataUnpickler(io.BytesIO(data), path).load()
        except UnsafeMetadata:
            raise
        except Exception as e:  # a truncated or garbled index
            raise UnsafeMetadata(f"{path}: not a readable distributed-checkpoint index ({e})") from None
        if not isinstance(md, Metadata):
            raise UnsafeMetadata(f"{path}: holds a {type(md).__name__}, not a distributed-checkpoint index")
        if getattr(md, "storage_meta", None) is None:
            md.storage_meta = StorageMeta()
        md.storage_meta.load_id = self.load_id
        return md


def save(path: str, state: dict) -> None:
    """Every rank writes its shards (a collective)."""
    dcp.save(state, checkpoint_id=path)


# test hook: the background save waits this many seconds before it plans and writes, so that
# training runs several steps on while a save is in flight (test/torch/async-save.test.ts)
DELAY_ENV = "FLM_GROW_TEST_ASYNC_SAVE_DELAY"


class _DelayedPlanner(DefaultSavePlanner):
    def create_local_plan(self):  # noqa: ANN201
        time.sleep(float(os.environ[DELAY_ENV]))
        return super().create_local_plan()


def async_save(path: str, state: dict, group=None) -> Future:  # noqa: ANN001
    """dcp.async_save: the state is copied (staged) before this returns, then written by a thread of
    DCP's; the future resolves once every rank's shards and the index (.metadata) are written. Its
    collectives run on `group`, which must not be the group training uses at the same time."""
    planner = _DelayedPlanner() if os.environ.get(DELAY_ENV) else None
    return dcp.async_save(state, checkpoint_id=path, process_group=group, planner=planner)


def load(path: str, state: dict, no_dist: bool = False) -> None:
    """Fill `state` in place from a sharded save of any layout, through SafeFileSystemReader."""
    # read the index once here first: a refused one raises UnsafeMetadata naming the file (inside
    # dcp.load it would come back wrapped in a CheckpointException with a traceback per rank)
    read_metadata(path)
    dcp.load(state, storage_reader=SafeFileSystemReader(path), no_dist=no_dist)


def read_metadata(path: str) -> Metadata:
    return SafeFileSystemReader(path).read_metadata()
