"""The training options, declared once in _data/train_options.json (src/train/options.ts reads the
same file for `flm-grow train`, pipelines and the range checks): this module builds the torch
trainer's argparse options and checks their ranges from it, so a default or range is written once."""

from __future__ import annotations

import argparse
import json
import math
import os

OPTIONS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_data", "train_options.json")

with open(OPTIONS_FILE, encoding="utf-8") as _f:
    TRAIN_OPTIONS: list[dict] = json.load(_f)["options"]

_TYPES = {"int": int, "number": float, "string": str}


def torch_options() -> list[dict]:
    """The options the torch trainer's argv carries (src/train/engine.ts torchTrainArgs)."""
    return [o for o in TRAIN_OPTIONS if "torch" in o["engines"] and o.get("torch", True)]


def option(flag: str) -> dict:
    return next(o for o in TRAIN_OPTIONS if o["flag"] == flag)


def default(flag: str):
    return option(flag).get("default")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    for o in torch_options():
        help_ = o["help"] + (f" (default {o['defaultText']})" if "defaultText" in o else "")
        if o["type"] == "boolean":
            p.add_argument(f"--{o['flag']}", action="store_true", help=help_)
            continue
        kw = dict(type=_TYPES[o["type"]], default=o.get("default"), help=help_)
        if "choices" in o:
            kw["choices"] = o["choices"]
        if o.get("required"):
            kw["required"] = True
        p.add_argument(f"--{o['flag']}", **kw)


def range_text(o: dict) -> str:
    kind = "an integer" if o["type"] == "int" else "a number"
    lo = f"[{o['min']}" if "min" in o else f"({o['minExclusive']}" if "minExclusive" in o else None
    hi = f"{o['max']}]" if "max" in o else f"{o['maxExclusive']})" if "maxExclusive" in o else None
    if lo is not None and hi is not None:
        return f"{'an integer ' if o['type'] == 'int' else ''}in {lo}, {hi}"
    if "min" in o:
        return "a positive integer" if o["type"] == "int" and o["min"] == 1 else f"{kind} >= {o['min']}"
    if "minExclusive" in o:
        return f"{kind} > {o['minExclusive']}"
    return kind


def problem(o: dict, v) -> str | None:
    """What is wrong with value v of option o (as src/train/options.ts optionProblem), or None."""
    if o["type"] not in ("int", "number") or v is None:
        return None
    ok = (
        math.isfinite(v)
        and ("min" not in o or v >= o["min"])
        and ("max" not in o or v <= o["max"])
        and ("minExclusive" not in o or v > o["minExclusive"])
        and ("maxExclusive" not in o or v < o["maxExclusive"])
    )
    return None if ok else f"--{o['flag']} must be {range_text(o)}, got {v}"


def check_train_arguments(a: argparse.Namespace) -> str | None:
    """The first out-of-range option of the parsed arguments, in words, or None."""
    for o in torch_options():
        p = problem(o, getattr(a, o["flag"].replace("-", "_"), None))
        if p is not None:
            return p
    return None
