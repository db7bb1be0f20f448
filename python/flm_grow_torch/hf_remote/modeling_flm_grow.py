"""An flm-grow masked checkpoint as a transformers model (written into the folder by flm-grow).

`AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` builds the base family's
own transformers model (configuration_flm_grow.BASE_MODEL_TYPE), loads the weights, then attaches
the MSG masks of masks.safetensors with flm_grow_masks.py (flm-grow's masks.py, copied unchanged):
the masked model of flm-grow's SPEC §2, equal to `flm-grow forward` at the file's mask values.

The mask handle is `model.flm_grow_masks`: `model.flm_grow_masks.set_step(n)` puts the masks where
the manifest's schedule has them n optimizer steps after growth (`set_values({"hidden": c, ...})`
sets them directly); `save_pretrained` writes the current values to masks.safetensors beside the
weights. Needs only torch and transformers (safetensors comes with transformers).
"""

import json

import torch
from safetensors.torch import save_file
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
from transformers.utils import cached_file

from .configuration_flm_grow import BASE_CONFIG_CLASS, BASE_MODEL_TYPE, FlmGrowMaskedConfig
from .flm_grow_masks import MASKS_FILE, attach_masks, read_masks

MANIFEST_FILE = "flm-grow-manifest.json"
_HUB_KEYS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")


def _to_dtype(m, dtype):
    """A mask set (read_masks) in `dtype`; vocab_tokens (0/1 flags) as they are."""
    out = {k: (v if k in ("layers", "vocab_tokens") else v.to(dtype)) for k, v in m.items()}
    out["layers"] = [{k: v.to(dtype) for k, v in l.items()} for l in m["layers"]]
    return out


class FlmGrowMaskedForCausalLM(MODEL_FOR_CAUSAL_LM_MAPPING[BASE_CONFIG_CLASS]):
    """The base family's ForCausalLM with flm-grow's masks attached after loading."""

    config_class = FlmGrowMaskedConfig

    def __init__(self, config: FlmGrowMaskedConfig) -> None:
        super().__init__(config)
        base = (getattr(config, "flm_grow", None) or {}).get("base_model_type")
        if base is not None and base != BASE_MODEL_TYPE:
            raise ValueError(
                f"config.json: flm_grow.base_model_type is {base!r} but configuration_flm_grow.py was "
                f"written for {BASE_MODEL_TYPE!r}; rewrite the folder with flm-grow"
            )
        self.flm_grow_masks = None
        if getattr(config, "use_mup", False):
            # Tele-FLM µP on Llama's classes: embeddings times input_mult, logits times
            # output_mult / mup_scale_factor (registered before the masks' logit bias, which
            # then lands on the scaled logits as SPEC §2 has it)
            emb = float(getattr(config, "input_mult", 1.0))
            out = float(getattr(config, "output_mult", 1.0)) / float(getattr(config, "mup_scale_factor", 1.0))
            self.model.embed_tokens.register_forward_hook(lambda _m, _i, y: y * emb)
            self.lm_head.register_forward_hook(lambda _m, _i, y: y * out)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        hub = {k: kwargs[k] for k in _HUB_KEYS if k in kwargs}
        path = str(pretrained_model_name_or_path)
        masks = cached_file(path, MASKS_FILE, **hub)
        schedule = []
        manifest = cached_file(path, MANIFEST_FILE, _raise_exceptions_for_missing_entries=False, **hub)
        if manifest is not None:
            with open(manifest) as f:
                schedule = (json.load(f).get("masks") or {}).get("schedule", [])
        m = read_masks(masks)
        if model.dtype in (torch.bfloat16, torch.float16):
            # masks in the model's dtype: f32 masks would turn bf16 / f16 activations into f32 at
            # the first hook, and the next Linear (bf16 weights) refuses f32 input. 0 and 1 stay
            # exact; annealing values round as every activation of such a model does.
            m = _to_dtype(m, model.dtype)
        model.flm_grow_masks = attach_masks(model, m, schedule, dtype=model.dtype)
        return model

    def save_pretrained(self, save_directory, *args, **kwargs):
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.flm_grow_masks is not None:
            m = self.flm_grow_masks.mask_set()
            t = {"hidden": m["hidden"], "vocab": m["vocab"]}
            for i, l in enumerate(m["layers"]):
                t.update({f"layers.{i}.{k}": l[k].reshape(-1) for k in ("heads", "ffn", "residual")})
            if m.get("vocab_tokens") is not None:
                t["vocab_tokens"] = m["vocab_tokens"]
            t = {k: v.detach().to(torch.float32).cpu().contiguous() for k, v in t.items()}
            save_file(t, f"{save_directory}/{MASKS_FILE}", metadata={"format": "flm-grow-masks"})
