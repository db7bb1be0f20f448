"""flm-grow's torch engine: the model of every supported family (families.py) with HF names, MSG
masks attachable to any such module tree, and a trainer equal to `flm-grow train` (see
docs/scaling.md). Names are imported on first use, so config.py and families.py work without torch."""

import importlib
import os

# Before torch (and its OpenMP runtime) loads: idle OpenMP threads sleep instead of spinning.
# With more runnable threads than cores (a shared machine, or N processes × threads) spinning
# threads hold the cores the working ones wait for: a 242K-parameter step measured 10 s with
# 2 spinning threads under load, 0.03-0.07 s passive. An explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_WHERE = {
    "ModelConfig": "config",
    "ConfigError": "config",
    "read_config": "config",
    "FAMILIES": "families",
    "LlamaForCausalLM": "model",
    "load_model": "model",
    "attach_masks": "masks",
    "read_masks": "masks",
    "write_masks": "masks",
    "values_at": "masks",
    "read_schedule": "masks",
    "MaskHandle": "masks",
}

__all__ = list(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'flm_grow_torch' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
