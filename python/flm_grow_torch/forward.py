"""python -m flm_grow_torch.forward <checkpoint> --input ids.safetensors --output out.safetensors

The torch engine of `flm-grow forward`: logits F32 [B,T,V] and hidden_states.N F32 [B,T,H]
(N = 0..L, HF's convention), masks applied when the checkpoint has masks.safetensors.
"""

import argparse
import os
import sys

import torch

from .checkpointing import ManifestError
from .masks import MASKS_FILE, attach_masks, read_masks, read_schedule
from .model import load_model
from .safetensors_io import load_file, save_file


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m flm_grow_torch.forward")
    p.add_argument("checkpoint")
    p.add_argument("--input", required=True, help="safetensors with input_ids [B, T] (I64 or I32)")
    p.add_argument("--output", required=True)
    p.add_argument("--no-masks", action="store_true", help="the plain model even when masks.safetensors exists")
    p.add_argument(
        "--stage-step",
        type=int,
        default=None,
        help="set the masks from the manifest's schedule at this step after growth (default: as stored)",
    )
    p.add_argument(
        "--inv-freq-dtype",
        choices=["f32", "bf16", "f16"],
        default="f32",
        help="round RoPE frequencies as model.to(dtype) does in transformers (reproduces references made that way)",
    )
    p.add_argument("--device", default="cpu")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    ifd = {"f32": None, "bf16": torch.bfloat16, "f16": torch.float16}[a.inv_freq_dtype]
    model = load_model(a.checkpoint, device=a.device, inv_freq_dtype=ifd).eval()
    mp = os.path.join(a.checkpoint, MASKS_FILE)
    masked = not a.no_masks and os.path.exists(mp)
    if masked:
        h = attach_masks(model, read_masks(mp, model.config), read_schedule(a.checkpoint))
        if a.stage_step is not None:
            h.set_step(a.stage_step)
    ids = load_file(a.input)[0]["input_ids"].long().to(a.device)
    with torch.no_grad():
        logits, hidden = model(ids, output_hidden_states=True)
    out = {"logits": logits.float().cpu().contiguous()}
    for i, x in enumerate(hidden):
        out[f"hidden_states.{i}"] = x.float().cpu().contiguous()
    save_file(a.output, out, {"format": "pt", "producer": "flm_grow_torch.forward", "masked": str(masked).lower()})
    print(
        f"forward: {ids.shape[0]}x{ids.shape[1]} tokens, {model.config.num_layers} layers{', masked model' if masked else ''} -> {a.output}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    try:
        main()
    except ManifestError as e:  # a hand-edited manifest or mask file: one line, exit 2 (as train.py)
        sys.exit(print(f"forward: {e}", file=sys.stderr) or 2)
