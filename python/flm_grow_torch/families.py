"""The model families the torch engine supports, as data: the Python side's copy of src/families.ts
(the reference; Python cannot import TypeScript). Only the facts config.py reads are kept here;
test/torch/families-table.test.ts dumps both tables to JSON and fails when they disagree, so
a family or field added on one side and not the other is caught.

This file imports nothing from the package (no torch): `python3 families.py` prints the table as
JSON for that test, on any Python.
"""

import json

# transformers' modeling_rope_utils.ROPE_INIT_FUNCTIONS keys implemented (model.py rope_frequencies)
ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")

# boolean keys that must not be true: each adds parameters this tool does not model
_O_BIAS = dict(key="attention_bias", why="attention biases (incl. o_proj) are not supported for this family")
_MLP_BIAS = dict(key="mlp_bias", why="MLP biases are not supported")

# One entry per family. slidingWindow: "always" = `sliding_window` applies to every layer
# (Mistral); "flagged" = only under `use_sliding_window: true` (Qwen2/Qwen3), which is refused;
# "none" = not read. headDimDefault: head_dim when config.json has none (None: hidden / heads).
FAMILIES = (
    dict(
        name="llama",
        modelTypes=("llama",),
        architectures=("LlamaForCausalLM",),
        qkvBias=False,
        qkNorm=False,
        slidingWindow="none",
        mup=False,
        headDimDefault=None,
        refusedIfTrue=(_O_BIAS, _MLP_BIAS),
    ),
    dict(
        name="tele-flm",
        modelTypes=("teleflm", "tele_flm", "flm"),
        architectures=("TeleFLMForCausalLM", "FLMForCausalLM"),
        qkvBias=False,
        qkNorm=False,
        slidingWindow="none",
        mup=True,
        headDimDefault=None,
        refusedIfTrue=(_O_BIAS, _MLP_BIAS),
    ),
    dict(
        name="mistral",
        modelTypes=("mistral",),
        architectures=("MistralForCausalLM",),
        qkvBias=False,
        qkNorm=False,
        slidingWindow="always",
        mup=False,
        headDimDefault=None,
        refusedIfTrue=(_O_BIAS, _MLP_BIAS),
    ),
    # Qwen2 hard-wires q/k/v biases (bias=True) and has no o_proj bias to refuse
    dict(
        name="qwen2",
        modelTypes=("qwen2",),
        architectures=("Qwen2ForCausalLM",),
        qkvBias=True,
        qkNorm=False,
        slidingWindow="flagged",
        mup=False,
        headDimDefault=None,
        refusedIfTrue=(_MLP_BIAS,),
    ),
    dict(
        name="qwen3",
        modelTypes=("qwen3",),
        architectures=("Qwen3ForCausalLM",),
        qkvBias=False,
        qkNorm=True,
        slidingWindow="flagged",
        mup=False,
        headDimDefault=128,
        refusedIfTrue=(_O_BIAS, _MLP_BIAS),
    ),
)

# A masked grown checkpoint's config.json (docs/hf-format.md, src/families.ts): a model_type plain
# transformers does not know, the base family's own model_type / architectures under MASKED_CONFIG_KEY.
MASKED_MODEL_TYPE = "flm_grow_masked"
MASKED_ARCHITECTURE = "FlmGrowMaskedForCausalLM"
MASKED_CONFIG_KEY = "flm_grow"

SUPPORTED_MODEL_TYPES = tuple(t for f in FAMILIES for t in f["modelTypes"])
SUPPORTED_ARCHITECTURES = tuple(a for f in FAMILIES for a in f["architectures"])


def detect_family(model_type, architectures):
    """The family of a config.json: by model_type first, then by architectures (families.ts detectFamily)."""
    if isinstance(model_type, str):
        for f in FAMILIES:
            if model_type.lower() in f["modelTypes"]:
                return f
    for f in FAMILIES:
        if any(a in f["architectures"] for a in architectures):
            return f
    return None


def table_json():
    return {
        "ropeTypes": list(ROPE_TYPES),
        "families": [{k: list(v) if isinstance(v, tuple) else v for k, v in f.items()} for f in FAMILIES],
    }


if __name__ == "__main__":
    print(json.dumps(table_json(), indent=1))
