"""--fsdp: FSDP2 (torch.distributed.fsdp.fully_shard) for models whose weights, gradients and AdamW
moments do not fit one device. The layout itself is parallel.Layout (one unit per decoder layer,
one for the embeddings, one for the final norm + LM head); the update is the engine's own AdamW
(optim.AdamW), which is elementwise and so runs on each rank's DTensor shards unchanged: the
moments carried from `grow` or a previous run are read whole from optimizer.safetensors and
scattered (parallel.Layout.place), and gathered one tensor at a time for a save.

FSDP2 runs on CPU with gloo as on GPUs with nccl (FSDP1, which this replaces, needed CUDA).
"""

from __future__ import annotations

import torch


def fsdp_unavailable(device: torch.device) -> str | None:
    """Why --fsdp cannot run here, or None."""
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError as e:
        return f"--fsdp needs torch >= 2.6 (torch.distributed.fsdp.fully_shard, FSDP2); this is torch {torch.__version__} ({e})"
    if device.type == "cuda" and not torch.distributed.is_nccl_available():
        return "--fsdp on CUDA needs NCCL, which this torch build lacks"
    return None
