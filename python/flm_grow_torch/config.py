"""config.json -> the numbers the math needs, parsed with the same rules as src/spec/config.ts: the
family from families.py, then every unsupported or invalid field collected so one error names
them all, as written in the file (e.g. `rope_scaling.rope_type`, `use_sliding_window`)."""

import json
import math
import os
import re

from .families import (
    FAMILIES,
    MASKED_CONFIG_KEY,
    MASKED_MODEL_TYPE,
    ROPE_TYPES,
    SUPPORTED_ARCHITECTURES,
    SUPPORTED_MODEL_TYPES,
    detect_family,
)

# How a config.json is read (required sizes, optional numbers and their defaults, refused values,
# the parameters of each RoPE type, the wording of every problem): the declaration src/spec/config.ts
# loads too.
CONFIG_RULES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_data", "config_rules.json")
with open(CONFIG_RULES_FILE, encoding="utf-8") as _f:
    RULES = json.load(_f)
_OPTIONAL = {o["key"]: o for o in RULES["optional"]}
_SIZES = {o["key"] for o in RULES["sizes"]}
_REFUSED = {o["key"]: o for o in RULES["refused"]}


def _say(message: str, value: object = "", **fill: object) -> str:
    """A message of config_rules.json with its {value}, {type}, ... filled in."""
    fill["value"] = value
    return re.sub(r"\{(\w+)\}", lambda m: str(fill.get(m.group(1), "")), RULES["messages"][message])


def config_default(key: str) -> float:
    """The default of an optional config.json number (config_rules.json `optional`)."""
    return _OPTIONAL[key]["default"]


def rope_default(kind: str, key: str) -> float:
    """The default of a RoPE parameter absent from the file (config_rules.json rope: yarn's beta_fast 32, ...)."""
    return float(next(f["default"] for f in RULES["rope"][kind] if f["key"] == key))


def _refusal(key: str, v: object) -> str | None:
    """The refusal message of a field when `v` is neither absent nor allowed (config_rules.json `refused`)."""
    r = _REFUSED[key]
    if v is None or any(v == a and type(v) is not bool for a in r["allowed"]):
        return None
    return r["why"].replace("{value}", json.dumps(v))


class ConfigError(ValueError):
    """An unsupported or invalid config.json; `fields` names each offending field as in the file."""

    def __init__(self, file, problems):
        self.fields = [f for f, _ in problems]
        if len(problems) == 1:
            f, msg = problems[0]
            text = f"{file}: {f}: {msg}" if f else f"{file}: {msg}"
        else:
            text = f"{file}: {len(problems)} unsupported or invalid fields:\n" + "\n".join(
                f"  - {f}: {msg}" if f else f"  - {msg}" for f, msg in problems
            )
        super().__init__(text)


class _Problems:
    def __init__(self):
        self.list = []

    def add(self, field, msg):
        self.list.append((field, msg))

    def num(self, obj, key, default=None, integer=False, positive=False, prefix=""):
        """obj[key] as a number (`default` when absent or null); a bad value is recorded."""
        v = obj.get(key)
        name = prefix + key
        if v is None:
            if default is None:
                self.add(name, _say("required"))
                return 0
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.add(name, _say("notFinite", json.dumps(v)))
            return default if default is not None else 0
        if integer and v != int(v):
            self.add(name, _say("notInteger", str(v)))
            return default if default is not None else 0
        if positive and v <= 0:
            self.add(name, _say("notPositive", str(v)))
            return default if default is not None else 0
        return int(v) if integer else float(v)

    def size(self, obj, key):
        """A required size (config_rules.json sizes: an integer > 0)."""
        assert key in _SIZES, key
        return self.num(obj, key, integer=True, positive=True)

    def optional(self, obj, key, prefix=""):
        """An optional number read with its declared default (config_rules.json optional)."""
        o = _OPTIONAL[key]
        integer = o.get("integer", False)
        default = o["default"] if integer else float(o["default"])
        return self.num(obj, key, default=default, integer=integer, positive=o.get("positive", False), prefix=prefix)


def _rope(raw, p):
    """RoPE theta and scaling: `rope_theta` + `rope_scaling` (transformers <= 4) or
    `rope_parameters` (5); returns (theta, {"type": ..., parameters as in the file})."""
    key = (
        "rope_parameters"
        if raw.get("rope_parameters") is not None
        else "rope_scaling"
        if raw.get("rope_scaling") is not None
        else None
    )
    theta = p.optional(raw, "rope_theta")
    if key is None:
        return theta, {"type": "default"}
    r = raw[key]
    if not isinstance(r, dict):
        p.add(key, _say("notObject"))
        return theta, {"type": "default"}
    if r.get("rope_theta") is not None:
        # named as written: rope_parameters.rope_theta, not the top-level rope_theta
        v = r["rope_theta"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            p.add(f"{key}.rope_theta", _say("notPositiveNumber", json.dumps(v)))
        else:
            theta = float(v)
    type_key = "rope_type" if "rope_type" in r else "type" if "type" in r else None
    kind = r[type_key] if type_key else "default"
    if kind not in ROPE_TYPES:
        p.add(
            f"{key}.{type_key or 'rope_type'}",
            _say("ropeType", json.dumps(kind), supported=", ".join(ROPE_TYPES)),
        )
        return theta, {"type": "default"}
    partial = _refusal("partial_rotary_factor", r.get("partial_rotary_factor"))
    if partial is not None:
        p.add(f"{key}.partial_rotary_factor", partial)
    # the parameters the type reads (config_rules.json rope): booleans first, then the numbers
    fields = RULES["rope"][kind]
    for f in fields:
        if f.get("boolean") and r.get(f["key"]) is not None and not isinstance(r[f["key"]], bool):
            p.add(f"{key}.{f['key']}", _say("ropeNotBoolean"))
    out = {"type": kind}
    for f in fields:
        v = r.get(f["key"])
        if f.get("boolean"):
            if isinstance(v, bool):
                out[f["key"]] = v
            continue
        need = f.get("required", False) or ("requiredUnless" in f and r.get(f["requiredUnless"]) is None)
        if v is None:
            if need:
                p.add(f"{key}.{f['key']}", _say("ropeRequired", type=kind))
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            p.add(f"{key}.{f['key']}", _say("notPositiveNumber", json.dumps(v)))
        else:
            out[f["key"]] = float(v)
            continue
        if "fallback" in f:
            out[f["key"]] = float(f["fallback"])
    return theta, out


def plain_config_json(raw: dict, file: str = "config.json") -> dict:
    """The plain config of a masked config.json (docs/hf-format.md; src/spec/config.ts plainConfigJson);
    any other object unchanged."""
    if raw.get("model_type") != MASKED_MODEL_TYPE:
        return raw
    m = raw.get(MASKED_CONFIG_KEY)
    if not isinstance(m, dict) or not isinstance(m.get("base_model_type"), str):
        raise ConfigError(
            file,
            [
                (
                    f"{MASKED_CONFIG_KEY}.base_model_type",
                    _say("maskedBase", maskedType=MASKED_MODEL_TYPE),
                )
            ],
        )
    rest = {k: v for k, v in raw.items() if k not in (MASKED_CONFIG_KEY, "model_type", "architectures", "auto_map")}
    out = {}
    if isinstance(m.get("base_architectures"), list):
        out["architectures"] = m["base_architectures"]
    out["model_type"] = m["base_model_type"]
    if m.get("base_auto_map") is not None:
        out["auto_map"] = m["base_auto_map"]
    out.update(rest)
    return out


class ModelConfig:
    def __init__(self, raw, file="config.json"):
        if not isinstance(raw, dict):
            raise ConfigError(file, [(None, "is not a JSON object")])
        # a masked folder reads as its base family; `raw` (written back by to_json) is the plain config
        raw = plain_config_json(raw, file)
        self.raw = raw
        p = _Problems()
        archs = raw.get("architectures") if isinstance(raw.get("architectures"), list) else []
        fam = detect_family(raw.get("model_type"), archs)
        if fam is None:
            p.add(
                "model_type",
                _say(
                    "unsupportedModel",
                    json.dumps(raw.get("model_type")),
                    architectures=json.dumps(archs),
                    supportedTypes=", ".join(SUPPORTED_MODEL_TYPES),
                    supportedArchitectures=", ".join(SUPPORTED_ARCHITECTURES),
                ),
            )
            fam = FAMILIES[0]
        self.family = fam["name"]
        tie = raw.get("tie_word_embeddings")
        if tie is not None and not isinstance(tie, bool):
            p.add("tie_word_embeddings", _say("notBoolean", json.dumps(tie)))
        self.tie_word_embeddings = tie is True
        for r in fam["refusedIfTrue"]:
            if raw.get(r["key"]) is True:
                p.add(r["key"], r["why"])
        # values this tool does not model (config_rules.json refused): a new one is a line of data
        for rule in RULES["refused"]:
            why = _refusal(rule["key"], raw.get(rule["key"]))
            if why is not None:
                p.add(rule["key"], why)
        self.qkv_bias = fam["qkvBias"]
        self.qk_norm = fam["qkNorm"]
        self.sliding_window = None
        if fam["slidingWindow"] == "always" and raw.get("sliding_window") is not None:
            self.sliding_window = p.num(raw, "sliding_window", integer=True, positive=True) or None
        elif fam["slidingWindow"] == "flagged" and raw.get("use_sliding_window") is True:
            p.add(
                "use_sliding_window",
                _say("slidingWindowFlagged", family=fam["name"]),
            )
        lt = raw.get("layer_types")
        if isinstance(lt, list) and any(x != "full_attention" for x in lt) and fam["slidingWindow"] != "always":
            p.add(
                "layer_types",
                _say("layerTypes", json.dumps(sorted(set(map(str, lt))))),
            )
        self.hidden_size = p.size(raw, "hidden_size")
        self.intermediate_size = p.size(raw, "intermediate_size")
        self.num_layers = p.size(raw, "num_hidden_layers")
        self.num_heads = p.size(raw, "num_attention_heads")
        self.num_kv_heads = p.num(raw, "num_key_value_heads", integer=True, positive=True, default=self.num_heads or 1)
        if self.num_heads and self.num_kv_heads and self.num_heads % self.num_kv_heads:
            p.add("num_key_value_heads", _say("kvHeadsDivide", self.num_kv_heads, heads=self.num_heads))
        if raw.get("head_dim") is not None:
            self.head_dim = p.num(raw, "head_dim", integer=True, positive=True)
        elif fam["headDimDefault"] is not None:
            self.head_dim = fam["headDimDefault"]
        elif self.num_heads and self.hidden_size % self.num_heads:
            p.add(
                "head_dim",
                _say("headDimDerived", hidden=self.hidden_size, heads=self.num_heads),
            )
            self.head_dim = 0
        else:
            self.head_dim = self.hidden_size // self.num_heads if self.num_heads else 0
        if self.head_dim % 2:
            p.add("head_dim", _say("headDimOdd", self.head_dim))
        self.vocab_size = p.size(raw, "vocab_size")
        self.rms_norm_eps = p.optional(raw, "rms_norm_eps")
        self.max_position_embeddings = p.optional(raw, "max_position_embeddings")
        self.rope_theta, self.rope = _rope(raw, p)
        self.use_mup = raw.get("use_mup") is True  # read for any family, as src/spec/config.ts does
        # Tele-FLM µP: embeddings times input_mult, logits times output_mult / mup_scale_factor
        mup = ("input_mult", "output_mult", "mup_scale_factor")
        self.input_mult, self.output_mult, self.mup_scale_factor = (
            float(p.optional(raw, k) if self.use_mup else config_default(k)) for k in mup
        )
        if p.list:
            raise ConfigError(file, p.list)

    @property
    def input_scale(self):
        return self.input_mult if self.use_mup else 1.0

    @property
    def logit_scale(self):
        return self.output_mult / self.mup_scale_factor if self.use_mup else 1.0

    def summary(self):
        """The parsed numbers under src/spec/config.ts ModelConfig's names (the config parity test compares them)."""
        names = {f["key"]: f["name"] for fields in RULES["rope"].values() for f in fields}
        rope = {"type": self.rope["type"]}
        rope.update({names[k]: v for k, v in self.rope.items() if k != "type"})
        return dict(
            family=self.family,
            tieWordEmbeddings=self.tie_word_embeddings,
            qkvBias=self.qkv_bias,
            qkNorm=self.qk_norm,
            rope=rope,
            slidingWindow=self.sliding_window,
            hiddenSize=self.hidden_size,
            intermediateSize=self.intermediate_size,
            numLayers=self.num_layers,
            numHeads=self.num_heads,
            numKvHeads=self.num_kv_heads,
            headDim=self.head_dim,
            vocabSize=self.vocab_size,
            rmsNormEps=self.rms_norm_eps,
            ropeTheta=self.rope_theta,
            maxPositionEmbeddings=self.max_position_embeddings,
            useMup=self.use_mup,
            inputMult=self.input_mult,
            outputMult=self.output_mult,
            mupScaleFactor=self.mup_scale_factor,
        )

    def to_json(self, dtype_name=None):
        """The raw keys kept, the sizes written back (as configToJson does)."""
        out = dict(self.raw)
        out.pop("_name_or_path", None)
        out.update(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            vocab_size=self.vocab_size,
            rms_norm_eps=self.rms_norm_eps,
            max_position_embeddings=self.max_position_embeddings,
        )
        if isinstance(self.raw.get("rope_parameters"), dict):
            out["rope_parameters"] = dict(self.raw["rope_parameters"], rope_theta=self.rope_theta)
        else:
            out["rope_theta"] = self.rope_theta
        if dtype_name is not None:
            out["torch_dtype" if "torch_dtype" in self.raw else "dtype"] = dtype_name
        return out


def read_config(ckpt_dir):
    path = os.path.join(ckpt_dir, "config.json")
    with open(path) as f:
        return ModelConfig(json.load(f), path)
