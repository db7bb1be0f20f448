"""config.json -> the numbers the math needs, parsed with the same rules as src/config.ts."""
import json
import os


class ModelConfig:
    def __init__(self, raw):
        self.raw = raw
        if raw.get("tie_word_embeddings") is True:
            raise ValueError("config.json: tied embeddings are not supported (flm-grow assumes an untied lm_head)")
        # issue 13's families are in flm-grow's tfjs model only so far: refuse rather than ignore their tensors
        mt = str(raw.get("model_type", "")).lower()
        if mt in ("qwen2", "qwen3"):
            raise ValueError(f"config.json: model_type {mt!r} (q/k/v biases or q/k norms) is not supported by the torch engine yet; use the tfjs engine")
        if raw.get("sliding_window") is not None and mt == "mistral":
            raise ValueError("config.json: sliding_window is not supported by the torch engine yet; use the tfjs engine")
        if raw.get("hidden_act", "silu") != "silu":
            raise ValueError("config.json: only hidden_act 'silu' (SwiGLU) is supported")
        self.hidden_size = int(raw["hidden_size"])
        self.intermediate_size = int(raw["intermediate_size"])
        self.num_layers = int(raw["num_hidden_layers"])
        self.num_heads = int(raw["num_attention_heads"])
        kv = raw.get("num_key_value_heads")
        self.num_kv_heads = int(kv) if kv is not None else self.num_heads
        if self.num_heads % self.num_kv_heads:
            raise ValueError("config.json: num_key_value_heads must divide num_attention_heads")
        hd = raw.get("head_dim")
        self.head_dim = int(hd) if hd is not None else self.hidden_size // self.num_heads
        self.vocab_size = int(raw["vocab_size"])
        eps = raw.get("rms_norm_eps")
        self.rms_norm_eps = float(eps) if eps is not None else 1e-6
        self.rope_theta = _rope_theta(raw)
        mpe = raw.get("max_position_embeddings")
        self.max_position_embeddings = int(mpe) if mpe is not None else 2048
        self.use_mup = raw.get("use_mup") is True
        # Tele-FLM µP: embeddings times input_mult, logits times output_mult / mup_scale_factor
        self.input_mult = float(raw.get("input_mult", 1) or 1) if self.use_mup else 1.0
        self.output_mult = float(raw.get("output_mult", 1) or 1) if self.use_mup else 1.0
        self.mup_scale_factor = float(raw.get("mup_scale_factor", 1) or 1) if self.use_mup else 1.0

    @property
    def input_scale(self):
        return self.input_mult if self.use_mup else 1.0

    @property
    def logit_scale(self):
        return self.output_mult / self.mup_scale_factor if self.use_mup else 1.0

    def to_json(self, dtype_name=None):
        """The raw keys kept, the sizes written back (as configToJson does)."""
        out = dict(self.raw)
        out.update(hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
                   num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
                   num_key_value_heads=self.num_kv_heads, head_dim=self.head_dim, vocab_size=self.vocab_size,
                   rms_norm_eps=self.rms_norm_eps, max_position_embeddings=self.max_position_embeddings)
        if isinstance(self.raw.get("rope_parameters"), dict):
            out["rope_parameters"] = dict(self.raw["rope_parameters"], rope_theta=self.rope_theta)
        else:
            out["rope_theta"] = self.rope_theta
        if dtype_name is not None:
            out["torch_dtype" if "torch_dtype" in self.raw else "dtype"] = dtype_name
        return out


def _rope_theta(raw):
    # transformers <= 4: rope_theta; transformers 5: rope_parameters.rope_theta
    rp = raw.get("rope_parameters") or raw.get("rope_scaling")
    if rp:
        kind = rp.get("rope_type", rp.get("type", "default"))
        if kind != "default":
            raise ValueError(f"config.json: RoPE scaling {kind!r} is not supported (only 'default')")
        if rp.get("rope_theta") is not None:
            return float(rp["rope_theta"])
    return float(raw.get("rope_theta", 10000.0) or 10000.0)


def read_config(ckpt_dir):
    with open(os.path.join(ckpt_dir, "config.json")) as f:
        return ModelConfig(json.load(f))
