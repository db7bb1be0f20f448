"""Training a masked grown checkpoint with Hugging Face transformers (docs/engines.md, "Training a
grown checkpoint with transformers").

A masked grown checkpoint is transformers' own model class plus MSG masks (SPEC §2). This module
loads it as such (`load_masked_model`: transformers' LlamaForCausalLM / MistralForCausalLM /
Qwen2ForCausalLM / Qwen3ForCausalLM with `masks.attach_masks` hooked on), steps the manifest's
mask schedule from a `transformers.Trainer` (`MaskScheduleCallback`), and offers the pieces that
make a hand-written loop or a Trainer run step for step equal to `flm-grow train --engine torch`
(flm_grow_torch/train.py): its batches (`EngineBatches`), its loss (`masked_lm_loss`), its
AdamW (`make_optimizer`: torch.optim.AdamW with decay on matrices only) and its LR schedule
(`make_lr_scheduler`, `lr_schedule_for`).

Imports transformers only where a function needs it: the rest of the package works without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from .checkpointing import read_manifest
from .config import ModelConfig, read_config
from .data import TokenDataset
from .families import FAMILIES
from .masks import MASKS_FILE, MaskHandle, attach_masks, read_masks, read_schedule, values_at
from .optim import OPTIMIZER_FILE, lr_at, read_optimizer_meta

# the logit bias on ids whose vocab mask is 0 while training: softmax weight 0 as with -inf, but
# no inf·0 = NaN in a loss (train.py passes the same value)
TRAINING_VOCAB_FILL = -1e30


def load_masked_model(
    folder: str,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    training: bool = False,
    stage_step: int | None = None,
) -> tuple[Any, MaskHandle | None]:
    """(model, handle): transformers' own class of the family (LlamaForCausalLM, MistralForCausalLM,
    Qwen2ForCausalLM, Qwen3ForCausalLM; no remote code) for `folder` with the folder's masks
    attached, so it computes the grown (masked) function, not the plain one. handle is None for a
    folder without masks.safetensors (a baked or zero-mode checkpoint: the plain model is right).

    training: padding ids get a large finite logit bias instead of -inf (see TRAINING_VOCAB_FILL).
    stage_step: set the masks as the schedule has them this many optimizer steps after growth
      (default: as the file stores them; a trained checkpoint's file holds its current values).
    """
    cfg = _check_family(folder)
    model = _hf_class(cfg).from_pretrained(
        folder, config=_hf_config(cfg), attn_implementation=attn_implementation, dtype=dtype
    )
    if device is not None:
        model = model.to(device)
    emb = model.get_input_embeddings()
    if training and getattr(emb, "padding_idx", None) is not None:
        # transformers builds the embedding with padding_idx = pad_token_id, whose row then gets no
        # gradient; flm-grow's engines train every row (and only masks decide what a row does)
        emb.padding_idx = None
    mp = os.path.join(folder, MASKS_FILE)
    if not os.path.exists(mp):
        return model, None
    handle = attach_masks(
        model,
        read_masks(mp, cfg),
        read_schedule(folder),
        vocab_fill=TRAINING_VOCAB_FILL if training else float("-inf"),
        dtype=torch.float64 if dtype == torch.float64 else torch.float32,
    )
    if stage_step is not None:
        handle.set_step(stage_step)
    return model, handle


# family -> transformers model class name (families.json transformersClass); each has a config
# class of the same stem
_HF_CLASSES = {f["name"]: f["transformersClass"] for f in FAMILIES if f["transformersClass"] is not None}


def _check_family(folder: str) -> ModelConfig:
    """The folder's parsed config; Tele-FLM's µP (input and logit multipliers) has no transformers
    class: refused by name rather than loaded as a model computing something else."""
    cfg = read_config(folder)
    if cfg.family not in _HF_CLASSES or cfg.input_scale != 1 or cfg.logit_scale != 1:
        raise ValueError(
            f"{folder}/config.json: a {cfg.family} checkpoint{' with µP' if cfg.use_mup else ''} has no transformers "
            "model class; train it with `flm-grow train --engine torch` or flm_grow_torch.model.load_model"
        )
    return cfg


def _hf_class(cfg: ModelConfig) -> type:
    import transformers

    return getattr(transformers, _HF_CLASSES[cfg.family])


def _hf_config(cfg: ModelConfig) -> Any:
    """transformers' config of the family from config.json's keys. The class is chosen by family,
    not by config.json's model_type/auto_map: a masked checkpoint may name a remote-code model type
    (so that plain from_pretrained refuses it), and this loader attaches the masks itself."""
    import transformers

    name = _HF_CLASSES[cfg.family].replace("ForCausalLM", "Config")
    raw = {k: v for k, v in cfg.raw.items() if k not in ("auto_map", "model_type", "architectures")}
    c = getattr(transformers, name)(**raw)
    c.architectures = [_HF_CLASSES[cfg.family]]
    return c


def stage_start_offset(folder: str) -> int:
    """Optimizer steps since growth at which a run from `folder` starts: 0 for a grown checkpoint,
    the manifest's stageStep for a checkpoint `flm-grow train` saved mid-annealing."""
    m = read_manifest(folder)
    if m is not None and m.get("kind") == "train":
        return int(m["extra"]["stageStep"])
    return 0


def start_step(folder: str) -> int:
    """The global step a run from `folder` starts at (train.py start_state): a train checkpoint's
    step, else the step of the optimizer state a grown checkpoint carries, else 0."""
    m = read_manifest(folder)
    if m is not None and m.get("kind") == "train":
        return int(m["extra"]["step"])
    opt = os.path.join(folder, OPTIMIZER_FILE)
    return read_optimizer_meta(opt)["step"] if os.path.exists(opt) else 0


def lr_schedule_for(
    folder: str,
    steps: int,
    lr: float = 1e-3,
    min_lr: float | None = None,
    warmup_steps: int = 0,
    schedule: str = "cosine",
) -> dict[str, Any]:
    """The LR schedule `flm-grow train <folder> --steps N` uses with --lr-after-growth rewind (the
    default): warmup + decay over this run's steps, counted from its first global step."""
    return {
        "lr": lr,
        "minLr": min_lr if min_lr is not None else lr / 10,
        "warmupSteps": min(warmup_steps, steps),
        "schedule": schedule,
        "totalSteps": steps,
        "startStep": start_step(folder),
    }


def make_optimizer(
    model: torch.nn.Module,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.95),
    weight_decay: float = 0.0,
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """torch.optim.AdamW as flm-grow's AdamW (optim.py): decoupled weight decay on matrices only
    (norm weights and biases are not decayed). The same update up to rounding: torch divides by
    sqrt(v)/sqrt(1-b2^t) + eps, flm-grow by sqrt(v/(1-b2^t)) + eps (measured ≤ 1e-6 relative on
    the losses of 10 steps, docs/engines.md)."""
    decay, plain = [], []
    for p in model.parameters():  # a tied embedding is one Parameter, listed once
        if p.requires_grad:
            (decay if p.dim() >= 2 else plain).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def make_lr_scheduler(
    optimizer: torch.optim.Optimizer, lr_schedule: dict[str, Any], first_step: int | None = None
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR giving lr_at(first_step + k) (optim.py) after k scheduler steps; first_step is the
    run's first global step (default: the schedule's startStep, which it is for the default
    --lr-after-growth rewind). The optimizer's lr must be lr_schedule["lr"]."""
    base = lr_schedule["lr"]
    first = lr_schedule["startStep"] if first_step is None else first_step
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: lr_at(first + k, lr_schedule) / base)


def masked_lm_loss(logits: torch.Tensor, targets: torch.Tensor, handle: MaskHandle | None) -> torch.Tensor:
    """Mean next-token cross-entropy over targets [B, T] (already shifted: the logits at t predict
    targets[t]), as train.py: targets whose vocab mask is 0 (new tokens before their annealing
    starts) are left out of the mean. Logits are taken in f32 at least."""
    logits = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    flat = targets.reshape(-1).to(logits.device)
    per = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat, reduction="none")
    if handle is None:
        return per.mean()
    live = (handle.current["vocab"][flat] > 0).to(per.dtype)
    return (per * live).sum() / live.sum().clamp(min=1)


class EngineBatches(torch.utils.data.IterableDataset):
    """The rows `flm-grow train` trains on, in order: batch k is TokenDataset.batch_at("train",
    first_step + k, batch_size, seq_len, seed) (data.py), yielded row by row as {"input_ids",
    "labels"} (labels already shifted: labels[t] is the token after input_ids[t]). An iterable
    dataset, so a Trainer with per_device_train_batch_size=batch_size consumes it in this order."""

    def __init__(
        self,
        data: str,
        steps: int,
        batch_size: int,
        seq_len: int,
        seed: int = 0,
        first_step: int = 0,
        eval_fraction: float = 0.1,
    ):
        # eval_fraction: the tail held out, as `flm-grow train --eval-fraction` (it moves the train split's end)
        self.ds = TokenDataset(data, eval_fraction=eval_fraction, seq_len=seq_len)
        self.steps, self.batch_size, self.seq_len, self.seed, self.first_step = (
            steps,
            batch_size,
            seq_len,
            seed,
            first_step,
        )

    def batch(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ds.batch_at("train", self.first_step + k, self.batch_size, self.seq_len, self.seed)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for k in range(self.steps):
            inputs, targets = self.batch(k)
            for i in range(self.batch_size):
                yield {"input_ids": inputs[i], "labels": targets[i]}


def _trainer_callback_base() -> type:
    try:
        from transformers import TrainerCallback
    except ImportError:  # the class stays importable; using it with a Trainer needs transformers anyway
        return object
    return TrainerCallback


class MaskScheduleCallback(_trainer_callback_base()):
    """A transformers TrainerCallback that sets the masks from the manifest's schedule before every
    optimizer step, as `flm-grow train` does: at the step with Trainer global_step g, the masks are
    values_at(schedule, stage_offset + g) (stage_offset: stage_start_offset of the folder).

    history: (global_step, {group: value}) for every value set, for logs and tests."""

    def __init__(self, handle: MaskHandle, stage_offset: int = 0):
        self.handle = handle
        self.stage_offset = stage_offset
        self.history: list[tuple[int, dict[str, float]]] = []

    def _set(self, global_step: int) -> None:
        v = self.handle.set_step(self.stage_offset + global_step)
        self.history.append((global_step, dict(v)))

    def on_train_begin(self, args, state, control, **kwargs):
        self._set(state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):
        # before the step's forward: global_step steps are done, this is step number global_step
        self._set(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        # after the update: evaluation and saves between steps see the next step's masks
        self._set(state.global_step)

    def values(self, global_step: int) -> dict[str, float]:
        return values_at(self.handle.schedule, self.stage_offset + global_step)


def save_baked(model: torch.nn.Module, handle: MaskHandle | None, out: str) -> None:
    """Write `model` as a plain checkpoint (transformers' save_pretrained) once every mask is 1:
    the masked function is then the plain one. Refuses while masks are below 1 (bake them with
    `flm-grow bake` after training further)."""
    from .masks import all_one

    if handle is not None and not all_one(handle.mask_set()):
        below = sorted({g for g, c in handle.values_at(10**12).items() if c < 1})
        raise ValueError(
            f"{out}: masks are still below 1 ({', '.join(below) or 'annealing'}); train until the schedule ends, "
            "then save, or bake a saved masked checkpoint with `flm-grow bake`"
        )
    if handle is not None:
        # after annealing the masked function is the plain one (src/growth/bake.ts): only the
        # padding ids' -inf goes, as a plain runtime has no mask
        handle.remove()
    model.save_pretrained(out)
