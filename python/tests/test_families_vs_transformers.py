"""The torch engine against transformers, for every family and feature flm-grow supports.

fixtures/hf/<case>/ holds a tiny checkpoint written by transformers' own `save_pretrained` and
`reference.safetensors` with transformers' float32 logits and every hidden state for fixed ids
(fixtures/hf/make_family_fixtures.py, transformers 5.25). `load_model` must reproduce all of them
to <= 1e-4 relative (max|a - b| / max|b|). Each case then switches off, in a copy of its files,
the very feature it is there for (the RoPE scaling, the window, the biases, the µP multipliers,
...), and the same comparison must fail: so a feature the engine ignored could not pass.
"""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from flm_grow_torch.model import load_model

REL_TOL = 1e-4
DEFAULT_ROPE = {"rope_type": "default", "rope_theta": 10000.0}


def edit_config(**change: object) -> Callable[[dict, dict], None]:
    def f(cfg: dict, _tensors: dict) -> None:
        cfg.update(change)

    return f


def edit_rope(**change: object) -> Callable[[dict, dict], None]:
    def f(cfg: dict, _tensors: dict) -> None:
        cfg["rope_parameters"] = {**cfg["rope_parameters"], **change}

    return f


def swap_kv_heads(cfg: dict, tensors: dict) -> None:
    """Layer 0's two KV heads exchanged: right only if query head j reads KV head j // 2."""
    hd = cfg["head_dim"]
    for p in ("k_proj", "v_proj"):
        w = tensors[f"model.layers.0.self_attn.{p}.weight"]
        tensors[f"model.layers.0.self_attn.{p}.weight"] = torch.cat([w[hd : 2 * hd], w[:hd], w[2 * hd :]])


def zero_biases(_cfg: dict, tensors: dict) -> None:
    for n in tensors:
        if n.endswith(".bias"):
            tensors[n] = torch.zeros_like(tensors[n])


def unit_qk_norm_gains(_cfg: dict, tensors: dict) -> None:
    for n in tensors:
        if n.endswith(("q_norm.weight", "k_norm.weight")):
            tensors[n] = torch.ones_like(tensors[n])


# case -> (the feature switched off to show the test can fail, how it is switched off in the files)
CASES: dict[str, tuple[str, Callable[[dict, dict], None]]] = {
    "llama-default": ("the GQA head mapping (KV heads 0, 1 swapped)", swap_kv_heads),
    "llama-linear": ("linear RoPE scaling", edit_config(rope_parameters=DEFAULT_ROPE)),
    "llama-dynamic": ("dynamic NTK RoPE beyond max_position_embeddings", edit_config(rope_parameters=DEFAULT_ROPE)),
    "llama3-tied": ("llama3 RoPE (all three bands)", edit_config(rope_parameters=DEFAULT_ROPE)),
    "llama-yarn": ("yarn's attention factor", edit_rope(attention_factor=1.0)),
    "mistral-window": ("the sliding window (6 < 24 tokens)", edit_config(sliding_window=None)),
    "qwen2-tied": ("the q/k/v biases", zero_biases),
    "qwen3-tied": ("the q/k norm gains", unit_qk_norm_gains),
    "qwen3-untied": ("the q/k norm gains", unit_qk_norm_gains),
    "teleflm-mup": ("µP (use_mup false)", edit_config(use_mup=False)),
}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def compare(folder: Path, ref: dict[str, torch.Tensor], sdpa: bool = False) -> tuple[float, float]:
    """(logits, worst hidden state) relative differences of the engine against the reference;
    sdpa: through torch's fused scaled_dot_product_attention (the GPU path) instead."""
    model = load_model(str(folder)).eval()
    model.set_sdpa(sdpa)
    with torch.no_grad():
        logits, hidden = model(ref["input_ids"], output_hidden_states=True)
    assert len(hidden) == model.config.num_layers + 1
    return rel(logits, ref["logits"]), max(rel(h, ref[f"hidden_states.{n}"]) for n, h in enumerate(hidden))


def switched_off(folder: Path, into: Path, change: Callable[[dict, dict], None]) -> Path:
    shutil.copytree(folder, into)
    cfg = json.loads((into / "config.json").read_text())
    tensors = load_file(str(into / "model.safetensors"))
    change(cfg, tensors)
    (into / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file(tensors, str(into / "model.safetensors"), metadata={"format": "pt"})
    return into


def test_every_fixture_is_covered(hf_fixtures: Path) -> None:
    made = {p.parent.name for p in hf_fixtures.glob("*/reference.safetensors")}
    assert made - {"llama-tiny-f32", "llama-tiny-bf16"} == set(CASES)


@pytest.mark.parametrize("case", list(CASES))
def test_torch_engine_equals_transformers(hf_fixtures: Path, tmp_path: Path, case: str) -> None:
    feature, switch_off = CASES[case]
    folder = hf_fixtures / case
    ref = load_file(str(folder / "reference.safetensors"))
    d_logits, d_hidden = compare(folder, ref)
    sdpa_logits, sdpa_hidden = compare(folder, ref, sdpa=True)
    off_logits, _ = compare(switched_off(folder, tmp_path / case, switch_off), ref)
    print(
        f"\n[torch vs transformers] {case}: logits {d_logits:.2e}, worst hidden {d_hidden:.2e}"
        f" (sdpa: {sdpa_logits:.2e}, {sdpa_hidden:.2e})"
        f" | {feature} switched off: logits {off_logits:.2e}"
    )
    assert d_logits <= REL_TOL
    assert d_hidden <= REL_TOL
    assert max(sdpa_logits, sdpa_hidden) <= REL_TOL
    # the comparison can fail: without the feature the engine is far from transformers
    assert off_logits > 100 * REL_TOL
