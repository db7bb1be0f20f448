"""flm-grow's torch engine: the Llama / Tele-FLM model with HF names, MSG masks attachable to
any such module tree, and a trainer equal to `flm-grow train` (see docs/scaling.md)."""
import os

# Before torch (and its OpenMP runtime) loads: idle OpenMP threads sleep instead of spinning.
# With more runnable threads than cores (a shared machine, or N processes × threads) spinning
# threads hold the cores the working ones wait for: a 242K-parameter step measured 10 s with
# 2 spinning threads under load, 0.03-0.07 s passive. An explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from .config import ModelConfig, read_config
from .model import LlamaForCausalLM, load_model
from .masks import attach_masks, read_masks, write_masks, values_at, read_schedule, MaskHandle

__all__ = ["ModelConfig", "read_config", "LlamaForCausalLM", "load_model", "attach_masks", "read_masks",
           "write_masks", "values_at", "read_schedule", "MaskHandle"]
