"""attach_masks on transformers' own LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM and
Qwen3ForCausalLM, with transformers' eager and sdpa attention, on masked grown checkpoints that
the flm-grow CLI makes (hf_grown.py).

Judged twice: with masks at 0 transformers + masks must reproduce transformers' own logits of the
*source* checkpoint (plain, nothing of ours involved) on the source vocabulary; with masks
mid-annealing it must equal our engine (flm_grow_torch.model, itself checked against
transformers-written references in test_llama_fixture.py) with the same masks. Both in eval and
train mode: transformers re-binds RMSNorm.forward on model.train() when the `kernels` package is
installed, which silently undid a masked norm installed as a replaced forward.
"""

from __future__ import annotations

import pytest
import torch
from hf_grown import FAMILIES, SOURCE_VOCAB, make_grown, rel, shared_root
from transformers import AutoModelForCausalLM

from flm_grow_torch.config import read_config
from flm_grow_torch.hf import _hf_class, _hf_config, load_masked_model
from flm_grow_torch.masks import attach_masks, read_masks, read_schedule
from flm_grow_torch.model import load_model

TOL = 1e-5  # relative, f32 logits
ALL = ("hidden", "heads", "ffn", "layers", "vocab")


@pytest.fixture(scope="module")
def grown():
    return {f: make_grown(shared_root(), f) for f in FAMILIES}


def ids(seed: int = 0):
    # 40 tokens: longer than Mistral's sliding window (8), within max_position_embeddings (64)
    return torch.randint(0, SOURCE_VOCAB, (2, 40), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_plus_masks_equals_source_and_engine(grown, family):
    src, folder = grown[family]
    x = ids()
    source = AutoModelForCausalLM.from_pretrained(src, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        want0 = source(input_ids=x).logits
    for impl in ("eager", "sdpa"):
        check(folder, impl, x, want0, family)


def check(folder, impl, x, want0, family):  # noqa: ANN001
    # a masked folder names a remote-code model type (plain AutoModel refuses it): transformers' own
    # class of the base family, masks attached by hand below
    cfg = read_config(str(folder))
    hf = _hf_class(cfg).from_pretrained(folder, config=_hf_config(cfg), attn_implementation=impl, dtype=torch.float32)
    masks, schedule = read_masks(str(folder / "masks.safetensors")), read_schedule(str(folder))
    h = attach_masks(hf, masks, schedule)
    ours = load_model(str(folder))
    ho = attach_masks(ours, masks, schedule)

    measured = {}
    for mode in ("eval", "train"):
        hf.train(mode == "train")
        ours.train(mode == "train")
        h.set_step(0)
        with torch.no_grad():
            got0 = hf(input_ids=x).logits
        measured[f"{mode} c=0 vs source"] = rel(got0[..., :SOURCE_VOCAB], want0)
        if got0.shape[-1] > SOURCE_VOCAB:  # new vocab ids at mask 0: never predicted
            assert bool(torch.isneginf(got0[..., SOURCE_VOCAB:]).all())
        for values in ({g: 0.5 for g in ALL}, h.values_at(7)):
            h.set_values(values)
            ho.set_values(values)
            with torch.no_grad():
                got, want = hf(input_ids=x).logits, ours(x)
            measured[f"{mode} {values} vs engine"] = rel(got, want)
    print(family, impl, measured)
    assert all(v <= TOL for v in measured.values()), measured

    # the check can fail: one perturbed mask value, or one hook skipped, moves the logits far past it
    h.set_values({g: 0.5 for g in ALL})
    ho.set_values({g: 0.5 for g in ALL})
    with torch.no_grad():
        want = ours(x)
        h.current["layers"][1]["heads"][-1] = 0.6
        assert rel(hf(input_ids=x).logits, want) > 100 * TOL
        h.current["layers"][1]["heads"][-1] = 0.5
        assert rel(hf(input_ids=x).logits, want) <= TOL
        # a skipped masked RMSNorm (the plain norm's statistics include the new coordinates)
        norm_hooks = hf.model.layers[1].post_attention_layernorm._forward_hooks
        saved = dict(norm_hooks)
        norm_hooks.clear()
        skipped = rel(hf(input_ids=x).logits, want)
        norm_hooks.update(saved)
        print("perturbed", family, impl, skipped)
        assert skipped > TOL
    h.remove()
    with torch.no_grad():  # removed: the plain grown model, which is not the source's function
        assert rel(hf(input_ids=x).logits[..., :SOURCE_VOCAB], want0) > 100 * TOL


@pytest.mark.parametrize("family", ["qwen3", "mistral"])
def test_load_masked_model(grown, family):
    """The package loader: transformers' class with the folder's masks; equals the engine's
    masked model, and with training=True its padding-id bias is finite (no NaN in a loss)."""
    _, folder = grown[family]
    x = ids(1)
    model, h = load_masked_model(str(folder), attn_implementation="sdpa")
    assert type(model).__module__.startswith("transformers.models.")
    ours = load_model(str(folder))
    ho = attach_masks(ours, read_masks(str(folder / "masks.safetensors")), read_schedule(str(folder)))
    for step in (0, 9):
        h.set_step(step)
        ho.set_step(step)
        with torch.no_grad():
            assert rel(model(input_ids=x).logits, ours(x)) <= TOL
    model_t, ht = load_masked_model(str(folder), training=True, stage_step=0)
    with torch.no_grad():
        logits = model_t(input_ids=x).logits
    assert bool(torch.isfinite(logits).all())
