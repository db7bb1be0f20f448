"""Train a masked grown checkpoint with Hugging Face's Trainer, then bake it.

    python examples/train_grown_with_hf_trainer.py GROWN --data corpus.txt --out RUN --steps 300

GROWN is a folder `flm-grow grow` wrote (masks.safetensors + flm-grow-manifest.json beside an
ordinary Llama / Mistral / Qwen2 / Qwen3 checkpoint). The model is transformers' own class with
the MSG masks attached (flm_grow_torch.hf.load_masked_model); MaskScheduleCallback anneals the
masks from the manifest's schedule on every optimizer step. Batches, loss, AdamW and LR schedule
are flm-grow's (EngineBatches, masked_lm_loss, make_optimizer, make_lr_scheduler), so the losses
equal `flm-grow train GROWN --engine torch` with the same flags (docs/engines.md). Once every mask
has reached 1 the masked model is the plain one, and RUN/baked is written as a plain checkpoint
that `AutoModelForCausalLM.from_pretrained` loads.

Data: byte-level UTF-8 text (ids = bytes) or a .u16/.u32 token file, as `flm-grow train` reads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from transformers import Trainer, TrainingArguments

from flm_grow_torch.hf import (
    EngineBatches,
    MaskScheduleCallback,
    load_masked_model,
    lr_schedule_for,
    make_lr_scheduler,
    make_optimizer,
    masked_lm_loss,
    save_baked,
    stage_start_offset,
    start_step,
)
from flm_grow_torch.masks import annealing_end_step, read_schedule


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("grown")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attn-implementation", choices=["eager", "sdpa"], default="sdpa")
    a = p.parse_args(argv)

    offset = stage_start_offset(a.grown)
    end = annealing_end_step(read_schedule(a.grown))
    if offset + a.steps < end:
        print(
            f"{a.grown}: the masks reach 1 at stage step {end}; --steps {a.steps} from stage step {offset} "
            f"stops before that (pass --steps {end - offset} or more to bake)",
            file=sys.stderr,
        )
        return 2

    model, handle = load_masked_model(a.grown, attn_implementation=a.attn_implementation, training=True)
    if handle is None:
        print(
            f"{a.grown}: has no masks.safetensors: a plain checkpoint, train it as any other",
            file=sys.stderr,
        )
        return 2
    schedule = lr_schedule_for(a.grown, a.steps, lr=a.lr, warmup_steps=a.warmup_steps)
    optimizer = make_optimizer(model, a.lr, weight_decay=a.weight_decay)
    callback = MaskScheduleCallback(handle, stage_offset=offset)
    losses: list[float] = []

    def loss_func(outputs, labels, num_items_in_batch=None):
        loss = masked_lm_loss(outputs.logits, labels, handle)
        losses.append(float(loss.detach()))
        return loss

    args = TrainingArguments(
        output_dir=os.path.join(a.out, "trainer"),
        max_steps=a.steps,
        per_device_train_batch_size=a.batch_size,
        max_grad_norm=a.clip_grad,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        seed=a.seed,
    )
    trainer = Trainer(
        model=model,
        args=args,
        # batch k is the one `flm-grow train` uses at step k (an iterable dataset: read in order)
        train_dataset=EngineBatches(
            a.data,
            a.steps,
            a.batch_size,
            a.seq_len,
            a.seed,
            first_step=start_step(a.grown),
        ),
        optimizers=(optimizer, make_lr_scheduler(optimizer, schedule)),
        compute_loss_func=loss_func,
        callbacks=[callback],
    )
    trainer.train()

    baked = os.path.join(a.out, "baked")
    save_baked(model, handle, baked)
    with open(os.path.join(a.out, "losses.json"), "w") as f:
        json.dump({"losses": losses, "masks": [[s, v] for s, v in callback.history]}, f)
    print(f"trained {a.steps} steps (loss {losses[0]:.4f} -> {losses[-1]:.4f}); plain checkpoint: {baked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
