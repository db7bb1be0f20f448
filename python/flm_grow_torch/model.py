"""The Llama / Tele-FLM decoder in torch, with Hugging Face module and parameter names
(model.embed_tokens, model.layers.{i}.self_attn.q_proj, ..., lm_head), written from SPEC §1 and
src/model/llama.ts. It is the *plain* model: MSG masks are attached from outside by
masks.attach_masks, which works on this tree or on any other with the same names (e.g.
transformers' LlamaForCausalLM).
"""
import math

import torch
from torch import nn
import torch.nn.functional as F

from .config import ModelConfig, read_config
from .safetensors_io import load_checkpoint_tensors


class RMSNorm(nn.Module):
    # attribute names as transformers' LlamaRMSNorm, so the mask code can treat both alike
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.variance_epsilon = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)


def rope_inv_freq(head_dim, theta):
    # f32 throughout, as transformers' default RoPE init: 1 / theta^(arange(0, d, 2) / d)
    exps = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    return 1.0 / (theta ** exps)


def rope_tables(inv_freq, seq_len, device):
    # angle = position * inv_freq as an f32 product (exact to one rounding), cat(freqs, freqs)
    pos = torch.arange(seq_len, device=device, dtype=torch.float32)
    freqs = pos[:, None] * inv_freq.to(device=device, dtype=torch.float32)[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


_HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.nh, self.nkv, self.hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        H = cfg.hidden_size
        self.q_proj = nn.Linear(H, self.nh * self.hd, bias=False)
        self.k_proj = nn.Linear(H, self.nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(H, self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, H, bias=False)
        # fused attention kernels on GPU (torch 2); the explicit product is the reference path
        self.use_sdpa = False

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        g = self.nh // self.nkv
        if g > 1:
            # query head j reads KV head floor(j / g): repeat each KV head g times, contiguously
            k = k.repeat_interleave(g, dim=1)
            v = v.repeat_interleave(g, dim=1)
        if self.use_sdpa and _HAS_SDPA:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.hd)
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(causal, float("-inf"))
            out = torch.matmul(torch.softmax(scores.float(), dim=-1).to(v.dtype), v)
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

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    """Forward returns logits [B,T,V] (f32), or (logits, hidden_states) with HF's hidden_states:
    L+1 tensors, 0 = embeddings, l = after layer l for l < L, L = after the final norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        # a buffer so that `.to(dtype)` rounds it as it does transformers' inv_freq (bf16 fixture)
        self.register_buffer("inv_freq", rope_inv_freq(cfg.head_dim, cfg.rope_theta), persistent=False)

    def set_sdpa(self, on=True):
        for layer in self.model.layers:
            layer.self_attn.use_sdpa = on

    def forward(self, input_ids, output_hidden_states=False):
        cfg = self.config
        T = input_ids.shape[1]
        cos, sin = rope_tables(self.inv_freq, T, input_ids.device)
        x = self.model.embed_tokens(input_ids)
        if cfg.input_scale != 1:
            x = x * cfg.input_scale
        hidden = [x] if output_hidden_states else None
        n = len(self.model.layers)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin)
            if output_hidden_states and i < n - 1:
                hidden.append(x)
        x = self.model.norm(x)
        if output_hidden_states:
            hidden.append(x)
        logits = self.lm_head(x).float()
        if cfg.logit_scale != 1:
            logits = logits * cfg.logit_scale
        return (logits, hidden) if output_hidden_states else logits


def load_model(ckpt_dir, dtype=torch.float32, device="cpu", inv_freq_dtype=None):
    """Build the model from config.json and load the checkpoint's weights (any stored dtype).
    `inv_freq_dtype` rounds the RoPE frequencies as `model.to(dtype)` does to transformers'
    inv_freq buffer (how the bf16 fixture's reference was computed)."""
    cfg = read_config(ckpt_dir)
    with torch.device("meta") if hasattr(torch, "device") and hasattr(torch.device, "__enter__") else _nullctx():
        model = LlamaForCausalLM(cfg)
    model = model.to_empty(device=device) if _is_meta(model) else model
    inv = rope_inv_freq(cfg.head_dim, cfg.rope_theta)
    if inv_freq_dtype is not None:
        inv = inv.to(inv_freq_dtype).float()
    model.inv_freq = inv.to(device)
    tensors = load_checkpoint_tensors(ckpt_dir)
    own = dict(model.named_parameters())
    missing = [n for n in own if n not in tensors]
    extra = [n for n in tensors if n not in own]
    if missing or extra:
        raise ValueError(f"{ckpt_dir}: tensors do not match config.json: missing {missing[:4]}, unexpected {extra[:4]}")
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
