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
            # every rank done with its collectives before any tears the group down: a rank that
            # destroys gloo's group (or exits) while a peer still talks to it can abort the peer
            # ("terminate called without an active exception", SIGABRT; seen under load)
            dist.barrier()
            dist.destroy_process_group()


def _is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def tp_refusal(cfg, tp: int, world: int, fsdp: bool) -> str | None:
    """Why this model cannot be laid out with tensor parallelism of degree `tp` over `world`
    processes, naming the field; None when it can."""
    if tp <= 1:
        return None
    if world % tp:
        return f"--tp {tp} does not divide the number of processes ({world})"
    if world // tp > 1 and not fsdp:
        return (
            f"--tp {tp} over {world} processes leaves {world // tp} data-parallel groups; "
            "add --fsdp (FSDP2 across them, TP within: a 2-D mesh) or use --nproc equal to --tp"
        )
    for field, v in (
        ("num_attention_heads", cfg.num_heads),
        ("num_key_value_heads", cfg.num_kv_heads),
        ("intermediate_size", cfg.intermediate_size),
        ("vocab_size", cfg.vocab_size),
    ):
        if v % tp:
            return f"--tp {tp}: config.json {field} {v} is not divisible by {tp} (each rank takes an equal share)"
    return None


class Layout:
    """The model placed on this rank (see the module docstring). Tensor parallelism (`tp` > 1,
    torch.distributed.tensor.parallel, as torchtitan lays out Llama): q/k/v and gate/up are split
    column-wise (by heads and by FFN units), o/down row-wise, the embedding and the LM head along
    the vocabulary (a tied head shares the embedding's sharded Parameter); the logits are left
    sharded along the vocabulary for the loss (loss_parallel), the vocab mask's bias sliced alike.
    Norm weights are replicated; with no sequence parallelism the hidden vector is whole on every
    rank and the masked RMSNorm statistics are exact. With FSDP as well the mesh is 2-D:
    (dp, tp), FSDP2 across dp, TP within."""

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        dd: Dist,
        fsdp: bool,
        tp: int = 1,
        activation_checkpointing: bool = False,
    ) -> None:
        self.model, self.device, self.dd, self.tp = model, device, dd, tp
        self.dp = dd.world // tp
        self.kind = "fsdp" if fsdp else "ddp" if dd.world > 1 and tp == 1 else "none"
        if tp > 1:
            self.kind = f"fsdp+tp{tp}" if fsdp else f"tp{tp}"
        self.net: torch.nn.Module = model
        # this rank's place in the data-parallel dimension: which slice of the batch it takes
        self.dp_rank = dd.rank // tp
        self.tp_rank = dd.rank % tp
        self.mesh = None
        if fsdp or tp > 1:
            from torch.distributed.device_mesh import init_device_mesh

            self.mesh = init_device_mesh(device.type, (self.dp, tp), mesh_dim_names=("dp", "tp"))
        # torchtitan's order: TP, then activation checkpointing, then FSDP
        if tp > 1:
            self._tensor_parallel(model)
        if activation_checkpointing:
            self._checkpoint_activations(model)
        if fsdp:
            self._fully_shard(model)
        elif self.kind == "ddp":
            self.net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )

    def _tensor_parallel(self, model: torch.nn.Module) -> None:
        from torch.distributed.tensor import Replicate, Shard
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

        mesh = self.mesh["tp"]
        inner = model.model
        parallelize_module(inner.embed_tokens, mesh, RowwiseParallel(input_layouts=Replicate()))
        # the logits stay a DTensor sharded along the vocabulary: the loss is computed on the shards
        # (loss_parallel, Trainer.loss_of), so no rank holds [tokens, vocab] whole
        parallelize_module(model.lm_head, mesh, ColwiseParallel(output_layouts=Shard(-1), use_local_output=False))
        # both weights are [vocab, hidden] and both layouts shard them along the vocabulary
        # (Shard(0)): a tied head takes the embedding's DTensor Parameter again, so the two uses
        # share one tensor and autograd adds up both gradients in it
        self.tie()
        for layer in inner.layers:
            parallelize_module(
                layer,
                mesh,
                {
                    "self_attn.q_proj": ColwiseParallel(),
                    "self_attn.k_proj": ColwiseParallel(),
                    "self_attn.v_proj": ColwiseParallel(),
                    "self_attn.o_proj": RowwiseParallel(),
                    "mlp.gate_proj": ColwiseParallel(),
                    "mlp.up_proj": ColwiseParallel(),
                    "mlp.down_proj": RowwiseParallel(),
                },
            )
            # the attention reshapes by head count: each rank now computes its own share of the heads
            # (query head j still reads KV head j // group: both are split into the same contiguous chunks)
            layer.self_attn.nh //= self.tp
            layer.self_attn.nkv //= self.tp

    @staticmethod
    def _checkpoint_activations(model: torch.nn.Module) -> None:
        """Keep only each decoder layer's input through the forward pass and recompute the layer in
        the backward pass (torch.utils.checkpoint, non-reentrant). The layer's forward is wrapped in
        place rather than the module replaced (checkpoint_wrapper), so parameter names, and with
        them checkpoints and optimizer state, stay the same. The masks hold still within a step, so
        the recomputation sees the values the forward pass saw."""
        import functools

        from torch.utils.checkpoint import checkpoint

        for layer in model.model.layers:
            layer.forward = functools.partial(checkpoint, layer.forward, use_reentrant=False)

    def _fully_shard(self, model: torch.nn.Module) -> None:
        import warnings

        from torch.distributed.fsdp import fully_shard

        # FSDP2 warns that a unit returning a view would lose its pre-backward hook to an in-place op on
        # it; the model and the mask hooks only ever make new tensors from unit outputs (x * m, x + b)
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")

        mesh = self.mesh["dp"]
        inner = model.model
        # one unit per decoder layer (its weights are gathered only while it runs), as torchtitan does;
        # the embeddings and the final norm + LM head are units of their own unless the head shares the
        # embedding's Parameter (tied): a shared Parameter must live in one unit, the root's
        for layer in inner.layers:
            fully_shard(layer, mesh=mesh)
        if not model.config.tie_word_embeddings:
            fully_shard(inner.embed_tokens, mesh=mesh)
            fully_shard([inner.norm, model.lm_head], mesh=mesh)
        fully_shard(model, mesh=mesh)

    def tie(self) -> None:
        """Tied embeddings: the head's weight is the embedding's Parameter again (to_empty after
        the layout may leave each module its own copy, as load_model notes)."""
        m = self.model
        if m.config.tie_word_embeddings and m.lm_head.weight is not m.model.embed_tokens.weight:
            m.lm_head.weight = m.model.embed_tokens.weight

    def loss_context(self):
        """The context the loss and its backward pass run in: torch's loss_parallel under TP (the
        cross-entropy of vocab-sharded logits, computed from each rank's shard with a max and a sum
        across the TP group), nothing otherwise."""
        import contextlib

        if self.tp > 1:
            from torch.distributed.tensor.parallel import loss_parallel

            return loss_parallel()
        return contextlib.nullcontext()

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        # the unwrapped model's names: FSDP2 keeps them (it swaps each Parameter for a DTensor one)
        return list(self.model.named_parameters())

    def zero_grad(self) -> None:
        for p in self.model.parameters():
            p.grad = None

    def grad_norm(self) -> float:
        """The global L2 norm of the gradients (the same number on every rank). DDP's gradients are
        already averaged and whole. A DTensor gradient's local parts are disjoint along its Shard
        dimensions and copies along its Replicate ones and across the ranks outside its mesh: the
        squares of the local parts summed over all ranks, each divided by its number of copies, are
        the squares of the whole. A plain
        tensor (DDP, or a replicated norm weight under TP alone) is whole on every rank."""
        from .model import at_least_f32

        local, whole = [], []
        for p in self.model.parameters():
            g = p.grad
            if g is None:
                continue
            if _is_dtensor(g):
                # ranks outside the tensor's mesh (a norm weight sharded on the dp sub-mesh only, under
                # FSDP x TP) hold copies of its parts too
                copies = self.dd.world // g.device_mesh.size()
                for i, pl in enumerate(g.placements):
                    if pl.is_replicate():
                        copies *= g.device_mesh.size(i)
                local.append(at_least_f32(g.to_local()).pow(2).sum() / copies)
            else:
                whole.append(at_least_f32(g).pow(2).sum())
        sq = torch.stack(whole).sum().to(torch.float64) if whole else torch.zeros((), dtype=torch.float64)
        if local:
            part = torch.stack(local).sum().to(torch.float64)
            dist.all_reduce(part)
            sq = sq.to(part.device) + part
        return float(sq.sqrt())

    def full(self, t: torch.Tensor) -> torch.Tensor:
        """The whole tensor (a collective under FSDP2/TP: every rank must call it, in the same order).
        Gathering a 2-D (FSDP x TP) tensor takes two all-gathers, which DTensor warns about once per
        tensor: fine for a save, which happens between steps."""
        if not _is_dtensor(t):
            return t
        import logging

        logging.getLogger("torch.distributed.tensor._redistribute").setLevel(logging.ERROR)
        return t.full_tensor()

    def place(self, full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """This rank's part of `full`, laid out as `like` (a parameter or a moment of one)."""
        if _is_dtensor(like):
            from torch.distributed.tensor import distribute_tensor

            # every rank read the same full tensor: each keeps its own part, nothing is sent
            return distribute_tensor(
                full.to(device=self.device, dtype=like.dtype), like.device_mesh, like.placements, src_data_rank=None
            )
        return full.to(device=like.device, dtype=like.dtype)

    def fill(self, path: str, name: str, like: torch.Tensor) -> None:
        """Copy this rank's part of tensor `name` of the safetensors file `path` into `like` (a
        parameter or a moment of one, in place). Under FSDP2/TP only this rank's block is read
        (safe_open's get_slice at DTensor's own offsets for the placements), so a rank never holds
        a whole tensor while loading; a plain tensor (one process, DDP) is read whole. The file is
        opened per tensor: safe_open memory-maps it, and the pages a read touches count in the
        process's resident memory until the map is closed (held open over a whole optimizer file,
        they were a model's worth per rank)."""
        from .safetensors_io import SafetensorsFile

        f = SafetensorsFile(path, names=[name])
        try:
            with torch.no_grad():
                if not _is_dtensor(like):
                    like.copy_(f.get(name))
                    return
                from torch.distributed.tensor import Replicate, Shard

                if all(type(pl) in (Shard, Replicate) for pl in like.placements):
                    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

                    shape, offset = compute_local_shape_and_global_offset(like.shape, like.device_mesh, like.placements)
                    like.to_local().copy_(f.get_part(name, tuple(offset), tuple(shape)))
                else:
                    # another placement (a strided shard of FSDP over TP): read whole, keep this rank's part
                    like.copy_(self.place(f.get(name), like))
        finally:
            f.close()
