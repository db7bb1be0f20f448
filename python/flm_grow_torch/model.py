"""The decoder of every family flm-grow supports (families.py: Llama, Tele-FLM, Mistral, Qwen2,
Qwen3) in torch, with Hugging Face module and parameter names (model.embed_tokens,
model.layers.{i}.self_attn.q_proj, ..., lm_head), written from SPEC §1 and src/model/llama.ts.
The family features follow transformers' modeling code: q/k/v biases (models/qwen2/modeling_qwen2.py
Qwen2Attention), q_norm/k_norm over head_dim before RoPE (models/qwen3/modeling_qwen3.py
Qwen3Attention), the sliding window (models/mistral: masking_utils.sliding_window_overlay), RoPE
scaling (modeling_rope_utils.py) and tied embeddings (PreTrainedModel.tie_weights: lm_head.weight
IS embed_tokens.weight, one parameter). It is the *plain* model: MSG masks are attached from
outside by masks.attach_masks, which works on this tree or on any other with the same names (e.g.
transformers' LlamaForCausalLM or Qwen2ForCausalLM).
"""

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig, read_config, rope_default
from .safetensors_io import load_checkpoint_tensors


def at_least_f32(x):
    """x in f32 when it is narrower (bf16 autocast), unchanged when f32 or f64: norms, softmax
    and logits are f32 in the usual runs and stay f64 in an f64 reference run (--precision f64)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class RMSNorm(nn.Module):
    # attribute names as transformers' LlamaRMSNorm, so the mask code can treat both alike
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.variance_epsilon = eps

    def forward(self, x):
        dtype = x.dtype
        x = at_least_f32(x)
        if _HAS_RMS_NORM:
            # one fused kernel (torch >= 2.4), the same x * rsqrt(mean(x²) + eps) in x's dtype
            x = F.rms_norm(x, (x.shape[-1],), eps=self.variance_epsilon)
        else:
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)


def rope_inv_freq(head_dim, theta):
    # f32 throughout, as transformers' default RoPE init: 1 / theta^(arange(0, d, 2) / d)
    exps = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    return 1.0 / (theta**exps)


def rope_frequencies(cfg, seq_len):
    """(inv_freq f32 [hd/2], attention_scaling) of the config's RoPE for a sequence of seq_len, as
    transformers' modeling_rope_utils.py computes them (_compute_default_rope_parameters,
    _compute_linear_scaling_rope_parameters, _compute_dynamic_ntk_parameters,
    _compute_llama3_parameters, _compute_yarn_parameters) and as src/model/llama.ts
    ropeFrequencies does: scaled types in float64, rounded to f32 at the end; 'default' is
    rope_inv_freq's f32 computation exactly (the HF fixtures pin it)."""
    d, base, r = cfg.head_dim, cfg.rope_theta, cfg.rope
    kind = r["type"]
    if kind == "default":
        return rope_inv_freq(d, base), 1.0

    def plain(theta):
        return [1.0 / theta ** (2 * i / d) for i in range(d // 2)]

    # required for linear, dynamic and llama3 (config_rules.json: the parse refuses a config without it); yarn derives its own
    factor = r.get("factor")
    scaling = 1.0
    if kind == "linear":
        inv = [f / factor for f in plain(base)]
    elif kind == "dynamic":
        # the NTK base grows with the sequence once it exceeds max_position_embeddings
        n, mpe = max(seq_len, cfg.max_position_embeddings), cfg.max_position_embeddings
        inv = plain(base * ((factor * n / mpe) - (factor - 1)) ** (d / (d - 2)))
    elif kind == "llama3":
        old, lo, hi = r["original_max_position_embeddings"], r["low_freq_factor"], r["high_freq_factor"]
        lo_wave, hi_wave = old / lo, old / hi
        inv = []
        for f in plain(base):
            wave = 2 * math.pi / f
            if wave < hi_wave:
                inv.append(f)
            elif wave > lo_wave:
                inv.append(f / factor)
            else:
                smooth = (old / wave - lo) / (hi - lo)
                inv.append((1 - smooth) * (f / factor) + smooth * f)
    elif kind == "yarn":
        orig = r.get("original_max_position_embeddings", cfg.max_position_embeddings)
        fac = r.get("factor", cfg.max_position_embeddings / orig)

        def mscale(s, m=1.0):
            return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1

        if "attention_factor" in r:
            scaling = r["attention_factor"]
        elif r.get("mscale") and r.get("mscale_all_dim"):
            scaling = mscale(fac, r["mscale"]) / mscale(fac, r["mscale_all_dim"])
        else:
            scaling = mscale(fac)

        def corr(rot):
            return d * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))

        low, high = (
            corr(r.get("beta_fast", rope_default("yarn", "beta_fast"))),
            corr(r.get("beta_slow", rope_default("yarn", "beta_slow"))),
        )
        if r.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, d - 1)
        if low == high:
            high += 0.001
        inv = []
        for i, f in enumerate(plain(base)):
            extra = 1 - min(1.0, max(0.0, (i - low) / (high - low)))  # share of the unscaled frequency
            inv.append((f / fac) * (1 - extra) + f * extra)
    else:  # config.py refuses every other type
        raise ValueError(f"RoPE type {kind!r} is not supported")
    return torch.tensor(inv, dtype=torch.float64).float(), float(scaling)


def rope_tables(inv_freq, seq_len, device, scaling=1.0):
    # angle = position * inv_freq as an f32 product (exact to one rounding), cat(freqs, freqs);
    # yarn's attention factor scales cos and sin (transformers multiplies them by attention_scaling)
    pos = torch.arange(seq_len, device=device, dtype=torch.float32)
    freqs = pos[:, None] * inv_freq.to(device=device, dtype=torch.float32)[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    if scaling == 1.0:
        return emb.cos(), emb.sin()
    return emb.cos() * scaling, emb.sin() * scaling


def window_mask(seq_len, window, device):
    """[T, T] bool, True where query t may attend key s: s <= t and, with a sliding window,
    t - s < window (masking_utils.sliding_window_overlay; src/model/llama.ts makeRope)."""
    t = torch.arange(seq_len, device=device)
    rel = t[:, None] - t[None, :]
    ok = rel >= 0
    if window is not None:
        ok = ok & (rel < window)
    return ok


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


_HAS_SDPA = hasattr(F, "scaled_dot_product_attention")
_HAS_RMS_NORM = hasattr(F, "rms_norm")
# SDPA's enable_gqa (torch >= 2.5): grouped KV heads without materialising the repeat
_HAS_GQA = _HAS_SDPA and "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "")


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.nh, self.nkv, self.hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        H = cfg.hidden_size
        # Qwen2: q/k/v biases; o_proj never has one (Qwen2Attention)
        self.q_proj = nn.Linear(H, self.nh * self.hd, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(H, self.nkv * self.hd, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(H, self.nkv * self.hd, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(self.nh * self.hd, H, bias=False)
        if cfg.qk_norm:
            # Qwen3: one RMSNorm over head_dim per layer, shared by all heads, eps rms_norm_eps
            self.q_norm = RMSNorm(self.hd, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.hd, cfg.rms_norm_eps)
        self.qk_norm = cfg.qk_norm
        # fused attention (torch 2's SDPA: flash / memory-efficient kernels on GPU, the flash
        # kernel on CPU), equal to the explicit product below up to f32 rounding; set_sdpa(False)
        # gives the explicit product, the reference path
        self.use_sdpa = True

    def forward(self, x, cos, sin, allowed=None):
        """allowed: [T, T] bool (True = may attend) when a sliding window cuts into the causal
        triangle; None = plain causal."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd)
        if self.qk_norm:  # before RoPE, on each head's head_dim coordinates
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        g = self.nh // self.nkv
        sdpa = self.use_sdpa and _HAS_SDPA
        if g > 1 and not (sdpa and _HAS_GQA):
            # query head j reads KV head floor(j / g): repeat each KV head g times, contiguously
            k = k.repeat_interleave(g, dim=1)
            v = v.repeat_interleave(g, dim=1)
        if sdpa:
            gqa = {"enable_gqa": True} if g > 1 and _HAS_GQA else {}
            if allowed is None:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa)
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, **gqa)
        else:
            scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.hd)
            hidden = ~allowed if allowed is not None else torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(hidden, float("-inf"))
            out = torch.matmul(torch.softmax(at_least_f32(scores), dim=-1).to(v.dtype), v)
        # [B, nh, T, hd] -> [B, T, nh*hd]: head j's output occupies columns j*hd .. (j+1)*hd
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.nh * self.hd))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        H, Fd = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(H, Fd, bias=False)
        self.up_proj = nn.Linear(H, Fd, bias=False)
        self.down_proj = nn.Linear(Fd, H, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, allowed=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, allowed)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    """Any supported family (the config says which features are on). Forward returns logits
    [B,T,V] (f32), or (logits, hidden_states) with HF's hidden_states: L+1 tensors, 0 =
    embeddings, l = after layer l for l < L, L = after the final norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()
        # a buffer so that `.to(dtype)` rounds it as it does transformers' inv_freq (bf16 fixture);
        # 'dynamic' RoPE recomputes it for sequences beyond max_position_embeddings
        inv, self.attention_scaling = rope_frequencies(cfg, cfg.max_position_embeddings)
        self.register_buffer("inv_freq", inv, persistent=False)

    def tie_weights(self):
        """Tied embeddings: lm_head uses the embedding's Parameter itself, so named_parameters(),
        the optimizer and a save see one tensor (model.embed_tokens.weight) and no lm_head."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def set_sdpa(self, on=True):
        for layer in self.model.layers:
            layer.self_attn.use_sdpa = on

    def forward(self, input_ids, output_hidden_states=False):
        cfg = self.config
        T = input_ids.shape[1]
        inv = self.inv_freq
        if cfg.rope["type"] == "dynamic" and T > cfg.max_position_embeddings:
            inv = rope_frequencies(cfg, T)[0]
        cos, sin = rope_tables(inv, T, input_ids.device, self.attention_scaling)
        w = cfg.sliding_window
        allowed = window_mask(T, w, input_ids.device) if w is not None and T > w else None
        x = self.model.embed_tokens(input_ids)
        if cfg.input_scale != 1:
            x = x * cfg.input_scale
        hidden = [x] if output_hidden_states else None
        n = len(self.model.layers)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, allowed)
            if output_hidden_states and i < n - 1:
                hidden.append(x)
        x = self.model.norm(x)
        if output_hidden_states:
            hidden.append(x)
        logits = at_least_f32(self.lm_head(x))
        if cfg.logit_scale != 1:
            logits = logits * cfg.logit_scale
        return (logits, hidden) if output_hidden_states else logits


_IGNORED = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")


def load_model(ckpt_dir, dtype=torch.float32, device="cpu", inv_freq_dtype=None):
    """Build the model from config.json and load the checkpoint's weights (any stored dtype),
    computing in `dtype` (f32; f64 for a numerical reference run).
    `inv_freq_dtype` rounds the RoPE frequencies as `model.to(dtype)` does to transformers'
    inv_freq buffer (how the bf16 fixture's reference was computed)."""
    cfg = read_config(ckpt_dir)
    with torch.device("meta") if hasattr(torch, "device") and hasattr(torch.device, "__enter__") else _nullctx():
        model = LlamaForCausalLM(cfg)
    if _is_meta(model):
        model = model.to_empty(device=device)
        model.tie_weights()  # to_empty may give each module its own copy of a shared meta Parameter
    inv = rope_frequencies(cfg, cfg.max_position_embeddings)[0]
    if inv_freq_dtype is not None:
        inv = inv.to(inv_freq_dtype).float()
    model.inv_freq = inv.to(device)
    tensors = load_checkpoint_tensors(ckpt_dir)
    own = dict(model.named_parameters())
    missing = [n for n in own if n not in tensors]
    # as src/spec/arch.ts: RoPE buffers some exporters carry are derived, and a tied checkpoint may still
    # carry a copy of the head (transformers ignores it on load)
    extra = [
        n
        for n in tensors
        if n not in own and not _IGNORED.match(n) and not (cfg.tie_word_embeddings and n == "lm_head.weight")
    ]
    if missing or extra:
        tied = " (tie_word_embeddings is true: the embedding is the LM head)" if cfg.tie_word_embeddings else ""
        raise ValueError(
            f"{ckpt_dir}: tensors do not match config.json{tied}: missing {missing[:4]}, unexpected {extra[:4]}"
        )
    with torch.no_grad():
        for name, p in own.items():
            t = tensors[name]
            if tuple(t.shape) != tuple(p.shape):
                raise ValueError(f"{ckpt_dir}: {name} has shape {list(t.shape)}, config.json implies {list(p.shape)}")
            p.copy_(t.to(torch.float32))
    if dtype != torch.float32:
        model = model.to(dtype=dtype)
    return model


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _is_meta(model):
    return any(p.is_meta for p in model.parameters())
