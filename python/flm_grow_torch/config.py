"""config.json -> the numbers the math needs, parsed with the same rules as src/spec/config.ts: the
family from families.py, then every unsupported or invalid field collected so one error names
them all, as written in the file (e.g. `rope_scaling.rope_type`, `use_sliding_window`)."""

import json
import math
import os

from .families import (
    FAMILIES,
    MASKED_CONFIG_KEY,
    MASKED_MODEL_TYPE,
    ROPE_TYPES,
    SUPPORTED_ARCHITECTURES,
    SUPPORTED_MODEL_TYPES,
    detect_family,
)


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
                self.add(name, "is required")
                return 0
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.add(name, f"must be a finite number, got {json.dumps(v)}")
            return default if default is not None else 0
        if integer and v != int(v):
            self.add(name, f"must be an integer, got {v}")
            return default if default is not None else 0
        if positive and v <= 0:
            self.add(name, f"must be > 0, got {v}")
            return default if default is not None else 0
        return int(v) if integer else float(v)


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
    theta = p.num(raw, "rope_theta", default=10000.0, positive=True)
    if key is None:
        return theta, {"type": "default"}
    r = raw[key]
    if not isinstance(r, dict):
        p.add(key, "must be an object")
        return theta, {"type": "default"}
    if r.get("rope_theta") is not None:
        theta = p.num(r, "rope_theta", positive=True, default=theta, prefix=key + ".")
    type_key = "rope_type" if "rope_type" in r else "type" if "type" in r else None
    kind = r[type_key] if type_key else "default"
    if kind not in ROPE_TYPES:
        p.add(
            f"{key}.{type_key or 'rope_type'}",
            f"RoPE type {json.dumps(kind)} is not supported (supported: {', '.join(ROPE_TYPES)})",
        )
        return theta, {"type": "default"}
    if r.get("partial_rotary_factor") not in (None, 1):
        p.add(f"{key}.partial_rotary_factor", "partial rotary embeddings are not supported")

    def field(k, need):
        v = r.get(k)
        if v is None:
            if need:
                p.add(f"{key}.{k}", f'is required for RoPE type "{kind}"')
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            p.add(f"{key}.{k}", f"must be a number > 0, got {json.dumps(v)}")
            return None
        return float(v)

    out = {"type": kind}
    if kind in ("linear", "dynamic"):
        out["factor"] = field("factor", True) or 1.0
    elif kind == "llama3":
        out.update(
            factor=field("factor", True) or 1.0,
            low_freq_factor=field("low_freq_factor", True) or 1.0,
            high_freq_factor=field("high_freq_factor", True) or 2.0,
            original_max_position_embeddings=field("original_max_position_embeddings", True) or 1.0,
        )
    elif kind == "yarn":
        if r.get("truncate") is not None and not isinstance(r["truncate"], bool):
            p.add(f"{key}.truncate", "must be true or false")
        for k in (
            "factor",
            "original_max_position_embeddings",
            "attention_factor",
            "beta_fast",
            "beta_slow",
            "mscale",
            "mscale_all_dim",
        ):
            v = field(k, k == "factor" and r.get("original_max_position_embeddings") is None)
            if v is not None:
                out[k] = v
        if isinstance(r.get("truncate"), bool):
            out["truncate"] = r["truncate"]
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
                    f'a "{MASKED_MODEL_TYPE}" config needs the base family\'s model_type here (docs/hf-format.md)',
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
                f"unsupported model {json.dumps(raw.get('model_type'))} / architectures {json.dumps(archs)}; "
                f"supported model_type: {', '.join(SUPPORTED_MODEL_TYPES)}; architectures: {', '.join(SUPPORTED_ARCHITECTURES)}",
            )
            fam = FAMILIES[0]
        self.family = fam["name"]
        tie = raw.get("tie_word_embeddings")
        if tie is not None and not isinstance(tie, bool):
            p.add("tie_word_embeddings", f"must be true or false, got {json.dumps(tie)}")
        self.tie_word_embeddings = tie is True
        for r in fam["refusedIfTrue"]:
            if raw.get(r["key"]) is True:
                p.add(r["key"], r["why"])
        if raw.get("hidden_act", "silu") != "silu":
            p.add("hidden_act", f'only "silu" (SwiGLU) is supported, got {json.dumps(raw.get("hidden_act"))}')
        self.qkv_bias = fam["qkvBias"]
        self.qk_norm = fam["qkNorm"]
        self.sliding_window = None
        if fam["slidingWindow"] == "always" and raw.get("sliding_window") is not None:
            self.sliding_window = p.num(raw, "sliding_window", integer=True, positive=True) or None
        elif fam["slidingWindow"] == "flagged" and raw.get("use_sliding_window") is True:
            p.add(
                "use_sliding_window",
                f"sliding-window attention on layers from max_window_layers is not supported for {fam['name']}; "
                f"set it to false (the published {fam['name']} checkpoints do)",
            )
        lt = raw.get("layer_types")
        if isinstance(lt, list) and any(x != "full_attention" for x in lt) and fam["slidingWindow"] != "always":
            p.add(
                "layer_types",
                f'only "full_attention" layers are supported, got {json.dumps(sorted(set(map(str, lt))))}',
            )
        if raw.get("partial_rotary_factor") not in (None, 1):
            p.add("partial_rotary_factor", "partial rotary embeddings are not supported")
        self.hidden_size = p.num(raw, "hidden_size", integer=True, positive=True)
        self.intermediate_size = p.num(raw, "intermediate_size", integer=True, positive=True)
        self.num_layers = p.num(raw, "num_hidden_layers", integer=True, positive=True)
        self.num_heads = p.num(raw, "num_attention_heads", integer=True, positive=True)
        self.num_kv_heads = p.num(raw, "num_key_value_heads", integer=True, positive=True, default=self.num_heads or 1)
        if self.num_heads and self.num_kv_heads and self.num_heads % self.num_kv_heads:
            p.add("num_key_value_heads", f"{self.num_kv_heads} does not divide num_attention_heads {self.num_heads}")
        if raw.get("head_dim") is not None:
            self.head_dim = p.num(raw, "head_dim", integer=True, positive=True)
        elif fam["headDimDefault"] is not None:
            self.head_dim = fam["headDimDefault"]
        elif self.num_heads and self.hidden_size % self.num_heads:
            p.add(
                "head_dim",
                f"absent and hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_heads}",
            )
            self.head_dim = 0
        else:
            self.head_dim = self.hidden_size // self.num_heads if self.num_heads else 0
        if self.head_dim % 2:
            p.add("head_dim", f"must be even for RoPE, got {self.head_dim}")
        self.vocab_size = p.num(raw, "vocab_size", integer=True, positive=True)
        self.rms_norm_eps = p.num(raw, "rms_norm_eps", default=1e-6, positive=True)
        self.max_position_embeddings = p.num(raw, "max_position_embeddings", default=2048, integer=True, positive=True)
        self.rope_theta, self.rope = _rope(raw, p)
        self.use_mup = raw.get("use_mup") is True  # read for any family, as src/spec/config.ts does
        # Tele-FLM µP: embeddings times input_mult, logits times output_mult / mup_scale_factor
        self.input_mult = p.num(raw, "input_mult", default=1.0) if self.use_mup else 1.0
        self.output_mult = p.num(raw, "output_mult", default=1.0) if self.use_mup else 1.0
        self.mup_scale_factor = p.num(raw, "mup_scale_factor", default=1.0, positive=True) if self.use_mup else 1.0
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
        rope = {"type": self.rope["type"]}
        names = {
            "factor": "factor",
            "low_freq_factor": "lowFreqFactor",
            "high_freq_factor": "highFreqFactor",
            "original_max_position_embeddings": "originalMaxPositionEmbeddings",
            "attention_factor": "attentionFactor",
            "beta_fast": "betaFast",
            "beta_slow": "betaSlow",
            "mscale": "mscale",
            "mscale_all_dim": "mscaleAllDim",
            "truncate": "truncate",
        }
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
