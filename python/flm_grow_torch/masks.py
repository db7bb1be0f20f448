"""MSG masks (SPEC §2) for any torch module tree with Hugging Face names.

`attach_masks(module, masks)` installs the masked forward on a model by hooks alone, so the same
function serves flm_grow_torch.model.LlamaForCausalLM, transformers' Llama / Mistral / Qwen2 /
Qwen3 ForCausalLM, or a user's own model written with HF names. The family features need no
hook of their own: q/k/v biases and Qwen3's q_norm/k_norm act inside a head, whose output the
head mask scales at o_proj; a tied lm_head is hooked as a module like an untied one.

  embed_tokens            output ⊙ m_h
  *norm (RMSNorm)         output replaced by a hook: statistics over unmasked coordinates, sum(m·x²)/sum(m)
  self_attn.o_proj        input: head j times m_a[j];   output: ⊙ m_h · r_l
  mlp.down_proj           input ⊙ m_f;                  output: ⊙ m_h · r_l
  lm_head                 + vocab bias log(m_v) (-inf at 0, or a large finite value for training),
                          divided by the model's logit scale (µP), which multiplies lm_head's
                          output afterwards: SPEC §2 adds the bias to the scaled logits

The vocab mask m enters as the additive logit bias log(m) (softmax weight of id v times m_v):
padding ids stay at 0 for good; new tokens (vocab_tokens 1, `vocab.new: "tokens"`) anneal with
the "vocab" group (src/checkpoint/masks.ts).

Masks are values, never parameters: the handle's `set_step(stage_step)` (or `set_values`)
overwrites them in place from the manifest's schedule before each optimizer step.

This file is also the masking code of every masked checkpoint folder: flm-grow copies it there,
unchanged, as flm_grow_masks.py, which the folder's modeling_flm_grow.py imports when transformers
loads it with trust_remote_code=True (hf_remote/, docs/hf-format.md). So it imports only torch,
safetensors and the standard library, never the package (transformers copies a remote module's
`from .x import` files, and the package's would not be there): python/tests/test_hf_masked.py
loads such a folder with the package out of reach.
"""

import importlib
import json
import math
import os
import re

import torch
from safetensors import safe_open

MASKS_FILE = "masks.safetensors"
GROUPS = ("hidden", "heads", "ffn", "layers", "vocab")


def at_least_f32(x):
    """x in f32 when narrower (bf16), unchanged in f32 / f64: model.py's at_least_f32, repeated
    here so this file stands alone."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


# ---- the schedule (src/checkpoint/masks.ts) ---------------------------------------------------


def schedule_value(entry, stage_step):
    """Value of one schedule entry at `stage_step` (optimizer steps since growth), in [0, 1]."""
    if entry["length"] <= 0:
        return 1.0
    t = min(1.0, max(0.0, (stage_step - entry["startStep"]) / entry["length"]))
    return 0.5 * (1 - math.cos(math.pi * t)) if entry["shape"] == "cosine" else t


def values_at(schedule, stage_step):
    """{group: c} for every scheduled group at `stage_step`."""
    return {e["group"]: schedule_value(e, stage_step) for e in schedule}


def annealing_end_step(schedule):
    return max([e["startStep"] + e["length"] for e in schedule], default=0)


def _checkpointing():
    """The package's checkpointing module (manifest validation), or None in the copy of this file
    inside a checkpoint folder, where the package is not there (imported by name, not `from .`)."""
    try:
        return importlib.import_module(".checkpointing", __package__)
    except ImportError:
        return None


def _manifest_error():
    c = _checkpointing()
    return ValueError if c is None else c.ManifestError


def read_schedule(ckpt_dir):
    """The manifest's masks.schedule ([] when there is none), validated by the package's
    checkpointing.validate_manifest (field and file named) where the package is present."""
    c = _checkpointing()
    if c is not None:
        m = c.read_manifest(ckpt_dir)
        return ((m or {}).get("masks") or {}).get("schedule", [])
    p = os.path.join(ckpt_dir, "flm-grow-manifest.json")
    if not os.path.exists(p):
        return []
    with open(p) as f:
        m = json.load(f)
    return (m.get("masks") or {}).get("schedule", [])


# ---- mask files -------------------------------------------------------------------------------


def read_masks(path, cfg=None):
    """masks.safetensors -> {'hidden', 'vocab', 'layers': [{'heads', 'ffn', 'residual'}]} (f32),
    plus 'vocab_tokens' when the file has it."""
    with safe_open(path, framework="pt") as f:
        t = {k: f.get_tensor(k).float() for k in f.keys()}
    n = 0
    while f"layers.{n}.heads" in t:
        n += 1
    m = {
        "hidden": t["hidden"],
        "vocab": t["vocab"],
        "layers": [
            {
                "heads": t[f"layers.{i}.heads"],
                "ffn": t[f"layers.{i}.ffn"],
                "residual": t[f"layers.{i}.residual"].reshape(1),
            }
            for i in range(n)
        ],
    }
    if "vocab_tokens" in t:
        m["vocab_tokens"] = t["vocab_tokens"]
    check_mask_values(path, t)
    if cfg is not None:
        want = [("hidden", m["hidden"], cfg.hidden_size), ("vocab", m["vocab"], cfg.vocab_size)]
        if "vocab_tokens" in m:
            want.append(("vocab_tokens", m["vocab_tokens"], cfg.vocab_size))
        if n != cfg.num_layers:
            raise ValueError(f"{path}: masks for {n} layers, config has {cfg.num_layers}")
        for i, l in enumerate(m["layers"]):
            want += [
                (f"layers.{i}.heads", l["heads"], cfg.num_heads),
                (f"layers.{i}.ffn", l["ffn"], cfg.intermediate_size),
            ]
        for name, v, size in want:
            if v.numel() != size:
                raise ValueError(f"{path}: mask {name} has {v.numel()} entries, config needs {size}")
    return m


def check_mask_values(path: str, tensors: dict) -> None:
    """Every mask value in [0, 1] (src/checkpoint/masks.ts readMasks): a NaN or 5 would scale activations
    instead of masking them."""
    for name, v in tensors.items():
        ok = (v >= 0) & (v <= 1)
        if not bool(ok.all()):
            k = int((~ok).reshape(-1).nonzero()[0])
            raise _manifest_error()(f"{path}: mask {name!r}[{k}] = {float(v.reshape(-1)[k])} is outside [0, 1]")


def write_masks(path, m):
    # tensor order and metadata as src/checkpoint/masks.ts writeMasks, by the package's writer (imported by
    # name, not `from .`: the copy in a checkpoint folder never writes masks)
    save_file = importlib.import_module(".safetensors_io", __package__).save_file
    t = {"hidden": m["hidden"], "vocab": m["vocab"]}
    for i, l in enumerate(m["layers"]):
        t[f"layers.{i}.heads"] = l["heads"]
        t[f"layers.{i}.ffn"] = l["ffn"]
        t[f"layers.{i}.residual"] = l["residual"].reshape(1)
    if m.get("vocab_tokens") is not None:
        t["vocab_tokens"] = m["vocab_tokens"]
    save_file(path, {k: v.detach().float().cpu().contiguous() for k, v in t.items()}, {"format": "flm-grow-masks"})


def apply_values(base, values):
    """Every new unit (value below 1 in `base`) of a group rises to at least that group's c
    (src/checkpoint/masks.ts applyMaskValues); old units are untouched, and in the vocab mask only new
    tokens (vocab_tokens 1) rise: padding ids stay 0. The result has base's dtype."""

    def rise(a, c, only=None):
        if c is None:
            return a.clone()
        # c rounded to the masks' dtype once: f32 as the TS Float32Array store does (f64 masks,
        # in an f64 reference run, keep c as computed)
        new = a < 1 if only is None else (a < 1) & (only == 1)
        return torch.where(new, torch.clamp(a, min=float(torch.tensor(c, dtype=a.dtype))), a)

    tokens = base.get("vocab_tokens")
    out = {
        "hidden": rise(base["hidden"], values.get("hidden")),
        "vocab": base["vocab"].clone() if tokens is None else rise(base["vocab"], values.get("vocab"), tokens),
        "layers": [
            {
                "heads": rise(l["heads"], values.get("heads")),
                "ffn": rise(l["ffn"], values.get("ffn")),
                "residual": rise(l["residual"], values.get("layers")),
            }
            for l in base["layers"]
        ],
    }
    if tokens is not None:
        out["vocab_tokens"] = tokens
    return out


def all_one(m):
    """Every annealed mask at 1 (src/checkpoint/masks.ts groupsBelowOne empty); padding ids do not count."""
    tokens = m.get("vocab_tokens")
    vocab_ok = tokens is None or bool((m["vocab"][tokens == 1] >= 1).all())
    return vocab_ok and all(bool((x >= 1).all()) for x in [m["hidden"]] + [v for l in m["layers"] for v in l.values()])


# ---- attaching to a module tree -----------------------------------------------------------------

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


class MaskHandle:
    """What attach_masks returns. `current` holds the live mask tensors the hooks read."""

    def __init__(self, base, schedule, vocab_fill, device, dtype=torch.float32):
        # the base masks in the compute dtype (values read from the f32 file are exact in f64)
        self.base = {k: (v if k == "layers" else v.to(dtype)) for k, v in base.items()}
        self.base["layers"] = [{k: v.to(dtype) for k, v in l.items()} for l in base["layers"]]
        self.schedule = list(schedule or [])
        self.vocab_fill = vocab_fill
        self.device = device
        self.handles = []
        self.tp = None  # (rank, size) under tensor parallelism: see local()
        self.current = apply_values(base, {})
        self._to_device()

    def _to_device(self):
        c = self.current
        c["hidden"] = c["hidden"].to(self.device)
        c["hidden_sum"] = c["hidden"].sum()
        c["vocab"] = c["vocab"].to(self.device)
        c["vocab_bias"] = self._vocab_bias(c["vocab"])
        for l in c["layers"]:
            for k in ("heads", "ffn", "residual"):
                l[k] = l[k].to(self.device)

    def _vocab_bias(self, vocab):
        # log(m); at m = 0 the fill (-inf, or a large finite value in training)
        return torch.where(vocab == 0, torch.tensor(self.vocab_fill, device=vocab.device), torch.log(vocab))

    def values_at(self, stage_step):
        return values_at(self.schedule, stage_step)

    def set_values(self, values):
        """Set each group's annealing value c (in place, so hooks and any captured refs see it)."""
        new = apply_values(self.base, values)
        c = self.current
        with torch.no_grad():
            c["hidden"].copy_(new["hidden"])
            c["hidden_sum"].copy_(c["hidden"].sum())
            c["vocab"].copy_(new["vocab"])
            c["vocab_bias"].copy_(self._vocab_bias(c["vocab"]))
            for l, n in zip(c["layers"], new["layers"], strict=True):
                for k in ("heads", "ffn", "residual"):
                    l[k].copy_(n[k])
        return values

    def set_step(self, stage_step):
        """Masks as the manifest's schedule has them `stage_step` optimizer steps after growth."""
        return self.set_values(self.values_at(stage_step))

    def mask_set(self):
        """The current values as a plain (CPU) mask set, e.g. for write_masks."""
        c = self.current
        out = {
            "hidden": c["hidden"].cpu(),
            "vocab": c["vocab"].cpu(),
            "layers": [{k: l[k].cpu() for k in ("heads", "ffn", "residual")} for l in c["layers"]],
        }
        if self.base.get("vocab_tokens") is not None:
            out["vocab_tokens"] = self.base["vocab_tokens"]
        return out

    def local(self, mask):
        """This rank's part of a head or FFN mask under tensor parallelism (set `tp` = (rank, size)):
        the contiguous chunk that matches the column-sharded q/k/v and gate/up weights it gates."""
        if self.tp is None:
            return mask
        rank, size = self.tp
        return mask.chunk(size)[rank]

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def _masked_rmsnorm(module, handle):
    """A forward hook whose result replaces the norm's output: the masked RMSNorm of the norm's
    input. A hook, not a replaced `forward`: transformers (5.x, with the `kernels` package
    installed) re-binds `forward` of its RMSNorm classes whenever model.train()/eval() changes the
    kernel mode, which silently dropped a replaced forward (measured: HF + masks in train mode
    differed from the masked model by 1e-4 relative in the loss). The plain output computed before
    the hook is discarded (one extra norm per call)."""
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))

    def hook(_m, inp, _out):
        x = inp[0]
        dtype = x.dtype
        h = at_least_f32(x)
        m = handle.current["hidden"]
        variance = (h.pow(2) * m).sum(-1, keepdim=True) / handle.current["hidden_sum"]
        h = h * torch.rsqrt(variance + eps)
        return module.weight * h.to(dtype)

    return hook


def _add_vocab_bias(out, handle, s):
    """The head's output + the vocab bias / s. Under tensor parallelism the logits are a DTensor
    sharded along the vocabulary (parallel.Layout: loss_parallel): each rank adds its own chunk of
    the bias to its own columns, so the bias keeps its meaning id for id."""
    b = (handle.current["vocab_bias"] / s).to(out.dtype)
    from torch.distributed.tensor import DTensor

    if not isinstance(out, DTensor):
        return out + b
    rank, size = handle.tp
    return DTensor.from_local(
        out.to_local() + b.chunk(size)[rank],
        out.device_mesh,
        out.placements,
        run_check=False,
        shape=out.shape,
        stride=out.stride(),
    )


def attach_masks(module, masks, schedule=None, vocab_fill=float("-inf"), device=None, dtype=torch.float32):
    """Install MSG's masked forward on `module` (any tree with HF Llama names), in place.

    masks: a mask set as read_masks returns (or a path to masks.safetensors).
    schedule: the manifest's masks.schedule, for handle.set_step(stage_step).
    vocab_fill: logit bias on padding ids; -inf for inference, a large finite negative value for
      training (softmax weight 0 either way, but -inf·0 in a loss would be NaN).
    dtype: of the live mask values (float64 for a model computing in f64).
    Returns a MaskHandle; handle.remove() restores the plain model.
    """
    if isinstance(masks, str):
        masks = read_masks(masks)
    if device is None:
        p = next(module.parameters(), None)
        device = p.device if p is not None else "cpu"
    handle = MaskHandle(masks, schedule, vocab_fill, device, dtype)
    nl = len(handle.current["layers"])
    seen = {"embed": 0, "norm": 0, "o": 0, "down": 0, "lm_head": 0}

    def layer_of(name):
        m = _LAYER.search(name)
        return int(m.group(1)) if m else None

    for name, mod in module.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        li = layer_of(name)
        if leaf == "embed_tokens":
            handle.handles.append(mod.register_forward_hook(lambda _m, _i, out: out * handle.current["hidden"]))
            seen["embed"] += 1
        elif leaf in ("input_layernorm", "post_attention_layernorm") or (leaf == "norm" and li is None):
            handle.handles.append(mod.register_forward_hook(_masked_rmsnorm(mod, handle)))
            seen["norm"] += 1
        elif leaf == "o_proj" and li is not None:
            if li >= nl:
                raise ValueError(f"attach_masks: module {name} is layer {li}, masks have {nl} layers")
            lm = handle.current["layers"][li]

            def head_mask(_m, inp, lm=lm):
                x = inp[0]
                heads = handle.local(lm["heads"])
                nh = heads.numel()
                shape = x.shape
                # columns j*hd..(j+1)*hd of o_proj's input are head j's output
                return ((x.reshape(*shape[:-1], nh, shape[-1] // nh) * heads[:, None]).reshape(shape),)

            # prepend: under tensor parallelism these run on this rank's local columns, before the
            # parallel layer's own input hook turns them into a DTensor
            handle.handles.append(mod.register_forward_pre_hook(head_mask, prepend=True))
            handle.handles.append(
                mod.register_forward_hook(lambda _m, _i, out, lm=lm: out * handle.current["hidden"] * lm["residual"])
            )
            seen["o"] += 1
        elif leaf == "down_proj" and li is not None:
            lm = handle.current["layers"][li]
            handle.handles.append(
                mod.register_forward_pre_hook(lambda _m, inp, lm=lm: (inp[0] * handle.local(lm["ffn"]),), prepend=True)
            )
            handle.handles.append(
                mod.register_forward_hook(lambda _m, _i, out, lm=lm: out * handle.current["hidden"] * lm["residual"])
            )
            seen["down"] += 1
        elif leaf == "lm_head":
            # (raw + b/s)·s = raw·s + b: the bias lands on the scaled logits as in src/model/llama.ts
            s = float(getattr(getattr(module, "config", None), "logit_scale", 1.0) or 1.0)
            handle.handles.append(mod.register_forward_hook(lambda _m, _i, out, s=s: _add_vocab_bias(out, handle, s)))
            seen["lm_head"] += 1
    want = {"embed": 1, "norm": 2 * nl + 1, "o": nl, "down": nl, "lm_head": 1}
    if seen != want:
        handle.remove()
        raise ValueError(
            f"attach_masks: module tree does not look like an HF Llama with {nl} layers (found {seen}, expected {want})"
        )
    return handle
