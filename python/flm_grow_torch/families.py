"""The model families the torch engine supports: _data/families.json, the one declaration that
src/spec/families.ts loads too (see the field list in that file's $comment).

This module imports nothing from the package (no torch): config.py parses a config.json against
it on any Python.
"""

import json
import os

_DATA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_data", "families.json")

with open(_DATA_FILE, encoding="utf-8") as _f:
    _DATA = json.load(_f)

# transformers' modeling_rope_utils.ROPE_INIT_FUNCTIONS keys implemented (model.py rope_frequencies)
ROPE_TYPES = tuple(_DATA["ropeTypes"])


def _family(f: dict) -> dict:
    return dict(
        f,
        modelTypes=tuple(f["modelTypes"]),
        architectures=tuple(f["architectures"]),
        refusedIfTrue=tuple(dict(key=k, why=_DATA["refusalReasons"][k]) for k in f["refusedIfTrue"]),
        tiny=dict(_DATA["tinyBase"], **f["tiny"]),
    )


FAMILIES = tuple(_family(f) for f in _DATA["families"])

# A masked grown checkpoint's config.json (docs/hf-format.md): a model_type plain transformers does
# not know, the base family's own model_type / architectures under MASKED_CONFIG_KEY.
MASKED_MODEL_TYPE = _DATA["masked"]["modelType"]
MASKED_ARCHITECTURE = _DATA["masked"]["architecture"]
MASKED_CONFIG_KEY = _DATA["masked"]["configKey"]
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
