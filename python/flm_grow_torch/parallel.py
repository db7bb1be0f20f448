"""How the model is laid out over the processes torchrun started: one process, DDP (every rank
holds the whole model, the batch is split, gradients are averaged), or FSDP2
(torch.distributed.fsdp.fully_shard: every rank holds 1/N of each weight, gradient and AdamW
moment; one unit per decoder layer, one for the embeddings, one for the final norm + LM head).

Whatever the layout, the trainer sees the same things: `net` to call, the named parameters (a
DTensor under FSDP2), the global gradient norm, full tensors for a save, and `place` to turn a
full tensor read from a checkpoint into this rank's part of it. The update itself (optim.AdamW) is
elementwise, so it runs unchanged on DTensor shards and gives the DDP update shard for shard.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

LAYOUTS = ("none", "ddp", "fsdp")


@dataclass
class Dist:
    """Rank, world size and the collectives the trainer uses; a single process is world size 1."""

    world: int
    rank: int
    local_rank: int
    local_world: int

    @classmethod
    def from_env(cls, device_kind: str) -> Dist:
        d = cls(
            world=int(os.environ.get("WORLD_SIZE", "1")),
            rank=int(os.environ.get("RANK", "0")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            local_world=int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"))),
        )
        if d.world > 1:
            dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
        return d

    def mean(self, x: float) -> float:
        if self.world == 1:
            return x
        t = torch.tensor([x], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t[0]) / self.world

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


class Layout:
    """The model placed on this rank (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, device: torch.device, dd: Dist, fsdp: bool) -> None:
        self.model, self.device, self.dd = model, device, dd
        self.kind = "fsdp" if fsdp else "ddp" if dd.world > 1 else "none"
        self.net: torch.nn.Module = model
        if self.kind == "fsdp":
            self._fully_shard(model)
        elif self.kind == "ddp":
            self.net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )

    def _fully_shard(self, model: torch.nn.Module) -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        self.mesh = init_device_mesh(self.device.type, (self.dd.world,), mesh_dim_names=("dp",))
        inner = model.model
        # one unit per decoder layer (its weights are gathered only while it runs), as torchtitan does;
        # the embeddings and the final norm + LM head are units of their own unless the head shares the
        # embedding's Parameter (tied): a shared Parameter must live in one unit, the root's
        for layer in inner.layers:
            fully_shard(layer, mesh=self.mesh)
        if not model.config.tie_word_embeddings:
            fully_shard(inner.embed_tokens, mesh=self.mesh)
            fully_shard([inner.norm, model.lm_head], mesh=self.mesh)
        fully_shard(model, mesh=self.mesh)

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        # the unwrapped model's names: FSDP2 keeps them (it swaps each Parameter for a DTensor one)
        return list(self.model.named_parameters())

    def zero_grad(self) -> None:
        for p in self.model.parameters():
            p.grad = None

    def grad_norm(self) -> float:
        """The global L2 norm of the gradients (the same number on every rank). DDP's gradients are
        already averaged and whole; FSDP2's are Shard(0) DTensors whose local parts are disjoint, so
        the squares of the local parts summed over the ranks are the squares of the whole."""
        from .model import at_least_f32

        local, whole = [], []
        for p in self.model.parameters():
            if p.grad is None:
                continue
            if _is_dtensor(p.grad):
                local.append(at_least_f32(p.grad.to_local()).pow(2).sum())
            else:
                whole.append(at_least_f32(p.grad).pow(2).sum())
        sq = torch.stack(whole).sum() if whole else torch.zeros((), device=self.device)
        if local:
            part = torch.stack(local).sum().to(torch.float64)
            dist.all_reduce(part)
            sq = sq.to(torch.float64) + part
        return float(sq.sqrt())

    def full(self, t: torch.Tensor) -> torch.Tensor:
        """The whole tensor (a collective under FSDP2: every rank must call it, in the same order)."""
        return t.full_tensor() if _is_dtensor(t) else t

    def place(self, full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """This rank's part of `full`, laid out as `like` (a parameter or a moment of one)."""
        if _is_dtensor(like):
            from torch.distributed.tensor import distribute_tensor

            return distribute_tensor(full.to(device=self.device, dtype=like.dtype), like.device_mesh, like.placements)
        return full.to(device=like.device, dtype=like.dtype)
