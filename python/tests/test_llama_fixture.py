"""The torch engine against transformers' own outputs on the Llama fixtures that transformers
wrote (fixtures/hf/llama-tiny-*: logits and every hidden state, computed by transformers 5.17)."""

import pytest
import torch
from safetensors.torch import load_file

from flm_grow_torch.model import load_model


@pytest.mark.parametrize(
    ("name", "inv_freq_dtype", "rel_tol"),
    # the bf16 fixture's reference ran with bf16-rounded RoPE frequencies (fixtures/README.md)
    [("llama-tiny-f32", None, 1e-4), ("llama-tiny-bf16", torch.bfloat16, 1e-4)],
)
def test_engine_equals_transformers_reference(hf_fixtures, name, inv_freq_dtype, rel_tol):
    folder = hf_fixtures / name
    ref = load_file(str(folder / "reference.safetensors"))
    model = load_model(str(folder), inv_freq_dtype=inv_freq_dtype).eval()
    with torch.no_grad():
        logits, hidden = model(ref["input_ids"], output_hidden_states=True)

    def rel(a, b):
        return ((a - b).abs().max() / b.abs().max()).item()

    assert rel(logits, ref["logits"]) <= rel_tol
    for n, h in enumerate(hidden):
        assert rel(h, ref[f"hidden_states.{n}"]) <= rel_tol, f"hidden_states.{n}"
    # and the comparison can fail: a perturbed weight moves the logits far past the tolerance
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(1.01)
        assert rel(model(ref["input_ids"]), ref["logits"]) > rel_tol
