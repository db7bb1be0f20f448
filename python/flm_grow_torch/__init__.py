"""flm-grow's torch engine: the Llama / Tele-FLM model with HF names, MSG masks attachable to
any such module tree, and a trainer equal to `flm-grow train` (see docs/scaling.md)."""
from .config import ModelConfig, read_config
from .model import LlamaForCausalLM, load_model
from .masks import attach_masks, read_masks, write_masks, values_at, read_schedule, MaskHandle

__all__ = ["ModelConfig", "read_config", "LlamaForCausalLM", "load_model", "attach_masks", "read_masks",
           "write_masks", "values_at", "read_schedule", "MaskHandle"]
