"""The layer-streamed torch pass (flm_grow_torch.passes) against transformers itself: the Llama
fixture transformers wrote, and tiny Qwen2 (q/k/v biases, tied head), Qwen3 (q/k norms) and
Mistral (sliding window shorter than the sequence) models built and run by transformers here.
Every pass runs in small weight bands (the banded linear maps, FFN blocks and vocab blocks of a
52B-wide layer), and bad input ends in one line and exit code 2."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from flm_grow_torch.passes import Pass, layer_distance

BAND = 2048  # bytes: a few rows per band, so every linear map, the MLP and the head run blocked


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_llama_fixture_equals_transformers_reference(hf_fixtures: Path) -> None:
    folder = hf_fixtures / "llama-tiny-f32"
    ref = load_file(str(folder / "reference.safetensors"))
    for band in (1 << 30, BAND):
        logits, hidden = Pass(str(folder), max_block_bytes=band).run(ref["input_ids"], keep_hidden=True)
        assert logits is not None
        assert rel(logits, ref["logits"]) <= 1e-5
        assert len(hidden) == len([k for k in ref if k.startswith("hidden_states.")])
        for n, h in enumerate(hidden):
            assert rel(h, ref[f"hidden_states.{n}"]) <= 1e-5, f"hidden_states.{n}"


def _hf_model(family: str, tmp: Path):
    transformers = pytest.importorskip("transformers")
    common = dict(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=300,
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
    )
    if family == "qwen2":
        cfg = transformers.Qwen2Config(**common, tie_word_embeddings=True)
        cls = transformers.Qwen2ForCausalLM
    elif family == "qwen3":
        cfg = transformers.Qwen3Config(**common, head_dim=24, tie_word_embeddings=False)
        cls = transformers.Qwen3ForCausalLM
    else:
        cfg = transformers.MistralConfig(**common, sliding_window=5)
        cls = transformers.MistralForCausalLM
    torch.manual_seed(3)
    model = cls(cfg).eval()
    with torch.no_grad():  # transformers' init is tiny (std 0.02): widen it so the layers do something
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p)) if p.dim() > 1 else p.add_(0.2 * torch.randn_like(p))
    if getattr(model.config, "_attn_implementation", None) is not None:
        model.config._attn_implementation = "eager"
    model.save_pretrained(str(tmp), safe_serialization=True)
    return model


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "mistral"])
def test_families_equal_transformers(tmp_path: Path, family: str) -> None:
    model = _hf_model(family, tmp_path)
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    logits, hidden = Pass(str(tmp_path), max_block_bytes=BAND).run(ids, keep_hidden=True)
    assert logits is not None
    assert rel(logits, out.logits) <= 1e-5
    for n, h in enumerate(hidden):
        assert rel(h, out.hidden_states[n]) <= 1e-5, f"hidden_states.{n}"
    # the distances are distance.ts's: 1 - cos per token, averaged, on HF's residual stream
    got: list[float] = []
    Pass(str(tmp_path)).run(ids, on_layer=lambda _l, a, b: got.append(layer_distance(a, b, "cosine")), logits=False)
    # HF's hidden_states[L] is after the final norm, so layers 0..L-2 are checked against it
    hs = out.hidden_states
    assert len(got) == len(hs) - 1
    for l in range(len(got) - 1):
        a, b = hs[l].reshape(-1, 64).double(), hs[l + 1].reshape(-1, 64).double()
        want = (1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)).clamp(min=0).mean().item()
        assert abs(got[l] - want) <= 1e-5 * abs(want), f"layer {l}"


def test_bad_input_is_one_line_exit_2(tmp_path: Path, hf_fixtures: Path) -> None:
    folder = hf_fixtures / "llama-tiny-f32"
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "config.json").write_text((folder / "config.json").read_text())
    t = {}
    for shard in sorted(folder.glob("model-*.safetensors")):
        t.update(load_file(str(shard)))
    del t["model.layers.1.mlp.down_proj.weight"]
    save_file(t, str(ck / "model.safetensors"))
    ids = tmp_path / "ids.safetensors"
    save_file({"input_ids": torch.tensor([[1, 2, 3]], dtype=torch.int32)}, str(ids))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = [sys.executable, "-m", "flm_grow_torch.passes", "distances", str(ck), "--input", str(ids), "--quiet"]
    r = subprocess.run(run, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"flm_grow_torch.passes: {ck}: tensor 'model.layers.1.mlp.down_proj.weight' is missing"
    ]
    # and an id outside the vocabulary
    save_file({"input_ids": torch.tensor([[1, 2, 100000]], dtype=torch.int32)}, str(ids))
    r = subprocess.run([*run[:4], str(folder), *run[5:]], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "outside the vocabulary" in r.stderr and "Traceback" not in r.stderr
